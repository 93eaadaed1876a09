//! The sender: delivers the notification outbox.
//!
//! Messages are rows the store writes in the same transaction as the
//! change that pages someone. The sender claims due rows with a lease
//! (one process claims each), hands each to the [`Notifier`] for its
//! channel, several at once up to [`CONCURRENCY`], and records the
//! outcome: sent, retried later with exponential backoff and jitter, or
//! failed for good. It is woken by the commit that queues a message (in
//! process, and on PostgreSQL by NOTIFY from other processes) and sleeps
//! until the next due message otherwise; polling is only a fallback.
//!
//! A sender that dies mid-send leaves its rows `sending`: when the lease
//! runs out another claims them. The provider may then have been asked
//! twice for one message; providers that take an idempotency key are
//! given the outbox row id.
//!
//! [`run_due`] is one round without the sleeping; tests on a manual clock
//! call it after moving the clock.

pub mod email;
pub mod links;
pub mod twilio;
pub mod web;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use klaxon_core::time::Millis;
use klaxon_store::{OutgoingMessage, SendOutcome, Store};
use tokio::sync::{mpsc, watch, Semaphore};

use crate::clock::Clock;
use crate::metrics::Metrics;

/// Messages claimed per round.
pub const BATCH: i64 = 64;
/// Sends in flight at once.
pub const CONCURRENCY: usize = 16;
/// How long a claim lasts before another sender may take the message
/// (virtual time; a send takes seconds at most).
pub const LEASE_MS: Millis = 120_000;
/// Longest sleep without a wake-up.
pub const FALLBACK_POLL: Duration = Duration::from_secs(5);
/// Attempts before a transiently failing message is given up.
pub const MAX_ATTEMPTS: i64 = 10;

/// Delivers one message on one channel.
#[async_trait]
pub trait Notifier: Send + Sync {
    /// Sends `message` (`now` is the clock's, for retry times).
    async fn send(&self, message: &OutgoingMessage, now: Millis) -> SendOutcome;

    /// Who sends `channel`'s messages, for metrics: `smtp`, `twilio`,
    /// `webhook`, `slack`, `ntfy`, `dev` (the dev outbox).
    fn provider(&self, _channel: &str) -> &'static str {
        "custom"
    }
}

/// What a one-click answer link in a message does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkAction {
    /// Acknowledge the incident.
    Acknowledge,
    /// Resolve the incident.
    Resolve,
}

impl LinkAction {
    /// The action's name in links and audit events.
    pub fn as_str(self) -> &'static str {
        match self {
            LinkAction::Acknowledge => "acknowledge",
            LinkAction::Resolve => "resolve",
        }
    }
}

/// Makes the signed, expiring, single-use answer links a message carries
/// (email buttons, ntfy actions, Slack buttons), bound to the message's
/// user and incident.
pub trait Links: Send + Sync {
    /// The absolute URL that does `action` for `message`'s user.
    fn url(&self, message: &OutgoingMessage, action: LinkAction) -> String;
}

/// Sends each message with the provider of its channel; a channel with
/// none configured (email without SMTP, SMS and voice without Twilio)
/// goes to the [`DevNotifier`].
#[derive(Default)]
pub struct Router {
    by_channel: Vec<(&'static str, Arc<dyn Notifier>)>,
}

impl Router {
    /// A router sending everything to the dev outbox.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sends `channel`'s messages with `notifier` (the last one given for
    /// a channel wins).
    pub fn with(mut self, channel: &'static str, notifier: Arc<dyn Notifier>) -> Self {
        self.by_channel.retain(|(c, _)| *c != channel);
        self.by_channel.push((channel, notifier));
        self
    }

    /// The channels that have a real provider.
    pub fn channels(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.by_channel.iter().map(|(c, _)| *c)
    }
}

#[async_trait]
impl Notifier for Router {
    async fn send(&self, message: &OutgoingMessage, now: Millis) -> SendOutcome {
        match self.by_channel.iter().find(|(c, _)| *c == message.channel) {
            Some((_, notifier)) => notifier.send(message, now).await,
            None => DevNotifier.send(message, now).await,
        }
    }

