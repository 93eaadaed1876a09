//! Application state, the router, and the one entry point that serves it.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::DefaultBodyLimit;
use axum::http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use axum::http::HeaderValue;
use axum::response::Response;
use axum::routing::{get, post, put};
use axum::Router;
use klaxon_store::Store;
use tower_http::timeout::RequestBodyTimeoutLayer;

use crate::clock::Clock;
use crate::config::Config;
use crate::http::inbound::Inbound;
use crate::http::throttle::AuthLimits;
use crate::http::{self, error::ApiError};
use crate::metrics::{self, Metrics};
use crate::notify::links::Signer;
use crate::notify::web::SigningKeys;
use crate::password::Hasher;

/// Largest accepted request body.
pub const BODY_LIMIT: usize = 1024 * 1024;
/// Longest a client may take to send its request body.
pub const BODY_TIMEOUT: Duration = Duration::from_secs(30);

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    /// The database.
    pub store: Arc<dyn Store>,
    /// The (possibly accelerated) clock.
    pub clock: Clock,
    /// Validated configuration.
    pub config: Arc<Config>,
    /// Signs and checks one-click answer links.
    pub links: Arc<Signer>,
    /// Each account's webhook signing secret.
    pub webhook_keys: SigningKeys,
    /// The inbound integrations' rate limits and what they remember.
    pub inbound: Arc<Inbound>,
    /// Turns true when the server shuts down: long-lived responses (event
    /// streams) end then, so that shutting down does not wait on them.
    pub closing: Closing,
    /// This process's Prometheus metrics (`GET /metrics`).
    pub metrics: Arc<Metrics>,
    /// The bounded pool every password hash and check runs on.
    pub hasher: Hasher,
    /// Sign-in and registration attempts per email and client address.
    pub auth_limits: Arc<AuthLimits>,
}

/// The server's shutdown, as seen by responses that would otherwise never
/// end. Clones share it.
#[derive(Clone, Default)]
pub struct Closing(Arc<tokio::sync::watch::Sender<bool>>);

impl Closing {
    /// Ends every stream, now and from now on.
    pub fn close(&self) {
        self.0.send_replace(true);
    }

    /// A receiver that sees `true` once the server is closing.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<bool> {
        self.0.subscribe()
    }
}

impl AppState {
    /// The state for `store`, with the link and webhook signing keys it
    /// shares.
    pub async fn load(
        store: Arc<dyn Store>,
        clock: Clock,
        config: Arc<Config>,
    ) -> klaxon_store::Result<Self> {
        let links = Signer::load(&*store, &config.public_url, clock.now_ms()).await?;
        let webhook_keys = SigningKeys::load(&*store, clock.now_ms()).await?;
        let inbound = Arc::new(Inbound::new(config.integration_rate));
        let auth_limits = Arc::new(AuthLimits::new(config.auth_rate_email, config.auth_rate_ip));
        Ok(Self {
            store,
            clock,
            config,
            links: Arc::new(links),
            webhook_keys,
            inbound,
            closing: Closing::default(),
            metrics: Arc::new(Metrics::new()),
            hasher: Hasher::for_this_machine(),
            auth_limits,
        })
    }
}

