//! Contacts and notification rules, for both backends.
//!
//! Everything here hangs off a user: each statement names the account and
//! the user, so a user of another account, or another user's contact or
//! rule, is `NotFound`.
//!
//! Locking (PostgreSQL; SQLite has one writer at a time and runs the same
//! statements with the lock clauses dropped):
//! - the user a contact or rule is added to is key-share locked
//!   ([`user_exists`]), so that it cannot be deleted before the insert
//!   commits (the delete would cascade, the insert would hit the foreign
//!   key);
//! - the contact a rule points to is key-share locked
//!   ([`contact_of_user`]); a contact about to be deleted is locked `FOR
//!   UPDATE`, which waits for such a rule to commit, so the rule is seen
//!   (and removed with its audit event) or finds the contact gone.

use async_trait::async_trait;
use klaxon_core::time::Millis;
use serde_json::{json, Value};

use super::row::from_row;
use super::{audit, query, Backend, Db, Write};
use crate::util::new_id;
use crate::{
    Actor, Contact, ContactInput, ContactStore, NotificationRule, NotificationRuleInput, Result,
    StoreError,
};

from_row!(Contact {
    id,
    account_id,
    user_id,
    kind,
    label,
    address,
    created_at,
    updated_at,
});

from_row!(NotificationRule {
    id,
    account_id,
    user_id,
    contact_id,
    start_delay,
    created_at,
    updated_at,
});

/// Contact columns, in `Contact`'s order (`type` read as `kind`).
macro_rules! contact_columns {
    () => {
        "id, account_id, user_id, type AS kind, label, address, created_at, updated_at"
    };
}

/// Notification rule columns, in `NotificationRule`'s order.
macro_rules! rule_columns {
    () => {
        "id, account_id, user_id, contact_id, start_delay, created_at, updated_at"
    };
}

#[async_trait]
impl<B: Backend> ContactStore for B {
    async fn list_contacts(&self, account_id: &str, user_id: &str) -> Result<Vec<Contact>> {
        let mut db = self.read().await?;
        user_exists(&mut db, account_id, user_id, false).await?;
        db.fetch_all(
            query(concat!(
                "SELECT ",
                contact_columns!(),
                // Ties in byte order, as SQLite sorts, whatever the database's collation.
                r#" FROM contacts WHERE account_id = $1 AND user_id = $2 ORDER BY created_at, id COLLATE "C""#
            ))
            .bind(account_id)
            .bind(user_id),
        )
        .await
    }

    async fn get_contact(&self, account_id: &str, user_id: &str, id: &str) -> Result<Contact> {
        self.read()
            .await?
            .fetch_one(
                query(concat!(
                    "SELECT ",
                    contact_columns!(),
                    " FROM contacts WHERE account_id = $1 AND user_id = $2 AND id = $3"
                ))
                .bind(account_id)
                .bind(user_id)
                .bind(id),
            )
            .await
    }

    async fn create_contact(
        &self,
        account_id: &str,
        user_id: &str,
        input: &ContactInput,
        actor: &Actor,
        now: Millis,
    ) -> Result<Contact> {
        let mut tx = self.write().await?;
        user_exists(&mut tx, account_id, user_id, true).await?;
        let id = new_id();
        let contact: Contact = tx
            .fetch_one(
                query(concat!(
                    "INSERT INTO contacts (id, account_id, user_id, type, label, address, created_at, updated_at)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $7) RETURNING ",
                    contact_columns!()
                ))
                .bind(&id)
                .bind(account_id)
                .bind(user_id)
                .bind(input.address.kind().as_str())
                .bind(&input.label)
                .bind(input.address.address())
                .bind(&now),
            )
            .await?;
        let changeset = json!({
            "user_id": user_id, "type": contact.kind, "label": contact.label, "address": contact.address,
        });
        audit(account_id, actor, now)
            .event(
                &mut tx,
                "contact.create",
                ("contact", &contact.id),
                &changeset,
            )
            .await?;
        tx.commit().await?;
        Ok(contact)
    }

