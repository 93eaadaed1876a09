//! The notification outbox, for both backends.
//!
//! A page becomes rows here in the same transaction as the change that
//! causes it ([`enqueue_pages`]): one row per message, due when the user's
//! notification rule says (`core::notify::expand`). A user without
//! contacts is paged at their sign-in address, so nobody on call is paged
//! on nothing. Acknowledging or resolving an incident cancels its queued
//! pages in the same transaction ([`cancel_pages`]), so a message is either
//! claimed before that commit or never sent.
//!
//! Senders claim due rows with a lease (`FOR UPDATE SKIP LOCKED` on
//! PostgreSQL, so several processes never claim one row twice): `queued →
//! sending`, and a `sending` row whose lease ran out (its sender died) is
//! claimed again. A claimed page whose incident is no longer triggered is
//! cancelled instead. The sender reports the outcome: sent (or delivered),
//! retried later (`queued` again, due at the retry time), or failed.
//!
//! SQLite's trigger batcher writes a new incident's pages that are due at
//! once already claimed for the process's sender and hands them over in
//! memory after the commit ([`insert_messages`], `OutboxWake::handed_off`,
//! `sqlite/handoff.rs`): the sender's claim then needs no transaction.

use std::collections::HashMap;
use std::future::Future;

use async_trait::async_trait;
use klaxon_core::contact::ContactType;
use klaxon_core::engine::PageReason;
use klaxon_core::notify::sms::BUNDLE_WINDOW_MS;
use klaxon_core::notify::{expand, ContactRef, NotificationRuleSpec};
use klaxon_core::time::Millis;
use klaxon_core::IncidentAction;

use super::row::from_row;
use super::timers::push_row;
use super::{query, Backend, Db};
use crate::util::new_id;
use crate::{
    is_page_reason, Notification, NotificationsOf, OutboxStore, OutgoingMessage, Result,
    SendOutcome,
};

from_row!(Notification {
    id,
    account_id,
    incident_id,
    user_id,
    contact_id,
    reason,
    channel,
    address,
    status,
    attempts,
    page_at,
    due_at,
    provider_id,
    error,
    sent_at,
    created_at,
    updated_at,
});

from_row!(OutgoingMessage {
    id,
    account_id,
    incident_id,
    user_id,
    contact_id,
    reason,
    channel,
    address,
    attempts,
    page_at,
    service_name,
    message,
    description,
    details,
    incident_state;
    bundle: Vec::new(),
});

/// Notification columns.
macro_rules! notification_columns {
    () => {
        "id, account_id, incident_id, user_id, contact_id, reason, channel, address, status,
         attempts, page_at, due_at, provider_id, error, sent_at, created_at, updated_at"
    };
}

/// The native half of the outbox: waking senders, and handing them what
/// was claimed for them as it was queued.
pub(crate) trait OutboxWake {
    /// Returns when messages may have been queued.
    fn messages_queued(&self) -> impl Future<Output = ()> + Send;

    /// Messages already claimed for `owner` when they were queued (see
    /// [`insert_messages`]), up to `limit`, whose lease still runs at
    /// `now`: taken from memory, no transaction. A backend that does not
    /// claim as it queues has none. `lease_until - now` is the lease
    /// `owner` asks for, which the next such claims use.
    fn handed_off(
        &self,
        _owner: &str,
        _now: Millis,
        _lease_until: Millis,
        _limit: i64,
    ) -> Vec<OutgoingMessage> {
        Vec::new()
    }
}

#[async_trait]
impl<B: Backend + OutboxWake> OutboxStore for B {
    async fn claim_messages(
        &self,
        owner: &str,
        now: Millis,
        lease_until: Millis,
        limit: i64,
    ) -> Result<Vec<OutgoingMessage>> {
        let mut handed = self.handed_off(owner, now, lease_until, limit);
        if handed.len() as i64 >= limit {
            return Ok(handed);
        }
        let rest = limit - handed.len() as i64;
        match claim_queued(self, owner, now, lease_until, rest).await {
            Ok(claimed) => {
                handed.extend(claimed);
                Ok(handed)
            }
            // What was handed over is leased already: send it anyway.
            Err(err) if !handed.is_empty() => {
                tracing::warn!(error = %err, "claiming queued messages failed; sending those handed over");
                Ok(handed)
            }
            Err(err) => Err(err),
        }
    }