/// Every route of the API.
pub fn router(state: AppState) -> Router {
    use http::inbound::{alertmanager, opsgenie, pagerduty};
    use http::{
        contacts, events, events_stream, health, heartbeats, incidents, integration, invitations,
        links, notifications, policies, schedules, services, sessions, signing, tokens, twilio,
        users,
    };
    let pagerduty_limit = || DefaultBodyLimit::max(pagerduty::BODY_LIMIT);
    let counted = state.metrics.clone();
    Router::new()
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(metrics::show_metrics))
        .route("/registrations", post(sessions::create_registration))
        .route("/sessions", post(sessions::create_session))
        .route("/me", get(sessions::show_me))
        .route(
            "/tokens",
            get(tokens::list_tokens).post(tokens::create_token),
        )
        .route("/tokens/{id}", axum::routing::delete(tokens::delete_token))
        .route("/users/{id}/tokens", get(tokens::list_user_tokens))
        .route(
            "/users/{id}/tokens/{token_id}",
            axum::routing::delete(tokens::delete_user_token),
        )
        .route(
            "/invitations",
            get(invitations::list_invitations).post(invitations::create_invitation),
        )
        .route(
            "/invitations/{id}",
            axum::routing::delete(invitations::delete_invitation),
        )
        .route("/users", get(users::list_users).post(users::create_user))
        .route(
            "/users/{id}",
            get(users::show_user)
                .put(users::update_user)
                .patch(users::update_user)
                .delete(users::delete_user),
        )
        .route("/users/{id}/events", get(events::list_user_events))
        .route(
            "/users/{id}/notifications",
            get(notifications::list_user_notifications),
        )
        .route(
            "/users/{id}/contacts",
            get(contacts::list_contacts).post(contacts::create_contact),
        )
        .route(
            "/users/{id}/contacts/{contact_id}",
            get(contacts::show_contact)
                .put(contacts::update_contact)
                .patch(contacts::update_contact)
                .delete(contacts::delete_contact),
        )
        .route(
            "/users/{id}/notification_rules",
            get(contacts::list_notification_rules).post(contacts::create_notification_rule),
        )
        .route(
            "/users/{id}/notification_rules/{rule_id}",
            get(contacts::show_notification_rule)
                .put(contacts::update_notification_rule)
                .patch(contacts::update_notification_rule)
                .delete(contacts::delete_notification_rule),
        )
        .route(
            "/policies",
            get(policies::list_policies).post(policies::create_policy),
        )
        .route(
            "/policies/{id}",
            get(policies::show_policy)
                .put(policies::update_policy)
                .patch(policies::update_policy)
                .delete(policies::delete_policy),
        )
        .route("/policies/{id}/events", get(events::list_policy_events))
        .route(
            "/policies/{id}/rules",
            get(policies::list_rules).post(policies::create_rule),
        )
        .route("/policies/{id}/rules/sort", post(policies::sort_rules))
        .route(
            "/policies/{id}/rules/{rule_id}",
            get(policies::show_rule)
                .put(policies::update_rule)
                .patch(policies::update_rule)
                .delete(policies::delete_rule),
        )
        .route(
            "/services",
            get(services::list_services).post(services::create_service),
        )
        .route(
            "/services/{id}",
            get(services::show_service)
                .put(services::update_service)
                .patch(services::update_service)
                .delete(services::delete_service),
        )
        .route("/services/{id}/enable", put(services::enable_service))
        .route("/services/{id}/disable", put(services::disable_service))
        .route(
            "/services/{id}/integration_key",
            post(services::regenerate_integration_key),
        )
        .route("/services/{id}/events", get(events::list_service_events))
        .route(
            "/services/{id}/incidents",
            get(incidents::list_service_incidents).post(incidents::create_incident),
        )
        .route(
            "/schedules",
            get(schedules::list_schedules).post(schedules::create_schedule),
        )
        .route(
            "/schedules/{id}",
            get(schedules::show_schedule)
                .put(schedules::update_schedule)
                .patch(schedules::update_schedule)
                .delete(schedules::delete_schedule),
        )
        .route(
            "/schedules/{id}/layers",
            get(schedules::list_layers).post(schedules::create_layer),
        )
        .route(
            "/schedules/{id}/layers/{layer_id}",
            put(schedules::update_layer)
                .patch(schedules::update_layer)
                .delete(schedules::delete_layer),
        )
        .route(
            "/schedules/{id}/overrides",
            get(schedules::list_overrides).post(schedules::create_override),
        )
        .route(
            "/schedules/{id}/overrides/{override_id}",
            axum::routing::delete(schedules::delete_override),
        )
        .route("/schedules/{id}/on_call", get(schedules::show_on_call))
        .route("/schedules/{id}/shifts", get(schedules::list_shifts))
        .route("/schedules/{id}/events", get(events::list_schedule_events))
        .route(
            "/schedules/{id}/feed_token",
            post(tokens::create_feed_token).delete(tokens::delete_feed_token),
        )
        .route("/oncalls", get(schedules::list_oncalls))
        .route(
            "/services/{id}/escalation_preview",
            get(services::show_escalation_preview),
        )
        .route("/incidents", get(incidents::list_incidents))
        .route(
            "/incidents/{id}",
            get(incidents::show_incident)
                .put(incidents::update_incident)
                .patch(incidents::update_incident)
                .delete(incidents::delete_incident),
        )
        .route(
            "/incidents/{id}/acknowledge",
            put(incidents::acknowledge_incident),
        )
        .route("/incidents/{id}/resolve", put(incidents::resolve_incident))
        .route("/incidents/{id}/trigger", put(incidents::trigger_incident))
        .route(
            "/incidents/{id}/escalate",
            put(incidents::escalate_incident),
        )
        .route("/incidents/{id}/events", get(events::list_incident_events))
        .route(
            "/incidents/{id}/notifications",
            get(notifications::list_incident_notifications),
        )
        .route("/events", get(events::list_events))
        .route("/events/stream", get(events_stream::stream_events))
        .route(
            "/services/{id}/heartbeats",
            get(heartbeats::list_heartbeats).post(heartbeats::create_heartbeat),
        )
        .route(
            "/services/{id}/heartbeats/{heartbeat_id}",
            get(heartbeats::show_heartbeat)
                .put(heartbeats::update_heartbeat)
                .patch(heartbeats::update_heartbeat)
                .delete(heartbeats::delete_heartbeat),
        )
        // Pings: the token in the path is the only credential.
        .route(
            "/heartbeats/{token}",
            get(heartbeats::ping_heartbeat).post(heartbeats::ping_heartbeat),
        )
        .route(
            "/webhook_signing_secret",
            get(signing::show_webhook_signing_secret),
        )
        .route(
            "/trigger",
            put(integration::trigger).post(integration::trigger),
        )
        .route(
            "/acknowledge",
            put(integration::acknowledge).post(integration::acknowledge),
        )
        .route(
            "/resolve",
            put(integration::resolve).post(integration::resolve),
        )
        // Other tools' APIs, on a service's integration key.
        .route(
            "/v2/enqueue",
            post(pagerduty::enqueue_event).layer(pagerduty_limit()),
        )
        .route(
            "/v2/change/enqueue",
            post(pagerduty::enqueue_change_event).layer(pagerduty_limit()),
        )
        .route(
            "/generic/2010-04-15/create_event.json",
            post(pagerduty::create_event_v1).layer(pagerduty_limit()),
        )
        .route("/v2/alerts", post(opsgenie::create_alert))
        .route(
            "/v2/alerts/{identifier}/{action}",
            post(opsgenie::act_on_alert),
        )
        .route(
            "/integrations/alertmanager",
            post(alertmanager::receive_alerts),
        )
        // Twilio's webhooks: authenticated by Twilio's signature, not a token.
        .route("/sms", post(twilio::receive_sms))
        .route("/voice", post(twilio::show_voice))
        .route("/voice/receive", post(twilio::receive_voice_key))
        .route("/twilio/status", post(twilio::receive_status))
        .route(
            "/links/{token}",
            get(links::show_link).post(links::use_link),
        )
        .fallback(|| async { ApiError::NotFound })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        // A slow client gets 30 s to send its body. Handlers themselves are
        // not cut off: a request whose write is under way is answered with
        // what was committed, so a timeout can never hide a commit (a
        // client that retried a "timed out" keyless trigger would open a
        // duplicate). The store bounds its own waits (pool acquire timeouts).
        .layer(RequestBodyTimeoutLayer::new(BODY_TIMEOUT))
        .layer(axum::middleware::map_response(json_errors))
        // Logs the route's template, never the path or query: URLs carry
        // ping, link and feed tokens.
        .layer(http::trace::layer())
        // Outermost, so that it sees every answer as the client gets it.
        // Route layers run after routing: the matched template is known.
        .layer(axum::middleware::from_fn(move |request, next| {
            metrics::track(counted.clone(), request, next)
        }))
        .with_state(state)
}

