//! Paging through the notification outbox, against the real binary on
//! both backends, with no provider configured (the dev outbox records each
//! message as delivered): who is paged, on which contacts, when, once.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{Account, Backend, Server};
use reqwest::StatusCode;
use serde_json::{json, Value};

fn statuses(rows: &[Value]) -> Vec<(String, String)> {
    rows.iter()
        .map(|r| {
            (
                r["channel"].as_str().unwrap().to_owned(),
                r["status"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

async fn trigger(server: &Server, key: &str, dedup_key: &str) -> common::Res {
    server
        .integration(
            "trigger",
            key,
            &[("message", "disk full"), ("key", dedup_key)],
        )
        .await
}

async fn a_user_without_contacts_is_paged_at_their_address_once(backend: Backend) {
    let server = Server::start(backend).await;
    let a = server.register("Alpha").await;
    let s = server
        .setup_service(&a, "Disks", &[a.user_id.as_str()], 1)
        .await;
    let opened = trigger(&server, &s.integration_key, "disk-1").await;
    assert_eq!(opened.status, StatusCode::CREATED, "{}", opened.text);
    let id = opened.str("id");
    let rows = server
        .notifications_when(&a.token, &id, |rows| {
            rows.iter().all(|r| r["status"] == "delivered") && !rows.is_empty()
        })
        .await;
    assert_eq!(rows.len(), 1, "{rows:?}");
    let page = &rows[0];
    assert_eq!(page["user_id"], json!(a.user_id));
    assert_eq!(page["channel"], "email");
    assert_eq!(page["address"], json!(a.email));
    assert_eq!(page["reason"], "assigned");
    assert_eq!(page["status"], "delivered");
    assert_eq!(page["contact_id"], Value::Null);
    assert!(page["sent_at"].is_string());
    // The same problem again pages nobody.
    let again = trigger(&server, &s.integration_key, "disk-1").await;
    assert_eq!(again.status, StatusCode::NOT_MODIFIED);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let rows = server.notifications_when(&a.token, &id, |_| true).await;
    assert_eq!(rows.len(), 1, "still one page: {rows:?}");
    // Per user, too.
    let mine = server
        .get(&format!("/users/{}/notifications", a.user_id), &a.token)
        .await;
    assert_eq!(mine.status, StatusCode::OK);
    assert_eq!(mine.body.as_array().unwrap().len(), 1);
}

async fn rules_delay_pages_and_acknowledging_cancels_the_rest(backend: Backend) {
    let server = Server::start(backend).await;
    let a = server.register("Alpha").await;
    let s = server
        .setup_service(&a, "Disks", &[a.user_id.as_str()], 1)
        .await;
    let sms = server.contact(&a, "sms", "+15551234567").await;
    let email = server.contact(&a, "email", "oncall@example.com").await;
    for (contact_id, delay) in [(&sms, 0), (&email, 5)] {
        let rule = server
            .post(
                &format!("/users/{}/notification_rules", a.user_id),
                &a.token,
                json!({"contact_id": contact_id, "start_delay": delay}),
            )
            .await;
        assert_eq!(rule.status, StatusCode::CREATED, "{}", rule.text);
    }
    let id = trigger(&server, &s.integration_key, "disk-2")
        .await
        .str("id");
    let rows = server
        .notifications_when(&a.token, &id, |rows| {
            rows.iter().any(|r| r["status"] == "delivered")
        })
        .await;
    assert_eq!(
        statuses(&rows),
        [
            ("sms".to_owned(), "delivered".to_owned()),
            ("email".to_owned(), "queued".to_owned())
        ],
        "{rows:?}"
    );
    assert_eq!(rows[0]["address"], "+15551234567");
    assert_eq!(rows[0]["contact_id"], json!(sms));
    assert_eq!(rows[1]["contact_id"], json!(email));
    // The email is due five minutes after the page.
    let due = |r: &Value| r["due_at"].as_str().unwrap().to_owned();
    assert_ne!(due(&rows[0]), due(&rows[1]));
    // Acknowledging stops what has not gone out yet; the monitoring
    // system acknowledged, so the user hears of it where they were paged.
    let ack = server
        .integration("acknowledge", &s.integration_key, &[("key", "disk-2")])
        .await;
    assert!(ack.status.is_success(), "{}", ack.text);
    let rows = server
        .notifications_when(&a.token, &id, |rows| {
            rows.len() == 3 && rows[2]["status"] == "delivered"
        })
        .await;
    assert_eq!(
        statuses(&rows),
        [
            ("sms".to_owned(), "delivered".to_owned()),
            ("email".to_owned(), "cancelled".to_owned()),
            ("sms".to_owned(), "delivered".to_owned()),
        ],
        "{rows:?}"
    );
    assert_eq!(rows[2]["reason"], "acknowledged");
    assert_eq!(rows[2]["contact_id"], json!(sms));
}

/// A second user of `a`'s account, with a token of their own.
async fn teammate(server: &Server, a: &Account, name: &str) -> Account {
    let email = format!("{}@{}.test", name.to_lowercase(), a.user_id.to_lowercase());
    let res = server
        .post(
            "/users",
            &a.token,
            json!({"name": name, "email": email, "password": "correct horse", "role": "responder"}),
        )
        .await;
    assert_eq!(res.status, StatusCode::CREATED, "{}", res.text);
    let user_id = res.str("id");
    let session = server
        .call(
            reqwest::Method::POST,
            "/sessions",
            None,
            Some(json!({"email": email, "password": "correct horse"})),
        )
        .await;
    assert!(session.status.is_success(), "{}", session.text);
    Account {
        token: session.str("token"),
        user_id,
        email,
        ..a.clone()
    }
}

async fn status_updates_reach_the_paged_and_not_the_actor(backend: Backend) {
    let server = Server::start(backend).await;
    let a = server.register("Alpha").await;
    let bea = teammate(&server, &a, "Bea").await;
    // Bea is first on call, Alpha's admin second.
    let s = server
        .setup_service(&a, "Disks", &[bea.user_id.as_str(), a.user_id.as_str()], 1)
        .await;
    let id = trigger(&server, &s.integration_key, "disk-4")
        .await
        .str("id");
    server
        .notifications_when(&a.token, &id, |rows| {
            rows.len() == 1 && rows[0]["status"] == "delivered"
        })
        .await;
    // The admin escalates: they are paged (as the new assignee, not told
    // of their own act), Bea hears it went on.
    let esc = server
        .put(&format!("/incidents/{id}/escalate"), &a.token, json!({}))
        .await;
    assert!(esc.status.is_success(), "{}", esc.text);
    let rows = server
        .notifications_when(&a.token, &id, |rows| {
            rows.len() == 3 && rows.iter().all(|r| r["status"] == "delivered")
        })
        .await;
    let who = |rows: &[Value]| -> Vec<(String, String)> {
        rows.iter()
            .map(|r| {
                (
                    r["user_id"].as_str().unwrap().to_owned(),
                    r["reason"].as_str().unwrap().to_owned(),
                )
            })
            .collect()
    };
    let mut got = who(&rows);
    got.sort();
    let mut want = vec![
        (bea.user_id.clone(), "assigned".to_owned()),
        (bea.user_id.clone(), "escalated_away".to_owned()),
        (a.user_id.clone(), "escalated".to_owned()),
    ];
    want.sort();
    assert_eq!(got, want, "{rows:?}");
    // Bea acknowledges: the admin (paged) is told, Bea (the actor) not.
    let ack = server
        .put(
            &format!("/incidents/{id}/acknowledge"),
            &bea.token,
            json!({}),
        )
        .await;
    assert!(ack.status.is_success(), "{}", ack.text);
    let rows = server
        .notifications_when(&a.token, &id, |rows| {
            rows.len() == 4 && rows.iter().all(|r| r["status"] == "delivered")
        })
        .await;
    assert_eq!(rows.len(), 4, "{rows:?}");
    let last = &rows[3];
    assert_eq!(last["reason"], "acknowledged");
    assert_eq!(last["user_id"], json!(a.user_id));
    // The admin resolves: only Bea is told.
    let res = server
        .put(&format!("/incidents/{id}/resolve"), &a.token, json!({}))
        .await;
    assert!(res.status.is_success(), "{}", res.text);
    let rows = server
        .notifications_when(&a.token, &id, |rows| {
            rows.len() == 5 && rows.iter().all(|r| r["status"] == "delivered")
        })
        .await;
    assert_eq!(rows.len(), 5, "{rows:?}");
    assert_eq!(rows[4]["reason"], "resolved");
    assert_eq!(rows[4]["user_id"], json!(bea.user_id));
}

async fn notifications_are_the_accounts_own(backend: Backend) {
    let server = Server::start(backend).await;
    let a = server.register("Alpha").await;
    let b = server.register("Beta").await;
    let s = server
        .setup_service(&a, "Disks", &[a.user_id.as_str()], 1)
        .await;
    let id = trigger(&server, &s.integration_key, "disk-3")
        .await
        .str("id");
    for path in [
        format!("/incidents/{id}/notifications"),
        format!("/users/{}/notifications", a.user_id),
    ] {
        let res = server.get(&path, &b.token).await;
        res.assert_error(StatusCode::NOT_FOUND);
    }
}

both_backends!(
    a_user_without_contacts_is_paged_at_their_address_once,
    rules_delay_pages_and_acknowledging_cancels_the_rest,
    notifications_are_the_accounts_own,
    status_updates_reach_the_paged_and_not_the_actor,
);
