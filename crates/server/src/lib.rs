//! The Klaxon server: configuration, clock, HTTP API.

pub mod app;
pub mod clock;
pub mod config;
pub mod engine;
pub mod html;
pub mod http;
pub mod metrics;
pub mod notify;
pub mod password;
pub mod tls;
