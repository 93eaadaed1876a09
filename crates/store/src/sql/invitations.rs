//! Invitations, for both backends.
//!
//! Using one is a single transaction: the invitation row is locked `FOR
//! UPDATE` (and re-checked after any wait, so two registrations with one
//! code cannot both pass), the user and their first token are inserted,
//! and the invitation is marked used. A refused insert (the email is
//! taken) rolls it all back and leaves the invitation usable.

use async_trait::async_trait;
use klaxon_core::time::Millis;
use serde_json::json;

use super::accounts::{first_token, insert_token, insert_user};
use super::row::from_row;
use super::{audit, found, query, Backend, Db, Write};
use crate::util::new_id;
use crate::{
    Actor, ApiToken, Invitation, InvitationInput, InvitationStore, Result, StoreError, User,
    UserInput,
};

from_row!(Invitation {
    id,
    account_id,
    role,
    email,
    expires_at,
    used_at,
    used_by,
    created_at,
});

/// Invitation columns, in `Invitation`'s order.
macro_rules! invitation_columns {
    () => {
        "id, account_id, role, email, expires_at, used_at, used_by, created_at"
    };
}

#[async_trait]
impl<B: Backend> InvitationStore for B {
    async fn create_invitation(
        &self,
        account_id: &str,
        input: &InvitationInput,
        code_hash: &str,
        actor: &Actor,
        now: Millis,
    ) -> Result<Invitation> {
        let mut tx = self.write().await?;
        let invitation: Invitation = tx
            .fetch_one(
                query(concat!(
                    "INSERT INTO invitations (id, account_id, code_hash, role, email, expires_at, created_at)
                     VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING ",
                    invitation_columns!()
                ))
                .bind(&new_id())
                .bind(account_id)
                .bind(code_hash)
                .bind(&input.role)
                .bind(&input.email)
                .bind(&input.expires_at)
                .bind(&now),
            )
            .await?;
        audit(account_id, actor, now)
            .event(
                &mut tx,
                "invitation.create",
                ("invitation", &invitation.id),
                &json!({
                    "role": input.role, "email": input.email, "expires_at": input.expires_at,
                }),
            )
            .await?;
        tx.commit().await?;
        Ok(invitation)
    }

    async fn list_invitations(&self, account_id: &str) -> Result<Vec<Invitation>> {
        self.read()
            .await?
            .fetch_all(
                query(concat!(
                    "SELECT ",
                    invitation_columns!(),
                    // Ties in byte order, as SQLite sorts, whatever the database's collation.
                    r#" FROM invitations WHERE account_id = $1 ORDER BY created_at DESC, id COLLATE "C""#
                ))
                .bind(account_id),
            )
            .await
    }

    async fn delete_invitation(
        &self,
        account_id: &str,
        id: &str,
        actor: &Actor,
        now: Millis,
    ) -> Result<()> {
        let mut tx = self.write().await?;
        let done = tx
            .execute(
                query("DELETE FROM invitations WHERE account_id = $1 AND id = $2")
                    .bind(account_id)
                    .bind(id),
            )
            .await?;
        found(done)?;
        audit(account_id, actor, now)
            .event(&mut tx, "invitation.delete", ("invitation", id), &json!({}))
            .await?;
        tx.commit().await
    }

    async fn accept_invitation(
        &self,
        code_hash: &str,
        user: &UserInput,
        token_hash: &str,
        now: Millis,
    ) -> Result<(Invitation, User, ApiToken)> {
        let mut tx = self.write().await?;
        let mut invitation: Invitation = tx
            .fetch_one(
                query(concat!(
                    "SELECT ",
                    invitation_columns!(),
                    " FROM invitations WHERE code_hash = $1 AND used_at IS NULL AND expires_at > $2
                     FOR UPDATE"
                ))
                .bind(code_hash)
                .bind(&now),
            )
            .await?;
        if invitation.email.as_ref().is_some_and(|e| *e != user.email) {
            return Err(StoreError::Invalid {
                field: "email",
                message: "is not the address this invitation is for".into(),
            });
        }
        let input = UserInput {
            role: invitation.role.clone(),
            ..user.clone()
        };
        let account_id = invitation.account_id.clone();
        let user = insert_user(&mut tx, &account_id, &input, now).await?;
        let token = insert_token(
            &mut tx,
            &account_id,
            &user.id,
            &first_token(),
            None,
            token_hash,
            now,
        )
        .await?;
        tx.execute(
            query("UPDATE invitations SET used_at = $1, used_by = $2 WHERE id = $3")
                .bind(&now)
                .bind(&user.id)
                .bind(&invitation.id),
        )
        .await?;
        invitation.used_at = Some(now);
        invitation.used_by = Some(user.id.clone());
        let actor = Actor::User(user.id.clone());
        let audit = audit(&account_id, &actor, now);
        audit
            .event(
                &mut tx,
                "user.create",
                ("user", &user.id),
                &json!({
                    "name": user.name, "email": user.email, "role": user.role,
                    "time_zone": user.time_zone, "invitation_id": invitation.id,
                }),
            )
            .await?;
        audit
            .event(
                &mut tx,
                "invitation.accept",
                ("invitation", &invitation.id),
                &json!({"user_id": user.id}),
            )
            .await?;
        tx.commit().await?;
        Ok((invitation, user, token))
    }
}
