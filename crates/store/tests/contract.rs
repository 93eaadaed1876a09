//! The store contract: one suite of behaviour every backend must show.
//!
//! Each test is an `async fn(Arc<dyn Store>)` in one of the modules under
//! `contract/`; `contract_tests!` runs it twice, against a fresh SQLite file
//! (`sqlite::…`) and a fresh PostgreSQL database on the testkit's throwaway
//! server (`postgres::…`). This file holds the harness, fixtures and
//! assertions they share.

#![allow(clippy::unwrap_used)]

#[path = "contract/accounts.rs"]
mod accounts;
#[path = "contract/acting.rs"]
mod acting;
#[path = "contract/answers.rs"]
mod answers;
#[path = "contract/concurrency.rs"]
mod concurrency;
#[path = "contract/contacts.rs"]
mod contacts;
#[path = "contract/heartbeats.rs"]
mod heartbeats;
#[path = "contract/integrations.rs"]
mod integrations;
#[path = "contract/links.rs"]
mod links;
#[path = "contract/listing.rs"]
mod listing;
#[path = "contract/policies.rs"]
mod policies;
#[path = "contract/schedules.rs"]
mod schedules;
#[path = "contract/services.rs"]
mod services;
#[path = "contract/timers.rs"]
mod timers;
#[path = "contract/tokens.rs"]
mod tokens;
#[path = "contract/triggers.rs"]
mod triggers;

use std::collections::HashSet;
use std::fmt::Debug;
use std::sync::Arc;

use klaxon_core::time::Millis;
use klaxon_core::{IncidentAction, IncidentState};
use klaxon_store::{
    ActOutcome, Actor, Event, EventFilter, Incident, IncidentFilter, IncidentPatch, NewIncident,
    OutgoingMessage, Policy, PolicyRule, Result, Revoke, RuleInput, Service, ServiceInput, Store,
    StoreError, TokenInput, TriggerOutcome, UserInput,
};
use serde_json::json;
use tempfile::TempDir;

/// Generates a `sqlite::NAME` and a `postgres::NAME` test for each
/// `module::NAME`, each on its own fresh, migrated database.
macro_rules! contract_tests {
    ($($module:ident :: $name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    let (store, _dir) = super::sqlite_store().await;
                    let keep = store.clone();
                    super::$module::$name(store).await;
                    keep.close().await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    let store = super::postgres_store().await;
                    let keep = store.clone();
                    super::$module::$name(store).await;
                    keep.close().await;
                }
            )*
        }
    };
}

contract_tests!(
    accounts::accounts_and_tokens,
    accounts::tenant_isolation,
    accounts::user_email_is_unique,
    accounts::last_admin_is_kept,
    accounts::user_named_in_a_rule_cannot_be_deleted,
    tokens::tokens_expire_and_sessions_slide,
    tokens::user_changes_revoke_tokens,
    tokens::admins_revoke_other_users_tokens,
    tokens::feed_tokens_are_one_per_user_and_schedule,
    tokens::invitations_work_once,
    tokens::invitations_check_the_email_and_stay_in_their_account,
    policies::policy_crud,
    policies::rules_positions_and_sorting,
    policies::rule_assignment_must_be_in_the_account,
    policies::policy_in_use_cannot_be_deleted,
    services::service_crud,
    services::service_counts_by_state,
    services::service_enable_disable_is_idempotent,
    services::integration_key_lookup,
    triggers::trigger_assigns_the_first_rule,
    triggers::trigger_without_rules,
    triggers::dedup_by_key,
    triggers::dedup_by_message,
    triggers::trigger_on_disabled_service_is_refused,
    triggers::dedup_ends_with_the_open_incident,
    acting::state_machine,
    acting::escalate_walks_rules_and_wraps,
    acting::update_incident_writes_a_changeset,
    listing::list_incidents_filters,
    listing::list_incidents_escapes_like_wildcards,
    listing::list_incidents_pages_newest_first,
    listing::events_record_actors_newest_first,
    listing::delete_incident,
    concurrency::concurrent_triggers_with_one_key,
    concurrency::concurrent_triggers_with_one_message,
    concurrency::concurrent_triggers_without_dedup,
    concurrency::concurrent_acknowledges,
    concurrency::concurrent_admin_demotions,
    concurrency::concurrent_rule_appends,
    timers::timers_walk_the_policy_and_stop_at_the_loop_limit,
    timers::acknowledge_cancels_and_ack_timeout_retriggers,
    timers::manual_escalation_rearms_and_resolve_cancels,
    timers::concurrent_engines_fire_each_timer_once,
    timers::actions_race_with_the_engine,
    schedules::schedule_crud,
    schedules::layers_positions_and_users,
    schedules::overrides_crud,
    schedules::schedule_tenant_isolation,
    schedules::user_in_a_rotation_cannot_be_deleted,
    schedules::on_call_follows_layers_and_overrides,
    schedules::trigger_assigns_the_schedule_on_call,
    schedules::escalation_pages_whoever_is_on_call_then,
    schedules::concurrent_layer_appends,
    schedules::concurrent_user_deletion_and_rotation,
    contacts::contact_crud,
    contacts::notification_rule_crud,
    contacts::deleting_a_contact_deletes_its_rules,
    contacts::rule_contact_must_be_the_users,
    contacts::contacts_tenant_isolation,
    contacts::concurrent_rule_and_contact_deletion,
    links::secrets_are_made_once,
    links::links_work_once,
    answers::users_by_contact_address_across_accounts,
    answers::open_incidents_assigned_to_a_user,
    answers::outgoing_messages_and_delivery_reports,
    answers::a_page_due_at_once_is_claimed_once,
    integrations::grow_incident_records_a_growing_group,
    integrations::change_events_are_recorded_on_the_service,
    heartbeats::heartbeat_crud,
    heartbeats::heartbeat_tenant_isolation,
    heartbeats::heartbeat_expiry_fires_once_and_a_ping_resolves,
    heartbeats::heartbeat_pings_move_the_expiry,
    heartbeats::deleted_heartbeat_never_fires,
    heartbeats::heartbeat_on_a_disabled_service_retries_each_interval,
    heartbeats::concurrent_engines_fire_each_heartbeat_once,
    heartbeats::event_feed_reads_an_account_in_order,
);

