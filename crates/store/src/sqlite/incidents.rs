//! Incidents and the audit log (SQLite).

use std::collections::hash_map::Entry;
use std::collections::HashMap;

use async_trait::async_trait;
use klaxon_core::engine::Cause;
use klaxon_core::incident::{IncidentAction, IncidentState};
use klaxon_core::time::Millis;
use serde_json::{json, Value};
use sqlx::types::Json;
use sqlx::{QueryBuilder, Sqlite, SqliteConnection};

use super::ingest::{IngestState, OpenRef};
use super::timers::{apply_change, load_policy_context};
use super::{found, insert_event, SqliteStore};
use crate::plan::{open_changeset, plan, Change, PolicyContext};
use crate::util::{like_pattern, new_id, new_incident_key};
use crate::{
    ActOutcome, Actor, Event, EventFilter, Incident, IncidentFilter, IncidentPatch, IncidentStore,
    NewIncident, Result, StoreError, TriggerOutcome,
};

pub(super) const INCIDENT_SELECT: &str = "SELECT i.id, i.account_id, i.service_id, i.state, i.message, i.description,
    i.details, i.key, i.current_user_id, i.current_policy_rule_id, r.policy_id AS current_policy_id,
    i.escalation_loop_count, i.triggered_at, i.acknowledged_at, i.resolved_at, i.created_at, i.updated_at
    FROM incidents i LEFT JOIN policy_rules r ON r.id = i.current_policy_rule_id";

const EVENT_COLUMNS: &str =
    "id, action, source_type, source_id, actor_type, actor_id, changeset, created_at";

#[async_trait]
impl IncidentStore for SqliteStore {
    async fn trigger_incident(
        &self,
        account_id: &str,
        service_id: &str,
        new: &NewIncident,
        dedup: bool,
        actor: &Actor,
        now: Millis,
    ) -> Result<TriggerOutcome> {
        if dedup {
            let key = new.key.as_deref();
            if self.ingest.is_loaded() {
                // Answered from memory, exactly (see `ingest`): a repeated
                // trigger costs no query. A miss, a disabled or an unknown
                // service go on to the batcher, which decides for certain.
                if let Some(id) =
                    self.ingest
                        .open_if_enabled(account_id, service_id, key, &new.message)
                {
                    return Ok(TriggerOutcome::Deduplicated(id));
                }
            } else {
                // Before the load: a plain read (WAL readers run beside the
                // writer). Answering from this snapshot is correct: the
                // incident was open when we looked.
                let mut conn = self.reader.acquire().await?;
                let message = key.is_none().then_some(new.message.as_str());
                if let Some(existing) =
                    open_incident(&mut conn, account_id, service_id, key, message, true).await?
                {
                    return Ok(TriggerOutcome::Deduplicated(existing.id));
                }
            }
        }
        // Opening incidents goes through the group-commit batcher: one
        // transaction (one fsync) for every trigger queued meanwhile.
        let (reply, answer) = tokio::sync::oneshot::channel();
        let job = TriggerJob {
            account_id: account_id.to_owned(),
            service_id: service_id.to_owned(),
            new: new.clone(),
            dedup,
            actor: actor.clone(),
            now,
            reply,
        };
        self.triggers
            .send(job)
            .await
            .map_err(|_| StoreError::closed())?;
        answer.await.map_err(|_| StoreError::closed())?
    }

    async fn list_incidents(
        &self,
        account_id: &str,
        filter: &IncidentFilter,
    ) -> Result<(Vec<Incident>, i64)> {
        let mut conn = self.reader.acquire().await?;
        let mut count = QueryBuilder::<Sqlite>::new("SELECT COUNT(*) FROM incidents i");
        push_filter(&mut count, account_id, filter);
        let (total,): (i64,) = count.build_query_as().fetch_one(&mut *conn).await?;
        let mut page = QueryBuilder::<Sqlite>::new(INCIDENT_SELECT);
        push_filter(&mut page, account_id, filter);
        page.push(" ORDER BY i.triggered_at DESC, i.id DESC LIMIT ")
            .push_bind(filter.limit)
            .push(" OFFSET ")
            .push_bind(filter.offset);
        let rows = page.build_query_as().fetch_all(&mut *conn).await?;
        Ok((rows, total))
    }

    async fn get_incident(&self, account_id: &str, id: &str) -> Result<Incident> {
        let mut conn = self.reader.acquire().await?;
        fetch(&mut conn, account_id, id).await
    }

