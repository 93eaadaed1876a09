//! Accounts, users and their tokens (API, session, calendar feed), for
//! both backends.
//!
//! Locking (PostgreSQL; SQLite has one writer at a time and runs the same
//! statements with the lock clauses dropped):
//! - a change that could remove an account's last admin first locks the
//!   account `FOR NO KEY UPDATE` ([`lock_account`]), so two admins
//!   demoting or deleting each other at once are counted one after the
//!   other;
//! - a user about to be deleted is locked `FOR UPDATE`, which waits for a
//!   rule, layer or override being pointed at them (those key-share lock
//!   the user).

use async_trait::async_trait;
use klaxon_core::time::Millis;
use serde_json::{json, Value};

use super::row::from_row;
use super::{audit, found, query, taken, Backend, Db, Write};
use crate::util::new_id;
use crate::{
    token_kind, Account, AccountStore, Actor, ApiToken, Layer, Principal, Result, Revoke,
    StoreError, TokenInput, User, UserInput,
};

from_row!(User {
    id,
    account_id,
    name,
    email,
    role,
    time_zone,
    password_hash,
    created_at,
    updated_at,
});

from_row!(ApiToken {
    id,
    user_id,
    name,
    created_at,
    last_used_at,
    kind,
    expires_at,
    schedule_id,
});

from_row!(Principal {
    account_id,
    user_id,
    role,
    token_id,
    last_used_at,
    kind,
    expires_at,
    schedule_id,
});

/// Token columns, in `ApiToken`'s order.
macro_rules! token_columns {
    () => {
        "id, user_id, name, created_at, last_used_at, kind, expires_at, schedule_id"
    };
}

/// User columns, in `User`'s order.
macro_rules! user_columns {
    () => {
        "id, account_id, name, email, role, time_zone, password_hash, created_at, updated_at"
    };
}

#[async_trait]
impl<B: Backend> AccountStore for B {
    async fn create_account(
        &self,
        name: &str,
        owner: &UserInput,
        token_hash: &str,
        now: Millis,
    ) -> Result<(Account, User, ApiToken)> {
        let mut tx = self.write().await?;
        let account = Account {
            id: new_id(),
            name: name.to_owned(),
            created_at: now,
            updated_at: now,
        };
        tx.execute(
            query(
                "INSERT INTO accounts (id, name, created_at, updated_at) VALUES ($1, $2, $3, $3)",
            )
            .bind(&account.id)
            .bind(&account.name)
            .bind(&now),
        )
        .await?;
        let user = insert_user(&mut tx, &account.id, owner, now).await?;
        let token = insert_token(
            &mut tx,
            &account.id,
            &user.id,
            &first_token(),
            None,
            token_hash,
            now,
        )
        .await?;
        audit(&account.id, &Actor::User(user.id.clone()), now)
            .event(
                &mut tx,
                "account.create",
                ("account", &account.id),
                &json!({"name": name}),
            )
            .await?;
        tx.commit().await?;
        Ok((account, user, token))
    }

    async fn has_accounts(&self) -> Result<bool> {
        let row: Option<(String,)> = self
            .read()
            .await?
            .fetch_optional(query("SELECT id FROM accounts LIMIT 1"))
            .await?;
        Ok(row.is_some())
    }

    async fn principal_by_token(&self, token_hash: &str) -> Result<Option<Principal>> {
        self.read()
            .await?
            .fetch_optional(
                query(
                    "SELECT u.account_id, u.id AS user_id, u.role, t.id AS token_id, t.last_used_at,
                        t.kind, t.expires_at, t.schedule_id
                     FROM api_tokens t JOIN users u ON u.id = t.user_id
                     WHERE t.token_hash = $1",
                )
                .bind(token_hash),
            )
            .await
    }

    async fn touch_token(
        &self,
        token_id: &str,
        now: Millis,
        renew_until: Option<Millis>,
    ) -> Result<()> {
        let mut tx = self.write().await?;
        tx.execute(
            query(
                "UPDATE api_tokens SET last_used_at = $1, expires_at = COALESCE($2, expires_at)
                 WHERE id = $3",
            )
            .bind(&now)
            .bind(&renew_until)
            .bind(token_id),
        )
        .await?;
        tx.commit().await
    }

    async fn user_by_email(&self, email: &str) -> Result<Option<User>> {
        self.read()
            .await?
            .fetch_optional(
                query(concat!(
                    "SELECT ",
                    user_columns!(),
                    " FROM users WHERE email = $1"
                ))
                .bind(email),
            )
            .await
    }

