//! `GET /metrics`: Prometheus metrics in the OpenMetrics text format.
//!
//! What this process does is counted as it happens, with atomic counters
//! and histograms (`prometheus-client`): HTTP requests by route template
//! and status, deliveries by provider, channel and outcome, integration
//! events by source, fired timers and their lateness. What the database
//! holds — open incidents, pending timers, the outbox's queue — is read
//! from the store when scraped (a few counts over partial indexes), and
//! the store's own counters (incidents opened, acknowledged, resolved;
//! SQLite's group-commit sizes) are read from `MetricsStore::stats`.
//!
//! Labels come from closed sets: a route is axum's matched template
//! (`/incidents/{id}`, never the raw path; `unmatched` for a path no route
//! has), a method outside the standard ones is `other`, a channel is one
//! Klaxon knows. No label carries an id or anything a client chose.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request, State};
use axum::http::header::{AUTHORIZATION, CONTENT_TYPE};
use axum::http::{HeaderMap, HeaderValue, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use klaxon_core::time::Millis;
use klaxon_store::{FiredTimer, SendOutcome, Store};
use prometheus_client::encoding::text::{encode_eof, encode_registry};
use prometheus_client::encoding::{EncodeLabelSet, EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};
use sha2::{Digest, Sha256};

use crate::app::AppState;
use crate::http::error::ApiError;

/// The content type of the answer.
pub const CONTENT_TYPE_OPENMETRICS: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Request latency buckets, in seconds.
const LATENCY_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
/// Timer lateness buckets, in seconds (of the server's clock).
const LATENESS_BUCKETS: [f64; 12] = [
    0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 60.0, 300.0, 3600.0,
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    method: &'static str,
    route: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    method: &'static str,
    route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DeliveryLabels {
    provider: &'static str,
    channel: &'static str,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SourceLabels {
    source: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabels {
    status: &'static str,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// Where an integration event came from (`klaxon_integration_events_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// Klaxon's own `PUT /trigger`, `/acknowledge`, `/resolve`.
    Klaxon,
    /// PagerDuty's Events API (v2, v1, change events).
    PagerDuty,
    /// Opsgenie's alert API.
    Opsgenie,
    /// Alertmanager's webhook.
    Alertmanager,
}

impl Source {
    fn label(self) -> &'static str {
        match self {
            Source::Klaxon => "klaxon",
            Source::PagerDuty => "pagerduty",
            Source::Opsgenie => "opsgenie",
            Source::Alertmanager => "alertmanager",
        }
    }
}

/// This process's metrics. Cheap to record from any task: counters are
/// atomics, a histogram is a short lock held by the crate.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: HistogramFamily<RouteLabels>,
    deliveries: Family<DeliveryLabels, Counter>,
    integration_events: Family<SourceLabels, Counter>,
    timers_fired: Family<KindLabels, Counter>,
    timer_lateness: Histogram,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Empty metrics, registered.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("klaxon");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP requests answered, by method, route template and status",
            requests.clone(),
        );
        let latency: HistogramFamily<RouteLabels> =
            Family::new_with_constructor(|| Histogram::new(LATENCY_BUCKETS));
        registry.register_with_unit(
            "http_request_duration",
            "Time from a request's arrival to its answer's head, by method and route template",
            Unit::Seconds,
            latency.clone(),
        );
        let deliveries = Family::<DeliveryLabels, Counter>::default();
        registry.register(
            "notifications",
            "Outbox messages whose send ended, by provider, channel and outcome (sent, retry, failed)",
            deliveries.clone(),
        );
        let integration_events = Family::<SourceLabels, Counter>::default();
        registry.register(
            "integration_events",
            "Events taken from monitoring tools, by source (klaxon, pagerduty, opsgenie, alertmanager)",
            integration_events.clone(),
        );
        let timers_fired = Family::<KindLabels, Counter>::default();
        registry.register(
            "timers_fired",
            "Escalation, acknowledge-timeout and auto-resolve timers fired by this process's engine",
            timers_fired.clone(),
        );
        let timer_lateness = Histogram::new(LATENESS_BUCKETS);
        registry.register_with_unit(
            "timer_lateness",
            "How long after its due time each timer fired (server clock)",
            Unit::Seconds,
            timer_lateness.clone(),
        );
        Metrics {
            registry,
            requests,
            latency,
            deliveries,
            integration_events,
            timers_fired,
            timer_lateness,
        }
    }

    /// A request was answered.
    pub fn request(&self, method: &Method, route: Option<&str>, status: u16, took: Duration) {
        let method = method_label(method);
        let route = route.unwrap_or("unmatched");
        self.requests
            .get_or_create(&RequestLabels {
                method,
                route: route.to_owned(),
                status,
            })
            .inc();
        self.latency
            .get_or_create(&RouteLabels {
                method,
                route: route.to_owned(),
            })
            .observe(took.as_secs_f64());
    }

    /// `messages` outbox messages (a carrier and the pages bundled into
    /// it) went to `provider` on `channel` with `outcome`.
    pub fn delivered(
        &self,
        provider: &'static str,
        channel: &str,
        outcome: &SendOutcome,
        messages: u64,
    ) {
        let outcome = match outcome {
            SendOutcome::Sent { .. } => "sent",
            SendOutcome::Retry { .. } => "retry",
            SendOutcome::Failed { .. } => "failed",
        };
        self.deliveries
            .get_or_create(&DeliveryLabels {
                provider,
                channel: channel_label(channel),
                outcome,
            })
            .inc_by(messages);
    }

    /// An inbound integration took an event.
    pub fn integration_event(&self, source: Source) {
        self.integration_events
            .get_or_create(&SourceLabels {
                source: source.label(),
            })
            .inc();
    }

    /// The engine fired a batch of timers.
    pub fn timers_fired(&self, fired: &[FiredTimer]) {
        for t in fired {
            let kind = match t.kind.as_str() {
                "escalate" => "escalate",
                "acknowledge_timeout" => "acknowledge_timeout",
                "auto_resolve" => "auto_resolve",
                _ => "other",
            };
            self.timers_fired.get_or_create(&KindLabels { kind }).inc();
            self.timer_lateness
                .observe((t.fired_at - t.due_at).max(0) as f64 / 1000.0);
        }
    }

    /// The whole exposition: this process's metrics, the store's counters,
    /// and the database's queues read now (`now` on the server's clock).
    pub async fn render(&self, store: &dyn Store, now: Millis) -> klaxon_store::Result<String> {
        let gauges = store.gauges().await?;
        let stats = store.stats();
        let mut scrape = Registry::with_prefix("klaxon");
        let opened = [
            (
                "incidents_opened",
                "Incidents opened by this process",
                stats.incidents_opened,
            ),
            (
                "incidents_acknowledged",
                "Incidents this process moved to acknowledged",
                stats.incidents_acknowledged,
            ),
            (
                "incidents_resolved",
                "Incidents this process moved to resolved (auto-resolve included)",
                stats.incidents_resolved,
            ),
        ];
        for (name, help, value) in opened {
            scrape.register(name, help, ConstCounter::new(value));
        }
        let open = Family::<StateLabels, Gauge>::default();
        for (state, value) in [
            ("triggered", gauges.incidents_triggered),
            ("acknowledged", gauges.incidents_acknowledged),
        ] {
            open.get_or_create(&StateLabels { state }).set(value);
        }
        scrape.register(
            "open_incidents",
            "Unresolved incidents in the database, by state",
            open,
        );
        scrape.register(
            "timers_pending",
            "Timers waiting to fire in the database",
            ConstGauge::new(gauges.timers_pending),
        );
        let overdue = gauges
            .timers_next_due
            .map_or(0.0, |due| (now - due).max(0) as f64 / 1000.0);
        scrape.register_with_unit(
            "timers_overdue",
            "How far past its due time the most overdue pending timer is (0 when none is due)",
            Unit::Seconds,
            ConstGauge::new(overdue),
        );
        let outbox = Family::<StatusLabels, Gauge>::default();
        for (status, value) in [
            ("queued", gauges.outbox_queued),
            ("sending", gauges.outbox_sending),
        ] {
            outbox.get_or_create(&StatusLabels { status }).set(value);
        }
        scrape.register(
            "outbox_messages",
            "Outbox messages waiting (queued) or claimed by a sender (sending)",
            outbox,
        );
        if let Some(batches) = stats.trigger_batches {
            scrape.register(
                "trigger_batch_size",
                "Triggers per group commit (SQLite): one transaction and one fsync each",
                BatchHistogram(batches),
            );
        }
        let mut out = String::with_capacity(8 * 1024);
        let written = encode_registry(&mut out, &self.registry)
            .and_then(|()| encode_registry(&mut out, &scrape))
            .and_then(|()| encode_eof(&mut out));
        // Writing to a String cannot fail.
        debug_assert!(written.is_ok());
        Ok(out)
    }
}

