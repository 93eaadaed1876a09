//! Klaxon's domain core: the rules of the product as pure functions.
//!
//! Nothing in this crate performs IO or reads a clock. Functions take `now`
//! (milliseconds since the Unix epoch, from the server's virtual clock) and
//! return new state plus the effects to carry out, so the on-call logic can
//! be tested exhaustively in microseconds.

pub mod contact;
pub mod engine;
pub mod escalation;
pub mod id;
pub mod incident;
pub mod notify;
pub mod role;
pub mod schedule;
pub mod time;
pub mod validate;

pub use id::PublicId;
pub use incident::{IncidentAction, IncidentState, Transition, TransitionError};
pub use role::Role;