    async fn create_token(
        &self,
        account_id: &str,
        user_id: &str,
        input: &TokenInput,
        token_hash: &str,
        now: Millis,
    ) -> Result<ApiToken> {
        let mut tx = self.write().await?;
        let token =
            insert_token(&mut tx, account_id, user_id, input, None, token_hash, now).await?;
        audit(account_id, &Actor::User(user_id.to_owned()), now)
            .event(
                &mut tx,
                "token.create",
                ("token", &token.id),
                &json!({"name": input.name, "kind": input.kind, "expires_at": input.expires_at}),
            )
            .await?;
        tx.commit().await?;
        Ok(token)
    }

    async fn create_feed_token(
        &self,
        account_id: &str,
        user_id: &str,
        schedule_id: &str,
        token_hash: &str,
        now: Millis,
    ) -> Result<ApiToken> {
        let mut tx = self.write().await?;
        // Key-share locked: the schedule cannot be deleted before this
        // commits (the insert would then hit the foreign key).
        let schedule: Option<(String,)> = tx
            .fetch_optional(
                query("SELECT id FROM schedules WHERE account_id = $1 AND id = $2 FOR KEY SHARE")
                    .bind(account_id)
                    .bind(schedule_id),
            )
            .await?;
        schedule.ok_or(StoreError::NotFound)?;
        let replaced: Option<(String,)> = tx
            .fetch_optional(
                query(
                    "DELETE FROM api_tokens WHERE user_id = $1 AND schedule_id = $2 AND kind = 'feed'
                     RETURNING id",
                )
                .bind(user_id)
                .bind(schedule_id),
            )
            .await?;
        let input = TokenInput {
            name: "calendar feed".into(),
            kind: token_kind::FEED.into(),
            expires_at: None,
        };
        let token = insert_token(
            &mut tx,
            account_id,
            user_id,
            &input,
            Some(schedule_id),
            token_hash,
            now,
        )
        .await?;
        audit(account_id, &Actor::User(user_id.to_owned()), now)
            .event(
                &mut tx,
                "token.create",
                ("token", &token.id),
                &json!({
                    "name": input.name, "kind": input.kind, "schedule_id": schedule_id,
                    "replaced": replaced.map(|(id,)| id),
                }),
            )
            .await?;
        tx.commit().await?;
        Ok(token)
    }

    async fn delete_feed_token(
        &self,
        account_id: &str,
        user_id: &str,
        schedule_id: &str,
        now: Millis,
    ) -> Result<()> {
        let mut tx = self.write().await?;
        let (id,): (String,) = tx
            .fetch_one(
                query(
                    "DELETE FROM api_tokens
                     WHERE account_id = $1 AND user_id = $2 AND schedule_id = $3 AND kind = 'feed'
                     RETURNING id",
                )
                .bind(account_id)
                .bind(user_id)
                .bind(schedule_id),
            )
            .await?;
        audit(account_id, &Actor::User(user_id.to_owned()), now)
            .event(&mut tx, "token.delete", ("token", &id), &json!({}))
            .await?;
        tx.commit().await
    }

    async fn list_tokens(&self, account_id: &str, user_id: &str) -> Result<Vec<ApiToken>> {
        self.read()
            .await?
            .fetch_all(
                query(concat!(
                    "SELECT ",
                    token_columns!(),
                    // Ties in byte order, as SQLite sorts, whatever the database's collation.
                    r#" FROM api_tokens WHERE account_id = $1 AND user_id = $2
                     ORDER BY created_at DESC, id COLLATE "C""#
                ))
                .bind(account_id)
                .bind(user_id),
            )
            .await
    }

    async fn delete_token(
        &self,
        account_id: &str,
        user_id: &str,
        token_id: &str,
        actor: &Actor,
        now: Millis,
    ) -> Result<()> {
        let mut tx = self.write().await?;
        let done = tx
            .execute(
                query("DELETE FROM api_tokens WHERE account_id = $1 AND user_id = $2 AND id = $3")
                    .bind(account_id)
                    .bind(user_id)
                    .bind(token_id),
            )
            .await?;
        found(done)?;
        audit(account_id, actor, now)
            .event(
                &mut tx,
                "token.delete",
                ("token", token_id),
                &json!({"user_id": user_id}),
            )
            .await?;
        tx.commit().await
    }

    async fn create_user(
        &self,
        account_id: &str,
        input: &UserInput,
        actor: &Actor,
        now: Millis,
    ) -> Result<User> {
        let mut tx = self.write().await?;
        let user = insert_user(&mut tx, account_id, input, now).await?;
        audit(account_id, actor, now)
            .event(
                &mut tx,
                "user.create",
                ("user", &user.id),
                &user_changeset(&user),
            )
            .await?;
        tx.commit().await?;
        Ok(user)
    }

