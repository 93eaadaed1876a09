//! The HTTP API: one module per resource, plus the shared error type,
//! extractors and JSON views.

pub mod auth;
pub mod client_ip;
pub mod contacts;
pub mod error;
pub mod events;
pub mod events_stream;
pub mod health;
pub mod heartbeats;
pub mod ical;
pub mod inbound;
pub mod incidents;
pub mod input;
pub mod integration;
pub mod invitations;
pub mod links;
pub mod notifications;
pub mod page;
pub mod policies;
pub mod schedules;
pub mod services;
pub mod sessions;
pub mod signing;
pub mod throttle;
pub mod tokens;
pub mod trace;
pub mod twilio;
pub mod twilio_signature;
pub mod twiml;
pub mod users;
pub mod views;

use klaxon_core::PublicId;

use error::ApiError;

/// Checks a path id's shape; an id that cannot exist is a 404 without a
/// database round trip.
pub fn path_id(raw: &str) -> Result<&str, ApiError> {
    PublicId::parse(raw).map(|_| raw).ok_or(ApiError::NotFound)
}

/// A `201 Created` answer with a `Location` header and the new object.
pub type Created = (
    axum::http::StatusCode,
    [(axum::http::HeaderName, String); 1],
    axum::Json<serde_json::Value>,
);

/// Builds a [`Created`] answer.
pub fn created(location: String, body: serde_json::Value) -> Created {
    (
        axum::http::StatusCode::CREATED,
        [(axum::http::header::LOCATION, location)],
        axum::Json(body),
    )
}