    async fn find_open_incident(
        &self,
        account_id: &str,
        service_id: &str,
        key: Option<&str>,
        message: Option<&str>,
    ) -> Result<Option<Incident>> {
        let mut conn = self.reader.acquire().await?;
        open_incident(&mut conn, account_id, service_id, key, message, false).await
    }

    async fn update_incident(
        &self,
        account_id: &str,
        id: &str,
        patch: &IncidentPatch,
        actor: &Actor,
        now: Millis,
    ) -> Result<Incident> {
        let mut tx = self.begin_write().await?;
        let before = fetch(&mut tx, account_id, id).await?;
        let (changes, message, description, details) = crate::util::apply_patch(&before, patch);
        if changes.is_empty() {
            return Ok(before);
        }
        sqlx::query(
            "UPDATE incidents SET message = ?, description = ?, details = ?, updated_at = ?
             WHERE account_id = ? AND id = ?",
        )
        .bind(message)
        .bind(description)
        .bind(details.map(Json))
        .bind(now)
        .bind(account_id)
        .bind(id)
        .execute(&mut *tx)
        .await?;
        insert_event(
            &mut tx,
            account_id,
            "incident.update",
            "incident",
            id,
            actor,
            &Value::Object(changes),
            now,
        )
        .await?;
        let incident = fetch(&mut tx, account_id, id).await?;
        self.commit_then(tx, |i| i.message_changed(id, &incident.message))
            .await?;
        Ok(incident)
    }

    async fn act_on_incident(
        &self,
        account_id: &str,
        id: &str,
        action: IncidentAction,
        actor: &Actor,
        now: Millis,
    ) -> Result<ActOutcome> {
        let mut tx = self.begin_write().await?;
        let before = fetch(&mut tx, account_id, id).await?;
        let pc = load_policy_context(&mut tx, &before.service_id, now).await?;
        let Some(change) = plan(Some(&before), Cause::Act(action), &pc, now)? else {
            // Release the row lock now, not whenever the pool gets to it.
            tx.rollback().await?;
            return Ok(ActOutcome::Unchanged(before));
        };
        apply_change(&mut tx, &before, &change, actor, now).await?;
        let incident = fetch(&mut tx, account_id, id).await?;
        self.commit_then(tx, |i| {
            if change.state == IncidentState::Resolved {
                i.closed(id);
            }
        })
        .await?;
        self.timers_armed(&change);
        Ok(ActOutcome::Changed(incident))
    }

    async fn delete_incident(
        &self,
        account_id: &str,
        id: &str,
        actor: &Actor,
        now: Millis,
    ) -> Result<()> {
        let mut tx = self.begin_write().await?;
        let done = sqlx::query("DELETE FROM incidents WHERE account_id = ? AND id = ?")
            .bind(account_id)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        found(done.rows_affected())?;
        insert_event(
            &mut tx,
            account_id,
            "incident.delete",
            "incident",
            id,
            actor,
            &json!({}),
            now,
        )
        .await?;
        self.commit_then(tx, |i| i.closed(id)).await?;
        Ok(())
    }

    async fn list_events(
        &self,
        account_id: &str,
        filter: &EventFilter,
    ) -> Result<(Vec<Event>, i64)> {
        let mut conn = self.reader.acquire().await?;
        let mut count = QueryBuilder::<Sqlite>::new("SELECT COUNT(*) FROM events");
        push_event_filter(&mut count, account_id, filter);
        let (total,): (i64,) = count.build_query_as().fetch_one(&mut *conn).await?;
        let mut page = QueryBuilder::<Sqlite>::new(format!("SELECT {EVENT_COLUMNS} FROM events"));
        push_event_filter(&mut page, account_id, filter);
        page.push(" ORDER BY seq DESC LIMIT ")
            .push_bind(filter.limit)
            .push(" OFFSET ")
            .push_bind(filter.offset);
        let rows = page.build_query_as().fetch_all(&mut *conn).await?;
        Ok((rows, total))
    }
}

pub(super) async fn fetch(
    conn: &mut SqliteConnection,
    account_id: &str,
    id: &str,
) -> Result<Incident> {
    sqlx::query_as(&format!(
        "{INCIDENT_SELECT} WHERE i.account_id = ? AND i.id = ?"
    ))
    .bind(account_id)
    .bind(id)
    .fetch_optional(conn)
    .await?
    .ok_or(StoreError::NotFound)
}

