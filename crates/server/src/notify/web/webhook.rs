//! Webhook contacts: a signed JSON POST to the contact's URL.
//!
//! The body is one object (see [`payload`]):
//!
//! ```json
//! {
//!   "event": "incident.page",
//!   "message_id": "…", "account_id": "…", "user_id": "…",
//!   "reason": "assigned", "attempt": 1, "sent_at": "2026-01-05T09:00:00Z",
//!   "incident": {"id": "…", "service": "Disks", "message": "disk full",
//!                "description": null, "details": null,
//!                "state": "triggered", "url": "https://klaxon.example/incidents/…"},
//!   "links": {"acknowledge": "https://…/links/…", "resolve": "https://…/links/…"}
//! }
//! ```
//!
//! `event` is `incident.page` for a page (`reason`: `assigned`,
//! `escalated`, `retriggered`) and `incident.<reason>` for a status update
//! (`incident.acknowledged`, `incident.resolved`,
//! `incident.escalated_away`), whose `links` is null.
//!
//! Headers: `X-Klaxon-Delivery` is the message id, the same on every
//! attempt (a receiver's idempotency key: a message resent after a crash
//! carries it again); `X-Klaxon-Event` repeats `event`;
//! `X-Klaxon-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256>` signs
//! `"<t>.<body>"` with the account's signing secret (admins read it at
//! `GET /webhook_signing_secret`), so a receiver can check who sent it and
//! refuse old replays by `t`.

use std::sync::Arc;

use async_trait::async_trait;
use hmac::{Hmac, Mac};
use klaxon_core::time::{format_ts, Millis};
use klaxon_store::{OutgoingMessage, SendOutcome, Store};
use reqwest::header::CONTENT_TYPE;
use serde_json::{json, Value};
use sha2::Sha256;

use super::{deliver, target, wall_clock_ms, Urls, Web};
use crate::notify::Notifier;

/// The store's name for the server's webhook signing key.
pub const SECRET_NAME: &str = "webhook_signing_v1";

/// Makes each account's webhook signing secret from the server's key.
///
/// Every account gets its own, derived from the one key in the store:
/// admins of one account (anyone, where registration is open) must not be
/// able to sign messages that another account's receivers would accept.
#[derive(Clone)]
pub struct SigningKeys {
    master: Arc<[u8]>,
}

impl SigningKeys {
    /// Keys derived from `master`.
    pub fn new(master: &[u8]) -> Self {
        Self {
            master: master.into(),
        }
    }

    /// The keys from the server key shared through `store` (made on first
    /// use).
    pub async fn load(store: &dyn Store, now: Millis) -> klaxon_store::Result<Self> {
        let fresh = klaxon_core::id::random_hex(&mut rand::rng(), 64);
        let master = store.secret(SECRET_NAME, &fresh, now).await?;
        Ok(Self::new(master.as_bytes()))
    }

    /// The account's signing secret: 64 hex characters, whose ASCII bytes
    /// are the HMAC key.
    pub fn secret(&self, account_id: &str) -> String {
        let mut mac = hmac(&self.master);
        mac.update(b"klaxon webhook signing secret|");
        mac.update(account_id.as_bytes());
        hex::encode(mac.finalize().into_bytes())
    }
}

fn hmac(key: &[u8]) -> Hmac<Sha256> {
    match Hmac::<Sha256>::new_from_slice(key) {
        Ok(mac) => mac,
        Err(_) => unreachable!("HMAC accepts keys of every length"),
    }
}

