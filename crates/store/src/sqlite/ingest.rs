//! What every ingest request reads, answered from memory.
//!
//! A monitoring system's trigger needs three facts: which service its
//! integration key opens, whether that service is enabled, and whether an
//! unresolved incident with the same key (or message) exists. One process
//! serves a SQLite file (the server holds a lock on it), so every write to
//! those facts passes through this process and the answers can be kept in
//! memory exactly, not merely cached:
//!
//! - [`IngestState::load`] reads them once, holding the writer connection,
//!   after migrations;
//! - every write that changes them records a `sql::Change`, applied to
//!   memory right after its commit and before the writer is released, so
//!   before the next commit can happen: memory moves through the same
//!   states as the database, in the same order.
//!
//! Until it is loaded every question answers "don't know" and callers go
//! to the database, as they would without it.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::{PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use klaxon_core::time::Millis;

use crate::sql::{query, Db};
use crate::{IntegrationTarget, Result};

/// The in-memory ingest facts.
#[derive(Default)]
pub(super) struct IngestState {
    inner: RwLock<Inner>,
}

#[derive(Default)]
pub(super) struct Inner {
    loaded: bool,
    /// Integration key → service id.
    by_key: HashMap<String, String>,
    services: HashMap<String, ServiceEntry>,
    /// Unresolved incidents by id.
    open: HashMap<String, OpenIncident>,
    /// Keys for [`Digest`]s, random per load.
    digests: (RandomState, RandomState),
}

/// A message as the state keeps it: 128 bits from two independently,
/// randomly keyed SipHashes, so that a storm of long, distinct messages
/// costs 16 bytes each, not up to 1 KiB. Two messages share a digest with
/// a chance of about one in 2^128 per pair, and nobody outside the process
/// can aim for it (the keys are random).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
struct Digest(u64, u64);

impl Inner {
    fn digest(&self, message: &str) -> Digest {
        Digest(
            self.digests.0.hash_one(message),
            self.digests.1.hash_one(message),
        )
    }
}

struct ServiceEntry {
    account_id: String,
    integration_key: String,
    enabled: bool,
    /// Unresolved incidents by key (unique: `incidents_open_key`).
    keys: HashMap<String, String>,
    /// Unresolved incidents by message: (triggered_at, id), any order.
    messages: HashMap<Digest, Vec<(Millis, String)>>,
}

struct OpenIncident {
    service_id: String,
    key: String,
    message: Digest,
    triggered_at: Millis,
}

/// An unresolved incident as the ingest state records it.
pub(super) struct OpenRef<'a> {
    pub id: &'a str,
    pub service_id: &'a str,
    pub key: &'a str,
    pub message: &'a str,
    pub triggered_at: Millis,
}

impl IngestState {
    fn read(&self) -> RwLockReadGuard<'_, Inner> {
        // The data is plain maps updated by infallible code: a panic while
        // holding the lock cannot leave them half-changed.
        self.inner.read().unwrap_or_else(PoisonError::into_inner)
    }

    pub(super) fn write(&self) -> RwLockWriteGuard<'_, Inner> {
        self.inner.write().unwrap_or_else(PoisonError::into_inner)
    }

    /// Reads every service and unresolved incident. The caller holds the
    /// writer, so no commit is in between.
    pub(super) async fn load(&self, db: &mut impl Db) -> Result<()> {
        let services: Vec<(String, String, String, String)> = db
            .fetch_all(query(
                "SELECT id, account_id, integration_key, state FROM services",
            ))
            .await?;
        let open: Vec<(String, String, String, String, Millis)> = db
            .fetch_all(query(
                "SELECT id, service_id, key, message, triggered_at FROM incidents WHERE state <> 'resolved'",
            ))
            .await?;
        let mut inner = Inner {
            loaded: true,
            ..Inner::default()
        };
        for (id, account_id, key, state) in services {
            inner.service_saved(&id, &account_id, &key, state == "enabled");
        }
        for (id, service_id, key, message, triggered_at) in open {
            inner.opened(OpenRef {
                id: &id,
                service_id: &service_id,
                key: &key,
                message: &message,
                triggered_at,
            });
        }
        *self.write() = inner;
        Ok(())
    }

    /// The service an integration key opens; `None` when not loaded.
    pub(super) fn integration_target(&self, key: &str) -> Option<Option<IntegrationTarget>> {
        let inner = self.read();
        if !inner.loaded {
            return None;
        }
        Some(inner.by_key.get(key).and_then(|id| {
            let s = inner.services.get(id)?;
            Some(IntegrationTarget {
                id: id.clone(),
                account_id: s.account_id.clone(),
                state: if s.enabled { "enabled" } else { "disabled" }.into(),
            })
        }))
    }

    /// The unresolved incident a trigger of an *enabled* service
    /// deduplicates into: by key, or without a key by message (the newest).
    /// `None` when not loaded, the service is unknown or disabled, or no
    /// such incident is open.
    pub(super) fn open_if_enabled(
        &self,
        account_id: &str,
        service_id: &str,
        key: Option<&str>,
        message: &str,
    ) -> Option<String> {
        let inner = self.read();
        let service = inner.services.get(service_id)?;
        if !service.enabled || service.account_id != account_id {
            return None;
        }
        service.find(key, inner.digest(message)).map(str::to_owned)
    }

    /// Like [`Self::open_if_enabled`] for any service state, telling "not
    /// loaded" (outer `None`) from "none open" (inner `None`).
    pub(super) fn find_open(
        &self,
        service_id: &str,
        key: Option<&str>,
        message: &str,
    ) -> Option<Option<String>> {
        let inner = self.read();
        if !inner.loaded {
            return None;
        }
        Some(
            inner
                .services
                .get(service_id)
                .and_then(|s| s.find(key, inner.digest(message)))
                .map(str::to_owned),
        )
    }
}