    async fn list_users(&self, account_id: &str) -> Result<Vec<User>> {
        self.read()
            .await?
            .fetch_all(
                query(concat!(
                    "SELECT ",
                    user_columns!(),
                    // Ties in byte order, as SQLite sorts, whatever the database's collation.
                    r#" FROM users WHERE account_id = $1 ORDER BY created_at, id COLLATE "C""#
                ))
                .bind(account_id),
            )
            .await
    }

    async fn get_user(&self, account_id: &str, id: &str) -> Result<User> {
        self.read()
            .await?
            .fetch_one(
                query(concat!(
                    "SELECT ",
                    user_columns!(),
                    " FROM users WHERE account_id = $1 AND id = $2"
                ))
                .bind(account_id)
                .bind(id),
            )
            .await
    }

    async fn update_user(
        &self,
        account_id: &str,
        id: &str,
        input: &UserInput,
        changes: &Value,
        revoke: Revoke<'_>,
        actor: &Actor,
        now: Millis,
    ) -> Result<User> {
        let mut tx = self.write().await?;
        if input.role != "admin" {
            lock_account(&mut tx, account_id).await?;
            refuse_if_last_admin(&mut tx, account_id, id).await?;
        }
        let user: User = tx
            .fetch_optional(
                query(concat!(
                    "UPDATE users SET name = $1, email = $2, role = $3, time_zone = $4, password_hash = $5,
                        updated_at = $6
                     WHERE account_id = $7 AND id = $8 RETURNING ",
                    user_columns!()
                ))
                .bind(&input.name)
                .bind(&input.email)
                .bind(&input.role)
                .bind(&input.time_zone)
                .bind(&input.password_hash)
                .bind(&now)
                .bind(account_id)
                .bind(id),
            )
            .await
            .map_err(taken("email"))?
            .ok_or(StoreError::NotFound)?;
        let revoked = revoke_tokens(&mut tx, account_id, id, revoke).await?;
        let mut changes = changes.clone();
        if let (true, Some(obj)) = (revoked > 0, changes.as_object_mut()) {
            obj.insert("tokens_revoked".into(), json!(revoked));
        }
        audit(account_id, actor, now)
            .event(&mut tx, "user.update", ("user", id), &changes)
            .await?;
        tx.commit().await?;
        Ok(user)
    }

    async fn delete_user(
        &self,
        account_id: &str,
        id: &str,
        actor: &Actor,
        now: Millis,
    ) -> Result<()> {
        let mut tx = self.write().await?;
        lock_account(&mut tx, account_id).await?;
        // Locked like the DELETE below would, so a rule being created for
        // this user (which key-share locks it) either commits first and is
        // seen here, or waits and then finds the user gone.
        let exists: Option<(String,)> = tx
            .fetch_optional(
                query("SELECT id FROM users WHERE account_id = $1 AND id = $2 FOR UPDATE")
                    .bind(account_id)
                    .bind(id),
            )
            .await?;
        exists.ok_or(StoreError::NotFound)?;
        refuse_if_last_admin(&mut tx, account_id, id).await?;
        let rule: Option<(String,)> = tx
            .fetch_optional(
                query(
                    "SELECT policy_id FROM policy_rules
                     WHERE account_id = $1 AND assignment_type = 'user' AND assignee_id = $2 LIMIT 1",
                )
                .bind(account_id)
                .bind(id),
            )
            .await?;
        if let Some((policy_id,)) = rule {
            return Err(StoreError::Conflict(format!(
                "the user is assigned in escalation policy {policy_id}; reassign that rule first"
            )));
        }
        // The account's layers, checked here: the two databases have no
        // common spelling for "this JSON array holds this string".
        let layers: Vec<Layer> = tx
            .fetch_all(
                query(
                    "SELECT id, schedule_id, position, rotation, count, start_at, users, restrictions,
                        created_at, updated_at
                     FROM schedule_layers WHERE account_id = $1",
                )
                .bind(account_id),
            )
            .await?;
        crate::util::refuse_if_in_rotation(&layers, id)?;
        tx.execute(
            query("DELETE FROM users WHERE account_id = $1 AND id = $2")
                .bind(account_id)
                .bind(id),
        )
        .await?;
        audit(account_id, actor, now)
            .event(&mut tx, "user.delete", ("user", id), &json!({}))
            .await?;
        tx.commit().await
    }
}

