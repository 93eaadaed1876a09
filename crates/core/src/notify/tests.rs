//! Tables and properties of notification planning.

use proptest::prelude::*;

use super::sms::{
    bundle_sms, cut_to_one_segment, encoded_len, fits_one_segment, render, AlertText, Encoding,
    SmsAlert, BUNDLE_WINDOW_MS, GSM7_SEGMENT, UCS2_SEGMENT,
};
use super::*;

const T0: Millis = 1_700_000_000_000;

fn contact(id: &str, kind: ContactType) -> ContactRef {
    ContactRef {
        id: id.to_owned(),
        kind,
    }
}

fn rule(contact_id: &str, start_delay: i64) -> NotificationRuleSpec {
    NotificationRuleSpec {
        contact_id: contact_id.to_owned(),
        start_delay,
    }
}

fn due(messages: &[PlannedMessage]) -> Vec<(&str, Millis)> {
    messages
        .iter()
        .map(|m| (m.contact_id.as_str(), m.due_at - m.page_at))
        .collect()
}

#[test]
fn each_rule_is_one_message_after_its_delay() {
    let contacts = [
        contact("mail", ContactType::Email),
        contact("sms", ContactType::Sms),
        contact("call", ContactType::Phone),
    ];
    let rules = [
        rule("call", 10),
        rule("sms", 0),
        rule("gone", 0),
        rule("mail", 0),
        rule("sms", 0),
        rule("sms", 5),
    ];
    let m = MINUTE_MS;
    let got = expand(T0, &rules, &contacts);
    assert_eq!(
        due(&got),
        [("sms", 0), ("mail", 0), ("sms", 5 * m), ("call", 10 * m)]
    );
    assert!(got.iter().all(|x| x.page_at == T0));
    assert_eq!(got[3].kind, ContactType::Phone);
}

#[test]
fn no_usable_rules_means_every_contact_at_once() {
    let contacts = [
        contact("mail", ContactType::Email),
        contact("sms", ContactType::Sms),
    ];
    let at_once = [("mail", 0), ("sms", 0)];
    assert_eq!(due(&expand(T0, &[], &contacts)), at_once);
    assert_eq!(due(&expand(T0, &[rule("gone", 3)], &contacts)), at_once);
    assert!(expand(T0, &[rule("gone", 3)], &[]).is_empty());
}

#[test]
fn negative_delays_count_as_none() {
    let contacts = [contact("sms", ContactType::Sms)];
    assert_eq!(
        due(&expand(T0, &[rule("sms", -5)], &contacts)),
        [("sms", 0)]
    );
    let far = expand(i64::MAX - 1, &[rule("sms", i64::MAX)], &contacts);
    assert_eq!(far[0].due_at, i64::MAX);
}

#[test]
fn contact_kinds_round_trip() {
    for k in ContactType::ALL {
        assert_eq!(ContactType::parse(k.as_str()), Some(k));
    }
    assert_eq!(ContactType::parse("pager"), None);
}

#[test]
fn cancellation_table() {
    use IncidentState as S;
    let status = |state, stopped| IncidentStatus {
        state,
        paging_stopped_at: stopped,
    };
    let page_at = 100;
    let table = [
        (status(S::Triggered, None), true),
        (status(S::Triggered, Some(99)), true),
        (status(S::Triggered, Some(100)), false),
        (status(S::Triggered, Some(150)), false),
        (status(S::Acknowledged, Some(50)), false),
        (status(S::Acknowledged, Some(150)), false),
        (status(S::Resolved, Some(150)), false),
        (status(S::Resolved, None), false),
    ];
    for (incident, want) in table {
        assert_eq!(should_send(page_at, &incident), want, "{incident:?}");
    }
}

#[test]
fn status_updates_skip_the_actor_and_repeats() {
    let paged: Vec<UserId> = ["ann", "bob", "ann", "cy", "bob"]
        .map(str::to_owned)
        .to_vec();
    assert_eq!(status_update_recipients(&paged, Some("bob")), ["ann", "cy"]);
    assert_eq!(status_update_recipients(&paged, None), ["ann", "bob", "cy"]);
    assert!(status_update_recipients(&[], Some("ann")).is_empty());
}

