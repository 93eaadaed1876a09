//! Escalation policies and rules, for both backends.
//!
//! Locking (PostgreSQL; SQLite has one writer at a time and runs the same
//! statements with the lock clauses dropped):
//! - a policy whose rules move (appended, deleted and renumbered, sorted)
//!   is locked `FOR NO KEY UPDATE`, so two writers never read the same
//!   `MAX(position)` or renumber past each other;
//! - a policy about to be deleted is locked `FOR UPDATE`, which waits for a
//!   service being pointed at it (`services::policy_in_account` key-share
//!   locks it);
//! - the user or schedule a rule names is key-share locked
//!   ([`assignee_exists`]), so that it cannot be deleted before the rule
//!   commits.

use async_trait::async_trait;
use klaxon_core::time::Millis;
use serde_json::{json, Value};

use super::row::from_row;
use super::{audit, found, query, taken, Backend, Db, Write};
use crate::util::new_id;
use crate::{Actor, Policy, PolicyRule, PolicyStore, Result, RuleInput, StoreError};

from_row!(Policy {
    id,
    account_id,
    name,
    loop_limit,
    created_at,
    updated_at,
});

from_row!(PolicyRule {
    id,
    policy_id,
    position,
    escalation_timeout,
    assignment_type,
    assignee_id,
    created_at,
    updated_at,
});

/// Policy columns, in `Policy`'s order.
macro_rules! policy_columns {
    () => {
        "id, account_id, name, loop_limit, created_at, updated_at"
    };
}

/// Rule columns, in `PolicyRule`'s order.
macro_rules! rule_columns {
    () => {
        "id, policy_id, position, escalation_timeout, assignment_type, assignee_id, created_at, updated_at"
    };
}

/// Finds a policy of the account (to lock it, append a lock clause).
macro_rules! policy_of_account {
    () => {
        "SELECT id FROM policies WHERE account_id = $1 AND id = $2"
    };
}

/// How a policy row is read by a transaction that checks, then writes.
#[derive(Clone, Copy)]
enum Lock {
    /// Just read it.
    None,
    /// Its rules are about to move: serialise against other rule writers.
    Rules,
    /// It is about to be deleted.
    Delete,
}

#[async_trait]
impl<B: Backend> PolicyStore for B {
    async fn create_policy(
        &self,
        account_id: &str,
        name: &str,
        loop_limit: i64,
        actor: &Actor,
        now: Millis,
    ) -> Result<Policy> {
        let mut tx = self.write().await?;
        let id = new_id();
        let policy: Policy = tx
            .fetch_one(
                query(concat!(
                    "INSERT INTO policies (id, account_id, name, loop_limit, created_at, updated_at)
                     VALUES ($1, $2, $3, $4, $5, $5) RETURNING ",
                    policy_columns!()
                ))
                .bind(&id)
                .bind(account_id)
                .bind(name)
                .bind(&loop_limit)
                .bind(&now),
            )
            .await
            .map_err(taken("name"))?;
        audit(account_id, actor, now)
            .event(
                &mut tx,
                "policy.create",
                ("policy", &policy.id),
                &json!({"name": name, "loop_limit": loop_limit}),
            )
            .await?;
        tx.commit().await?;
        Ok(policy)
    }

    async fn list_policies(&self, account_id: &str) -> Result<Vec<Policy>> {
        self.read()
            .await?
            .fetch_all(
                query(concat!(
                    "SELECT ",
                    policy_columns!(),
                    // Byte order, as SQLite sorts, whatever the database's collation.
                    r#" FROM policies WHERE account_id = $1 ORDER BY name COLLATE "C", id COLLATE "C""#
                ))
                .bind(account_id),
            )
            .await
    }