    fn provider(&self, channel: &str) -> &'static str {
        match self.by_channel.iter().find(|(c, _)| *c == channel) {
            Some((_, notifier)) => notifier.provider(channel),
            None => DevNotifier.provider(channel),
        }
    }
}

/// The providers `config` sets up, by channel; the rest go to the dev
/// outbox. Webhook, Slack and ntfy contacts need no configuration (the
/// address is the URL); webhooks are signed with `webhook_keys`.
pub fn providers(
    config: &crate::config::Config,
    links: Arc<dyn Links>,
    webhook_keys: web::SigningKeys,
) -> anyhow::Result<Router> {
    let http = Arc::new(web::Web::new(&config.public_url, links.clone())?);
    let mut router = Router::new()
        .with(
            "webhook",
            Arc::new(web::Webhook::new(http.clone(), webhook_keys)),
        )
        .with("slack", Arc::new(web::Slack::new(http.clone())))
        .with("ntfy", Arc::new(web::Ntfy::new(http)));
    if let Some(smtp) = &config.smtp {
        router = router.with("email", Arc::new(email::Email::new(smtp, links)?));
    }
    if let Some(twilio) = &config.twilio {
        if twilio::is_loopback(&config.public_url) {
            tracing::warn!(public_url = %config.public_url, "Twilio cannot reach this public URL: calls will not find their script, and SMS replies and delivery reports will not arrive; set KLAXON_PUBLIC_URL");
        }
        let twilio: Arc<dyn Notifier> = Arc::new(twilio::Twilio::new(twilio, &config.public_url)?);
        router = router.with("sms", twilio.clone()).with("phone", twilio);
    }
    let missing: Vec<&str> = ["email", "sms", "phone"]
        .into_iter()
        .filter(|channel| !router.channels().any(|c| c == *channel))
        .collect();
    if !missing.is_empty() {
        tracing::warn!(channels = ?missing, "no provider configured: these messages go to the dev outbox (logged, recorded as delivered)");
    }
    Ok(router)
}

/// What a fresh server uses when no provider is configured: each message
/// is logged and recorded as delivered, so the whole flow — who would have
/// been paged, how and when — shows over the API.
pub struct DevNotifier;

#[async_trait]
impl Notifier for DevNotifier {
    fn provider(&self, _channel: &str) -> &'static str {
        "dev"
    }

    async fn send(&self, m: &OutgoingMessage, _now: Millis) -> SendOutcome {
        tracing::info!(
            message = %m.id,
            incident = %m.incident_id,
            user = %m.user_id,
            channel = %m.channel,
            address = %m.address,
            text = %alert_text(m),
            "page (dev outbox: no provider configured for this channel)"
        );
        SendOutcome::Sent {
            provider_id: None,
            delivered: true,
        }
    }
}

/// `ALERT [service] message`: the one-line text of a page, or of a status
/// update `ACKNOWLEDGED [service] message` (also `RESOLVED`, `ESCALATED`).
pub fn alert_text(m: &OutgoingMessage) -> String {
    format!("{} [{}] {}", headline(m), m.service_name, m.message)
}

/// The first word of a message's text: `ALERT` for a page, what happened
/// for a status update.
pub fn headline(m: &OutgoingMessage) -> &'static str {
    match m.reason.as_str() {
        "acknowledged" => "ACKNOWLEDGED",
        "resolved" => "RESOLVED",
        "escalated_away" => "ESCALATED",
        _ => "ALERT",
    }
}

/// The retry time after `attempts` transient failures: exponential from
/// 5 s, capped at 15 min, with up to a fifth of jitter so that a provider
/// outage does not end in a thundering herd.
pub fn retry_at(now: Millis, attempts: i64, jitter: f64) -> Millis {
    let exp = u32::try_from(attempts.saturating_sub(1).clamp(0, 20)).unwrap_or(20);
    let base: Millis = 5_000i64.saturating_mul(1i64 << exp).min(15 * 60_000);
    let spread = (base as f64 * 0.2 * jitter.clamp(0.0, 1.0)) as Millis;
    now.saturating_add(base).saturating_add(spread)
}

