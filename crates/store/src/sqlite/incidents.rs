//! Opening incidents (SQLite): the group-commit trigger batcher.

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::sync::Arc;

use klaxon_core::engine::Cause;
use klaxon_core::time::Millis;
use serde_json::Value;
use sqlx::types::Json;

use super::conn::{Conns, LiteTx};
use super::handoff::Handoff;
use super::ingest::{IngestState, OpenRef};
use super::SqliteStore;
use crate::plan::{open_changeset, plan, Change, PolicyContext};
use crate::sql::incidents::{open_incident, Triggers};
use crate::sql::outbox::{insert_messages, plan_messages, ClaimAtQueue, Claimed, Page};
use crate::sql::timers::{insert_timers, load_policy_context, push_row, NewTimer};
use crate::sql::{query, Db};
use crate::stats::Counters;
use crate::util::{new_id, new_incident_key};
use crate::{Actor, Incident, NewIncident, OutgoingMessage, Result, StoreError, TriggerOutcome};

impl Triggers for SqliteStore {
    async fn trigger(
        &self,
        account_id: &str,
        service_id: &str,
        new: &NewIncident,
        dedup: bool,
        actor: &Actor,
        now: Millis,
    ) -> Result<TriggerOutcome> {
        if dedup {
            // Answered from memory, exactly (see `ingest`): a repeated
            // trigger costs no query. A miss, a disabled or an unknown
            // service (or a state not loaded yet) go on to the batcher,
            // which decides for certain.
            if let Some(id) = self.ingest.open_if_enabled(
                account_id,
                service_id,
                new.key.as_deref(),
                &new.message,
            ) {
                return Ok(TriggerOutcome::Deduplicated(id));
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
    conns: Arc<Conns>,
    mut jobs: tokio::sync::mpsc::Receiver<TriggerJob>,
    wake: Wake,
    ingest: Arc<IngestState>,
    handoff: Arc<Handoff>,
    counters: Arc<Counters>,
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
        let results = match trigger_batch(&conns, &ingest, &handoff, &counters, &batch).await {
            Ok(results) => results,
            Err(err) if batch.len() > 1 => {
                tracing::warn!(error = %err, size = batch.len(), "trigger batch failed; retrying its triggers one by one");
                let mut results = Vec::with_capacity(batch.len());
                for job in &batch {
                    let alone = trigger_batch(
                        &conns,
                        &ingest,
                        &handoff,
                        &counters,
                        std::slice::from_ref(job),
                    )
                    .await;
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
        let (mut armed, mut opened) = (false, false);
        for (job, result) in batch.into_iter().zip(results) {
            let result = result.map(|(outcome, a)| {
                armed |= a;
                opened |= matches!(outcome, TriggerOutcome::Created(_));
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
            wake.timers.notify_one();
        }
        if opened {
            // Their pages, if any, are queued or handed over.
            wake.outbox.notify_one();
        }
    }
}

/// Whom the batcher wakes after a commit: the engine when timers were
/// armed, the sender when pages were queued.
pub(super) struct Wake {
    pub timers: Arc<tokio::sync::Notify>,
    pub outbox: Arc<tokio::sync::Notify>,
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
    service_name: String,
    change: Change,
    changeset: Value,
    actor: Actor,
}

async fn trigger_batch(
    conns: &Conns,
    ingest: &IngestState,
    handoff: &Handoff,
    counters: &Counters,
    batch: &[TriggerJob],
) -> Result<Vec<TriggerResult>> {
    let sender = handoff.sender();
    let mut tx = conns.begin().await?;
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
    let mut claimed = Vec::new();
    if !opened.is_empty() {
        let claim = sender.as_ref().map(|(owner, lease_ms)| ClaimAtQueue {
            owner,
            lease_ms: *lease_ms,
        });
        claimed = insert_opened(&mut tx, &opened, claim.as_ref()).await?;
    }
    {
        // Memory moves in commit order: applied before the writer is
        // released (see `ingest`).
        let _writer = tx.commit()?;
        let mut state = ingest.write();
        if state.loaded() {
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
        }
    }
    counters.batch(batch.len());
    counters.opened(opened.len());
    if let Some((owner, _)) = &sender {
        if !claimed.is_empty() {
            handoff.hand_over(owner, claimed);
        }
    }
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
type ServiceCache = HashMap<(String, String), ServiceFacts>;

/// What a batch needs of a service: its state and name, and its policy.
struct ServiceFacts {
    state: String,
    name: String,
    policy: PolicyContext,
}

/// Decides one trigger inside the batch's transaction: refused, a
/// duplicate of an open incident (committed, or opened earlier in this
/// batch), or a new incident. Writes nothing. The single writer connection
/// serialises it against every other write, so the check cannot race.
async fn decide_trigger(
    tx: &mut impl Db,
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
    let facts = match services.entry((account_id.clone(), service_id.clone())) {
        Entry::Occupied(known) => known.into_mut(),
        Entry::Vacant(slot) => {
            let (state, name): (String, String) = tx
                .fetch_one(
                    query("SELECT state, name FROM services WHERE account_id = $1 AND id = $2")
                        .bind(account_id)
                        .bind(service_id),
                )
                .await?;
            let policy = load_policy_context(&mut *tx, service_id, now).await?;
            slot.insert(ServiceFacts {
                state,
                name,
                policy,
            })
        }
    };
    let pc = &facts.policy;
    if facts.state != "enabled" {
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
        open_incident(&mut *tx, account_id, service_id, key, message)
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
        service_name: facts.name.clone(),
        change,
        changeset,
        actor: job.actor.clone(),
    })))
}

/// Writes a batch's new incidents, their timers and their audit events:
/// one multi-row INSERT per table (SQLite allows 32,766 bound values per
/// statement; a batch of 128 binds at most 1,792 per statement).
async fn insert_opened(
    tx: &mut LiteTx<tokio::sync::MutexGuard<'_, rusqlite::Connection>>,
    opened: &[Opened],
    claim: Option<&ClaimAtQueue<'_>>,
) -> Result<Vec<(Millis, OutgoingMessage)>> {
    let mut q = query(
        "INSERT INTO incidents (id, account_id, service_id, state, message, description, details, key,
            current_user_id, current_policy_rule_id, escalation_loop_count, triggered_at, created_at, updated_at) VALUES ",
    );
    let details: Vec<Option<Value>> = opened
        .iter()
        .map(|o| o.incident.details.as_ref().map(|d| d.0.clone()))
        .collect();
    for (n, (o, details)) in opened.iter().zip(&details).enumerate() {
        let i = &o.incident;
        push_row(&mut q, n, |q| {
            q.push_bind(&i.id)
                .push(", ")
                .push_bind(&i.account_id)
                .push(", ")
                .push_bind(&i.service_id)
                .push(", 'triggered', ")
                .push_bind(&i.message)
                .push(", ")
                .push_bind(&i.description)
                .push(", ")
                .push_bind(details)
                .push(", ")
                .push_bind(&i.key)
                .push(", ")
                .push_bind(&i.current_user_id)
                .push(", ")
                .push_bind(&i.current_policy_rule_id)
                .push(", ")
                .push_bind(&i.escalation_loop_count)
                .push(", ")
                .push_bind(&i.triggered_at)
                .push(", ")
                .push_bind(&i.created_at)
                .push(", ")
                .push_bind(&i.updated_at);
        });
    }
    tx.execute(q).await?;
    let timers: Vec<NewTimer<'_>> = opened
        .iter()
        .flat_map(|o| {
            let i = &o.incident;
            o.change.schedule.iter().map(move |(kind, due)| {
                (
                    i.account_id.as_str(),
                    i.id.as_str(),
                    *kind,
                    *due,
                    i.created_at,
                )
            })
        })
        .collect();
    insert_timers(tx, &timers).await?;
    let ids: Vec<String> = opened.iter().map(|_| new_id()).collect();
    let actors: Vec<(&'static str, Option<&str>)> =
        opened.iter().map(|o| o.actor.parts()).collect();
    let mut q = query(
        "INSERT INTO events (id, account_id, action, source_type, source_id, actor_type, actor_id, changeset, created_at) VALUES ",
    );
    for (n, ((o, id), (actor_type, actor_id))) in opened.iter().zip(&ids).zip(&actors).enumerate() {
        push_row(&mut q, n, |q| {
            q.push_bind(id)
                .push(", ")
                .push_bind(&o.incident.account_id)
                .push(", 'incident.create', 'incident', ")
                .push_bind(&o.incident.id)
                .push(", ")
                .push_bind(*actor_type)
                .push(", ")
                .push_bind(actor_id)
                .push(", ")
                .push_bind(&o.changeset)
                .push(", ")
                .push_bind(&o.incident.created_at);
        });
    }
    tx.execute(q).await?;
    // Each trigger's pages are decided at its own instant; one call
    // queues the whole batch's, those due at once claimed for the sender.
    let (pages, of): (Vec<Page<'_>>, Vec<&Opened>) = opened
        .iter()
        .flat_map(|o| {
            let i = &o.incident;
            o.change.pages.iter().map(move |(reason, user)| {
                let page = Page {
                    account: &i.account_id,
                    incident: &i.id,
                    reason: *reason,
                    user,
                    at: i.created_at,
                };
                (page, o)
            })
        })
        .unzip();
    let rows = plan_messages(tx, &pages).await?;
    let claimed = insert_messages(tx, &rows, claim).await?;
    Ok(claimed
        .into_iter()
        .map(|c| (c.lease_until, claimed_message(c, &pages, &of)))
        .collect())
}

/// The message the sender would have claimed for a page written claimed.
fn claimed_message(c: Claimed, pages: &[Page<'_>], of: &[&Opened]) -> OutgoingMessage {
    let (page, o) = (&pages[c.page], of[c.page]);
    let i = &o.incident;
    OutgoingMessage {
        id: c.id,
        account_id: i.account_id.clone(),
        incident_id: i.id.clone(),
        user_id: page.user.to_owned(),
        contact_id: c.contact,
        reason: page.reason.as_str().to_owned(),
        channel: c.channel.to_owned(),
        address: c.address,
        attempts: 1,
        page_at: page.at,
        service_name: o.service_name.clone(),
        message: i.message.clone(),
        description: i.description.clone(),
        details: i.details.clone(),
        incident_state: i.state.clone(),
        bundle: Vec::new(),
    }
}