/// The store's group-commit sizes as a histogram.
#[derive(Debug)]
struct BatchHistogram(klaxon_store::BatchSizes);

impl EncodeMetric for BatchHistogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let b = &self.0;
        // The encoder takes each bucket's own count and adds them up.
        let mut below = 0;
        let mut buckets: Vec<(f64, u64)> = b
            .buckets
            .iter()
            .map(|(le, cumulative)| {
                let own = cumulative.saturating_sub(below);
                below = *cumulative;
                (*le as f64, own)
            })
            .collect();
        buckets.push((f64::INFINITY, b.count.saturating_sub(below)));
        encoder.encode_histogram::<NoLabelSet>(b.sum as f64, b.count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

fn channel_label(channel: &str) -> &'static str {
    match channel {
        "email" => "email",
        "sms" => "sms",
        "phone" => "phone",
        "webhook" => "webhook",
        "slack" => "slack",
        "ntfy" => "ntfy",
        _ => "other",
    }
}

/// The middleware that counts every request: its route template (axum's
/// `MatchedPath`, set before route layers run), status and latency.
pub async fn track(metrics: Arc<Metrics>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().clone();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned());
    let response = next.run(request).await;
    metrics.request(
        &method,
        route.as_deref(),
        response.status().as_u16(),
        started.elapsed(),
    );
    response
}

