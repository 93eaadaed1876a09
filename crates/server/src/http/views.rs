//! JSON representations. Lists are bare arrays, objects bare objects (no
//! root key); every resource carries `_links`, and a link whose target is
//! absent is left out.

use klaxon_core::time::format_ts;
use klaxon_store::{
    ApiToken, Contact, Event, Incident, Invitation, NotificationRule, Policy, PolicyRule, Service,
    User,
};
use serde::Serialize;
use serde_json::{json, Value};

fn href(path: String) -> Value {
    json!({ "href": path })
}

fn ts(ms: Option<i64>) -> Value {
    ms.map_or(Value::Null, |ms| Value::String(format_ts(ms)))
}

/// An incident, with exactly the seed documents' fields and more, in their
/// order. Serialised straight from the row: the trigger path answers with
/// it, so it builds no intermediate JSON tree.
pub fn incident(i: &Incident) -> IncidentView<'_> {
    IncidentView {
        id: &i.id,
        state: &i.state,
        triggered_at: Ts(i.triggered_at),
        acknowledged_at: i.acknowledged_at.map(Ts),
        resolved_at: i.resolved_at.map(Ts),
        message: &i.message,
        description: i.description.as_deref(),
        details: i.details.as_ref().map(|d| &d.0),
        key: &i.key,
        service_id: &i.service_id,
        current_user_id: i.current_user_id.as_deref(),
        current_policy_rule_id: i.current_policy_rule_id.as_deref(),
        escalation_loop_count: i.escalation_loop_count,
        created_at: Ts(i.created_at),
        updated_at: Ts(i.updated_at),
        links: IncidentLinks {
            this: Href("/incidents/", &i.id, None),
            service: Href("/services/", &i.service_id, None),
            current_user: i
                .current_user_id
                .as_deref()
                .map(|u| Href("/users/", u, None)),
            current_policy_rule: i
                .current_policy_id
                .as_deref()
                .zip(i.current_policy_rule_id.as_deref())
                .map(|(policy, rule)| Href("/policies/", policy, Some(("/rules/", rule)))),
        },
    }
}

/// See [`incident`].
#[derive(Serialize)]
pub struct IncidentView<'a> {
    id: &'a str,
    state: &'a str,
    triggered_at: Ts,
    acknowledged_at: Option<Ts>,
    resolved_at: Option<Ts>,
    message: &'a str,
    description: Option<&'a str>,
    details: Option<&'a Value>,
    key: &'a str,
    service_id: &'a str,
    current_user_id: Option<&'a str>,
    current_policy_rule_id: Option<&'a str>,
    escalation_loop_count: i64,
    created_at: Ts,
    updated_at: Ts,
    #[serde(rename = "_links")]
    links: IncidentLinks<'a>,
}

#[derive(Serialize)]
struct IncidentLinks<'a> {
    #[serde(rename = "self")]
    this: Href<'a>,
    service: Href<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    current_user: Option<Href<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    current_policy_rule: Option<Href<'a>>,
}

/// An instant, serialised as `2013-05-14T06:17:54Z`.
struct Ts(i64);

impl Serialize for Ts {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format_ts(self.0))
    }
}

/// `{"href": prefix + id [+ sub-prefix + sub-id]}`, written without
/// building the path first.
struct Href<'a>(&'static str, &'a str, Option<(&'static str, &'a str)>);

impl Serialize for Href<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        struct Path<'b>(&'b Href<'b>);
        impl std::fmt::Display for Path<'_> {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                let Href(prefix, id, sub) = self.0;
                write!(f, "{prefix}{id}")?;
                if let Some((prefix, id)) = sub {
                    write!(f, "{prefix}{id}")?;
                }
                Ok(())
            }
        }
        let mut map = s.serialize_map(Some(1))?;
        map.serialize_entry("href", &format_args!("{}", Path(self)))?;
        map.end()
    }
}

/// A user (never the password hash).
pub fn user(u: &User) -> Value {
    json!({
        "id": u.id,
        "name": u.name,
        "email": u.email,
        "role": u.role,
        "time_zone": u.time_zone,
        "created_at": format_ts(u.created_at),
        "updated_at": format_ts(u.updated_at),
        "_links": {
            "self": href(format!("/users/{}", u.id)),
            "events": href(format!("/users/{}/events", u.id)),
            "contacts": href(format!("/users/{}/contacts", u.id)),
            "notification_rules": href(format!("/users/{}/notification_rules", u.id)),
        },
    })
}

