//! Services (PostgreSQL).

use async_trait::async_trait;
use klaxon_core::time::Millis;
use serde_json::{json, Value};
use sqlx::PgConnection;

use super::{found, insert_event, taken, PgStore};
use crate::util::new_id;
use crate::{Actor, IntegrationTarget, Result, Service, ServiceInput, ServiceStore, StoreError};

/// Service columns with incident counts (index `incidents_service_state`).
const SERVICE_SELECT: &str = "SELECT s.id, s.account_id, s.name, s.description, s.policy_id,
    s.acknowledge_timeout, s.auto_resolve_timeout, s.state, s.integration_key, s.created_at, s.updated_at,
    (SELECT COUNT(*) FROM incidents i WHERE i.service_id = s.id AND i.state = 'triggered') AS triggered_count,
    (SELECT COUNT(*) FROM incidents i WHERE i.service_id = s.id AND i.state = 'acknowledged') AS acknowledged_count,
    (SELECT COUNT(*) FROM incidents i WHERE i.service_id = s.id AND i.state = 'resolved') AS resolved_count
    FROM services s";

#[async_trait]
impl ServiceStore for PgStore {
    async fn create_service(
        &self,
        account_id: &str,
        input: &ServiceInput,
        integration_key: &str,
        actor: &Actor,
        now: Millis,
    ) -> Result<Service> {
        let mut tx = self.pool.begin().await?;
        policy_in_account(&mut tx, account_id, &input.policy_id).await?;
        let id = new_id();
        sqlx::query(
            "INSERT INTO services (id, account_id, name, description, policy_id, acknowledge_timeout,
                auto_resolve_timeout, state, integration_key, created_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, 'enabled', $8, $9, $10)",
        )
        .bind(&id)
        .bind(account_id)
        .bind(&input.name)
        .bind(&input.description)
        .bind(&input.policy_id)
        .bind(input.acknowledge_timeout)
        .bind(input.auto_resolve_timeout)
        .bind(integration_key)
        .bind(now)
        .bind(now)
        .execute(&mut *tx)
        .await
        .map_err(taken("name"))?;
        let changes = json!({
            "name": input.name, "description": input.description, "policy_id": input.policy_id,
            "acknowledge_timeout": input.acknowledge_timeout, "auto_resolve_timeout": input.auto_resolve_timeout,
        });
        insert_event(
            &mut tx,
            account_id,
            "service.create",
            "service",
            &id,
            actor,
            &changes,
            now,
        )
        .await?;
        let service = fetch(&mut tx, account_id, &id).await?;
        tx.commit().await?;
        Ok(service)
    }

    async fn list_services(&self, account_id: &str) -> Result<Vec<Service>> {
        // Byte order, as SQLite sorts, whatever the database's collation.
        Ok(sqlx::query_as(&format!(
            r#"{SERVICE_SELECT} WHERE s.account_id = $1 ORDER BY s.name COLLATE "C", s.id COLLATE "C""#
        ))
        .bind(account_id)
        .fetch_all(&self.pool)
        .await?)
    }

    async fn get_service(&self, account_id: &str, id: &str) -> Result<Service> {
        let mut conn = self.pool.acquire().await?;
        fetch(&mut conn, account_id, id).await
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
        let mut tx = self.pool.begin().await?;
        policy_in_account(&mut tx, account_id, &input.policy_id).await?;
        let done = sqlx::query(
            "UPDATE services SET name = $1, description = $2, policy_id = $3, acknowledge_timeout = $4,
                auto_resolve_timeout = $5, updated_at = $6
             WHERE account_id = $7 AND id = $8",
        )
        .bind(&input.name)
        .bind(&input.description)
        .bind(&input.policy_id)
        .bind(input.acknowledge_timeout)
        .bind(input.auto_resolve_timeout)
        .bind(now)
        .bind(account_id)
        .bind(id)
        .execute(&mut *tx)
        .await
        .map_err(taken("name"))?;
        found(done.rows_affected())?;
        insert_event(
            &mut tx,
            account_id,
            "service.update",
            "service",
            id,
            actor,
            changes,
            now,
        )
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
        let mut tx = self.pool.begin().await?;
        let done = sqlx::query("DELETE FROM services WHERE account_id = $1 AND id = $2")
            .bind(account_id)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        found(done.rows_affected())?;
        insert_event(
            &mut tx,
            account_id,
            "service.delete",
            "service",
            id,
            actor,
            &json!({}),
            now,
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn set_service_state(
        &self,
        account_id: &str,
        id: &str,
        state: &str,
        actor: &Actor,
        now: Millis,
    ) -> Result<bool> {
        let mut tx = self.pool.begin().await?;
        // Locked so that two identical requests at once write one event,
        // and a trigger (which locks the service too) sees the outcome.
        let current: Option<(String,)> = sqlx::query_as(
            "SELECT state FROM services WHERE account_id = $1 AND id = $2 FOR NO KEY UPDATE",
        )
        .bind(account_id)
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?;
        let (current,) = current.ok_or(StoreError::NotFound)?;
        if current == state {
            return Ok(false);
        }
        sqlx::query(
            "UPDATE services SET state = $1, updated_at = $2 WHERE account_id = $3 AND id = $4",
        )
        .bind(state)
        .bind(now)
        .bind(account_id)
        .bind(id)
        .execute(&mut *tx)
        .await?;
        let action = if state == "enabled" {
            "service.enable"
        } else {
            "service.disable"
        };
        let changes = json!({"state": [current, state]});
        insert_event(
            &mut tx, account_id, action, "service", id, actor, &changes, now,
        )
        .await?;
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
        let mut tx = self.pool.begin().await?;
        let done = sqlx::query(
            "UPDATE services SET integration_key = $1, updated_at = $2 WHERE account_id = $3 AND id = $4",
        )
        .bind(key)
        .bind(now)
        .bind(account_id)
        .bind(id)
        .execute(&mut *tx)
        .await?;
        found(done.rows_affected())?;
        // The key itself is a secret: the audit log records only that it changed.
        let changes = json!({"integration_key": "regenerated"});
        insert_event(
            &mut tx,
            account_id,
            "service.regenerate_key",
            "service",
            id,
            actor,
            &changes,
            now,
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn service_by_integration_key(&self, key: &str) -> Result<Option<IntegrationTarget>> {
        Ok(
            sqlx::query_as("SELECT id, account_id, state FROM services WHERE integration_key = $1")
                .bind(key)
                .fetch_optional(&self.pool)
                .await?,
        )
    }
}

async fn fetch(conn: &mut PgConnection, account_id: &str, id: &str) -> Result<Service> {
    sqlx::query_as(&format!(
        "{SERVICE_SELECT} WHERE s.account_id = $1 AND s.id = $2"
    ))
    .bind(account_id)
    .bind(id)
    .fetch_optional(conn)
    .await?
    .ok_or(StoreError::NotFound)
}

/// The policy must be the account's. It is key-share locked so that a
/// concurrent `delete_policy` either sees this service (and refuses) or has
/// already removed the policy (and this is `Invalid`, not a foreign-key error).
async fn policy_in_account(
    conn: &mut PgConnection,
    account_id: &str,
    policy_id: &str,
) -> Result<()> {
    let row: Option<(String,)> =
        sqlx::query_as("SELECT id FROM policies WHERE account_id = $1 AND id = $2 FOR KEY SHARE")
            .bind(account_id)
            .bind(policy_id)
            .fetch_optional(conn)
            .await?;
    row.map(|_| ()).ok_or_else(|| StoreError::Invalid {
        field: "policy_id",
        message: "does not exist".into(),
    })
}
