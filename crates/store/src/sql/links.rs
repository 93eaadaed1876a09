//! Server secrets and single-use answer links, for both backends.

use async_trait::async_trait;
use klaxon_core::time::Millis;

use super::{query, Backend, Db, Write};
use crate::{LinkStore, Result};

#[async_trait]
impl<B: Backend> LinkStore for B {
    async fn secret(&self, name: &str, fresh: &str, now: Millis) -> Result<String> {
        let mut tx = self.write().await?;
        // Whoever comes first makes it; everyone reads the winner's.
        tx.execute(
            query(
                "INSERT INTO secrets (name, value, created_at) VALUES ($1, $2, $3)
                 ON CONFLICT (name) DO NOTHING",
            )
            .bind(name)
            .bind(fresh)
            .bind(&now),
        )
        .await?;
        let (value,): (String,) = tx
            .fetch_one(query("SELECT value FROM secrets WHERE name = $1").bind(name))
            .await?;
        tx.commit().await?;
        Ok(value)
    }

    async fn use_link(&self, id: &str, expires_at: Millis, now: Millis) -> Result<bool> {
        let mut tx = self.write().await?;
        tx.execute(query("DELETE FROM used_links WHERE expires_at < $1").bind(&now))
            .await?;
        let first = tx
            .execute(
                query(
                    "INSERT INTO used_links (id, expires_at, used_at) VALUES ($1, $2, $3)
                     ON CONFLICT (id) DO NOTHING",
                )
                .bind(id)
                .bind(&expires_at)
                .bind(&now),
            )
            .await?
            == 1;
        tx.commit().await?;
        Ok(first)
    }
}