    async fn finish_messages(
        &self,
        owner: &str,
        outcomes: &[(String, SendOutcome)],
        now: Millis,
    ) -> Result<Vec<String>> {
        use super::Write;
        let mut tx = self.write().await?;
        let mut lost = Vec::new();
        let mut requeued = false;
        for (id, outcome) in outcomes {
            let (status, provider_id, error, due_at, sent_at) = match outcome {
                SendOutcome::Sent {
                    provider_id,
                    delivered,
                } => (
                    if *delivered { "delivered" } else { "sent" },
                    provider_id.as_deref(),
                    None,
                    None,
                    Some(now),
                ),
                SendOutcome::Retry { error, at } => {
                    ("queued", None, Some(error.as_str()), Some(*at), None)
                }
                SendOutcome::Failed { error } => ("failed", None, Some(error.as_str()), None, None),
            };
            requeued |= due_at.is_some();
            let done = tx
                .execute(
                    query(
                        "UPDATE outbox SET status = $1, provider_id = COALESCE($2, provider_id),
                            error = $3, due_at = COALESCE($4, due_at), sent_at = $5,
                            lease_owner = NULL, lease_until = NULL, updated_at = $6
                         WHERE id = $7 AND lease_owner = $8 AND status = 'sending'",
                    )
                    .bind(status)
                    .bind(&provider_id)
                    .bind(&error)
                    .bind(&due_at)
                    .bind(&sent_at)
                    .bind(&now)
                    .bind(id)
                    .bind(owner),
                )
                .await?;
            if done == 0 {
                lost.push(id.clone());
            }
        }
        if requeued {
            tx.record(super::Change::MessagesQueued);
        }
        tx.commit().await?;
        Ok(lost)
    }

    async fn next_message_due(&self) -> Result<Option<Millis>> {
        let row: Option<(Option<Millis>,)> = self
            .read()
            .await?
            .fetch_optional(query(
                "SELECT MIN(t) FROM (
                    SELECT MIN(due_at) AS t FROM outbox WHERE status = 'queued'
                    UNION ALL
                    SELECT MIN(lease_until) AS t FROM outbox WHERE status = 'sending'
                 ) AS due",
            ))
            .await?;
        Ok(row.and_then(|(t,)| t))
    }

    async fn messages_changed(&self) {
        self.messages_queued().await
    }

    async fn list_notifications(
        &self,
        account_id: &str,
        of: NotificationsOf<'_>,
    ) -> Result<Vec<Notification>> {
        let (sql, id) = match of {
            NotificationsOf::Incident(id) => (
                concat!(
                    "SELECT ",
                    notification_columns!(),
                    r#" FROM outbox WHERE account_id = $1 AND incident_id = $2
                     ORDER BY created_at, due_at, id COLLATE "C""#
                ),
                id,
            ),
            NotificationsOf::User(id) => (
                concat!(
                    "SELECT ",
                    notification_columns!(),
                    r#" FROM outbox WHERE account_id = $1 AND user_id = $2
                     ORDER BY created_at DESC, due_at DESC, id COLLATE "C" DESC LIMIT 500"#
                ),
                id,
            ),
        };
        self.read()
            .await?
            .fetch_all(query(sql).bind(account_id).bind(id))
            .await
    }
}

/// A due row: id, incident, reason, channel, address.
type Due = (String, String, String, String, String);