#[test]
fn sms_texts() {
    let one = [AlertText {
        service: "Web",
        message: "disk full\non db1",
    }];
    assert_eq!(render(&one), "ALERT [Web] disk full on db1");
    let two = [
        one[0],
        AlertText {
            service: " DB ",
            message: "load\t9000",
        },
    ];
    assert_eq!(
        render(&two),
        "2 ALERTS: [Web] disk full on db1; [DB] load 9000"
    );
    assert_eq!(
        render(&[AlertText {
            service: "Web",
            message: ""
        }]),
        "ALERT [Web]"
    );
}

#[test]
fn segment_lengths() {
    assert_eq!(encoded_len("Hello @£"), (Encoding::Gsm7, 8));
    // The extension table costs two septets a character.
    assert_eq!(encoded_len("[x]€"), (Encoding::Gsm7, 7));
    assert_eq!(encoded_len("naïve"), (Encoding::Ucs2, 5));
    // Outside the BMP: two UTF-16 units.
    assert_eq!(encoded_len("🔥"), (Encoding::Ucs2, 2));
    assert_eq!(encoded_len("…"), (Encoding::Ucs2, 1));
}

#[test]
fn cutting_to_one_segment() {
    let exact = "a".repeat(160);
    assert_eq!(cut_to_one_segment(&exact), exact);
    let long = "a".repeat(161);
    assert_eq!(cut_to_one_segment(&long), format!("{}...", "a".repeat(157)));
    // An extension character straddling the cut point is left out whole.
    let brackets = format!("{}[]", "a".repeat(156));
    assert_eq!(
        cut_to_one_segment(&format!("{brackets}{}", "b".repeat(10))),
        format!("{}...", "a".repeat(156))
    );
    // UCS-2: 69 units and an ellipsis; an emoji is never split.
    let ucs = format!("ï{}", "b".repeat(100));
    assert_eq!(cut_to_one_segment(&ucs), format!("ï{}…", "b".repeat(68)));
    let emoji = format!("{}🔥🔥", "b".repeat(68));
    assert_eq!(cut_to_one_segment(&emoji), format!("{}…", "b".repeat(68)));
    // A character GSM-7 lacks, past the GSM-7 cut point, does not force
    // the shorter UCS-2 segment.
    let late = format!("{}ï", "a".repeat(200));
    assert_eq!(cut_to_one_segment(&late), format!("{}...", "a".repeat(157)));
}

fn alert(id: &str, contact: &str, due_at: Millis) -> SmsAlert {
    SmsAlert {
        id: id.to_owned(),
        user_id: "ann".to_owned(),
        contact_id: contact.to_owned(),
        due_at,
        service: "Web".to_owned(),
        message: format!("problem {id}"),
    }
}

#[test]
fn bundles_by_contact_and_window() {
    let w = BUNDLE_WINDOW_MS;
    let alerts = [
        alert("a", "sms1", T0),
        alert("b", "sms1", T0 + w - 1),
        alert("c", "sms1", T0 + w),
        alert("d", "sms2", T0 + 5),
        alert("e", "sms1", T0 + 10),
    ];
    let got: Vec<(String, Millis, Vec<String>, String)> = bundle_sms(&alerts, w)
        .into_iter()
        .map(|b| (b.contact_id, b.send_at - T0, b.alert_ids, b.text))
        .collect();
    let ids = |s: &[&str]| s.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    assert_eq!(
        got,
        [
            (
                "sms2".to_owned(),
                5,
                ids(&["d"]),
                "ALERT [Web] problem d".to_owned()
            ),
            (
                "sms1".to_owned(),
                w - 1,
                ids(&["a", "e", "b"]),
                "3 ALERTS: [Web] problem a; [Web] problem e; [Web] problem b".to_owned()
            ),
            (
                "sms1".to_owned(),
                w,
                ids(&["c"]),
                "ALERT [Web] problem c".to_owned()
            ),
        ]
    );
    assert!(bundle_sms(&[], w).is_empty());
}

/// Contacts "c0".."c3" of every kind, and rules over them and a missing one.
fn rules_and_contacts() -> impl Strategy<Value = (Vec<NotificationRuleSpec>, Vec<ContactRef>)> {
    let kinds = prop::sample::select(ContactType::ALL.to_vec());
    (
        prop::collection::vec((0usize..5, -2i64..120), 0..6),
        prop::collection::vec(kinds, 0..4),
    )
        .prop_map(|(rules, kinds)| {
            let contacts: Vec<ContactRef> = kinds
                .into_iter()
                .enumerate()
                .map(|(i, kind)| contact(&format!("c{i}"), kind))
                .collect();
            let rules = rules
                .into_iter()
                .map(|(c, delay)| rule(&format!("c{c}"), delay))
                .collect();
            (rules, contacts)
        })
}

