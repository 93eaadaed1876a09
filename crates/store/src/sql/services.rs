//! Services, for both backends.

use async_trait::async_trait;
use klaxon_core::time::Millis;
use serde_json::{json, Value};

use super::row::from_row;
use super::{audit, found, query, taken, Backend, Change, Db, Write};
use crate::util::new_id;
use crate::{Actor, IntegrationTarget, Result, Service, ServiceInput, ServiceStore, StoreError};

from_row!(Service {
    id,
    account_id,
    name,
    description,
    policy_id,
    acknowledge_timeout,
    auto_resolve_timeout,
    state,
    integration_key,
    created_at,
    updated_at,
    triggered_count,
    acknowledged_count,
    resolved_count,
});

from_row!(IntegrationTarget {
    id,
    account_id,
    state
});

/// Service columns with incident counts (index `incidents_service_state`).
macro_rules! service_select {
    () => {
        "SELECT s.id, s.account_id, s.name, s.description, s.policy_id,
    s.acknowledge_timeout, s.auto_resolve_timeout, s.state, s.integration_key, s.created_at, s.updated_at,
    (SELECT COUNT(*) FROM incidents i WHERE i.service_id = s.id AND i.state = 'triggered') AS triggered_count,
    (SELECT COUNT(*) FROM incidents i WHERE i.service_id = s.id AND i.state = 'acknowledged') AS acknowledged_count,
    (SELECT COUNT(*) FROM incidents i WHERE i.service_id = s.id AND i.state = 'resolved') AS resolved_count
    FROM services s"
    };
}

/// The native half of services: where a backend answers the ingest path's
/// integration-key lookup from memory.
pub(crate) trait ServiceLookup {
    /// `Some(answer)` when the backend knows the answer without a query.
    fn known_integration_target(&self, _key: &str) -> Option<Option<IntegrationTarget>> {
        None
    }
}