impl ServiceEntry {
    fn find(&self, key: Option<&str>, message: Digest) -> Option<&str> {
        match key {
            Some(key) => self.keys.get(key).map(String::as_str),
            None => self
                .messages
                .get(&message)?
                .iter()
                .max()
                .map(|(_, id)| id.as_str()),
        }
    }
}

impl Inner {
    /// Whether changes need recording (nothing is kept before the load).
    pub(super) fn loaded(&self) -> bool {
        self.loaded
    }

    /// A service was created or changed.
    /// Applies a committed change.
    pub(super) fn apply(&mut self, change: crate::sql::Change) {
        use crate::sql::Change;
        match change {
            Change::ServiceCreated {
                id,
                account_id,
                integration_key,
            } => self.service_saved(&id, &account_id, &integration_key, true),
            Change::ServiceState { id, enabled } => self.service_state(&id, enabled),
            Change::ServiceRekeyed {
                id,
                integration_key,
            } => self.service_rekeyed(&id, &integration_key),
            Change::ServiceDeleted { id } => self.service_deleted(&id),
            Change::IncidentClosed { id } => self.closed(&id),
            Change::MessageChanged { id, message } => self.message_changed(&id, &message),
            Change::TimersArmed | Change::MessagesQueued => {}
        }
    }

    pub(super) fn service_saved(&mut self, id: &str, account_id: &str, key: &str, enabled: bool) {
        match self.services.get_mut(id) {
            Some(s) => {
                if s.integration_key != key {
                    self.by_key.remove(&s.integration_key);
                    s.integration_key = key.to_owned();
                }
                s.enabled = enabled;
            }
            None => {
                self.services.insert(
                    id.to_owned(),
                    ServiceEntry {
                        account_id: account_id.to_owned(),
                        integration_key: key.to_owned(),
                        enabled,
                        keys: HashMap::new(),
                        messages: HashMap::new(),
                    },
                );
            }
        }
        self.by_key.insert(key.to_owned(), id.to_owned());
    }

    /// A service was enabled or disabled.
    pub(super) fn service_state(&mut self, id: &str, enabled: bool) {
        if let Some(s) = self.services.get_mut(id) {
            s.enabled = enabled;
        }
    }

    /// A service was given a new integration key.
    pub(super) fn service_rekeyed(&mut self, id: &str, key: &str) {
        if let Some(s) = self.services.get_mut(id) {
            self.by_key.remove(&s.integration_key);
            s.integration_key = key.to_owned();
            self.by_key.insert(key.to_owned(), id.to_owned());
        }
    }

    /// A service was deleted, with its incidents.
    pub(super) fn service_deleted(&mut self, id: &str) {
        if let Some(s) = self.services.remove(id) {
            self.by_key.remove(&s.integration_key);
            for incident in s.keys.values() {
                self.open.remove(incident);
            }
        }
    }

    /// An incident was opened.
    pub(super) fn opened(&mut self, i: OpenRef<'_>) {
        let message = self.digest(i.message);
        if let Some(s) = self.services.get_mut(i.service_id) {
            s.keys.insert(i.key.to_owned(), i.id.to_owned());
            s.messages
                .entry(message)
                .or_default()
                .push((i.triggered_at, i.id.to_owned()));
        }
        self.open.insert(
            i.id.to_owned(),
            OpenIncident {
                service_id: i.service_id.to_owned(),
                key: i.key.to_owned(),
                message,
                triggered_at: i.triggered_at,
            },
        );
    }

