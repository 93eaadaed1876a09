//! User roles and what each may do.

use serde::Serialize;

/// A user's role within its account.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Manages everything in the account.
    Admin,
    /// Acts on incidents and manages their own contacts.
    Responder,
    /// Reads only.
    Observer,
}

impl Role {
    /// The role's name as stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Responder => "responder",
            Role::Observer => "observer",
        }
    }

    /// Parses a stored or submitted role name.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "admin" => Some(Role::Admin),
            "responder" => Some(Role::Responder),
            "observer" => Some(Role::Observer),
            _ => None,
        }
    }

    /// May create, change and delete account configuration (users, services, policies).
    pub fn can_manage(self) -> bool {
        self == Role::Admin
    }

    /// May open, acknowledge, resolve and escalate incidents.
    pub fn can_respond(self) -> bool {
        matches!(self, Role::Admin | Role::Responder)
    }
}