pub(crate) async fn insert_user(
    db: &mut impl Db,
    account_id: &str,
    input: &UserInput,
    now: Millis,
) -> Result<User> {
    let id = new_id();
    db.fetch_one(
        query(concat!(
            "INSERT INTO users (id, account_id, name, email, role, time_zone, password_hash, created_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8) RETURNING ",
            user_columns!()
        ))
        .bind(&id)
        .bind(account_id)
        .bind(&input.name)
        .bind(&input.email)
        .bind(&input.role)
        .bind(&input.time_zone)
        .bind(&input.password_hash)
        .bind(&now),
    )
    .await
    .map_err(taken("email"))
}

/// The first token of a new user (registration, bootstrap, invitation):
/// an API token that does not expire, as the user may have no password to
/// sign in with again.
pub(crate) fn first_token() -> TokenInput {
    TokenInput {
        name: "default".into(),
        kind: token_kind::API.into(),
        expires_at: None,
    }
}

/// Inserts a token, first forgetting the user's tokens that have expired
/// (so sessions do not pile up).
pub(crate) async fn insert_token(
    db: &mut impl Db,
    account_id: &str,
    user_id: &str,
    input: &TokenInput,
    schedule_id: Option<&str>,
    token_hash: &str,
    now: Millis,
) -> Result<ApiToken> {
    db.execute(
        query("DELETE FROM api_tokens WHERE user_id = $1 AND expires_at <= $2")
            .bind(user_id)
            .bind(&now),
    )
    .await?;
    let token = ApiToken {
        id: new_id(),
        user_id: user_id.to_owned(),
        name: input.name.clone(),
        created_at: now,
        last_used_at: None,
        kind: input.kind.clone(),
        expires_at: input.expires_at,
        schedule_id: schedule_id.map(str::to_owned),
    };
    db.execute(
        query(
            "INSERT INTO api_tokens (id, account_id, user_id, name, token_hash, created_at, kind,
                expires_at, schedule_id)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(&token.id)
        .bind(account_id)
        .bind(user_id)
        .bind(&token.name)
        .bind(token_hash)
        .bind(&now)
        .bind(&token.kind)
        .bind(&token.expires_at)
        .bind(&token.schedule_id),
    )
    .await?;
    Ok(token)
}

/// Deletes the user's tokens `revoke` names; how many.
async fn revoke_tokens(
    db: &mut impl Db,
    account_id: &str,
    user_id: &str,
    revoke: Revoke<'_>,
) -> Result<u64> {
    match revoke {
        Revoke::Nothing => Ok(0),
        Revoke::AllBut(keep) => {
            db.execute(
                query("DELETE FROM api_tokens WHERE account_id = $1 AND user_id = $2 AND id <> $3")
                    .bind(account_id)
                    .bind(user_id)
                    .bind(keep),
            )
            .await
        }
        Revoke::All => {
            db.execute(
                query("DELETE FROM api_tokens WHERE account_id = $1 AND user_id = $2")
                    .bind(account_id)
                    .bind(user_id),
            )
            .await
        }
    }
}

/// Serialises changes to an account's set of admins: two admins demoting
/// or deleting each other at once must not both succeed. The second waits
/// here and then counts with a fresh snapshot.
async fn lock_account(db: &mut impl Db, account_id: &str) -> Result<()> {
    let _: Option<(String,)> = db
        .fetch_optional(
            query("SELECT id FROM accounts WHERE id = $1 FOR NO KEY UPDATE").bind(account_id),
        )
        .await?;
    Ok(())
}

/// An account must keep at least one admin, or nobody could manage it.
/// Call with the account locked ([`lock_account`]).
async fn refuse_if_last_admin(db: &mut impl Db, account_id: &str, user_id: &str) -> Result<()> {
    let (others,): (i64,) = db
        .fetch_one(
            query(
                "SELECT COUNT(*) FROM users WHERE account_id = $1 AND role = 'admin' AND id <> $2",
            )
            .bind(account_id)
            .bind(user_id),
        )
        .await?;
    if others == 0 {
        let (is_admin,): (i64,) = db
            .fetch_one(
                query(
                    "SELECT COUNT(*) FROM users WHERE account_id = $1 AND id = $2 AND role = 'admin'",
                )
                .bind(account_id)
                .bind(user_id),
            )
            .await?;
        if is_admin > 0 {
            return Err(StoreError::Conflict(
                "an account must keep at least one admin".into(),
            ));
        }
    }
    Ok(())
}

fn user_changeset(user: &User) -> Value {
    json!({"name": user.name, "email": user.email, "role": user.role, "time_zone": user.time_zone})
}