/// Runs until `shutdown` turns true; a failing database is logged and
/// retried. Every outcome is counted in `metrics`.
pub async fn run(
    store: Arc<dyn Store>,
    clock: Clock,
    notifier: Arc<dyn Notifier>,
    metrics: Arc<Metrics>,
    mut shutdown: watch::Receiver<bool>,
) {
    let owner = format!(
        "sender-{}",
        klaxon_core::id::random_hex(&mut rand::rng(), 8)
    );
    let limit = Arc::new(Semaphore::new(CONCURRENCY));
    // Outcomes are recorded by one task, as many per transaction as have
    // come in meanwhile (one commit for a burst, not one per message).
    let (done, outcomes) = mpsc::unbounded_channel();
    let recorder = tokio::spawn(record_outcomes(
        store.clone(),
        clock.clone(),
        owner.clone(),
        outcomes,
    ));
    tracing::info!(%owner, "sender started");
    loop {
        if *shutdown.borrow() {
            break;
        }
        let wait = match round(&store, &clock, &notifier, &metrics, &owner, &limit, &done).await {
            Ok(claimed) if claimed as i64 >= BATCH => Duration::ZERO,
            Ok(_) => next_wait(&*store, &clock).await.unwrap_or(FALLBACK_POLL),
            Err(err) => {
                tracing::error!(error = %err, "sender round failed; retrying");
                Duration::from_secs(1)
            }
        };
        if wait.is_zero() {
            continue;
        }
        tokio::select! {
            _ = store.messages_changed() => {}
            _ = tokio::time::sleep(wait) => {}
            _ = shutdown.changed() => {}
        }
    }
    // Let sends in flight finish, then record their outcomes.
    let _ = limit.acquire_many(CONCURRENCY as u32).await;
    drop(done);
    let _ = recorder.await;
    tracing::info!("sender stopped");
}

/// A send's outcome, on its way to the store.
type Outcome = (String, SendOutcome);

/// Claims what is due and starts sending it; returns how many were claimed.
async fn round(
    store: &Arc<dyn Store>,
    clock: &Clock,
    notifier: &Arc<dyn Notifier>,
    metrics: &Arc<Metrics>,
    owner: &str,
    limit: &Arc<Semaphore>,
    done: &mpsc::UnboundedSender<Outcome>,
) -> klaxon_store::Result<usize> {
    let now = clock.now_ms();
    let claimed = store
        .claim_messages(owner, now, now + LEASE_MS, BATCH)
        .await?;
    let count = claimed.len();
    for message in bundle(claimed) {
        let Ok(permit) = limit.clone().acquire_owned().await else {
            break;
        };
        let (clock, notifier, done) = (clock.clone(), notifier.clone(), done.clone());
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let outcome = send(&*notifier, &clock, &message).await;
            metrics.delivered(
                notifier.provider(&message.channel),
                &message.channel,
                &outcome,
                1 + message.bundle.len() as u64,
            );
            for bundled in &message.bundle {
                let _ = done.send((bundled.id.clone(), outcome.clone()));
            }
            let _ = done.send((message.id, outcome));
            drop(permit);
        });
    }
    Ok(count)
}

/// Groups claimed SMS pages to one number for one user into one text: the
/// first (in claim order, which is due order) carries the others in its
/// `bundle`. Everything else is sent on its own.
pub fn bundle(claimed: Vec<OutgoingMessage>) -> Vec<OutgoingMessage> {
    let mut out: Vec<OutgoingMessage> = Vec::with_capacity(claimed.len());
    for message in claimed {
        if message.channel == "sms" && !message.is_status_update() {
            if let Some(carrier) = out.iter_mut().find(|c| {
                c.channel == "sms"
                    && !c.is_status_update()
                    && c.user_id == message.user_id
                    && c.address == message.address
            }) {
                carrier.bundle.push(message);
                continue;
            }
        }
        out.push(message);
    }
    out
}

