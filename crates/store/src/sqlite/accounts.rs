//! Accounts, users and API tokens (SQLite).

use async_trait::async_trait;
use klaxon_core::time::Millis;
use serde_json::{json, Value};

use super::{found, insert_event, taken, SqliteStore};
use crate::util::new_id;
use crate::{
    Account, AccountStore, Actor, ApiToken, Principal, Result, StoreError, User, UserInput,
};

const USER_COLUMNS: &str =
    "id, account_id, name, email, role, time_zone, password_hash, created_at, updated_at";

#[async_trait]
impl AccountStore for SqliteStore {
    async fn create_account(
        &self,
        name: &str,
        owner: &UserInput,
        token_hash: &str,
        now: Millis,
    ) -> Result<(Account, User, ApiToken)> {
        let mut tx = self.begin_write().await?;
        let account = Account {
            id: new_id(),
            name: name.to_owned(),
            created_at: now,
            updated_at: now,
        };
        sqlx::query("INSERT INTO accounts (id, name, created_at, updated_at) VALUES (?, ?, ?, ?)")
            .bind(&account.id)
            .bind(&account.name)
            .bind(now)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        let user = insert_user(&mut tx, &account.id, owner, now).await?;
        let token =
            insert_token(&mut tx, &account.id, &user.id, "default", token_hash, now).await?;
        let actor = Actor::User(user.id.clone());
        insert_event(
            &mut tx,
            &account.id,
            "account.create",
            "account",
            &account.id,
            &actor,
            &json!({"name": name}),
            now,
        )
        .await?;
        tx.commit().await?;
        Ok((account, user, token))
    }

    async fn has_accounts(&self) -> Result<bool> {
        let row: Option<(String,)> = sqlx::query_as("SELECT id FROM accounts LIMIT 1")
            .fetch_optional(&self.reader)
            .await?;
        Ok(row.is_some())
    }

    async fn principal_by_token(&self, token_hash: &str) -> Result<Option<Principal>> {
        Ok(sqlx::query_as(
            "SELECT u.account_id, u.id AS user_id, u.role, t.id AS token_id, t.last_used_at
             FROM api_tokens t JOIN users u ON u.id = t.user_id
             WHERE t.token_hash = ?",
        )
        .bind(token_hash)
        .fetch_optional(&self.reader)
        .await?)
    }

    async fn touch_token(&self, token_id: &str, now: Millis) -> Result<()> {
        sqlx::query("UPDATE api_tokens SET last_used_at = ? WHERE id = ?")
            .bind(now)
            .bind(token_id)
            .execute(&self.writer)
            .await?;
        Ok(())
    }

    async fn user_by_email(&self, email: &str) -> Result<Option<User>> {
        Ok(
            sqlx::query_as(&format!("SELECT {USER_COLUMNS} FROM users WHERE email = ?"))
                .bind(email)
                .fetch_optional(&self.reader)
                .await?,
        )
    }

    async fn create_token(
        &self,
        account_id: &str,
        user_id: &str,
        name: &str,
        token_hash: &str,
        now: Millis,
    ) -> Result<ApiToken> {
        let mut tx = self.begin_write().await?;
        let token = insert_token(&mut tx, account_id, user_id, name, token_hash, now).await?;
        let actor = Actor::User(user_id.to_owned());
        insert_event(
            &mut tx,
            account_id,
            "token.create",
            "token",
            &token.id,
            &actor,
            &json!({"name": name}),
            now,
        )
        .await?;
        tx.commit().await?;
        Ok(token)
    }

    async fn list_tokens(&self, account_id: &str, user_id: &str) -> Result<Vec<ApiToken>> {
        Ok(sqlx::query_as(
            "SELECT id, user_id, name, created_at, last_used_at FROM api_tokens
             WHERE account_id = ? AND user_id = ? ORDER BY created_at DESC, id",
        )
        .bind(account_id)
        .bind(user_id)
        .fetch_all(&self.reader)
        .await?)
    }