// ---------------------------------------------------------------------------
// Stores

async fn sqlite_store() -> (Arc<dyn Store>, TempDir) {
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("sqlite://{}/klaxon.db", dir.path().display());
    let store = klaxon_store::connect(&url).await.expect("connect sqlite");
    assert_eq!(store.backend(), "sqlite");
    store.migrate().await.expect("migrate sqlite");
    (store, dir)
}

async fn postgres_store() -> Arc<dyn Store> {
    let url = tokio::task::spawn_blocking(klaxon_testkit::fresh_postgres_url)
        .await
        .expect("testkit database");
    let store = klaxon_store::connect(&url).await.expect("connect postgres");
    assert_eq!(store.backend(), "postgres");
    store.migrate().await.expect("migrate postgres");
    store.ping().await.expect("ping");
    store
}

// ---------------------------------------------------------------------------
// Fixtures

const NOW: Millis = 1_700_000_000_000;
const MINUTE: Millis = 60_000;

fn user_input(name: &str, email: &str, role: &str) -> UserInput {
    UserInput {
        name: name.into(),
        email: email.into(),
        role: role.into(),
        time_zone: "Europe/Berlin".into(),
        password_hash: None,
    }
}

fn api_token(name: &str, expires_at: Option<Millis>) -> TokenInput {
    TokenInput {
        name: name.into(),
        kind: "api".into(),
        expires_at,
    }
}

fn rule_input(user_id: &str) -> RuleInput {
    RuleInput {
        escalation_timeout: 30,
        assignment_type: "user".into(),
        assignee_id: user_id.into(),
    }
}

fn service_input(name: &str, policy_id: &str) -> ServiceInput {
    ServiceInput {
        name: name.into(),
        description: Some(format!("{name} description")),
        policy_id: policy_id.into(),
        acknowledge_timeout: Some(30),
        auto_resolve_timeout: None,
    }
}

fn new_incident(message: &str, key: Option<&str>) -> NewIncident {
    NewIncident {
        message: message.into(),
        description: None,
        details: None,
        key: key.map(Into::into),
    }
}

fn page(limit: i64, offset: i64) -> IncidentFilter {
    IncidentFilter {
        limit,
        offset,
        ..IncidentFilter::default()
    }
}

/// An account with its admin.
struct Tenant {
    account: String,
    admin: String,
    token_hash: String,
}

impl Tenant {
    fn actor(&self) -> Actor {
        Actor::User(self.admin.clone())
    }
}

async fn tenant(store: &dyn Store, name: &str) -> Tenant {
    let owner = user_input(
        &format!("{name} owner"),
        &format!("owner@{name}.test"),
        "admin",
    );
    let token_hash = format!("token-hash-{name}");
    let (account, user, _token) = store
        .create_account(name, &owner, &token_hash, NOW)
        .await
        .expect("create_account");
    Tenant {
        account: account.id,
        admin: user.id,
        token_hash,
    }
}