/// Holds back SMS pages to numbers that were texted less than the bundle
/// window ago: they stay queued until the window ends, and go out then
/// as one `N ALERTS` text (the sender bundles what it claims together).
/// The first page of a burst goes at once; the rest wait at most the
/// window. Returns the rows to claim now.
async fn hold_sms_pages(db: &mut impl Db, due: Vec<Due>, now: Millis) -> Result<Vec<Due>> {
    let mut numbers: Vec<&str> = due
        .iter()
        .filter(|d| d.3 == "sms" && is_page_reason(&d.2))
        .map(|d| d.4.as_str())
        .collect();
    if numbers.is_empty() {
        return Ok(due);
    }
    numbers.sort_unstable();
    numbers.dedup();
    let since = now - BUNDLE_WINDOW_MS;
    let mut q = query(
        "SELECT address, MAX(COALESCE(sent_at, updated_at)) FROM outbox
         WHERE channel = 'sms' AND status IN ('sending', 'sent', 'delivered')
           AND COALESCE(sent_at, updated_at) > $1 AND address IN ",
    )
    .bind(&since);
    q.push_list(&numbers).push(" GROUP BY address");
    let recent: HashMap<String, Millis> = db
        .fetch_all::<(String, Millis)>(q)
        .await?
        .into_iter()
        .collect();
    if recent.is_empty() {
        return Ok(due);
    }
    let mut claim = Vec::with_capacity(due.len());
    // Held rows by the end of their window: one statement per number.
    let mut held: HashMap<Millis, Vec<String>> = HashMap::new();
    for d in due {
        match recent.get(&d.4) {
            Some(last) if d.3 == "sms" && is_page_reason(&d.2) => {
                held.entry(last + BUNDLE_WINDOW_MS).or_default().push(d.0);
            }
            _ => claim.push(d),
        }
    }
    for (until, ids) in &held {
        let mut q = query(
            "UPDATE outbox SET status = 'queued', due_at = $1, lease_owner = NULL,
                lease_until = NULL WHERE id IN ",
        )
        .bind(until);
        q.push_list(ids);
        db.execute(q).await?;
    }
    Ok(claim)
}

/// Claims up to `limit` due messages from the queue (and sends whose lease
/// ran out) for `owner`, in one transaction.
async fn claim_queued<B: Backend>(
    store: &B,
    owner: &str,
    now: Millis,
    lease_until: Millis,
    limit: i64,
) -> Result<Vec<OutgoingMessage>> {
    use super::Write;
    let mut tx = store.write().await?;
    let due: Vec<Due> = tx
        .fetch_all(
            query(
                "SELECT id, incident_id, reason, channel, address FROM outbox
                 WHERE (status = 'queued' AND due_at <= $1)
                    OR (status = 'sending' AND lease_until <= $1)
                 ORDER BY due_at LIMIT $2
                 FOR UPDATE SKIP LOCKED",
            )
            .bind(&now)
            .bind(&limit),
        )
        .await?;
    if due.is_empty() {
        return Ok(Vec::new());
    }
    let incidents: Vec<&String> = due.iter().map(|d| &d.1).collect();
    let mut q = query("SELECT id, state FROM incidents WHERE id IN ");
    q.push_list(&incidents);
    let states: HashMap<String, String> = tx
        .fetch_all::<(String, String)>(q)
        .await?
        .into_iter()
        .collect();
    // A page of an incident that is no longer triggered is not sent;
    // a status update always is.
    let (live, stale): (Vec<Due>, Vec<Due>) = due
        .into_iter()
        .partition(|d| !is_page_reason(&d.2) || states.get(&d.1).is_some_and(|s| s == "triggered"));
    let stale: Vec<&String> = stale.iter().map(|d| &d.0).collect();
    if !stale.is_empty() {
        let mut q = query(
            "UPDATE outbox SET status = 'cancelled', lease_owner = NULL, lease_until = NULL,
                updated_at = $1 WHERE id IN ",
        )
        .bind(&now);
        q.push_list(&stale);
        tx.execute(q).await?;
    }
    let live = hold_sms_pages(&mut tx, live, now).await?;
    let live: Vec<String> = live.into_iter().map(|d| d.0).collect();
    let mut claimed = Vec::new();
    if !live.is_empty() {
        let mut q = query(
            "UPDATE outbox SET status = 'sending', lease_owner = $1, lease_until = $2,
                attempts = attempts + 1, updated_at = $3 WHERE id IN ",
        )
        .bind(owner)
        .bind(&lease_until)
        .bind(&now);
        q.push_list(&live);
        tx.execute(q).await?;
        let mut q = query(
            "SELECT o.id, o.account_id, o.incident_id, o.user_id, o.contact_id, o.reason, o.channel,
                o.address, o.attempts, o.page_at, s.name AS service_name, i.message,
                i.description, i.details, i.state AS incident_state
             FROM outbox o JOIN incidents i ON i.id = o.incident_id
             JOIN services s ON s.id = i.service_id WHERE o.id IN ",
        );
        q.push_list(&live).push(" ORDER BY o.due_at");
        claimed = tx.fetch_all(q).await?;
    }
    tx.commit().await?;
    Ok(claimed)
}