    async fn delete_token(
        &self,
        account_id: &str,
        user_id: &str,
        token_id: &str,
        now: Millis,
    ) -> Result<()> {
        let mut tx = self.begin_write().await?;
        let done =
            sqlx::query("DELETE FROM api_tokens WHERE account_id = ? AND user_id = ? AND id = ?")
                .bind(account_id)
                .bind(user_id)
                .bind(token_id)
                .execute(&mut *tx)
                .await?;
        found(done.rows_affected())?;
        let actor = Actor::User(user_id.to_owned());
        insert_event(
            &mut tx,
            account_id,
            "token.delete",
            "token",
            token_id,
            &actor,
            &json!({}),
            now,
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn create_user(
        &self,
        account_id: &str,
        input: &UserInput,
        actor: &Actor,
        now: Millis,
    ) -> Result<User> {
        let mut tx = self.begin_write().await?;
        let user = insert_user(&mut tx, account_id, input, now).await?;
        insert_event(
            &mut tx,
            account_id,
            "user.create",
            "user",
            &user.id,
            actor,
            &user_changeset(&user),
            now,
        )
        .await?;
        tx.commit().await?;
        Ok(user)
    }

    async fn list_users(&self, account_id: &str) -> Result<Vec<User>> {
        Ok(sqlx::query_as(&format!(
            "SELECT {USER_COLUMNS} FROM users WHERE account_id = ? ORDER BY created_at, id"
        ))
        .bind(account_id)
        .fetch_all(&self.reader)
        .await?)
    }

    async fn get_user(&self, account_id: &str, id: &str) -> Result<User> {
        sqlx::query_as(&format!(
            "SELECT {USER_COLUMNS} FROM users WHERE account_id = ? AND id = ?"
        ))
        .bind(account_id)
        .bind(id)
        .fetch_optional(&self.reader)
        .await?
        .ok_or(StoreError::NotFound)
    }

    async fn update_user(
        &self,
        account_id: &str,
        id: &str,
        input: &UserInput,
        changes: &Value,
        actor: &Actor,
        now: Millis,
    ) -> Result<User> {
        let mut tx = self.begin_write().await?;
        if input.role != "admin" {
            refuse_if_last_admin(&mut tx, account_id, id).await?;
        }
        let user: User = sqlx::query_as(&format!(
            "UPDATE users SET name = ?, email = ?, role = ?, time_zone = ?, password_hash = ?, updated_at = ?
             WHERE account_id = ? AND id = ? RETURNING {USER_COLUMNS}"
        ))
        .bind(&input.name)
        .bind(&input.email)
        .bind(&input.role)
        .bind(&input.time_zone)
        .bind(&input.password_hash)
        .bind(now)
        .bind(account_id)
        .bind(id)
        .fetch_optional(&mut *tx)
        .await
        .map_err(taken("email"))?
        .ok_or(StoreError::NotFound)?;
        insert_event(
            &mut tx,
            account_id,
            "user.update",
            "user",
            id,
            actor,
            changes,
            now,
        )
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
        let mut tx = self.begin_write().await?;
        let exists: Option<(String,)> =
            sqlx::query_as("SELECT id FROM users WHERE account_id = ? AND id = ?")
                .bind(account_id)
                .bind(id)
                .fetch_optional(&mut *tx)
                .await?;
        exists.ok_or(StoreError::NotFound)?;
        refuse_if_last_admin(&mut tx, account_id, id).await?;
        let rule: Option<(String,)> = sqlx::query_as(
            "SELECT policy_id FROM policy_rules WHERE account_id = ? AND assignment_type = 'user' AND assignee_id = ? LIMIT 1",
        )
        .bind(account_id)
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?;
        if let Some((policy_id,)) = rule {
            return Err(StoreError::Conflict(format!(
                "the user is assigned in escalation policy {policy_id}; reassign that rule first"
            )));
        }
        let layers: Vec<crate::Layer> = sqlx::query_as(
            "SELECT id, schedule_id, position, rotation, count, start_at, users, restrictions, created_at, updated_at
             FROM schedule_layers WHERE account_id = ?",
        )
        .bind(account_id)
        .fetch_all(&mut *tx)
        .await?;
        crate::util::refuse_if_in_rotation(&layers, id)?;
        sqlx::query("DELETE FROM users WHERE account_id = ? AND id = ?")
            .bind(account_id)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        insert_event(
            &mut tx,
            account_id,
            "user.delete",
            "user",
            id,
            actor,
            &json!({}),
            now,
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }
}

async fn insert_user(
    conn: &mut sqlx::SqliteConnection,
    account_id: &str,
    input: &UserInput,
    now: Millis,
) -> Result<User> {
    sqlx::query_as(&format!(
        "INSERT INTO users (id, account_id, name, email, role, time_zone, password_hash, created_at, updated_at)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING {USER_COLUMNS}"
    ))
    .bind(new_id())
    .bind(account_id)
    .bind(&input.name)
    .bind(&input.email)
    .bind(&input.role)
    .bind(&input.time_zone)
    .bind(&input.password_hash)
    .bind(now)
    .bind(now)
    .fetch_one(conn)
    .await
    .map_err(taken("email"))
}

async fn insert_token(
    conn: &mut sqlx::SqliteConnection,
    account_id: &str,
    user_id: &str,
    name: &str,
    token_hash: &str,
    now: Millis,
) -> Result<ApiToken> {
    let token = ApiToken {
        id: new_id(),
        user_id: user_id.to_owned(),
        name: name.to_owned(),
        created_at: now,
        last_used_at: None,
    };
    sqlx::query(
        "INSERT INTO api_tokens (id, account_id, user_id, name, token_hash, created_at) VALUES (?, ?, ?, ?, ?, ?)",
    )
    .bind(&token.id)
    .bind(account_id)
    .bind(user_id)
    .bind(name)
    .bind(token_hash)
    .bind(now)
    .execute(conn)
    .await?;
    Ok(token)
}

/// An account must keep at least one admin, or nobody could manage it.
async fn refuse_if_last_admin(
    conn: &mut sqlx::SqliteConnection,
    account_id: &str,
    user_id: &str,
) -> Result<()> {
    let (others,): (i64,) = sqlx::query_as(
        "SELECT COUNT(*) FROM users WHERE account_id = ? AND role = 'admin' AND id <> ?",
    )
    .bind(account_id)
    .bind(user_id)
    .fetch_one(&mut *conn)
    .await?;
    if others == 0 {
        let (is_admin,): (i64,) = sqlx::query_as(
            "SELECT COUNT(*) FROM users WHERE account_id = ? AND id = ? AND role = 'admin'",
        )
        .bind(account_id)
        .bind(user_id)
        .fetch_one(conn)
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