/// One of a user's contacts.
pub fn contact(c: &Contact) -> Value {
    json!({
        "id": c.id,
        "type": c.kind,
        "label": c.label,
        "address": c.address,
        "created_at": format_ts(c.created_at),
        "updated_at": format_ts(c.updated_at),
        "_links": {
            "self": href(format!("/users/{}/contacts/{}", c.user_id, c.id)),
            "user": href(format!("/users/{}", c.user_id)),
        },
    })
}

/// A message of the notification outbox.
pub fn notification(n: &klaxon_store::Notification) -> Value {
    json!({
        "id": n.id,
        "incident_id": n.incident_id,
        "user_id": n.user_id,
        "contact_id": n.contact_id,
        "reason": n.reason,
        "channel": n.channel,
        "address": n.address,
        "status": n.status,
        "attempts": n.attempts,
        "due_at": format_ts(n.due_at),
        "sent_at": n.sent_at.map(format_ts),
        "provider_id": n.provider_id,
        "error": n.error,
        "created_at": format_ts(n.created_at),
        "updated_at": format_ts(n.updated_at),
        "_links": {
            "incident": href(format!("/incidents/{}", n.incident_id)),
            "user": href(format!("/users/{}", n.user_id)),
        },
    })
}

/// One of a user's notification rules.
pub fn notification_rule(r: &NotificationRule) -> Value {
    json!({
        "id": r.id,
        "contact_id": r.contact_id,
        "start_delay": r.start_delay,
        "created_at": format_ts(r.created_at),
        "updated_at": format_ts(r.updated_at),
        "_links": {
            "self": href(format!("/users/{}/notification_rules/{}", r.user_id, r.id)),
            "user": href(format!("/users/{}", r.user_id)),
            "contact": href(format!("/users/{}/contacts/{}", r.user_id, r.contact_id)),
        },
    })
}

/// A token's metadata; `secret` only once, at creation.
pub fn token(t: &ApiToken, secret: Option<&str>) -> Value {
    let mut v = json!({
        "id": t.id,
        "name": t.name,
        "user_id": t.user_id,
        "kind": t.kind,
        "schedule_id": t.schedule_id,
        "created_at": format_ts(t.created_at),
        "last_used_at": ts(t.last_used_at),
        "expires_at": ts(t.expires_at),
        "_links": { "self": href(format!("/users/{}/tokens/{}", t.user_id, t.id)) },
    });
    if let (Some(secret), Some(obj)) = (secret, v.as_object_mut()) {
        obj.insert("token".into(), Value::String(secret.to_owned()));
    }
    v
}

/// An invitation; its `code` only once, at creation.
pub fn invitation(i: &Invitation, code: Option<&str>) -> Value {
    let mut v = json!({
        "id": i.id,
        "role": i.role,
        "email": i.email,
        "expires_at": format_ts(i.expires_at),
        "used_at": ts(i.used_at),
        "used_by": i.used_by,
        "created_at": format_ts(i.created_at),
        "_links": { "self": href(format!("/invitations/{}", i.id)) },
    });
    if let (Some(code), Some(obj)) = (code, v.as_object_mut()) {
        obj.insert("code".into(), Value::String(code.to_owned()));
    }
    v
}

/// `critical` if any incident is triggered, `warning` if any is
/// acknowledged, `ok` otherwise; `disabled` for a service in maintenance.
pub fn health(s: &Service) -> &'static str {
    if s.state != "enabled" {
        "disabled"
    } else if s.triggered_count > 0 {
        "critical"
    } else if s.acknowledged_count > 0 {
        "warning"
    } else {
        "ok"
    }
}

/// A service; the integration key is shown to admins only.
pub fn service(s: &Service, show_key: bool) -> Value {
    let mut v = json!({
        "id": s.id,
        "name": s.name,
        "description": s.description,
        "policy_id": s.policy_id,
        "acknowledge_timeout": s.acknowledge_timeout,
        "auto_resolve_timeout": s.auto_resolve_timeout,
        "state": s.state,
        "health": health(s),
        "incident_counts": {
            "triggered": s.triggered_count,
            "acknowledged": s.acknowledged_count,
            "resolved": s.resolved_count,
        },
        "created_at": format_ts(s.created_at),
        "updated_at": format_ts(s.updated_at),
        "_links": {
            "self": href(format!("/services/{}", s.id)),
            "policy": href(format!("/policies/{}", s.policy_id)),
            "incidents": href(format!("/services/{}/incidents", s.id)),
            "events": href(format!("/services/{}/events", s.id)),
        },
    });
    if let (true, Some(obj)) = (show_key, v.as_object_mut()) {
        obj.insert(
            "integration_key".into(),
            Value::String(s.integration_key.clone()),
        );
    }
    v
}