    /// An incident was resolved or deleted.
    pub(super) fn closed(&mut self, id: &str) {
        let Some(i) = self.open.remove(id) else {
            return;
        };
        if let Some(s) = self.services.get_mut(&i.service_id) {
            if s.keys.get(&i.key).is_some_and(|open| open == id) {
                s.keys.remove(&i.key);
            }
            s.forget_message(i.message, id);
        }
    }

    /// An unresolved incident's message was edited.
    pub(super) fn message_changed(&mut self, id: &str, message: &str) {
        let message = self.digest(message);
        let Some(i) = self.open.get_mut(id) else {
            return;
        };
        if i.message == message {
            return;
        }
        let old = std::mem::replace(&mut i.message, message);
        let triggered_at = i.triggered_at;
        if let Some(s) = self.services.get_mut(&i.service_id) {
            s.forget_message(old, id);
            s.messages
                .entry(message)
                .or_default()
                .push((triggered_at, id.to_owned()));
        }
    }
}

impl ServiceEntry {
    fn forget_message(&mut self, message: Digest, id: &str) {
        if let Some(ids) = self.messages.get_mut(&message) {
            ids.retain(|(_, open)| open != id);
            if ids.is_empty() {
                self.messages.remove(&message);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state() -> IngestState {
        let state = IngestState::default();
        let mut inner = state.write();
        inner.loaded = true;
        inner.service_saved("svc", "acc", "ikey", true);
        drop(inner);
        state
    }

    fn open(state: &IngestState, id: &str, key: &str, message: &str, at: Millis) {
        state.write().opened(OpenRef {
            id,
            service_id: "svc",
            key,
            message,
            triggered_at: at,
        });
    }

    #[test]
    fn dedups_by_key_and_by_newest_message() {
        let s = state();
        open(&s, "a", "k1", "disk full", 1);
        open(&s, "b", "k2", "disk full", 2);
        assert_eq!(
            s.open_if_enabled("acc", "svc", Some("k1"), "x").as_deref(),
            Some("a")
        );
        assert_eq!(
            s.open_if_enabled("acc", "svc", None, "disk full")
                .as_deref(),
            Some("b")
        );
        assert_eq!(s.open_if_enabled("acc", "svc", None, "disk ful"), None);
        assert_eq!(s.open_if_enabled("acc", "svc", None, "disk full!"), None);
        s.write().closed("b");
        assert_eq!(
            s.open_if_enabled("acc", "svc", None, "disk full")
                .as_deref(),
            Some("a")
        );
        assert_eq!(s.open_if_enabled("acc", "svc", Some("k2"), "x"), None);
        s.write().closed("a");
        assert_eq!(s.find_open("svc", None, "disk full"), Some(None));
    }

    #[test]
    fn other_accounts_and_disabled_services_never_match() {
        let s = state();
        open(&s, "a", "k1", "m", 1);
        assert_eq!(s.open_if_enabled("other", "svc", Some("k1"), "m"), None);
        s.write().service_state("svc", false);
        assert_eq!(s.open_if_enabled("acc", "svc", Some("k1"), "m"), None);
        // The write path still sees it (and refuses the disabled service).
        assert_eq!(
            s.find_open("svc", Some("k1"), "m"),
            Some(Some("a".to_owned()))
        );
    }

    #[test]
    fn edited_messages_move_and_keys_follow_rekeying() {
        let s = state();
        open(&s, "a", "k1", "old", 1);
        s.write().message_changed("a", "new");
        assert_eq!(s.find_open("svc", None, "old"), Some(None));
        assert_eq!(s.find_open("svc", None, "new"), Some(Some("a".to_owned())));
        s.write().service_rekeyed("svc", "ikey2");
        assert!(s.integration_target("ikey").expect("loaded").is_none());
        let t = s.integration_target("ikey2").expect("loaded").expect("svc");
        assert_eq!((t.id.as_str(), t.state.as_str()), ("svc", "enabled"));
        s.write().service_deleted("svc");
        assert!(s.integration_target("ikey2").expect("loaded").is_none());
        assert_eq!(s.find_open("svc", Some("k1"), "new"), Some(None));
    }

    #[test]
    fn nothing_is_answered_before_the_load() {
        let s = IngestState::default();
        assert!(s.integration_target("k").is_none());
        assert!(s.find_open("svc", Some("k"), "m").is_none());
        assert!(s.open_if_enabled("acc", "svc", Some("k"), "m").is_none());
    }
}