/// The safety net under every route: an error answered by the framework
/// rather than a handler (a path segment that is not UTF-8) is
/// rewritten into the same JSON error body handlers send. HTML pages
/// (the answer-link pages, for browsers) keep their own error pages.
async fn json_errors(response: Response) -> Response {
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let answered = response
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json") || v.starts_with("text/html"));
    if answered {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, 4096)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_owned())
        .unwrap_or_default();
    let reason = status.canonical_reason().unwrap_or("error");
    let code = reason.to_ascii_lowercase().replace([' ', '-'], "_");
    let message = if text.is_empty() {
        reason.to_owned()
    } else {
        text
    };
    let body = serde_json::json!({ "error": code, "message": message }).to_string();
    parts.headers.remove(CONTENT_LENGTH);
    parts
        .headers
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    Response::from_parts(parts, Body::from(body))
}

/// The socket address of a connection's client, over TCP or TLS alike
/// (axum only knows the peer of a plain `TcpListener`).
#[derive(Clone, Copy, Debug)]
pub struct Peer(pub std::net::SocketAddr);

impl
    axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, tokio::net::TcpListener>>
    for Peer
{
    fn connect_info(stream: axum::serve::IncomingStream<'_, tokio::net::TcpListener>) -> Self {
        Peer(*stream.remote_addr())
    }
}

impl
    axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, crate::tls::TlsListener>>
    for Peer
{
    fn connect_info(stream: axum::serve::IncomingStream<'_, crate::tls::TlsListener>) -> Self {
        Peer(*stream.remote_addr())
    }
}

/// Serves the API on `listener` (a `TcpListener`, or a
/// [`TlsListener`](crate::tls::TlsListener) for HTTPS) until `shutdown`
/// completes, then stops accepting, ends event streams, lets in-flight
/// requests finish and closes the store.
pub async fn serve<L>(
    listener: L,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()>
where
    L: axum::serve::Listener<Addr = std::net::SocketAddr>,
    Peer: for<'a> axum::extract::connect_info::Connected<axum::serve::IncomingStream<'a, L>>,
{
    let store = state.store.clone();
    let closing = state.closing.clone();
    let shutdown = async move {
        shutdown.await;
        closing.close();
    };
    // The peer address is the client's, for rate limits (`ClientIp`).
    let app = router(state).into_make_service_with_connect_info::<Peer>();
    let result = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await;
    store.close().await;
    result
}