/// An escalation policy.
pub fn policy(p: &Policy) -> Value {
    json!({
        "id": p.id,
        "name": p.name,
        "loop_limit": p.loop_limit,
        "created_at": format_ts(p.created_at),
        "updated_at": format_ts(p.updated_at),
        "_links": {
            "self": href(format!("/policies/{}", p.id)),
            "rules": href(format!("/policies/{}/rules", p.id)),
            "events": href(format!("/policies/{}/events", p.id)),
        },
    })
}

/// A policy rule.
pub fn rule(r: &PolicyRule) -> Value {
    let assignee = match r.assignment_type.as_str() {
        "user" => format!("/users/{}", r.assignee_id),
        _ => format!("/schedules/{}", r.assignee_id),
    };
    json!({
        "id": r.id,
        "policy_id": r.policy_id,
        "position": r.position,
        "escalation_timeout": r.escalation_timeout,
        "assignment": { "type": r.assignment_type, "id": r.assignee_id },
        "created_at": format_ts(r.created_at),
        "updated_at": format_ts(r.updated_at),
        "_links": {
            "self": href(format!("/policies/{}/rules/{}", r.policy_id, r.id)),
            "policy": href(format!("/policies/{}", r.policy_id)),
            "assignee": href(assignee),
        },
    })
}

/// An audit event.
pub fn event(e: &Event) -> Value {
    json!({
        "id": e.id,
        "action": e.action,
        "source": { "type": e.source_type, "id": e.source_id },
        "actor": { "type": e.actor_type, "id": e.actor_id },
        "changeset": e.changeset.0,
        "created_at": format_ts(e.created_at),
    })
}

/// An on-call schedule.
pub fn schedule(s: &klaxon_store::Schedule) -> Value {
    json!({
        "id": s.id,
        "name": s.name,
        "time_zone": s.time_zone,
        "created_at": format_ts(s.created_at),
        "updated_at": format_ts(s.updated_at),
        "_links": {
            "self": href(format!("/schedules/{}", s.id)),
            "layers": href(format!("/schedules/{}/layers", s.id)),
            "overrides": href(format!("/schedules/{}/overrides", s.id)),
            "on_call": href(format!("/schedules/{}/on_call", s.id)),
            "shifts": href(format!("/schedules/{}/shifts", s.id)),
            "calendar": href(format!("/schedules/{}.ics", s.id)),
        },
    })
}

/// A schedule layer, in the request's shape (`rule` is the rotation).
pub fn layer(l: &klaxon_store::Layer) -> Value {
    json!({
        "id": l.id,
        "schedule_id": l.schedule_id,
        "position": l.position,
        "rule": l.rotation,
        "count": l.count,
        "start_at": l.start_at,
        "users": l.users.0,
        "restrictions": l.restrictions.0,
        "created_at": format_ts(l.created_at),
        "updated_at": format_ts(l.updated_at),
        "_links": { "self": href(format!("/schedules/{}/layers/{}", l.schedule_id, l.id)) },
    })
}

/// A schedule override.
pub fn schedule_override(o: &klaxon_store::ScheduleOverride) -> Value {
    json!({
        "id": o.id,
        "schedule_id": o.schedule_id,
        "user_id": o.user_id,
        "start_at": format_ts(o.start_at),
        "end_at": format_ts(o.end_at),
        "created_at": format_ts(o.created_at),
        "_links": {
            "self": href(format!("/schedules/{}/overrides/{}", o.schedule_id, o.id)),
            "user": href(format!("/users/{}", o.user_id)),
        },
    })
}

/// One shift of a schedule's final on-call list.
pub fn shift(s: &klaxon_core::schedule::Shift) -> Value {
    json!({
        "user_id": s.user,
        "start": format_ts(s.start),
        "end": format_ts(s.end),
        "_links": { "user": href(format!("/users/{}", s.user)) },
    })
}