/// A message to queue.
pub(crate) struct NewMessage<'a> {
    page: &'a Page<'a>,
    /// Index of `page` in the pages planned.
    index: usize,
    /// `None`: the user's sign-in address.
    contact: Option<String>,
    channel: &'static str,
    address: String,
    due: Millis,
}

/// A page to turn into messages: whom to page about which incident, why,
/// and when it was decided.
pub(crate) struct Page<'a> {
    pub account: &'a str,
    pub incident: &'a str,
    pub reason: PageReason,
    pub user: &'a str,
    pub at: Millis,
}

/// What a user is paged on: their contacts (id, type, address) and
/// notification rules.
#[derive(Default)]
struct Reach {
    contacts: Vec<(ContactRef, String)>,
    rules: Vec<NotificationRuleSpec>,
    email: Option<String>,
}

/// Queues the messages of `pages` per each user's contacts and
/// notification rules (three queries, however many pages and users).
/// Returns whether any was queued (the caller records
/// `Change::MessagesQueued`).
pub(crate) async fn enqueue_pages(db: &mut impl Db, pages: &[Page<'_>]) -> Result<bool> {
    let rows = plan_messages(db, pages).await?;
    insert_messages(db, &rows, None).await?;
    Ok(!rows.is_empty())
}

/// Claiming messages as they are queued: for the sender `owner`, with a
/// lease of `lease_ms` from the page's instant.
pub(crate) struct ClaimAtQueue<'a> {
    pub owner: &'a str,
    pub lease_ms: Millis,
}

/// A message written already claimed (see [`ClaimAtQueue`]).
pub(crate) struct Claimed {
    /// Index of its page in the pages given.
    pub page: usize,
    pub id: String,
    pub contact: Option<String>,
    pub channel: &'static str,
    pub address: String,
    pub lease_until: Millis,
}

/// The messages `pages` come to, per each user's contacts and notification
/// rules (three queries, however many pages and users).
pub(crate) async fn plan_messages<'p>(
    db: &mut impl Db,
    pages: &'p [Page<'p>],
) -> Result<Vec<NewMessage<'p>>> {
    if pages.is_empty() {
        return Ok(Vec::new());
    }
    let mut users: Vec<&str> = pages.iter().map(|p| p.user).collect();
    users.sort_unstable();
    users.dedup();
    let mut reach: HashMap<String, Reach> = HashMap::new();
    let mut q = query("SELECT id, user_id, type, address FROM contacts WHERE user_id IN ");
    q.push_list(&users);
    for (id, user, kind, address) in db.fetch_all::<(String, String, String, String)>(q).await? {
        if let Some(kind) = ContactType::parse(&kind) {
            let r = reach.entry(user).or_default();
            r.contacts.push((ContactRef { id, kind }, address));
        }
    }
    let mut q =
        query("SELECT user_id, contact_id, start_delay FROM notification_rules WHERE user_id IN ");
    q.push_list(&users);
    for (user, contact_id, start_delay) in db.fetch_all::<(String, String, i64)>(q).await? {
        let r = reach.entry(user).or_default();
        r.rules.push(NotificationRuleSpec {
            contact_id,
            start_delay,
        });
    }
    let mut q = query("SELECT id, email FROM users WHERE id IN ");
    q.push_list(&users);
    for (user, email) in db.fetch_all::<(String, String)>(q).await? {
        reach.entry(user).or_default().email = Some(email);
    }
    let mut rows: Vec<NewMessage<'_>> = Vec::new();
    for (index, page) in pages.iter().enumerate() {
        let Some(r) = reach.get(page.user) else {
            continue;
        };
        if r.contacts.is_empty() {
            if let Some(email) = &r.email {
                rows.push(NewMessage {
                    page,
                    index,
                    contact: None,
                    channel: "email",
                    address: email.clone(),
                    due: page.at,
                });
            }
            continue;
        }
        let refs: Vec<ContactRef> = r.contacts.iter().map(|(c, _)| c.clone()).collect();
        for m in expand(page.at, &r.rules, &refs) {
            let Some((_, address)) = r.contacts.iter().find(|(c, _)| c.id == m.contact_id) else {
                continue;
            };
            rows.push(NewMessage {
                page,
                index,
                contact: Some(m.contact_id),
                channel: m.kind.as_str(),
                address: address.clone(),
                due: m.due_at,
            });
        }
    }
    Ok(rows)
}