    async fn update_contact(
        &self,
        account_id: &str,
        user_id: &str,
        id: &str,
        input: &ContactInput,
        changes: &Value,
        actor: &Actor,
        now: Millis,
    ) -> Result<Contact> {
        let mut tx = self.write().await?;
        let contact: Contact = tx
            .fetch_optional(
                query(concat!(
                    "UPDATE contacts SET type = $1, label = $2, address = $3, updated_at = $4
                     WHERE account_id = $5 AND user_id = $6 AND id = $7 RETURNING ",
                    contact_columns!()
                ))
                .bind(input.address.kind().as_str())
                .bind(&input.label)
                .bind(input.address.address())
                .bind(&now)
                .bind(account_id)
                .bind(user_id)
                .bind(id),
            )
            .await?
            .ok_or(StoreError::NotFound)?;
        audit(account_id, actor, now)
            .event(&mut tx, "contact.update", ("contact", id), changes)
            .await?;
        tx.commit().await?;
        Ok(contact)
    }

    async fn delete_contact(
        &self,
        account_id: &str,
        user_id: &str,
        id: &str,
        actor: &Actor,
        now: Millis,
    ) -> Result<()> {
        let mut tx = self.write().await?;
        // Waits for a rule being pointed at this contact (which key-share
        // locks it): that rule is then removed below with its event.
        let exists: Option<(String,)> = tx
            .fetch_optional(
                query(
                    "SELECT id FROM contacts WHERE account_id = $1 AND user_id = $2 AND id = $3 FOR UPDATE",
                )
                .bind(account_id)
                .bind(user_id)
                .bind(id),
            )
            .await?;
        exists.ok_or(StoreError::NotFound)?;
        let rules: Vec<(String,)> = tx
            .fetch_all(
                query(
                    "DELETE FROM notification_rules WHERE account_id = $1 AND contact_id = $2 RETURNING id",
                )
                .bind(account_id)
                .bind(id),
            )
            .await?;
        let rule_changes = json!({"user_id": user_id, "contact_id": id});
        for (rule_id,) in &rules {
            audit(account_id, actor, now)
                .event(
                    &mut tx,
                    "notification_rule.delete",
                    ("notification_rule", rule_id),
                    &rule_changes,
                )
                .await?;
        }
        tx.execute(
            query("DELETE FROM contacts WHERE account_id = $1 AND id = $2")
                .bind(account_id)
                .bind(id),
        )
        .await?;
        audit(account_id, actor, now)
            .event(
                &mut tx,
                "contact.delete",
                ("contact", id),
                &json!({"user_id": user_id}),
            )
            .await?;
        tx.commit().await
    }

    async fn list_notification_rules(
        &self,
        account_id: &str,
        user_id: &str,
    ) -> Result<Vec<NotificationRule>> {
        let mut db = self.read().await?;
        user_exists(&mut db, account_id, user_id, false).await?;
        db.fetch_all(
            query(concat!(
                "SELECT ",
                rule_columns!(),
                // Ties in byte order, as SQLite sorts, whatever the database's collation.
                r#" FROM notification_rules WHERE account_id = $1 AND user_id = $2
                    ORDER BY start_delay, created_at, id COLLATE "C""#
            ))
            .bind(account_id)
            .bind(user_id),
        )
        .await
    }

    async fn get_notification_rule(
        &self,
        account_id: &str,
        user_id: &str,
        id: &str,
    ) -> Result<NotificationRule> {
        self.read()
            .await?
            .fetch_one(
                query(concat!(
                    "SELECT ",
                    rule_columns!(),
                    " FROM notification_rules WHERE account_id = $1 AND user_id = $2 AND id = $3"
                ))
                .bind(account_id)
                .bind(user_id)
                .bind(id),
            )
            .await
    }

    async fn create_notification_rule(
        &self,
        account_id: &str,
        user_id: &str,
        input: &NotificationRuleInput,
        actor: &Actor,
        now: Millis,
    ) -> Result<NotificationRule> {
        let mut tx = self.write().await?;
        user_exists(&mut tx, account_id, user_id, true).await?;
        contact_of_user(&mut tx, account_id, user_id, &input.contact_id).await?;
        let id = new_id();
        let start_delay = input.start_delay.minutes();
        let rule: NotificationRule = tx
            .fetch_one(
                query(concat!(
                    "INSERT INTO notification_rules (id, account_id, user_id, contact_id, start_delay, created_at, updated_at)
                     VALUES ($1, $2, $3, $4, $5, $6, $6) RETURNING ",
                    rule_columns!()
                ))
                .bind(&id)
                .bind(account_id)
                .bind(user_id)
                .bind(&input.contact_id)
                .bind(&start_delay)
                .bind(&now),
            )
            .await?;
        let changeset = json!({
            "user_id": user_id, "contact_id": rule.contact_id, "start_delay": rule.start_delay,
        });
        audit(account_id, actor, now)
            .event(
                &mut tx,
                "notification_rule.create",
                ("notification_rule", &rule.id),
                &changeset,
            )
            .await?;
        tx.commit().await?;
        Ok(rule)
    }