/// Records outcomes as they come, each burst in one transaction, until
/// every sender of outcomes is gone.
async fn record_outcomes(
    store: Arc<dyn Store>,
    clock: Clock,
    owner: String,
    mut outcomes: mpsc::UnboundedReceiver<Outcome>,
) {
    let mut batch = Vec::new();
    while outcomes.recv_many(&mut batch, 256).await > 0 {
        record(&*store, &clock, &owner, &batch).await;
        batch.clear();
    }
}

/// Sends one claimed message; the outcome to record.
async fn send(notifier: &dyn Notifier, clock: &Clock, message: &OutgoingMessage) -> SendOutcome {
    let mut outcome = notifier.send(message, clock.now_ms()).await;
    if let SendOutcome::Retry { error, .. } = &outcome {
        if message.attempts >= MAX_ATTEMPTS {
            outcome = SendOutcome::Failed {
                error: format!("gave up after {} attempts: {error}", message.attempts),
            };
        }
    }
    match &outcome {
        SendOutcome::Sent { .. } => {}
        SendOutcome::Retry { error, at } => {
            tracing::warn!(message = %message.id, channel = %message.channel, %error, retry_at = at, "send failed; retrying")
        }
        SendOutcome::Failed { error } => {
            tracing::error!(message = %message.id, channel = %message.channel, %error, "send failed for good")
        }
    }
    outcome
}

/// Writes outcomes to the store (retrying while the database is away: a
/// send that happened must not be sent again for want of its record).
async fn record(store: &dyn Store, clock: &Clock, owner: &str, outcomes: &[Outcome]) {
    loop {
        match store.finish_messages(owner, outcomes, clock.now_ms()).await {
            Ok(lost) => {
                for id in lost {
                    tracing::warn!(message = %id, "the lease ran out before the send was recorded; another sender owns it");
                }
                return;
            }
            Err(err) => {
                tracing::error!(error = %err, count = outcomes.len(), "cannot record sends; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

/// One round on the calling task: claims everything due at the clock's
/// now and sends it, one message after the other; returns how many were
/// handled. For tests on a manual clock.
pub async fn run_due(
    store: &dyn Store,
    clock: &Clock,
    notifier: &dyn Notifier,
) -> klaxon_store::Result<usize> {
    let owner = "sender-test";
    let mut total = 0;
    loop {
        let now = clock.now_ms();
        let claimed = store
            .claim_messages(owner, now, now + LEASE_MS, BATCH)
            .await?;
        let count = claimed.len();
        let mut outcomes = Vec::with_capacity(count);
        for message in bundle(claimed) {
            let outcome = send(notifier, clock, &message).await;
            for bundled in &message.bundle {
                outcomes.push((bundled.id.clone(), outcome.clone()));
            }
            outcomes.push((message.id, outcome));
        }
        store
            .finish_messages(owner, &outcomes, clock.now_ms())
            .await?;
        total += count;
        if (count as i64) < BATCH {
            return Ok(total);
        }
    }
}

/// How long to sleep before the next message is due.
async fn next_wait(store: &dyn Store, clock: &Clock) -> klaxon_store::Result<Duration> {
    Ok(match (store.next_message_due().await?, clock.speed()) {
        (Some(due), Some(speed)) => {
            let virtual_ms = (due - clock.now_ms()).max(1);
            Duration::from_millis((virtual_ms as f64 / speed).ceil().max(1.0) as u64)
                .min(FALLBACK_POLL)
        }
        _ => FALLBACK_POLL,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_back_off_with_bounded_jitter() {
        assert_eq!(retry_at(0, 1, 0.0), 5_000);
        assert_eq!(retry_at(0, 2, 0.0), 10_000);
        assert_eq!(retry_at(0, 3, 0.0), 20_000);
        assert_eq!(retry_at(0, 30, 0.0), 15 * 60_000);
        assert_eq!(retry_at(0, 1, 1.0), 6_000);
        assert!(retry_at(0, 30, 1.0) <= 18 * 60_000);
        assert_eq!(retry_at(Millis::MAX, 5, 1.0), Millis::MAX);
    }
}
