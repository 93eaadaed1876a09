//! Durable timers and carrying out engine decisions, for both backends.
//! Firing a batch of due timers is each backend's own ([`TimerEngine`]):
//! PostgreSQL claims rows with `SKIP LOCKED` and isolates failures in
//! savepoints, SQLite runs the batch on its single writer; both plan it
//! with `plan::plan_batch` and use the shared pieces here.

use std::future::Future;

use async_trait::async_trait;
use klaxon_core::time::{Millis, DAY_MS};

use super::incidents::incident_select;
use super::row::from_row;
use super::{audit, query, Backend, Change, Db, Query, Write};
use crate::plan::{self, DueTimer, PolicyContext, ServicePolicyRow};
use crate::util::{new_id, transition_changeset};
use crate::{Actor, FiredTimer, Incident, Result, Timer, TimerStore};

from_row!(Timer {
    id,
    incident_id,
    kind,
    due_at,
    attempts
});

from_row!(DueTimer {
    id,
    incident_id,
    kind,
    due_at,
    attempts
});

from_row!(ServicePolicyRow {
    account_id,
    policy_id,
    loop_limit,
    acknowledge_timeout,
    auto_resolve_timeout,
});

/// The native half of timers.
pub(crate) trait TimerEngine {
    /// Fires up to `limit` timers due at `now`.
    fn fire_due(
        &self,
        now: Millis,
        limit: i64,
    ) -> impl Future<Output = Result<Vec<FiredTimer>>> + Send;

    /// Returns when timers may have been armed or changed.
    fn timers_armed(&self) -> impl Future<Output = ()> + Send;
}

#[async_trait]
impl<B: Backend + TimerEngine> TimerStore for B {
    async fn fire_due_timers(&self, now: Millis, limit: i64) -> Result<Vec<FiredTimer>> {
        self.fire_due(now, limit).await
    }

    async fn next_timer_due(&self) -> Result<Option<Millis>> {
        let row: Option<(Millis,)> = self
            .read()
            .await?
            .fetch_optional(query("SELECT due_at FROM timers ORDER BY due_at LIMIT 1"))
            .await?;
        Ok(row.map(|(due,)| due))
    }

    async fn timers_changed(&self) {
        self.timers_armed().await
    }

    async fn list_timers(&self, account_id: &str, incident_id: &str) -> Result<Vec<Timer>> {
        self.read()
            .await?
            .fetch_all(
                query(
                    r#"SELECT id, incident_id, kind, due_at, attempts FROM timers
                       WHERE account_id = $1 AND incident_id = $2 ORDER BY due_at, id COLLATE "C""#,
                )
                .bind(account_id)
                .bind(incident_id),
            )
            .await
    }
}

/// The due timers, oldest first (claimed, on PostgreSQL, so that one
/// process fires each).
pub(crate) async fn due_timers(db: &mut impl Db, now: Millis, limit: i64) -> Result<Vec<DueTimer>> {
    db.fetch_all(
        query(
            r#"SELECT id, incident_id, kind, due_at, attempts FROM timers
               WHERE due_at <= $1 ORDER BY due_at, id COLLATE "C" LIMIT $2
               FOR UPDATE SKIP LOCKED"#,
        )
        .bind(&now)
        .bind(&limit),
    )
    .await
}

/// The incidents with these ids.
pub(crate) async fn fetch_incidents(db: &mut impl Db, ids: &[String]) -> Result<Vec<Incident>> {
    let mut q = query(concat!(incident_select!(), " WHERE i.id IN "));
    q.push_list(ids);
    db.fetch_all(q).await
}