    async fn update_notification_rule(
        &self,
        account_id: &str,
        user_id: &str,
        id: &str,
        input: &NotificationRuleInput,
        changes: &Value,
        actor: &Actor,
        now: Millis,
    ) -> Result<NotificationRule> {
        let mut tx = self.write().await?;
        let exists: Option<(String,)> = tx
            .fetch_optional(
                query(
                    "SELECT id FROM notification_rules
                     WHERE account_id = $1 AND user_id = $2 AND id = $3 FOR NO KEY UPDATE",
                )
                .bind(account_id)
                .bind(user_id)
                .bind(id),
            )
            .await?;
        exists.ok_or(StoreError::NotFound)?;
        contact_of_user(&mut tx, account_id, user_id, &input.contact_id).await?;
        let start_delay = input.start_delay.minutes();
        let rule: NotificationRule = tx
            .fetch_one(
                query(concat!(
                    "UPDATE notification_rules SET contact_id = $1, start_delay = $2, updated_at = $3
                     WHERE account_id = $4 AND user_id = $5 AND id = $6 RETURNING ",
                    rule_columns!()
                ))
                .bind(&input.contact_id)
                .bind(&start_delay)
                .bind(&now)
                .bind(account_id)
                .bind(user_id)
                .bind(id),
            )
            .await?;
        audit(account_id, actor, now)
            .event(
                &mut tx,
                "notification_rule.update",
                ("notification_rule", id),
                changes,
            )
            .await?;
        tx.commit().await?;
        Ok(rule)
    }

    async fn delete_notification_rule(
        &self,
        account_id: &str,
        user_id: &str,
        id: &str,
        actor: &Actor,
        now: Millis,
    ) -> Result<()> {
        let mut tx = self.write().await?;
        let gone: Option<(String,)> = tx
            .fetch_optional(
                query(
                    "DELETE FROM notification_rules WHERE account_id = $1 AND user_id = $2 AND id = $3
                     RETURNING contact_id",
                )
                .bind(account_id)
                .bind(user_id)
                .bind(id),
            )
            .await?;
        let (contact_id,) = gone.ok_or(StoreError::NotFound)?;
        audit(account_id, actor, now)
            .event(
                &mut tx,
                "notification_rule.delete",
                ("notification_rule", id),
                &json!({"user_id": user_id, "contact_id": contact_id}),
            )
            .await?;
        tx.commit().await
    }
}

/// The user must be the account's (`NotFound` otherwise). Before a write
/// it is key-share locked, so it cannot be deleted until the write commits.
async fn user_exists(db: &mut impl Db, account_id: &str, user_id: &str, lock: bool) -> Result<()> {
    let sql = if lock {
        "SELECT id FROM users WHERE account_id = $1 AND id = $2 FOR KEY SHARE"
    } else {
        "SELECT id FROM users WHERE account_id = $1 AND id = $2"
    };
    let row: Option<(String,)> = db
        .fetch_optional(query(sql).bind(account_id).bind(user_id))
        .await?;
    row.map(|_| ()).ok_or(StoreError::NotFound)
}

/// A rule's contact must be the same user's. It is key-share locked so
/// that it cannot be deleted before the rule commits.
async fn contact_of_user(
    db: &mut impl Db,
    account_id: &str,
    user_id: &str,
    contact_id: &str,
) -> Result<()> {
    let row: Option<(String,)> = db
        .fetch_optional(
            query(
                "SELECT id FROM contacts WHERE account_id = $1 AND user_id = $2 AND id = $3 FOR KEY SHARE",
            )
            .bind(account_id)
            .bind(user_id)
            .bind(contact_id),
        )
        .await?;
    row.map(|_| ()).ok_or_else(|| StoreError::Invalid {
        field: "contact_id",
        message: "does not exist".into(),
    })
}