/// Writes `rows` to the outbox, queued; with `claim`, those due at once
/// that are not texts (texts wait for bundling, see [`hold_sms_pages`])
/// are written claimed for its sender instead and returned, for the
/// caller to hand over after the commit. That saves the sender's claiming
/// transaction for every page sent the moment it is decided.
pub(crate) async fn insert_messages(
    db: &mut impl Db,
    rows: &[NewMessage<'_>],
    claim: Option<&ClaimAtQueue<'_>>,
) -> Result<Vec<Claimed>> {
    let mut claimed = Vec::new();
    for chunk in rows.chunks(500) {
        let ids: Vec<String> = chunk.iter().map(|_| new_id()).collect();
        let mut q = query(
            "INSERT INTO outbox (id, account_id, incident_id, user_id, contact_id, reason, channel, address,
                status, lease_owner, lease_until, attempts, page_at, due_at, created_at, updated_at) VALUES ",
        );
        let leases: Vec<Option<(&str, Millis)>> = chunk
            .iter()
            .map(|m| {
                claim
                    .filter(|_| m.due <= m.page.at && m.channel != "sms")
                    .map(|c| (c.owner, m.page.at.saturating_add(c.lease_ms)))
            })
            .collect();
        let owners: Vec<Option<&str>> = leases.iter().map(|l| l.map(|l| l.0)).collect();
        let untils: Vec<Option<Millis>> = leases.iter().map(|l| l.map(|l| l.1)).collect();
        for (i, (m, id)) in chunk.iter().zip(&ids).enumerate() {
            let (status, attempts) = match leases[i] {
                Some(_) => ("sending", &1i64),
                None => ("queued", &0i64),
            };
            push_row(&mut q, i, |q| {
                q.push_bind(id)
                    .push(", ")
                    .push_bind(m.page.account)
                    .push(", ")
                    .push_bind(m.page.incident)
                    .push(", ")
                    .push_bind(m.page.user)
                    .push(", ")
                    .push_bind(&m.contact)
                    .push(", ")
                    .push_bind(m.page.reason.as_str())
                    .push(", ")
                    .push_bind(m.channel)
                    .push(", ")
                    .push_bind(&m.address)
                    .push(", ")
                    .push_bind(status)
                    .push(", ")
                    .push_bind(&owners[i])
                    .push(", ")
                    .push_bind(&untils[i])
                    .push(", ")
                    .push_bind(attempts)
                    .push(", ")
                    .push_bind(&m.page.at)
                    .push(", ")
                    .push_bind(&m.due)
                    .push(", ")
                    .push_bind(&m.page.at)
                    .push(", ")
                    .push_bind(&m.page.at);
            });
        }
        db.execute(q).await?;
        for ((m, id), lease) in chunk.iter().zip(ids).zip(leases) {
            if let Some((_, lease_until)) = lease {
                claimed.push(Claimed {
                    page: m.index,
                    id,
                    contact: m.contact.clone(),
                    channel: m.channel,
                    address: m.address.clone(),
                    lease_until,
                });
            }
        }
    }
    Ok(claimed)
}

/// A status update to send: what happened to an incident, and who is not
/// to be told (whoever acted; for an escalation also the new assignee,
/// whom the same change pages).
pub(crate) struct Update<'a> {
    pub account: &'a str,
    pub incident: &'a str,
    pub action: IncidentAction,
    pub skip: [Option<&'a str>; 2],
    pub at: Millis,
}

/// The outbox `reason` of a status update about `action` (`None`: no
/// update for it).
pub fn update_reason(action: IncidentAction) -> Option<&'static str> {
    match action {
        IncidentAction::Acknowledge => Some("acknowledged"),
        IncidentAction::Resolve => Some("resolved"),
        IncidentAction::Escalate => Some("escalated_away"),
        IncidentAction::Trigger => None,
    }
}