/// Text with what makes SMS hard: extension characters, accents GSM-7
/// has and lacks, emoji, whitespace runs and control characters.
fn sms_text() -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop::sample::select(vec![
            "a",
            "Z",
            " ",
            "[",
            "]",
            "€",
            "é",
            "ï",
            "…",
            "🔥",
            "日本",
            "\n",
            "\t",
            ";",
            "disk full ",
        ]),
        0..60,
    )
    .prop_map(|parts| parts.concat())
}

proptest! {
    /// No message is due before its page plus its rule's delay, every
    /// message comes from a rule for an existing contact (or, with none
    /// usable, every contact at once), and every usable rule gives one.
    #[test]
    fn no_message_before_its_delay((rules, contacts) in rules_and_contacts(), page_at in 0i64..1_000_000_000) {
        let got = expand(page_at, &rules, &contacts);
        let usable: Vec<&NotificationRuleSpec> = rules.iter().filter(|r| contacts.iter().any(|c| c.id == r.contact_id)).collect();
        for m in &got {
            prop_assert_eq!(m.page_at, page_at);
            prop_assert!(m.due_at >= page_at);
            prop_assert!(contacts.iter().any(|c| c.id == m.contact_id && c.kind == m.kind));
            if !usable.is_empty() {
                prop_assert!(usable.iter().any(|r| r.contact_id == m.contact_id && m.due_at == page_at + r.start_delay.max(0) * MINUTE_MS));
            }
        }
        for r in &usable {
            prop_assert!(got.iter().any(|m| m.contact_id == r.contact_id && m.due_at - page_at == r.start_delay.max(0) * MINUTE_MS));
        }
        prop_assert!(got.windows(2).all(|w| w[0].due_at <= w[1].due_at));
        if usable.is_empty() {
            prop_assert_eq!(got.len(), contacts.len());
        }
    }

    /// With no rules, every contact is paged at once, once.
    #[test]
    fn no_rules_pages_every_contact_at_once((_, contacts) in rules_and_contacts(), page_at in 0i64..1_000_000_000) {
        let got = expand(page_at, &[], &contacts);
        let ids: Vec<&str> = got.iter().map(|m| m.contact_id.as_str()).collect();
        let want: Vec<&str> = contacts.iter().map(|c| c.id.as_str()).collect();
        prop_assert_eq!(ids, want);
        prop_assert!(got.iter().all(|m| m.due_at == page_at));
    }

    /// Paged at `page_at`, stopped (acknowledged or resolved) at `stop`,
    /// perhaps triggered again at `retrigger` and paged anew: the sender
    /// asking at each message's due time sends exactly what was due before
    /// the stop, none of the rest of the first page, and the whole second.
    #[test]
    fn acknowledge_or_resolve_cancels_everything_unsent(
        (rules, contacts) in rules_and_contacts(),
        stop_after in 0i64..200 * MINUTE_MS,
        resolve in any::<bool>(),
        retrigger_after in prop::option::of(1i64..200 * MINUTE_MS),
    ) {
        let page_at = T0;
        let stop = page_at + stop_after;
        let stopped = if resolve { IncidentState::Resolved } else { IncidentState::Acknowledged };
        // Only an acknowledged incident is triggered again.
        let retrigger = retrigger_after.filter(|_| !resolve).map(|d| stop + d);
        let status_at = |t: Millis| {
            if t < stop {
                IncidentStatus { state: IncidentState::Triggered, paging_stopped_at: None }
            } else if retrigger.is_some_and(|r| t >= r) {
                IncidentStatus { state: IncidentState::Triggered, paging_stopped_at: Some(stop) }
            } else {
                IncidentStatus { state: stopped, paging_stopped_at: Some(stop) }
            }
        };
        for m in expand(page_at, &rules, &contacts) {
            prop_assert_eq!(should_send(m.page_at, &status_at(m.due_at)), m.due_at < stop, "{:?}", m);
            // However late the sender is, what was unsent at the stop stays unsent.
            if m.due_at >= stop {
                prop_assert!(!should_send(m.page_at, &status_at(m.due_at + 500 * MINUTE_MS)));
            }
        }
        if let Some(r) = retrigger {
            for m in expand(r, &rules, &contacts) {
                prop_assert!(should_send(m.page_at, &status_at(m.due_at)));
            }
        }
    }

    /// A status update never goes to whoever acted, goes to everyone else
    /// paged, once each, in the order first paged.
    #[test]
    fn status_update_never_to_the_actor(
        paged in prop::collection::vec(0u8..5, 0..12),
        actor in prop::option::of(0u8..6),
    ) {
        let paged: Vec<UserId> = paged.iter().map(|u| format!("u{u}")).collect();
        let actor = actor.map(|u| format!("u{u}"));
        let got = status_update_recipients(&paged, actor.as_deref());
        prop_assert!(actor.as_ref().is_none_or(|a| !got.contains(a)));
        let mut want: Vec<UserId> = Vec::new();
        for u in &paged {
            if Some(u) != actor.as_ref() && !want.contains(u) {
                want.push(u.clone());
            }
        }
        prop_assert_eq!(got, want);
    }

    /// Any text cut to one segment fits it, is a prefix of the text (up to
    /// the ellipsis) and is the text itself if it already fitted.
    #[test]
    fn cut_fits_one_segment(text in sms_text()) {
        let cut = cut_to_one_segment(&text);
        prop_assert!(fits_one_segment(&cut));
        if fits_one_segment(&text) {
            prop_assert_eq!(&cut, &text);
        } else {
            let kept = cut.strip_suffix("...").or_else(|| cut.strip_suffix('…'));
            prop_assert!(kept.is_some_and(|k| text.starts_with(k)), "{:?}", cut);
        }
        let (encoding, len) = encoded_len(&cut);
        let limit = match encoding {
            Encoding::Gsm7 => GSM7_SEGMENT,
            Encoding::Ucs2 => UCS2_SEGMENT,
        };
        prop_assert!(len <= limit);
    }

    /// Bundles never exceed one segment, carry every alert exactly once,
    /// hold one contact's alerts due within the window, are sent no
    /// earlier than any of them is due, and say how many they carry.
    #[test]
    fn bundles_account_for_every_alert_once(
        raw in prop::collection::vec((0u8..2, 0u8..3, 0i64..120_000, sms_text(), sms_text()), 0..25),
    ) {
        let alerts: Vec<SmsAlert> = raw.into_iter().enumerate().map(|(i, (user, contact, due, service, message))| SmsAlert {
            id: format!("m{i}"),
            user_id: format!("u{user}"),
            // A contact belongs to one user.
            contact_id: format!("u{user}c{contact}"),
            due_at: T0 + due,
            service,
            message,
        }).collect();
        let bundles = bundle_sms(&alerts, BUNDLE_WINDOW_MS);
        let mut seen: Vec<&str> = Vec::new();
        for b in &bundles {
            prop_assert!(fits_one_segment(&b.text), "{:?}", b.text);
            prop_assert!(!b.alert_ids.is_empty());
            let members: Vec<&SmsAlert> = b.alert_ids.iter().map(|id| alerts.iter().find(|a| &a.id == id).expect("known id")).collect();
            let first = members.iter().map(|a| a.due_at).min().unwrap_or_default();
            for a in &members {
                prop_assert_eq!(&a.user_id, &b.user_id);
                prop_assert_eq!(&a.contact_id, &b.contact_id);
                prop_assert!(a.due_at - first < BUNDLE_WINDOW_MS);
                prop_assert!(a.due_at <= b.send_at);
            }
            let prefix = if members.len() == 1 { "ALERT [".to_owned() } else { format!("{} ALERTS: [", members.len()) };
            prop_assert!(b.text.starts_with(&prefix), "{:?}", b.text);
            seen.extend(b.alert_ids.iter().map(String::as_str));
        }
        seen.sort_unstable();
        let mut all: Vec<&str> = alerts.iter().map(|a| a.id.as_str()).collect();
        all.sort_unstable();
        prop_assert_eq!(seen, all);
        prop_assert!(bundles.windows(2).all(|w| w[0].send_at <= w[1].send_at));
    }
}