async fn open_incident(
    conn: &mut SqliteConnection,
    account_id: &str,
    service_id: &str,
    key: Option<&str>,
    message: Option<&str>,
    enabled_only: bool,
) -> Result<Option<Incident>> {
    // The trigger fast path asks only while the service is enabled, so a
    // disabled one falls through to the write path and its clear refusal.
    let enabled = if enabled_only {
        "AND EXISTS (SELECT 1 FROM services s WHERE s.id = i.service_id AND s.state = 'enabled')"
    } else {
        ""
    };
    let (column, value) = match (key, message) {
        (Some(key), _) => ("key", key),
        (None, Some(message)) => ("message", message),
        (None, None) => return Ok(None),
    };
    Ok(sqlx::query_as(&format!(
        "{INCIDENT_SELECT} WHERE i.account_id = ? AND i.service_id = ? AND i.state <> 'resolved' AND i.{column} = ? {enabled}
         ORDER BY i.triggered_at DESC, i.id DESC LIMIT 1"
    ))
    .bind(account_id)
    .bind(service_id)
    .bind(value)
    .fetch_optional(conn)
    .await?)
}

fn push_filter<'a>(qb: &mut QueryBuilder<'a, Sqlite>, account_id: &'a str, f: &'a IncidentFilter) {
    qb.push(" WHERE i.account_id = ").push_bind(account_id);
    if !f.states.is_empty() {
        qb.push(" AND i.state IN (");
        let mut list = qb.separated(", ");
        for s in &f.states {
            list.push_bind(s);
        }
        qb.push(")");
    }
    if let Some(service_id) = &f.service_id {
        qb.push(" AND i.service_id = ").push_bind(service_id);
    }
    if let Some(user_id) = &f.current_user_id {
        qb.push(" AND i.current_user_id = ").push_bind(user_id);
    }
    if let Some(since) = f.since {
        qb.push(" AND i.triggered_at >= ").push_bind(since);
    }
    if let Some(until) = f.until {
        qb.push(" AND i.triggered_at < ").push_bind(until);
    }
    if let Some(q) = &f.q {
        qb.push(" AND i.message LIKE ")
            .push_bind(like_pattern(q))
            .push(" ESCAPE '\\'");
    }
}

fn push_event_filter<'a>(
    qb: &mut QueryBuilder<'a, Sqlite>,
    account_id: &'a str,
    f: &'a EventFilter,
) {
    qb.push(" WHERE account_id = ").push_bind(account_id);
    if let Some((source_type, source_id)) = &f.source {
        qb.push(" AND source_type = ").push_bind(source_type);
        qb.push(" AND source_id = ").push_bind(source_id);
    }
}

/// One trigger, queued for the batcher.
pub(super) struct TriggerJob {
    account_id: String,
    service_id: String,
    new: NewIncident,
    dedup: bool,
    actor: Actor,
    now: Millis,
    reply: tokio::sync::oneshot::Sender<Result<TriggerOutcome>>,
}

/// Most triggers committed together.
const TRIGGER_BATCH: usize = 128;