/// `t=<t>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`.
pub fn signature(secret: &str, t: i64, body: &[u8]) -> String {
    let mut mac = hmac(secret.as_bytes());
    mac.update(t.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("t={t},v1={}", hex::encode(mac.finalize().into_bytes()))
}

/// `incident.page` for a page, `incident.<reason>` for a status update.
pub fn event(m: &OutgoingMessage) -> String {
    if m.is_status_update() {
        format!("incident.{}", m.reason)
    } else {
        "incident.page".to_owned()
    }
}

/// The JSON body (see the module documentation); `now` is the attempt's
/// time.
pub fn payload(m: &OutgoingMessage, urls: &Urls, now: Millis) -> Value {
    let links = urls.answers.as_ref().map_or(
        Value::Null,
        |a| json!({ "acknowledge": a.acknowledge, "resolve": a.resolve }),
    );
    json!({
        "event": event(m),
        "message_id": m.id,
        "account_id": m.account_id,
        "user_id": m.user_id,
        "reason": m.reason,
        "attempt": m.attempts,
        "sent_at": format_ts(now),
        "incident": {
            "id": m.incident_id,
            "service": m.service_name,
            "message": m.message,
            "description": m.description,
            "details": m.details.as_ref().map(|d| &d.0),
            "state": m.incident_state,
            "url": urls.incident,
        },
        "links": links,
    })
}

/// Sends webhook contacts' messages.
pub struct Webhook {
    web: Arc<Web>,
    keys: SigningKeys,
}

impl Webhook {
    /// A webhook notifier signing with `keys`.
    pub fn new(web: Arc<Web>, keys: SigningKeys) -> Self {
        Self { web, keys }
    }
}

#[async_trait]
impl Notifier for Webhook {
    fn provider(&self, _channel: &str) -> &'static str {
        "webhook"
    }

    async fn send(&self, m: &OutgoingMessage, now: Millis) -> SendOutcome {
        let url = match target(m) {
            Ok(url) => url,
            Err(failed) => return failed,
        };
        let body = payload(m, &self.web.urls(m), now).to_string().into_bytes();
        let t = wall_clock_ms().div_euclid(1000);
        let signature = signature(&self.keys.secret(&m.account_id), t, &body);
        let request = self
            .web
            .client
            .post(url)
            .header(CONTENT_TYPE, "application/json")
            .header("X-Klaxon-Delivery", &m.id)
            .header("X-Klaxon-Event", event(m))
            .header("X-Klaxon-Signature", signature)
            .body(body);
        deliver(request, m, now, |_| None).await
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::page;
    use super::super::Answers;
    use super::*;

    fn urls(answers: bool) -> Urls {
        Urls {
            incident: "https://k.test/incidents/inc00001".into(),
            answers: answers.then(|| Answers {
                acknowledge: "https://k.test/links/a".into(),
                resolve: "https://k.test/links/r".into(),
            }),
        }
    }

    #[test]
    fn the_signature_is_hmac_sha256_over_time_dot_body() {
        // Reference value computed independently:
        // printf '%s' '1700000000.{"a":1}' | openssl dgst -sha256 -hmac secret
        assert_eq!(
            signature("secret", 1_700_000_000, br#"{"a":1}"#),
            "t=1700000000,v1=49f24e537407743fa4a0242bb63b94b9a47ee99cbbe071ccd8a22550ae411686"
        );
        assert_ne!(
            signature("secret", 1_700_000_001, br#"{"a":1}"#),
            signature("secret", 1_700_000_000, br#"{"a":1}"#)
        );
    }

    #[test]
    fn each_account_has_its_own_secret() {
        let keys = SigningKeys::new(b"server key");
        let a = keys.secret("acc00001");
        assert_eq!(a.len(), 64);
        assert!(a.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(a, keys.secret("acc00001"));
        assert_ne!(a, keys.secret("acc00002"));
        assert_ne!(a, SigningKeys::new(b"other key").secret("acc00001"));
    }

    #[test]
    fn a_page_carries_the_incident_and_answer_links() {
        let body = payload(&page(), &urls(true), 1_700_000_060_000);
        assert_eq!(
            body,
            json!({
                "event": "incident.page",
                "message_id": "msg00001",
                "account_id": "acc00001",
                "user_id": "usr00001",
                "reason": "assigned",
                "attempt": 1,
                "sent_at": "2023-11-14T22:14:20Z",
                "incident": {
                    "id": "inc00001",
                    "service": "Disks",
                    "message": "disk full",
                    "description": "/var is at 100%",
                    "details": null,
                    "state": "triggered",
                    "url": "https://k.test/incidents/inc00001",
                },
                "links": {
                    "acknowledge": "https://k.test/links/a",
                    "resolve": "https://k.test/links/r",
                },
            })
        );
    }

    #[test]
    fn a_status_update_names_what_happened_and_has_no_links() {
        let mut m = page();
        m.reason = "acknowledged".into();
        m.incident_state = "acknowledged".into();
        let body = payload(&m, &urls(false), 0);
        assert_eq!(body["event"], "incident.acknowledged");
        assert_eq!(body["incident"]["state"], "acknowledged");
        assert_eq!(body["links"], Value::Null);
        m.reason = "retriggered".into();
        assert_eq!(event(&m), "incident.page");
    }
}