/// Loads what the engine needs about an incident's service and policy.
pub(crate) async fn load_policy_context(
    db: &mut impl Db,
    service_id: &str,
    now: Millis,
) -> Result<PolicyContext> {
    let ServicePolicyRow {
        account_id,
        policy_id,
        loop_limit,
        acknowledge_timeout,
        auto_resolve_timeout,
    } = db
        .fetch_one(
            query(
                "SELECT s.account_id, s.policy_id, p.loop_limit, s.acknowledge_timeout, s.auto_resolve_timeout
                 FROM services s JOIN policies p ON p.id = s.policy_id WHERE s.id = $1",
            )
            .bind(service_id),
        )
        .await?;
    let rules = super::policies::rules_of(db, &account_id, &policy_id).await?;
    let mut schedules = std::collections::HashMap::new();
    for id in PolicyContext::schedule_ids(&rules) {
        // Overrides that ended a day before `now` cannot matter any more.
        let data = super::schedules::load(db, &account_id, &id, now - DAY_MS).await?;
        schedules.insert(id, data.to_core());
    }
    Ok(PolicyContext {
        rules,
        loop_limit,
        acknowledge_timeout,
        auto_resolve_timeout,
        schedules,
    })
}

/// Arming a kind that is pending already replaces it (one pending timer per
/// incident and kind, `timers_incident_kind`).
macro_rules! rearm {
    () => {
        " ON CONFLICT (incident_id, kind) DO UPDATE
    SET due_at = excluded.due_at, attempts = 0, created_at = excluded.created_at"
    };
}

/// Cancels and arms an incident's timers as a change says.
pub(crate) async fn write_timers(
    db: &mut impl Write,
    account_id: &str,
    incident_id: &str,
    change: &plan::Change,
    now: Millis,
) -> Result<()> {
    if !change.cancel.is_empty() {
        let mut q =
            query("DELETE FROM timers WHERE incident_id = $1 AND kind IN ").bind(incident_id);
        q.push_list(&change.cancel);
        db.execute(q).await?;
    }
    for (kind, due) in &change.schedule {
        let id = new_id();
        db.execute(
            query(concat!(
                "INSERT INTO timers (id, account_id, incident_id, kind, due_at, created_at) VALUES ($1, $2, $3, $4, $5, $6)",
                rearm!()
            ))
            .bind(&id)
            .bind(account_id)
            .bind(incident_id)
            .bind(*kind)
            .bind(due)
            .bind(&now),
        )
        .await?;
    }
    if !change.schedule.is_empty() {
        db.record(Change::TimersArmed);
    }
    Ok(())
}

/// A timer to insert: account, incident, kind, due, armed at.
pub(crate) type NewTimer<'a> = (&'a str, &'a str, &'static str, Millis, Millis);

