//! Services (SQLite).

use async_trait::async_trait;
use klaxon_core::time::Millis;
use serde_json::{json, Value};
use sqlx::SqliteConnection;

use super::{found, insert_event, taken, SqliteStore};
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
impl ServiceStore for SqliteStore {
    async fn create_service(
        &self,
        account_id: &str,
        input: &ServiceInput,
        integration_key: &str,
        actor: &Actor,
        now: Millis,
    ) -> Result<Service> {
        let mut tx = self.begin_write().await?;
        policy_in_account(&mut tx, account_id, &input.policy_id).await?;
        let id = new_id();
        sqlx::query(
            "INSERT INTO services (id, account_id, name, description, policy_id, acknowledge_timeout,
                auto_resolve_timeout, state, integration_key, created_at, updated_at)
             VALUES (?, ?, ?, ?, ?, ?, ?, 'enabled', ?, ?, ?)",
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
        self.commit_then(tx, |i| {
            i.service_saved(&id, account_id, integration_key, true)
        })
        .await?;
        Ok(service)
    }

    async fn list_services(&self, account_id: &str) -> Result<Vec<Service>> {
        Ok(sqlx::query_as(&format!(
            "{SERVICE_SELECT} WHERE s.account_id = ? ORDER BY s.name, s.id"
        ))
        .bind(account_id)
        .fetch_all(&self.reader)
        .await?)
    }

    async fn get_service(&self, account_id: &str, id: &str) -> Result<Service> {
        let mut conn = self.reader.acquire().await?;
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
        let mut tx = self.begin_write().await?;
        policy_in_account(&mut tx, account_id, &input.policy_id).await?;
        let done = sqlx::query(
            "UPDATE services SET name = ?, description = ?, policy_id = ?, acknowledge_timeout = ?,
                auto_resolve_timeout = ?, updated_at = ?
             WHERE account_id = ? AND id = ?",
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
        let mut tx = self.begin_write().await?;
        let done = sqlx::query("DELETE FROM services WHERE account_id = ? AND id = ?")
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
        self.commit_then(tx, |i| i.service_deleted(id)).await?;
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
        let mut tx = self.begin_write().await?;
        let current: Option<(String,)> =
            sqlx::query_as("SELECT state FROM services WHERE account_id = ? AND id = ?")
                .bind(account_id)
                .bind(id)
                .fetch_optional(&mut *tx)
                .await?;
        let (current,) = current.ok_or(StoreError::NotFound)?;
        if current == state {
            return Ok(false);
        }
        sqlx::query(
            "UPDATE services SET state = ?, updated_at = ? WHERE account_id = ? AND id = ?",
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
        self.commit_then(tx, |i| i.service_state(id, state == "enabled"))
            .await?;
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
        let mut tx = self.begin_write().await?;
        let done = sqlx::query("UPDATE services SET integration_key = ?, updated_at = ? WHERE account_id = ? AND id = ?")
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
        self.commit_then(tx, |i| i.service_rekeyed(id, key)).await?;
        Ok(())
    }

    async fn service_by_integration_key(&self, key: &str) -> Result<Option<IntegrationTarget>> {
        if let Some(target) = self.ingest.integration_target(key) {
            return Ok(target);
        }
        Ok(
            sqlx::query_as("SELECT id, account_id, state FROM services WHERE integration_key = ?")
                .bind(key)
                .fetch_optional(&self.reader)
                .await?,
        )
    }
}

async fn fetch(conn: &mut SqliteConnection, account_id: &str, id: &str) -> Result<Service> {
    sqlx::query_as(&format!(
        "{SERVICE_SELECT} WHERE s.account_id = ? AND s.id = ?"
    ))
    .bind(account_id)
    .bind(id)
    .fetch_optional(conn)
    .await?
    .ok_or(StoreError::NotFound)
}

async fn policy_in_account(
    conn: &mut SqliteConnection,
    account_id: &str,
    policy_id: &str,
) -> Result<()> {
    let row: Option<(String,)> =
        sqlx::query_as("SELECT id FROM policies WHERE account_id = ? AND id = ?")
            .bind(account_id)
            .bind(policy_id)
            .fetch_optional(conn)
            .await?;
    row.map(|_| ()).ok_or_else(|| StoreError::Invalid {
        field: "policy_id",
        message: "does not exist".into(),
    })
}
