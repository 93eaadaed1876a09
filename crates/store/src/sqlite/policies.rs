//! A policy's rules on a sqlx connection (SQLite), for the timer engine
//! until it runs on the shared [`crate::sql::Db`]; the policy store itself
//! is `sql/policies.rs`.

use sqlx::SqliteConnection;

use crate::{PolicyRule, Result};

/// A policy's rules in order (as `sql::policies::rules_of`).
pub(super) async fn rules_of(
    conn: &mut SqliteConnection,
    account_id: &str,
    policy_id: &str,
) -> Result<Vec<PolicyRule>> {
    Ok(sqlx::query_as(
        "SELECT id, policy_id, position, escalation_timeout, assignment_type, assignee_id, created_at, updated_at
         FROM policy_rules WHERE account_id = ? AND policy_id = ? ORDER BY position, id",
    )
    .bind(account_id)
    .bind(policy_id)
    .fetch_all(conn)
    .await?)
}