    async fn get_policy(&self, account_id: &str, id: &str) -> Result<Policy> {
        self.read()
            .await?
            .fetch_one(
                query(concat!(
                    "SELECT ",
                    policy_columns!(),
                    " FROM policies WHERE account_id = $1 AND id = $2"
                ))
                .bind(account_id)
                .bind(id),
            )
            .await
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
        let mut tx = self.write().await?;
        let policy: Policy = tx
            .fetch_optional(
                query(concat!(
                    "UPDATE policies SET name = $1, loop_limit = $2, updated_at = $3
                     WHERE account_id = $4 AND id = $5 RETURNING ",
                    policy_columns!()
                ))
                .bind(name)
                .bind(&loop_limit)
                .bind(&now)
                .bind(account_id)
                .bind(id),
            )
            .await
            .map_err(taken("name"))?
            .ok_or(StoreError::NotFound)?;
        audit(account_id, actor, now)
            .event(&mut tx, "policy.update", ("policy", id), changes)
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
        let mut tx = self.write().await?;
        // A service being pointed at this policy key-share locks it
        // (`services::policy_in_account`): it either commits first and is
        // seen below, or waits and then finds the policy gone.
        find_policy(&mut tx, account_id, id, Lock::Delete).await?;
        let user: Option<(String,)> = tx
            .fetch_optional(
                query("SELECT name FROM services WHERE account_id = $1 AND policy_id = $2 LIMIT 1")
                    .bind(account_id)
                    .bind(id),
            )
            .await?;
        if let Some((service,)) = user {
            return Err(StoreError::Conflict(format!(
                "the policy is used by service '{service}'; give that service another policy first"
            )));
        }
        let done = tx
            .execute(
                query("DELETE FROM policies WHERE account_id = $1 AND id = $2")
                    .bind(account_id)
                    .bind(id),
            )
            .await?;
        found(done)?;
        audit(account_id, actor, now)
            .event(&mut tx, "policy.delete", ("policy", id), &json!({}))
            .await?;
        tx.commit().await
    }

    async fn list_rules(&self, account_id: &str, policy_id: &str) -> Result<Vec<PolicyRule>> {
        let mut db = self.read().await?;
        find_policy(&mut db, account_id, policy_id, Lock::None).await?;
        rules_of(&mut db, account_id, policy_id).await
    }

    async fn get_rule(&self, account_id: &str, policy_id: &str, id: &str) -> Result<PolicyRule> {
        self.read()
            .await?
            .fetch_one(
                query(concat!(
                    "SELECT ",
                    rule_columns!(),
                    " FROM policy_rules WHERE account_id = $1 AND policy_id = $2 AND id = $3"
                ))
                .bind(account_id)
                .bind(policy_id)
                .bind(id),
            )
            .await
    }

    async fn create_rule(
        &self,
        account_id: &str,
        policy_id: &str,
        input: &RuleInput,
        actor: &Actor,
        now: Millis,
    ) -> Result<PolicyRule> {
        let mut tx = self.write().await?;
        // Two rules appended at once must not both read the same MAX(position).
        find_policy(&mut tx, account_id, policy_id, Lock::Rules).await?;
        assignee_exists(&mut tx, account_id, input).await?;
        let id = new_id();
        let rule: PolicyRule = tx
            .fetch_one(
                query(concat!(
                    "INSERT INTO policy_rules (id, account_id, policy_id, position, escalation_timeout,
                        assignment_type, assignee_id, created_at, updated_at)
                     VALUES ($1, $2, $3, (SELECT COALESCE(MAX(position) + 1, 0) FROM policy_rules WHERE policy_id = $3),
                        $4, $5, $6, $7, $7)
                     RETURNING ",
                    rule_columns!()
                ))
                .bind(&id)
                .bind(account_id)
                .bind(policy_id)
                .bind(&input.escalation_timeout)
                .bind(&input.assignment_type)
                .bind(&input.assignee_id)
                .bind(&now),
            )
            .await?;
        let changes = json!({
            "policy_id": policy_id,
            "position": rule.position,
            "escalation_timeout": rule.escalation_timeout,
            "assignment": {"type": rule.assignment_type, "id": rule.assignee_id},
        });
        audit(account_id, actor, now)
            .event(
                &mut tx,
                "policy_rule.create",
                ("policy_rule", &rule.id),
                &changes,
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
        let mut tx = self.write().await?;
        assignee_exists(&mut tx, account_id, input).await?;
        let rule: PolicyRule = tx
            .fetch_optional(
                query(concat!(
                    "UPDATE policy_rules SET escalation_timeout = $1, assignment_type = $2, assignee_id = $3,
                        updated_at = $4
                     WHERE account_id = $5 AND policy_id = $6 AND id = $7 RETURNING ",
                    rule_columns!()
                ))
                .bind(&input.escalation_timeout)
                .bind(&input.assignment_type)
                .bind(&input.assignee_id)
                .bind(&now)
                .bind(account_id)
                .bind(policy_id)
                .bind(id),
            )
            .await?
            .ok_or(StoreError::NotFound)?;
        audit(account_id, actor, now)
            .event(&mut tx, "policy_rule.update", ("policy_rule", id), changes)
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
        let mut tx = self.write().await?;
        find_policy(&mut tx, account_id, policy_id, Lock::Rules).await?;
        let gone: Option<(i64,)> = tx
            .fetch_optional(
                query(
                    "DELETE FROM policy_rules WHERE account_id = $1 AND policy_id = $2 AND id = $3
                     RETURNING position",
                )
                .bind(account_id)
                .bind(policy_id)
                .bind(id),
            )
            .await?;
        let (position,) = gone.ok_or(StoreError::NotFound)?;
        tx.execute(
            query("UPDATE policy_rules SET position = position - 1 WHERE policy_id = $1 AND position > $2")
                .bind(policy_id)
                .bind(&position),
        )
        .await?;
        audit(account_id, actor, now)
            .event(
                &mut tx,
                "policy_rule.delete",
                ("policy_rule", id),
                &json!({"policy_id": policy_id}),
            )
            .await?;
        tx.commit().await
    }

