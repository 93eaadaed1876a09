//! Escalation policies and rules (SQLite).

use async_trait::async_trait;
use klaxon_core::time::Millis;
use serde_json::{json, Value};
use sqlx::SqliteConnection;

use super::{found, insert_event, taken, SqliteStore};
use crate::util::new_id;
use crate::{Actor, Policy, PolicyRule, PolicyStore, Result, RuleInput, StoreError};

const POLICY_COLUMNS: &str = "id, account_id, name, loop_limit, created_at, updated_at";
const RULE_COLUMNS: &str =
    "id, policy_id, position, escalation_timeout, assignment_type, assignee_id, created_at, updated_at";

#[async_trait]
impl PolicyStore for SqliteStore {
    async fn create_policy(
        &self,
        account_id: &str,
        name: &str,
        loop_limit: i64,
        actor: &Actor,
        now: Millis,
    ) -> Result<Policy> {
        let mut tx = self.begin_write().await?;
        let policy: Policy = sqlx::query_as(&format!(
            "INSERT INTO policies (id, account_id, name, loop_limit, created_at, updated_at)
             VALUES (?, ?, ?, ?, ?, ?) RETURNING {POLICY_COLUMNS}"
        ))
        .bind(new_id())
        .bind(account_id)
        .bind(name)
        .bind(loop_limit)
        .bind(now)
        .bind(now)
        .fetch_one(&mut *tx)
        .await
        .map_err(taken("name"))?;
        let changes = json!({"name": name, "loop_limit": loop_limit});
        insert_event(
            &mut tx,
            account_id,
            "policy.create",
            "policy",
            &policy.id,
            actor,
            &changes,
            now,
        )
        .await?;
        tx.commit().await?;
        Ok(policy)
    }

    async fn list_policies(&self, account_id: &str) -> Result<Vec<Policy>> {
        Ok(sqlx::query_as(&format!(
            "SELECT {POLICY_COLUMNS} FROM policies WHERE account_id = ? ORDER BY name, id"
        ))
        .bind(account_id)
        .fetch_all(&self.reader)
        .await?)
    }

    async fn get_policy(&self, account_id: &str, id: &str) -> Result<Policy> {
        sqlx::query_as(&format!(
            "SELECT {POLICY_COLUMNS} FROM policies WHERE account_id = ? AND id = ?"
        ))
        .bind(account_id)
        .bind(id)
        .fetch_optional(&self.reader)
        .await?
        .ok_or(StoreError::NotFound)
    }

    async fn update_policy(
        &self,
        account_id: &str,
        id: &str,
        name: &str,
        loop_limit: i64,
        changes: &Value,
        actor: &Actor,
        now: Millis,
    ) -> Result<Policy> {
        let mut tx = self.begin_write().await?;
        let policy: Policy = sqlx::query_as(&format!(
            "UPDATE policies SET name = ?, loop_limit = ?, updated_at = ?
             WHERE account_id = ? AND id = ? RETURNING {POLICY_COLUMNS}"
        ))
        .bind(name)
        .bind(loop_limit)
        .bind(now)
        .bind(account_id)
        .bind(id)
        .fetch_optional(&mut *tx)
        .await
        .map_err(taken("name"))?
        .ok_or(StoreError::NotFound)?;
        insert_event(
            &mut tx,
            account_id,
            "policy.update",
            "policy",
            id,
            actor,
            changes,
            now,
        )
        .await?;
        tx.commit().await?;
        Ok(policy)
    }