/// Inserts timers, many rows per statement (re-arming pending ones).
pub(crate) async fn insert_timers(db: &mut impl Db, timers: &[NewTimer<'_>]) -> Result<()> {
    // Both databases allow over 30,000 bound values per statement.
    for chunk in timers.chunks(1000) {
        let ids: Vec<String> = chunk.iter().map(|_| new_id()).collect();
        let mut q = query(
            "INSERT INTO timers (id, account_id, incident_id, kind, due_at, created_at) VALUES ",
        );
        for (i, ((account, incident, kind, due, armed_at), id)) in
            chunk.iter().zip(&ids).enumerate()
        {
            push_row(&mut q, i, |q| {
                q.push_bind(id)
                    .push(", ")
                    .push_bind(*account)
                    .push(", ")
                    .push_bind(*incident)
                    .push(", ")
                    .push_bind(*kind)
                    .push(", ")
                    .push_bind(due)
                    .push(", ")
                    .push_bind(armed_at);
            });
        }
        q.push(rearm!());
        db.execute(q).await?;
    }
    Ok(())
}

/// Writes the engine's audit events (actor: the system), many rows per
/// statement: `(account, incident, action, changeset)`.
pub(crate) async fn insert_events(
    db: &mut impl Db,
    events: &[(String, String, String, serde_json::Value)],
    now: Millis,
) -> Result<()> {
    for chunk in events.chunks(1000) {
        let ids: Vec<String> = chunk.iter().map(|_| new_id()).collect();
        let mut q = query(
            "INSERT INTO events (id, account_id, action, source_type, source_id, actor_type, actor_id, changeset, created_at) VALUES ",
        );
        for (i, ((account, incident, action, changes), id)) in chunk.iter().zip(&ids).enumerate() {
            push_row(&mut q, i, |q| {
                q.push_bind(id)
                    .push(", ")
                    .push_bind(account)
                    .push(", ")
                    .push_bind(action)
                    .push(", 'incident', ")
                    .push_bind(incident)
                    .push(", 'system', NULL, ")
                    .push_bind(changes)
                    .push(", ")
                    .push_bind(&now);
            });
        }
        db.execute(q).await?;
    }
    Ok(())
}

/// Appends `(…)` of a multi-row `VALUES`, comma-separated from the
/// previous row.
pub(crate) fn push_row<'a>(q: &mut Query<'a>, i: usize, row: impl FnOnce(&mut Query<'a>)) {
    q.push(if i == 0 { "(" } else { ", (" });
    row(q);
    q.push(")");
}

/// Writes a planned change of an existing incident: the row, its timers
/// and the audit event.
pub(crate) async fn apply_change(
    db: &mut impl Write,
    before: &Incident,
    change: &plan::Change,
    actor: &Actor,
    now: Millis,
) -> Result<()> {
    let account_id = &before.account_id;
    db.execute(
        query(
            "UPDATE incidents SET state = $1, acknowledged_at = $2, resolved_at = $3, current_user_id = $4,
                current_policy_rule_id = $5, escalation_loop_count = $6, updated_at = $7
             WHERE account_id = $8 AND id = $9",
        )
        .bind(change.state.as_str())
        .bind(&change.acknowledged_at)
        .bind(&change.resolved_at)
        .bind(&change.current_user_id)
        .bind(&change.current_policy_rule_id)
        .bind(&change.loop_count)
        .bind(&now)
        .bind(account_id)
        .bind(&before.id),
    )
    .await?;
    write_timers(db, account_id, &before.id, change, now).await?;
    // The outbox follows the incident: no more pages once it is
    // acknowledged or resolved, none to a previous assignee.
    if change.state != klaxon_core::IncidentState::Triggered {
        super::outbox::cancel_pages(db, &before.id, None, now).await?;
    } else if change.current_user_id != before.current_user_id {
        super::outbox::cancel_pages(db, &before.id, change.current_user_id.as_deref(), now).await?;
    }
    // Those already paged hear what happened (before this change's own
    // pages exist, so a new assignee is not told twice).
    let mut queued = false;
    if let Some(update) = change.status_update {
        let actor_user = match actor {
            Actor::User(id) => Some(id.as_str()),
            _ => None,
        };
        let assignee = (update.action == klaxon_core::IncidentAction::Escalate)
            .then_some(change.current_user_id.as_deref())
            .flatten();
        queued |= super::outbox::enqueue_updates(
            db,
            &[super::outbox::Update {
                account: account_id,
                incident: &before.id,
                action: update.action,
                skip: [actor_user, assignee],
                at: now,
            }],
        )
        .await?;
    }
    let pages: Vec<super::outbox::Page<'_>> = change
        .pages
        .iter()
        .map(|(reason, user)| super::outbox::Page {
            account: account_id,
            incident: &before.id,
            reason: *reason,
            user,
            at: now,
        })
        .collect();
    queued |= super::outbox::enqueue_pages(db, &pages).await?;
    if queued {
        db.record(Change::MessagesQueued);
    }
    let mut changes = transition_changeset(
        before,
        change.state,
        &change.current_user_id,
        &change.current_policy_rule_id,
        change.loop_count,
    );
    change.annotate(&mut changes);
    let action = format!("incident.{}", change.action.as_str());
    audit(account_id, actor, now)
        .event(db, &action, ("incident", &before.id), &changes)
        .await
}