#[async_trait]
impl<B: Backend + ServiceLookup> ServiceStore for B {
    async fn create_service(
        &self,
        account_id: &str,
        input: &ServiceInput,
        integration_key: &str,
        actor: &Actor,
        now: Millis,
    ) -> Result<Service> {
        let mut tx = self.write().await?;
        policy_in_account(&mut tx, account_id, &input.policy_id).await?;
        let id = new_id();
        tx.execute(
            query(
                "INSERT INTO services (id, account_id, name, description, policy_id, acknowledge_timeout,
                    auto_resolve_timeout, state, integration_key, created_at, updated_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, 'enabled', $8, $9, $9)",
            )
            .bind(&id)
            .bind(account_id)
            .bind(&input.name)
            .bind(&input.description)
            .bind(&input.policy_id)
            .bind(&input.acknowledge_timeout)
            .bind(&input.auto_resolve_timeout)
            .bind(integration_key)
            .bind(&now),
        )
        .await
        .map_err(taken("name"))?;
        let changeset = json!({
            "name": input.name, "description": input.description, "policy_id": input.policy_id,
            "acknowledge_timeout": input.acknowledge_timeout, "auto_resolve_timeout": input.auto_resolve_timeout,
        });
        audit(account_id, actor, now)
            .event(&mut tx, "service.create", ("service", &id), &changeset)
            .await?;
        let service = fetch(&mut tx, account_id, &id).await?;
        tx.record(Change::ServiceCreated {
            id,
            account_id: account_id.to_owned(),
            integration_key: integration_key.to_owned(),
        });
        tx.commit().await?;
        Ok(service)
    }

    async fn list_services(&self, account_id: &str) -> Result<Vec<Service>> {
        self.read()
            .await?
            .fetch_all(
                query(concat!(
                    service_select!(),
                    // Byte order, as SQLite sorts, whatever the database's collation.
                    r#" WHERE s.account_id = $1 ORDER BY s.name COLLATE "C", s.id COLLATE "C""#
                ))
                .bind(account_id),
            )
            .await
    }

    async fn get_service(&self, account_id: &str, id: &str) -> Result<Service> {
        fetch(&mut self.read().await?, account_id, id).await
    }

    async fn update_service(
        &self,
        account_id: &str,
        id: &str,
        input: &ServiceInput,
        changes: &Value,
        actor: &Actor,
        now: Millis,
    ) -> Result<Service> {
        let mut tx = self.write().await?;
        policy_in_account(&mut tx, account_id, &input.policy_id).await?;
        let done = tx
            .execute(
                query(
                    "UPDATE services SET name = $1, description = $2, policy_id = $3, acknowledge_timeout = $4,
                        auto_resolve_timeout = $5, updated_at = $6
                     WHERE account_id = $7 AND id = $8",
                )
                .bind(&input.name)
                .bind(&input.description)
                .bind(&input.policy_id)
                .bind(&input.acknowledge_timeout)
                .bind(&input.auto_resolve_timeout)
                .bind(&now)
                .bind(account_id)
                .bind(id),
            )
            .await
            .map_err(taken("name"))?;
        found(done)?;
        audit(account_id, actor, now)
            .event(&mut tx, "service.update", ("service", id), changes)
            .await?;
        let service = fetch(&mut tx, account_id, id).await?;
        tx.commit().await?;
        Ok(service)
    }

    async fn delete_service(
        &self,
        account_id: &str,
        id: &str,
        actor: &Actor,
        now: Millis,
    ) -> Result<()> {
        let mut tx = self.write().await?;
        let done = tx
            .execute(
                query("DELETE FROM services WHERE account_id = $1 AND id = $2")
                    .bind(account_id)
                    .bind(id),
            )
            .await?;
        found(done)?;
        audit(account_id, actor, now)
            .event(&mut tx, "service.delete", ("service", id), &json!({}))
            .await?;
        tx.record(Change::ServiceDeleted { id: id.to_owned() });
        tx.commit().await
    }

    async fn set_service_state(
        &self,
        account_id: &str,
        id: &str,
        state: &str,
        actor: &Actor,
        now: Millis,
    ) -> Result<bool> {
        let mut tx = self.write().await?;
        // Locked so that two identical requests at once write one event,
        // and a trigger (which locks the service too) sees the outcome.
        let (current,): (String,) = tx
            .fetch_one(
                query(
                    "SELECT state FROM services WHERE account_id = $1 AND id = $2 FOR NO KEY UPDATE",
                )
                .bind(account_id)
                .bind(id),
            )
            .await?;
        if current == state {
            return Ok(false);
        }
        tx.execute(
            query(
                "UPDATE services SET state = $1, updated_at = $2 WHERE account_id = $3 AND id = $4",
            )
            .bind(state)
            .bind(&now)
            .bind(account_id)
            .bind(id),
        )
        .await?;
        let enabled = state == "enabled";
        audit(account_id, actor, now)
            .event(
                &mut tx,
                if enabled {
                    "service.enable"
                } else {
                    "service.disable"
                },
                ("service", id),
                &json!({"state": [current, state]}),
            )
            .await?;
        tx.record(Change::ServiceState {
            id: id.to_owned(),
            enabled,
        });
        tx.commit().await?;
        Ok(true)
    }

    async fn set_integration_key(
        &self,
        account_id: &str,
        id: &str,
        key: &str,
        actor: &Actor,
        now: Millis,
    ) -> Result<()> {
        let mut tx = self.write().await?;
        let done = tx
            .execute(
                query(
                    "UPDATE services SET integration_key = $1, updated_at = $2 WHERE account_id = $3 AND id = $4",
                )
                .bind(key)
                .bind(&now)
                .bind(account_id)
                .bind(id),
            )
            .await?;
        found(done)?;
        // The key itself is a secret: the audit log records only that it changed.
        audit(account_id, actor, now)
            .event(
                &mut tx,
                "service.regenerate_key",
                ("service", id),
                &json!({"integration_key": "regenerated"}),
            )
            .await?;
        tx.record(Change::ServiceRekeyed {
            id: id.to_owned(),
            integration_key: key.to_owned(),
        });
        tx.commit().await
    }

    async fn service_by_integration_key(&self, key: &str) -> Result<Option<IntegrationTarget>> {
        if let Some(known) = self.known_integration_target(key) {
            return Ok(known);
        }
        self.read()
            .await?
            .fetch_optional(
                query("SELECT id, account_id, state FROM services WHERE integration_key = $1")
                    .bind(key),
            )
            .await
    }

    async fn record_change_event(
        &self,
        account_id: &str,
        service_id: &str,
        changeset: &Value,
        actor: &Actor,
        now: Millis,
    ) -> Result<()> {
        let mut tx = self.write().await?;
        // Key-share locked: a concurrent delete either comes after this
        // event or has already removed the service (NotFound).
        let _: (String,) = tx
            .fetch_one(
                query("SELECT id FROM services WHERE account_id = $1 AND id = $2 FOR KEY SHARE")
                    .bind(account_id)
                    .bind(service_id),
            )
            .await?;
        audit(account_id, actor, now)
            .event(
                &mut tx,
                "service.change_event",
                ("service", service_id),
                changeset,
            )
            .await?;
        tx.commit().await
    }
}

async fn fetch(db: &mut impl Db, account_id: &str, id: &str) -> Result<Service> {
    db.fetch_one(
        query(concat!(
            service_select!(),
            " WHERE s.account_id = $1 AND s.id = $2"
        ))
        .bind(account_id)
        .bind(id),
    )
    .await
}

/// The policy must be the account's. On PostgreSQL it is key-share locked
/// so that a concurrent `delete_policy` either sees this service (and
/// refuses) or has already removed the policy (and this is `Invalid`, not
/// a foreign-key error).
async fn policy_in_account(db: &mut impl Db, account_id: &str, policy_id: &str) -> Result<()> {
    let row: Option<(String,)> = db
        .fetch_optional(
            query("SELECT id FROM policies WHERE account_id = $1 AND id = $2 FOR KEY SHARE")
                .bind(account_id)
                .bind(policy_id),
        )
        .await?;
    row.map(|_| ()).ok_or_else(|| StoreError::Invalid {
        field: "policy_id",
        message: "does not exist".into(),
    })
}