/// Group commit for opening incidents. SQLite commits one transaction at a
/// time and each durable commit costs an fsync, so under load the triggers
/// waiting in the queue are decided one by one in memory and written
/// together: one multi-row INSERT each for incidents, timers and events,
/// one commit. Nobody is answered before the commit: a 201 still means the
/// incident is on disk. A lone trigger is not delayed: the batch is
/// whatever is queued when the writer is free. Should a batch fail as a
/// whole, each of its triggers is retried alone, so one bad trigger cannot
/// fail its neighbours.
pub(super) async fn run_trigger_batcher(
    writer: sqlx::SqlitePool,
    mut jobs: tokio::sync::mpsc::Receiver<TriggerJob>,
    notify: std::sync::Arc<tokio::sync::Notify>,
    ingest: std::sync::Arc<IngestState>,
) {
    while let Some(first) = jobs.recv().await {
        let mut batch = vec![first];
        while batch.len() < TRIGGER_BATCH {
            match jobs.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let started = std::time::Instant::now();
        let results = match trigger_batch(&writer, &ingest, &batch).await {
            Ok(results) => results,
            Err(err) if batch.len() > 1 => {
                tracing::warn!(error = %err, size = batch.len(), "trigger batch failed; retrying its triggers one by one");
                let mut results = Vec::with_capacity(batch.len());
                for job in &batch {
                    let alone = trigger_batch(&writer, &ingest, std::slice::from_ref(job)).await;
                    results
                        .push(alone.and_then(|mut r| r.pop().unwrap_or(Err(StoreError::NotFound))));
                }
                results
            }
            Err(err) => vec![Err(err)],
        };
        tracing::debug!(
            size = batch.len(),
            micros = started.elapsed().as_micros() as u64,
            "trigger batch committed"
        );
        let mut armed = false;
        for (job, result) in batch.into_iter().zip(results) {
            let result = result.map(|(outcome, a)| {
                armed |= a;
                outcome
            });
            if let Err(err) = &result {
                if !matches!(
                    err,
                    StoreError::NotFound | StoreError::Conflict(_) | StoreError::Taken(_)
                ) {
                    tracing::error!(error = %err, service = %job.service_id, "trigger failed");
                }
            }
            let _ = job.reply.send(result);
        }
        if armed {
            notify.notify_one();
        }
    }
}

/// A trigger's outcome and whether it armed a timer.
type TriggerResult = Result<(TriggerOutcome, bool)>;

/// What one trigger of a batch comes to, decided before anything is written.
enum Decided {
    /// An unresolved incident exists (committed, or opened earlier in the batch).
    Duplicate(String),
    /// A new incident to write.
    Open(Box<Opened>),
}

/// A new incident with its timers and audit event, not yet written.
struct Opened {
    incident: Incident,
    change: Change,
    changeset: Value,
    actor: Actor,
}

async fn trigger_batch(
    writer: &sqlx::SqlitePool,
    ingest: &IngestState,
    batch: &[TriggerJob],
) -> Result<Vec<TriggerResult>> {
    let mut tx = writer.begin_with("BEGIN IMMEDIATE").await?;
    let mut services = HashMap::new();
    let mut opened: Vec<Opened> = Vec::new();
    // Per trigger: Ok(None) = the next of `opened`, Ok(Some(id)) = duplicate.
    let mut decided: Vec<Result<Option<String>>> = Vec::with_capacity(batch.len());
    for job in batch {
        match decide_trigger(&mut tx, ingest, &mut services, &opened, job).await {
            Ok(Decided::Open(o)) => {
                opened.push(*o);
                decided.push(Ok(None));
            }
            Ok(Decided::Duplicate(id)) => decided.push(Ok(Some(id))),
            Err(err) => decided.push(Err(err)),
        }
    }
    if !opened.is_empty() {
        insert_opened(&mut tx, &opened).await?;
    }
    super::commit_then(ingest, tx, |state| {
        for o in &opened {
            let i = &o.incident;
            state.opened(OpenRef {
                id: &i.id,
                service_id: &i.service_id,
                key: &i.key,
                message: &i.message,
                triggered_at: i.triggered_at,
            });
        }
    })
    .await?;
    let mut opened = opened.into_iter();
    Ok(decided
        .into_iter()
        .map(|d| match d? {
            Some(id) => Ok((TriggerOutcome::Deduplicated(id), false)),
            None => {
                let o = opened.next().ok_or(StoreError::NotFound)?;
                let armed = !o.change.schedule.is_empty();
                Ok((TriggerOutcome::Created(o.incident), armed))
            }
        })
        .collect())
}

/// A service's state and policy, loaded once per batch: the batch holds
/// the only writer, so neither can change under it.
type ServiceCache = HashMap<(String, String), (String, PolicyContext)>;

/// Decides one trigger inside the batch's transaction: refused, a
/// duplicate of an open incident (committed, or opened earlier in this
/// batch), or a new incident. Writes nothing. The single writer connection
/// serialises it against every other write, so the check cannot race.
async fn decide_trigger(
    tx: &mut SqliteConnection,
    ingest: &IngestState,
    services: &mut ServiceCache,
    opened: &[Opened],
    job: &TriggerJob,
) -> Result<Decided> {
    let TriggerJob {
        account_id,
        service_id,
        new,
        dedup,
        now,
        ..
    } = job;
    let (dedup, now) = (*dedup, *now);
    let (state, pc) = match services.entry((account_id.clone(), service_id.clone())) {
        Entry::Occupied(known) => known.into_mut(),
        Entry::Vacant(slot) => {
            let service: Option<(String,)> =
                sqlx::query_as("SELECT state FROM services WHERE account_id = ? AND id = ?")
                    .bind(account_id)
                    .bind(service_id)
                    .fetch_optional(&mut *tx)
                    .await?;
            let (state,) = service.ok_or(StoreError::NotFound)?;
            let pc = load_policy_context(&mut *tx, service_id, now).await?;
            slot.insert((state, pc))
        }
    };
    if state != "enabled" {
        return Err(crate::util::service_disabled());
    }
    let key = new.key.as_deref();
    let existing = if key.is_none() && !dedup {
        None
    } else if let Some(o) = opened.iter().rev().find(|o| {
        o.incident.service_id == *service_id
            && match key {
                Some(key) => o.incident.key == key,
                None => o.incident.message == new.message,
            }
    }) {
        Some(o.incident.id.clone())
    } else if let Some(found) = ingest.find_open(service_id, key, &new.message) {
        found
    } else {
        let message = key.is_none().then_some(new.message.as_str());
        open_incident(&mut *tx, account_id, service_id, key, message, false)
            .await?
            .map(|i| i.id)
    };
    if let Some(id) = existing {
        return if dedup {
            Ok(Decided::Duplicate(id))
        } else {
            Err(StoreError::Taken("key"))
        };
    }
    let change = plan(None, Cause::Open, pc, now)?
        .ok_or_else(|| StoreError::Conflict("the engine declined to open the incident".into()))?;
    let incident = Incident {
        id: new_id(),
        account_id: account_id.clone(),
        service_id: service_id.clone(),
        state: "triggered".into(),
        message: new.message.clone(),
        description: new.description.clone(),
        details: new.details.clone().map(Json),
        key: new.key.clone().unwrap_or_else(new_incident_key),
        current_policy_id: change
            .current_policy_rule_id
            .as_ref()
            .and_then(|id| pc.rules.iter().find(|r| &r.id == id))
            .map(|r| r.policy_id.clone()),
        current_user_id: change.current_user_id.clone(),
        current_policy_rule_id: change.current_policy_rule_id.clone(),
        escalation_loop_count: change.loop_count,
        triggered_at: now,
        acknowledged_at: None,
        resolved_at: None,
        created_at: now,
        updated_at: now,
    };
    let changeset = open_changeset(new, &incident.key, &change);
    Ok(Decided::Open(Box::new(Opened {
        incident,
        change,
        changeset,
        actor: job.actor.clone(),
    })))
}

/// Writes a batch's new incidents, their timers and their audit events:
/// one multi-row INSERT per table (SQLite allows 32,766 bound values per
/// statement; a batch of 128 binds at most 1,664 per statement).
async fn insert_opened(tx: &mut SqliteConnection, opened: &[Opened]) -> Result<()> {
    let mut q = QueryBuilder::<Sqlite>::new(
        "INSERT INTO incidents (id, account_id, service_id, state, message, description, details, key,
            current_user_id, current_policy_rule_id, escalation_loop_count, triggered_at, created_at, updated_at) ",
    );
    q.push_values(opened, |mut row, o| {
        let i = &o.incident;
        row.push_bind(&i.id)
            .push_bind(&i.account_id)
            .push_bind(&i.service_id)
            .push_bind("triggered")
            .push_bind(&i.message)
            .push_bind(&i.description)
            .push_bind(&i.details)
            .push_bind(&i.key)
            .push_bind(&i.current_user_id)
            .push_bind(&i.current_policy_rule_id)
            .push_bind(i.escalation_loop_count)
            .push_bind(i.triggered_at)
            .push_bind(i.created_at)
            .push_bind(i.updated_at);
    });
    q.build().execute(&mut *tx).await?;
    let timers: Vec<(&Incident, &str, Millis)> = opened
        .iter()
        .flat_map(|o| {
            o.change
                .schedule
                .iter()
                .map(move |(kind, due)| (&o.incident, *kind, *due))
        })
        .collect();
    if !timers.is_empty() {
        let mut q = QueryBuilder::<Sqlite>::new(
            "INSERT INTO timers (id, account_id, incident_id, kind, due_at, created_at) ",
        );
        q.push_values(&timers, |mut row, (i, kind, due)| {
            row.push_bind(new_id())
                .push_bind(&i.account_id)
                .push_bind(&i.id)
                .push_bind(*kind)
                .push_bind(*due)
                .push_bind(i.created_at);
        });
        q.build().execute(&mut *tx).await?;
    }
    let mut q = QueryBuilder::<Sqlite>::new(
        "INSERT INTO events (id, account_id, action, source_type, source_id, actor_type, actor_id, changeset, created_at) ",
    );
    q.push_values(opened, |mut row, o| {
        let (actor_type, actor_id) = o.actor.parts();
        row.push_bind(new_id())
            .push_bind(&o.incident.account_id)
            .push_bind("incident.create")
            .push_bind("incident")
            .push_bind(&o.incident.id)
            .push_bind(actor_type)
            .push_bind(actor_id)
            .push_bind(Json(&o.changeset))
            .push_bind(o.incident.created_at);
    });
    q.build().execute(&mut *tx).await?;
    Ok(())
}