    async fn delete_policy(
        &self,
        account_id: &str,
        id: &str,
        actor: &Actor,
        now: Millis,
    ) -> Result<()> {
        let mut tx = self.begin_write().await?;
        policy_exists(&mut tx, account_id, id).await?;
        let user: Option<(String,)> = sqlx::query_as(
            "SELECT name FROM services WHERE account_id = ? AND policy_id = ? LIMIT 1",
        )
        .bind(account_id)
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?;
        if let Some((service,)) = user {
            return Err(StoreError::Conflict(format!(
                "the policy is used by service '{service}'; give that service another policy first"
            )));
        }
        let done = sqlx::query("DELETE FROM policies WHERE account_id = ? AND id = ?")
            .bind(account_id)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        found(done.rows_affected())?;
        insert_event(
            &mut tx,
            account_id,
            "policy.delete",
            "policy",
            id,
            actor,
            &json!({}),
            now,
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn list_rules(&self, account_id: &str, policy_id: &str) -> Result<Vec<PolicyRule>> {
        let mut conn = self.reader.acquire().await?;
        policy_exists(&mut conn, account_id, policy_id).await?;
        rules_of(&mut conn, account_id, policy_id).await
    }

    async fn get_rule(&self, account_id: &str, policy_id: &str, id: &str) -> Result<PolicyRule> {
        sqlx::query_as(&format!(
            "SELECT {RULE_COLUMNS} FROM policy_rules WHERE account_id = ? AND policy_id = ? AND id = ?"
        ))
        .bind(account_id)
        .bind(policy_id)
        .bind(id)
        .fetch_optional(&self.reader)
        .await?
        .ok_or(StoreError::NotFound)
    }

    async fn create_rule(
        &self,
        account_id: &str,
        policy_id: &str,
        input: &RuleInput,
        actor: &Actor,
        now: Millis,
    ) -> Result<PolicyRule> {
        let mut tx = self.begin_write().await?;
        policy_exists(&mut tx, account_id, policy_id).await?;
        assignee_exists(&mut tx, account_id, input).await?;
        let rule: PolicyRule = sqlx::query_as(&format!(
            "INSERT INTO policy_rules (id, account_id, policy_id, position, escalation_timeout, assignment_type, assignee_id, created_at, updated_at)
             VALUES (?, ?, ?, (SELECT COALESCE(MAX(position) + 1, 0) FROM policy_rules WHERE policy_id = ?), ?, ?, ?, ?, ?)
             RETURNING {RULE_COLUMNS}"
        ))
        .bind(new_id())
        .bind(account_id)
        .bind(policy_id)
        .bind(policy_id)
        .bind(input.escalation_timeout)
        .bind(&input.assignment_type)
        .bind(&input.assignee_id)
        .bind(now)
        .bind(now)
        .fetch_one(&mut *tx)
        .await?;
        let changes = json!({
            "policy_id": policy_id,
            "position": rule.position,
            "escalation_timeout": rule.escalation_timeout,
            "assignment": {"type": rule.assignment_type, "id": rule.assignee_id},
        });
        insert_event(
            &mut tx,
            account_id,
            "policy_rule.create",
            "policy_rule",
            &rule.id,
            actor,
            &changes,
            now,
        )
        .await?;
        tx.commit().await?;
        Ok(rule)
    }

    async fn update_rule(
        &self,
        account_id: &str,
        policy_id: &str,
        id: &str,
        input: &RuleInput,
        changes: &Value,
        actor: &Actor,
        now: Millis,
    ) -> Result<PolicyRule> {
        let mut tx = self.begin_write().await?;
        assignee_exists(&mut tx, account_id, input).await?;
        let rule: PolicyRule = sqlx::query_as(&format!(
            "UPDATE policy_rules SET escalation_timeout = ?, assignment_type = ?, assignee_id = ?, updated_at = ?
             WHERE account_id = ? AND policy_id = ? AND id = ? RETURNING {RULE_COLUMNS}"
        ))
        .bind(input.escalation_timeout)
        .bind(&input.assignment_type)
        .bind(&input.assignee_id)
        .bind(now)
        .bind(account_id)
        .bind(policy_id)
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or(StoreError::NotFound)?;
        insert_event(
            &mut tx,
            account_id,
            "policy_rule.update",
            "policy_rule",
            id,
            actor,
            changes,
            now,
        )
        .await?;
        tx.commit().await?;
        Ok(rule)
    }

    async fn delete_rule(
        &self,
        account_id: &str,
        policy_id: &str,
        id: &str,
        actor: &Actor,
        now: Millis,
    ) -> Result<()> {
        let mut tx = self.begin_write().await?;
        let gone: Option<(i64,)> = sqlx::query_as(
            "DELETE FROM policy_rules WHERE account_id = ? AND policy_id = ? AND id = ? RETURNING position",
        )
        .bind(account_id)
        .bind(policy_id)
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?;
        let (position,) = gone.ok_or(StoreError::NotFound)?;
        sqlx::query(
            "UPDATE policy_rules SET position = position - 1 WHERE policy_id = ? AND position > ?",
        )
        .bind(policy_id)
        .bind(position)
        .execute(&mut *tx)
        .await?;
        let changes = json!({"policy_id": policy_id});
        insert_event(
            &mut tx,
            account_id,
            "policy_rule.delete",
            "policy_rule",
            id,
            actor,
            &changes,
            now,
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn sort_rules(
        &self,
        account_id: &str,
        policy_id: &str,
        rule_ids: &[String],
        actor: &Actor,
        now: Millis,
    ) -> Result<Vec<PolicyRule>> {
        let mut tx = self.begin_write().await?;
        policy_exists(&mut tx, account_id, policy_id).await?;
        let before = rules_of(&mut tx, account_id, policy_id).await?;
        crate::util::check_permutation(&before, rule_ids)?;
        for (position, id) in rule_ids.iter().enumerate() {
            sqlx::query("UPDATE policy_rules SET position = ?, updated_at = ? WHERE policy_id = ? AND id = ?")
                .bind(position as i64)
                .bind(now)
                .bind(policy_id)
                .bind(id)
                .execute(&mut *tx)
                .await?;
        }
        let before_ids: Vec<&str> = before.iter().map(|r| r.id.as_str()).collect();
        let changes = json!({"rule_ids": [before_ids, rule_ids]});
        insert_event(
            &mut tx,
            account_id,
            "policy.sort_rules",
            "policy",
            policy_id,
            actor,
            &changes,
            now,
        )
        .await?;
        let after = rules_of(&mut tx, account_id, policy_id).await?;
        tx.commit().await?;
        Ok(after)
    }
}

async fn policy_exists(conn: &mut SqliteConnection, account_id: &str, id: &str) -> Result<()> {
    let row: Option<(String,)> =
        sqlx::query_as("SELECT id FROM policies WHERE account_id = ? AND id = ?")
            .bind(account_id)
            .bind(id)
            .fetch_optional(conn)
            .await?;
    row.map(|_| ()).ok_or(StoreError::NotFound)
}

/// A rule may only name a user (or schedule) of the same account.
async fn assignee_exists(
    conn: &mut SqliteConnection,
    account_id: &str,
    input: &RuleInput,
) -> Result<()> {
    let table = crate::util::assignment_table(&input.assignment_type)?;
    let row: Option<(String,)> = sqlx::query_as(&format!(
        "SELECT id FROM {table} WHERE account_id = ? AND id = ?"
    ))
    .bind(account_id)
    .bind(&input.assignee_id)
    .fetch_optional(conn)
    .await?;
    row.map(|_| ()).ok_or_else(|| StoreError::Invalid {
        field: "assignment",
        message: format!(
            "{} {} does not exist",
            input.assignment_type, input.assignee_id
        ),
    })
}

pub(super) async fn rules_of(
    conn: &mut SqliteConnection,
    account_id: &str,
    policy_id: &str,
) -> Result<Vec<PolicyRule>> {
    Ok(sqlx::query_as(&format!(
        "SELECT {RULE_COLUMNS} FROM policy_rules WHERE account_id = ? AND policy_id = ? ORDER BY position, id"
    ))
    .bind(account_id)
    .bind(policy_id)
    .fetch_all(conn)
    .await?)
}
