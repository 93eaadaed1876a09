//! A policy's rules on a sqlx connection (PostgreSQL), for the timer
//! engine until it runs on the shared [`crate::sql::Db`]; the policy store
//! itself is `sql/policies.rs`.

use sqlx::PgConnection;

use crate::{PolicyRule, Result};

/// A policy's rules in order (as `sql::policies::rules_of`).
pub(super) async fn rules_of(
    conn: &mut PgConnection,
    account_id: &str,
    policy_id: &str,
) -> Result<Vec<PolicyRule>> {
    Ok(sqlx::query_as(
        r#"SELECT id, policy_id, position, escalation_timeout, assignment_type, assignee_id, created_at, updated_at
         FROM policy_rules WHERE account_id = $1 AND policy_id = $2 ORDER BY position, id COLLATE "C""#,
    )
    .bind(account_id)
    .bind(policy_id)
    .fetch_all(conn)
    .await?)
}