/// A tenant with two responders, a policy paging them in turn and a service.
struct World {
    t: Tenant,
    users: Vec<String>,
    policy: Policy,
    rules: Vec<PolicyRule>,
    service: Service,
}

impl World {
    fn service_actor(&self) -> Actor {
        Actor::Service(self.service.id.clone())
    }

    async fn trigger(
        &self,
        store: &dyn Store,
        message: &str,
        key: Option<&str>,
        now: Millis,
    ) -> Incident {
        self.trigger_on(store, &self.service.id, message, key, now)
            .await
    }

    async fn trigger_on(
        &self,
        store: &dyn Store,
        service_id: &str,
        message: &str,
        key: Option<&str>,
        now: Millis,
    ) -> Incident {
        let outcome = store
            .trigger_incident(
                &self.t.account,
                service_id,
                &new_incident(message, key),
                true,
                &Actor::Service(service_id.into()),
                now,
            )
            .await
            .expect("trigger_incident");
        match outcome {
            TriggerOutcome::Created(incident) => incident,
            other => panic!("expected a new incident, got {other:?}"),
        }
    }

    async fn act(
        &self,
        store: &dyn Store,
        id: &str,
        action: IncidentAction,
        now: Millis,
    ) -> Incident {
        match store
            .act_on_incident(&self.t.account, id, action, &self.t.actor(), now)
            .await
            .expect("act_on_incident")
        {
            ActOutcome::Changed(incident) => incident,
            other => panic!("expected {action:?} to change the incident, got {other:?}"),
        }
    }
}

async fn world(store: &dyn Store, name: &str) -> World {
    let t = tenant(store, name).await;
    let mut users = Vec::new();
    for n in 1..=2 {
        let input = user_input(
            &format!("responder {n}"),
            &format!("r{n}@{name}.test"),
            "responder",
        );
        let user = store
            .create_user(&t.account, &input, &t.actor(), NOW)
            .await
            .expect("create_user");
        users.push(user.id);
    }
    let policy = store
        .create_policy(&t.account, "default", 2, &t.actor(), NOW)
        .await
        .expect("create_policy");
    let mut rules = Vec::new();
    for user in &users {
        let rule = store
            .create_rule(&t.account, &policy.id, &rule_input(user), &t.actor(), NOW)
            .await
            .expect("create_rule");
        rules.push(rule);
    }
    let service = store
        .create_service(
            &t.account,
            &service_input("web", &policy.id),
            &format!("integration-key-{name}"),
            &t.actor(),
            NOW,
        )
        .await
        .expect("create_service");
    World {
        t,
        users,
        policy,
        rules,
        service,
    }
}

async fn events_of(store: &dyn Store, account: &str, source_type: &str, id: &str) -> Vec<Event> {
    let filter = EventFilter {
        source: Some((source_type.into(), id.into())),
        limit: 1000,
        offset: 0,
    };
    let (events, total) = store
        .list_events(account, &filter)
        .await
        .expect("list_events");
    assert_eq!(events.len() as i64, total);
    events
}

fn actions(events: &[Event]) -> Vec<&str> {
    events.iter().map(|e| e.action.as_str()).collect()
}

#[track_caller]
fn assert_not_found<T: Debug>(result: Result<T>, what: &str) {
    match result {
        Err(StoreError::NotFound) => {}
        other => panic!("{what}: expected NotFound, got {other:?}"),
    }
}

#[track_caller]
fn assert_taken<T: Debug>(result: Result<T>, field: &str) {
    match result {
        Err(StoreError::Taken(f)) if f == field => {}
        other => panic!("expected Taken({field:?}), got {other:?}"),
    }
}

#[track_caller]
fn assert_conflict<T: Debug>(result: Result<T>) {
    match result {
        Err(StoreError::Conflict(_)) => {}
        other => panic!("expected Conflict, got {other:?}"),
    }
}

#[track_caller]
fn assert_invalid<T: Debug>(result: Result<T>, field: &str) {
    match result {
        Err(StoreError::Invalid { field: f, .. }) if f == field => {}
        other => panic!("expected Invalid {{ field: {field:?} }}, got {other:?}"),
    }
}

#[track_caller]
fn assert_transition<T: Debug>(result: Result<T>, from: IncidentState, action: IncidentAction) {
    match result {
        Err(StoreError::Transition(e)) if e.from == from && e.action == action => {}
        other => panic!("expected Transition({from:?}, {action:?}), got {other:?}"),
    }
}

fn idv(incidents: &[&Incident]) -> Vec<String> {
    incidents.iter().map(|i| i.id.clone()).collect()
}

fn ids(incidents: &[Incident]) -> Vec<&str> {
    incidents.iter().map(|i| i.id.as_str()).collect()
}