/// Queues status updates: each user already paged about the incident
/// (a page sent or being sent) gets one on every contact they were paged
/// on, except the users `skip` names. Two queries however many updates.
/// Returns whether any was queued.
pub(crate) async fn enqueue_updates(db: &mut impl Db, updates: &[Update<'_>]) -> Result<bool> {
    if updates.is_empty() {
        return Ok(false);
    }
    let incidents: Vec<&str> = updates.iter().map(|u| u.incident).collect();
    let mut q = query(
        "SELECT DISTINCT incident_id, user_id, contact_id, channel, address FROM outbox
         WHERE reason IN ('assigned', 'escalated', 'retriggered')
           AND status IN ('sending', 'sent', 'delivered') AND incident_id IN ",
    );
    q.push_list(&incidents);
    type Paged = (String, String, Option<String>, String, String);
    let paged: Vec<Paged> = db.fetch_all(q).await?;
    let mut rows: Vec<(&Update<'_>, &'static str, &Paged)> = Vec::new();
    for update in updates {
        let Some(reason) = update_reason(update.action) else {
            continue;
        };
        for p in paged.iter().filter(|p| p.0 == update.incident) {
            if update.skip.iter().flatten().all(|skip| *skip != p.1) {
                rows.push((update, reason, p));
            }
        }
    }
    if rows.is_empty() {
        return Ok(false);
    }
    for chunk in rows.chunks(500) {
        let ids: Vec<String> = chunk.iter().map(|_| new_id()).collect();
        let mut q = query(
            "INSERT INTO outbox (id, account_id, incident_id, user_id, contact_id, reason, channel, address,
                status, attempts, page_at, due_at, created_at, updated_at) VALUES ",
        );
        for (i, ((u, reason, p), id)) in chunk.iter().zip(&ids).enumerate() {
            push_row(&mut q, i, |q| {
                q.push_bind(id)
                    .push(", ")
                    .push_bind(u.account)
                    .push(", ")
                    .push_bind(u.incident)
                    .push(", ")
                    .push_bind(&p.1)
                    .push(", ")
                    .push_bind(&p.2)
                    .push(", ")
                    .push_bind(*reason)
                    .push(", ")
                    .push_bind(&p.3)
                    .push(", ")
                    .push_bind(&p.4)
                    .push(", 'queued', 0, ")
                    .push_bind(&u.at)
                    .push(", ")
                    .push_bind(&u.at)
                    .push(", ")
                    .push_bind(&u.at)
                    .push(", ")
                    .push_bind(&u.at);
            });
        }
        db.execute(q).await?;
    }
    Ok(true)
}

/// Cancels queued pages of an incident, in the transaction that changed
/// it: all of them (`keep: None`) when it was acknowledged or resolved, or
/// all but the new assignee's when it was reassigned.
pub(crate) async fn cancel_pages(
    db: &mut impl Db,
    incident: &str,
    keep: Option<&str>,
    now: Millis,
) -> Result<()> {
    let q = match keep {
        None => query(
            "UPDATE outbox SET status = 'cancelled', updated_at = $1
             WHERE status = 'queued' AND incident_id = $2
               AND reason IN ('assigned', 'escalated', 'retriggered')",
        )
        .bind(&now)
        .bind(incident),
        Some(user) => query(
            "UPDATE outbox SET status = 'cancelled', updated_at = $1
             WHERE status = 'queued' AND incident_id = $2 AND user_id <> $3
               AND reason IN ('assigned', 'escalated', 'retriggered')",
        )
        .bind(&now)
        .bind(incident)
        .bind(user),
    };
    db.execute(q).await?;
    Ok(())
}

/// Writes a fired batch's outbox changes: cancellations first, then the
/// new pages. Returns whether messages were queued.
pub(crate) async fn write_batch_pages(
    db: &mut impl Db,
    batch: &crate::plan::BatchPlan,
    now: Millis,
) -> Result<bool> {
    for (incident, keep) in &batch.stop_pages {
        cancel_pages(db, incident, keep.as_deref(), now).await?;
    }
    // Updates first: they go to those paged before this batch's pages.
    let updates: Vec<Update<'_>> = batch
        .updates
        .iter()
        .map(|(account, incident, action, assignee)| Update {
            account,
            incident,
            action: *action,
            skip: [assignee.as_deref(), None],
            at: now,
        })
        .collect();
    let updated = enqueue_updates(db, &updates).await?;
    let pages: Vec<Page<'_>> = batch
        .pages
        .iter()
        .map(|(account, incident, reason, user)| Page {
            account,
            incident,
            reason: *reason,
            user,
            at: now,
        })
        .collect();
    Ok(enqueue_pages(db, &pages).await? | updated)
}