    async fn sort_rules(
        &self,
        account_id: &str,
        policy_id: &str,
        rule_ids: &[String],
        actor: &Actor,
        now: Millis,
    ) -> Result<Vec<PolicyRule>> {
        let mut tx = self.write().await?;
        find_policy(&mut tx, account_id, policy_id, Lock::Rules).await?;
        let before = rules_of(&mut tx, account_id, policy_id).await?;
        crate::util::check_permutation(&before, rule_ids)?;
        for (position, id) in (0_i64..).zip(rule_ids) {
            tx.execute(
                query(
                    "UPDATE policy_rules SET position = $1, updated_at = $2 WHERE policy_id = $3 AND id = $4",
                )
                .bind(&position)
                .bind(&now)
                .bind(policy_id)
                .bind(id),
            )
            .await?;
        }
        let before_ids: Vec<&str> = before.iter().map(|r| r.id.as_str()).collect();
        audit(account_id, actor, now)
            .event(
                &mut tx,
                "policy.sort_rules",
                ("policy", policy_id),
                &json!({"rule_ids": [before_ids, rule_ids]}),
            )
            .await?;
        let after = rules_of(&mut tx, account_id, policy_id).await?;
        tx.commit().await?;
        Ok(after)
    }
}

/// Reads (and, per `lock`, locks for the rest of the transaction) a policy
/// of the account; `NotFound` when there is none.
async fn find_policy(db: &mut impl Db, account_id: &str, id: &str, lock: Lock) -> Result<()> {
    let sql = match lock {
        Lock::None => policy_of_account!(),
        Lock::Rules => concat!(policy_of_account!(), " FOR NO KEY UPDATE"),
        Lock::Delete => concat!(policy_of_account!(), " FOR UPDATE"),
    };
    let row: Option<(String,)> = db
        .fetch_optional(query(sql).bind(account_id).bind(id))
        .await?;
    row.map(|_| ()).ok_or(StoreError::NotFound)
}

/// A rule may only name a user (or schedule) of the same account. The
/// assignee is key-share locked so that it cannot be deleted before this
/// transaction commits (its deletion checks for rules naming it).
async fn assignee_exists(db: &mut impl Db, account_id: &str, input: &RuleInput) -> Result<()> {
    let table = crate::util::assignment_table(&input.assignment_type)?;
    let mut q = query("SELECT id FROM ");
    q.push(table)
        .push(" WHERE account_id = ")
        .push_bind(account_id)
        .push(" AND id = ")
        .push_bind(&input.assignee_id)
        .push(" FOR KEY SHARE");
    let row: Option<(String,)> = db.fetch_optional(q).await?;
    row.map(|_| ()).ok_or_else(|| StoreError::Invalid {
        field: "assignment",
        message: format!(
            "{} {} does not exist",
            input.assignment_type, input.assignee_id
        ),
    })
}

/// A policy's rules in order.
pub(crate) async fn rules_of(
    db: &mut impl Db,
    account_id: &str,
    policy_id: &str,
) -> Result<Vec<PolicyRule>> {
    db.fetch_all(
        query(concat!(
            "SELECT ",
            rule_columns!(),
            // Ties in byte order, as SQLite sorts, whatever the database's collation.
            r#" FROM policy_rules WHERE account_id = $1 AND policy_id = $2 ORDER BY position, id COLLATE "C""#
        ))
        .bind(account_id)
        .bind(policy_id),
    )
    .await
}
