//! `GET /events/stream`: the caller's account's audit log as Server-Sent
//! Events, each the JSON of a `GET /events` item with the event's sequence
//! number as its SSE `id`.
//!
//! The events table is the source of truth: each connection reads it by
//! sequence number, so every process sharing a PostgreSQL database streams
//! every event whichever process wrote it. A connection polls every
//! [`POLL`] while idle and reads on at once while there is more; it holds
//! at most one page ([`PAGE`]) and reads the next only as the client takes
//! them, so a slow client costs memory for one page. `Last-Event-ID` (what
//! a browser's `EventSource` sends when it reconnects) or `?since=`
//! resumes after that number, replaying what was missed; without either the
//! stream starts with the next event. A comment every [`KEEP_ALIVE`] keeps
//! proxies from closing an idle stream, and every stream ends when the
//! server shuts down.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{HeaderMap, HeaderName, HeaderValue};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use futures_util::Stream;
use klaxon_store::{LoggedEvent, Store};
use serde::Deserialize;
use tokio::sync::watch;

use super::auth::Auth;
use super::error::{ApiError, ApiResult};
use super::input::Params;
use super::views;
use crate::app::AppState;

/// How often an idle stream looks for new events.
pub const POLL: Duration = Duration::from_millis(250);
/// Longest silence before a keep-alive comment.
pub const KEEP_ALIVE: Duration = Duration::from_secs(15);
/// How long a hole in the numbering (a transaction still committing on
/// PostgreSQL) is waited for before it is taken as rolled back.
pub const HOLE_GRACE: Duration = Duration::from_secs(2);
/// Events read at once, and the most a connection holds.
pub const PAGE: i64 = 100;
/// What a browser waits before reconnecting.
const RECONNECT: Duration = Duration::from_secs(3);
/// Pause after a failed read (the database is down).
const ERROR_PAUSE: Duration = Duration::from_secs(1);

/// Query of `GET /events/stream`.
#[derive(Debug, Deserialize)]
pub struct StreamQuery {
    since: Option<String>,
}

/// `GET /events/stream`
pub async fn stream_events(
    State(state): State<AppState>,
    auth: Auth,
    headers: HeaderMap,
    Params(q): Params<StreamQuery>,
) -> ApiResult<(
    [(HeaderName, HeaderValue); 1],
    Sse<impl Stream<Item = Result<SseEvent, Infallible>>>,
)> {
    let last_id = match headers.get("last-event-id").map(|v| v.to_str()) {
        None => None,
        Some(Ok(id)) => Some(id.trim()).filter(|id| !id.is_empty()),
        Some(Err(_)) => return Err(bad_seq("Last-Event-ID")),
    };
    let resume = match (last_id, q.since.as_deref().map(str::trim)) {
        (Some(id), _) => Some(parse_seq("Last-Event-ID", id)?),
        (None, Some(since)) if !since.is_empty() => Some(parse_seq("since", since)?),
        _ => None,
    };
    let after = match resume {
        Some(seq) => seq,
        None => state.store.latest_event_seq().await?,
    };
    let tail = Tail {
        store: state.store.clone(),
        account_id: auth.account_id,
        after,
        settled: 0,
        hole: None,
        pending: VecDeque::new(),
        closing: state.closing.subscribe(),
        greeted: false,
    };
    let stream = futures_util::stream::unfold(tail, |mut tail| async move {
        let event = tail.next().await?;
        Some((Ok(event), tail))
    });
    // Reverse proxies that buffer responses (nginx) pass this one through.
    let unbuffered = (
        HeaderName::from_static("x-accel-buffering"),
        HeaderValue::from_static("no"),
    );
    Ok((
        [unbuffered],
        Sse::new(stream).keep_alive(KeepAlive::new().interval(KEEP_ALIVE)),
    ))
}

fn parse_seq(field: &str, raw: &str) -> Result<i64, ApiError> {
    match raw.parse::<i64>() {
        Ok(seq) if seq >= 0 => Ok(seq),
        _ => Err(bad_seq(field)),
    }
}

fn bad_seq(field: &str) -> ApiError {
    ApiError::field(field, "must be an event id (a non-negative integer)")
}

/// One connection's place in the log.
struct Tail {
    store: Arc<dyn Store>,
    account_id: String,
    /// Everything up to here has been read.
    after: i64,
    /// Holes at or below this were waited out.
    settled: i64,
    /// The hole the last read stopped at, and since when.
    hole: Option<(i64, Instant)>,
    /// Read, not yet sent.
    pending: VecDeque<LoggedEvent>,
    closing: watch::Receiver<bool>,
    greeted: bool,
}

impl Tail {
    /// The next frame to send; `None` ends the stream (the server is
    /// shutting down).
    async fn next(&mut self) -> Option<SseEvent> {
        if !self.greeted {
            // Sent at once, so the client knows the stream is open.
            self.greeted = true;
            return Some(SseEvent::default().comment("events").retry(RECONNECT));
        }
        loop {
            if let Some(e) = self.pending.pop_front() {
                return Some(
                    SseEvent::default()
                        .id(e.seq.to_string())
                        .data(views::event(&e.event).to_string()),
                );
            }
            if *self.closing.borrow() {
                return None;
            }
            let pause = match self.read().await {
                Ok(true) => continue,
                Ok(false) => POLL,
                Err(err) => {
                    tracing::warn!(error = %err, "event stream read failed; retrying");
                    ERROR_PAUSE
                }
            };
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                // Closing, or the server is gone.
                changed = self.closing.changed() => {
                    if changed.is_err() {
                        return None;
                    }
                }
            }
        }
    }

    /// Reads the next page; whether to read again at once.
    async fn read(&mut self) -> klaxon_store::Result<bool> {
        let feed = self
            .store
            .event_feed(&self.account_id, self.after, self.settled, PAGE)
            .await?;
        self.after = feed.through;
        let got = !feed.events.is_empty();
        self.pending.extend(feed.events);
        match (feed.hole, self.hole) {
            (Some((first, last)), Some((waited, since))) if waited == first => {
                if since.elapsed() >= HOLE_GRACE {
                    tracing::debug!(first, last, "event numbers never committed; passing them");
                    self.settled = last;
                    self.hole = None;
                    return Ok(true);
                }
            }
            (Some((first, _)), _) => self.hole = Some((first, Instant::now())),
            (None, _) => self.hole = None,
        }
        Ok(got || feed.more)
    }
}