/// `GET /metrics`: with `KLAXON_METRICS_TOKEN` set, only for
/// `Authorization: Bearer <token>`.
pub async fn show_metrics(State(state): State<AppState>, headers: HeaderMap) -> Response {
    if let Some(token) = &state.config.metrics_token {
        if !bearer_matches(&headers, token) {
            return ApiError::Unauthorized.into_response();
        }
    }
    match state
        .metrics
        .render(&*state.store, state.clock.now_ms())
        .await
    {
        Ok(body) => (
            [(
                CONTENT_TYPE,
                HeaderValue::from_static(CONTENT_TYPE_OPENMETRICS),
            )],
            body,
        )
            .into_response(),
        Err(err) => {
            tracing::warn!(error = %err, "metrics: the database did not answer");
            ApiError::Unavailable.into_response()
        }
    }
}

/// Whether the request carries `Bearer <token>`; compared as digests, so
/// the time taken says nothing about how much of a guess was right.
fn bearer_matches(headers: &HeaderMap, token: &str) -> bool {
    let Some(given) = headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    else {
        return false;
    };
    Sha256::digest(given.trim().as_bytes()) == Sha256::digest(token.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_requests_by_route_template() {
        let m = Metrics::new();
        m.request(
            &Method::GET,
            Some("/incidents/{id}"),
            200,
            Duration::from_millis(3),
        );
        m.request(
            &Method::from_bytes(b"BREW").expect("a method"),
            None,
            404,
            Duration::from_millis(1),
        );
        let mut out = String::new();
        encode_registry(&mut out, &m.registry).expect("encodes");
        assert!(
            out.contains(
                r#"klaxon_http_requests_total{method="GET",route="/incidents/{id}",status="200"} 1"#
            ),
            "{out}"
        );
        assert!(
            out.contains(
                r#"klaxon_http_requests_total{method="other",route="unmatched",status="404"} 1"#
            ),
            "{out}"
        );
        assert!(
            out.contains(r#"klaxon_http_request_duration_seconds_bucket{le="0.005",method="GET",route="/incidents/{id}"} 1"#),
            "{out}"
        );
    }

    #[test]
    fn batch_sizes_encode_as_a_histogram() {
        let mut r = Registry::with_prefix("klaxon");
        r.register(
            "trigger_batch_size",
            "h",
            BatchHistogram(klaxon_store::BatchSizes {
                buckets: vec![(1, 2), (2, 3)],
                sum: 4,
                count: 3,
            }),
        );
        let mut out = String::new();
        encode_registry(&mut out, &r).expect("encodes");
        assert!(
            out.contains("# TYPE klaxon_trigger_batch_size histogram"),
            "{out}"
        );
        assert!(
            out.contains(r#"klaxon_trigger_batch_size_bucket{le="2.0"} 3"#),
            "{out}"
        );
        assert!(
            out.contains(r#"klaxon_trigger_batch_size_bucket{le="+Inf"} 3"#),
            "{out}"
        );
        assert!(out.contains("klaxon_trigger_batch_size_sum 4.0"), "{out}");
    }

    #[test]
    fn bearer_tokens_must_match_exactly() {
        let mut h = HeaderMap::new();
        assert!(!bearer_matches(&h, "s3cret"));
        h.insert(AUTHORIZATION, HeaderValue::from_static("Bearer s3cret"));
        assert!(bearer_matches(&h, "s3cret"));
        assert!(!bearer_matches(&h, "s3cre"));
        h.insert(AUTHORIZATION, HeaderValue::from_static("Token s3cret"));
        assert!(!bearer_matches(&h, "s3cret"));
    }
}
