//! On-call schedules, layers and overrides (PostgreSQL).
//!
//! Locking, as elsewhere in this backend (see the module docs):
//! - a schedule whose layers move (appended, deleted and renumbered) is
//!   locked `FOR NO KEY UPDATE`, so two writers never read the same
//!   `MAX(position)` or renumber past each other;
//! - a schedule about to be deleted is locked `FOR UPDATE`, which waits for
//!   a rule being pointed at it (`policies::assignee_exists` key-share locks
//!   it) and for layers and overrides being added to it;
//! - the users a layer or override names are key-share locked, so a
//!   concurrent `delete_user` (which locks the user `FOR UPDATE` and then
//!   looks for layers naming them) either sees the new layer or makes this
//!   transaction find the user gone.

use async_trait::async_trait;
use klaxon_core::time::Millis;
use serde_json::{json, Value};
use sqlx::types::Json;
use sqlx::PgConnection;

use super::{found, insert_event, taken, PgStore};
use crate::util::new_id;
use crate::{
    Actor, Layer, LayerInput, Result, Schedule, ScheduleData, ScheduleOverride, ScheduleStore,
    StoreError,
};

const SCHEDULE_COLUMNS: &str = "id, account_id, name, time_zone, created_at, updated_at";
const LAYER_COLUMNS: &str =
    "id, schedule_id, position, rotation, count, start_at, users, restrictions, created_at, updated_at";
const OVERRIDE_COLUMNS: &str = "id, schedule_id, user_id, start_at, end_at, created_at";

/// How a schedule row is read by a transaction that checks, then writes.
#[derive(Clone, Copy)]
enum Lock {
    /// Just read it.
    None,
    /// Something is about to reference it (an override): keep it from
    /// being deleted meanwhile.
    KeyShare,
    /// Its layers are about to move: serialise against other layer writers.
    Layers,
    /// It is about to be deleted.
    Delete,
}

#[async_trait]
impl ScheduleStore for PgStore {
    async fn create_schedule(
        &self,
        account_id: &str,
        name: &str,
        time_zone: &str,
        actor: &Actor,
        now: Millis,
    ) -> Result<Schedule> {
        let mut tx = self.pool.begin().await?;
        let schedule: Schedule = sqlx::query_as(&format!(
            "INSERT INTO schedules (id, account_id, name, time_zone, created_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6) RETURNING {SCHEDULE_COLUMNS}"
        ))
        .bind(new_id())
        .bind(account_id)
        .bind(name)
        .bind(time_zone)
        .bind(now)
        .bind(now)
        .fetch_one(&mut *tx)
        .await
        .map_err(taken("name"))?;
        let changes = json!({"name": name, "time_zone": time_zone});
        insert_event(
            &mut tx,
            account_id,
            "schedule.create",
            "schedule",
            &schedule.id,
            actor,
            &changes,
            now,
        )
        .await?;
        tx.commit().await?;
        Ok(schedule)
    }

    async fn list_schedules(&self, account_id: &str) -> Result<Vec<Schedule>> {
        // Byte order, as SQLite sorts, whatever the database's collation.
        Ok(sqlx::query_as(&format!(
            r#"SELECT {SCHEDULE_COLUMNS} FROM schedules WHERE account_id = $1
             ORDER BY name COLLATE "C", id COLLATE "C""#
        ))
        .bind(account_id)
        .fetch_all(&self.pool)
        .await?)
    }

    async fn get_schedule(&self, account_id: &str, id: &str) -> Result<Schedule> {
        let mut conn = self.pool.acquire().await?;
        fetch_schedule(&mut conn, account_id, id, Lock::None).await
    }

    async fn update_schedule(
        &self,
        account_id: &str,
        id: &str,
        name: &str,
        time_zone: &str,
        changes: &Value,
        actor: &Actor,
        now: Millis,
    ) -> Result<Schedule> {
        let mut tx = self.pool.begin().await?;
        let schedule: Schedule = sqlx::query_as(&format!(
            "UPDATE schedules SET name = $1, time_zone = $2, updated_at = $3
             WHERE account_id = $4 AND id = $5 RETURNING {SCHEDULE_COLUMNS}"
        ))
        .bind(name)
        .bind(time_zone)
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
            "schedule.update",
            "schedule",
            id,
            actor,
            changes,
            now,
        )
        .await?;
        tx.commit().await?;
        Ok(schedule)
    }

    async fn delete_schedule(
        &self,
        account_id: &str,
        id: &str,
        actor: &Actor,
        now: Millis,
    ) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        // A rule being pointed at this schedule key-share locks it: it either
        // commits first and is seen below, or waits and then finds it gone.
        fetch_schedule(&mut tx, account_id, id, Lock::Delete).await?;
        let rule: Option<(String,)> = sqlx::query_as(
            "SELECT policy_id FROM policy_rules
             WHERE account_id = $1 AND assignment_type = 'schedule' AND assignee_id = $2 LIMIT 1",
        )
        .bind(account_id)
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?;
        if let Some((policy_id,)) = rule {
            return Err(StoreError::Conflict(format!(
                "the schedule is used by escalation policy {policy_id}; reassign that rule first"
            )));
        }
        let done = sqlx::query("DELETE FROM schedules WHERE account_id = $1 AND id = $2")
            .bind(account_id)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        found(done.rows_affected())?;
        insert_event(
            &mut tx,
            account_id,
            "schedule.delete",
            "schedule",
            id,
            actor,
            &json!({}),
            now,
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn list_layers(&self, account_id: &str, schedule_id: &str) -> Result<Vec<Layer>> {
        let mut conn = self.pool.acquire().await?;
        fetch_schedule(&mut conn, account_id, schedule_id, Lock::None).await?;
        layers_of(&mut conn, schedule_id).await
    }

    async fn create_layer(
        &self,
        account_id: &str,
        schedule_id: &str,
        input: &LayerInput,
        actor: &Actor,
        now: Millis,
    ) -> Result<Layer> {
        let mut tx = self.pool.begin().await?;
        // Two layers appended at once must not both read the same MAX(position).
        fetch_schedule(&mut tx, account_id, schedule_id, Lock::Layers).await?;
        users_exist(&mut tx, account_id, &input.users).await?;
        let layer: Layer = sqlx::query_as(&format!(
            "INSERT INTO schedule_layers (id, account_id, schedule_id, position, rotation, count,
                start_at, users, restrictions, created_at, updated_at)
             VALUES ($1, $2, $3, (SELECT COALESCE(MAX(position) + 1, 0) FROM schedule_layers WHERE schedule_id = $3),
                $4, $5, $6, $7, $8, $9, $10)
             RETURNING {LAYER_COLUMNS}"
        ))
        .bind(new_id())
        .bind(account_id)
        .bind(schedule_id)
        .bind(&input.rotation)
        .bind(input.count)
        .bind(&input.start_at)
        .bind(Json(&input.users))
        .bind(Json(&input.restrictions))
        .bind(now)
        .bind(now)
        .fetch_one(&mut *tx)
        .await?;
        let changes = crate::util::layer_changeset(&layer);
        insert_event(
            &mut tx,
            account_id,
            "schedule.layer_create",
            "schedule",
            schedule_id,
            actor,
            &changes,
            now,
        )
        .await?;
        tx.commit().await?;
        Ok(layer)
    }

    async fn update_layer(
        &self,
        account_id: &str,
        schedule_id: &str,
        id: &str,
        input: &LayerInput,
        changes: &Value,
        actor: &Actor,
        now: Millis,
    ) -> Result<Layer> {
        let mut tx = self.pool.begin().await?;
        users_exist(&mut tx, account_id, &input.users).await?;
        // The position is left alone, so the row lock the UPDATE takes is
        // enough: a concurrent delete of this layer is waited for and then
        // found (no row), renumbering of the others does not matter.
        let layer: Layer = sqlx::query_as(&format!(
            "UPDATE schedule_layers SET rotation = $1, count = $2, start_at = $3, users = $4,
                restrictions = $5, updated_at = $6
             WHERE account_id = $7 AND schedule_id = $8 AND id = $9 RETURNING {LAYER_COLUMNS}"
        ))
        .bind(&input.rotation)
        .bind(input.count)
        .bind(&input.start_at)
        .bind(Json(&input.users))
        .bind(Json(&input.restrictions))
        .bind(now)
        .bind(account_id)
        .bind(schedule_id)
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or(StoreError::NotFound)?;
        insert_event(
            &mut tx,
            account_id,
            "schedule.layer_update",
            "schedule",
            schedule_id,
            actor,
            changes,
            now,
        )
        .await?;
        tx.commit().await?;
        Ok(layer)
    }

    async fn delete_layer(
        &self,
        account_id: &str,
        schedule_id: &str,
        id: &str,
        actor: &Actor,
        now: Millis,
    ) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        fetch_schedule(&mut tx, account_id, schedule_id, Lock::Layers).await?;
        let gone: Option<(i64,)> = sqlx::query_as(
            "DELETE FROM schedule_layers WHERE account_id = $1 AND schedule_id = $2 AND id = $3
             RETURNING position",
        )
        .bind(account_id)
        .bind(schedule_id)
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?;
        let (position,) = gone.ok_or(StoreError::NotFound)?;
        sqlx::query(
            "UPDATE schedule_layers SET position = position - 1 WHERE schedule_id = $1 AND position > $2",
        )
        .bind(schedule_id)
        .bind(position)
        .execute(&mut *tx)
        .await?;
        let changes = json!({"layer_id": id});
        insert_event(
            &mut tx,
            account_id,
            "schedule.layer_delete",
            "schedule",
            schedule_id,
            actor,
            &changes,
            now,
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn list_overrides(
        &self,
        account_id: &str,
        schedule_id: &str,
        since: Millis,
        until: Millis,
    ) -> Result<Vec<ScheduleOverride>> {
        let mut conn = self.pool.acquire().await?;
        fetch_schedule(&mut conn, account_id, schedule_id, Lock::None).await?;
        Ok(sqlx::query_as(&format!(
            r#"SELECT {OVERRIDE_COLUMNS} FROM schedule_overrides
             WHERE schedule_id = $1 AND end_at > $2 AND start_at < $3
             ORDER BY start_at, id COLLATE "C""#
        ))
        .bind(schedule_id)
        .bind(since)
        .bind(until)
        .fetch_all(&mut *conn)
        .await?)
    }

    async fn create_override(
        &self,
        account_id: &str,
        schedule_id: &str,
        user_id: &str,
        start_at: Millis,
        end_at: Millis,
        actor: &Actor,
        now: Millis,
    ) -> Result<ScheduleOverride> {
        let mut tx = self.pool.begin().await?;
        // Waits for a concurrent delete of the schedule and then finds it
        // gone, rather than failing on the foreign key.
        fetch_schedule(&mut tx, account_id, schedule_id, Lock::KeyShare).await?;
        users_exist(
            &mut tx,
            account_id,
            std::slice::from_ref(&user_id.to_owned()),
        )
        .await?;
        let o: ScheduleOverride = sqlx::query_as(&format!(
            "INSERT INTO schedule_overrides (id, account_id, schedule_id, user_id, start_at, end_at, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING {OVERRIDE_COLUMNS}"
        ))
        .bind(new_id())
        .bind(account_id)
        .bind(schedule_id)
        .bind(user_id)
        .bind(start_at)
        .bind(end_at)
        .bind(now)
        .fetch_one(&mut *tx)
        .await?;
        let changes = json!({
            "override_id": o.id, "user_id": user_id, "start_at": start_at, "end_at": end_at,
        });
        insert_event(
            &mut tx,
            account_id,
            "schedule.override_create",
            "schedule",
            schedule_id,
            actor,
            &changes,
            now,
        )
        .await?;
        tx.commit().await?;
        Ok(o)
    }

    async fn delete_override(
        &self,
        account_id: &str,
        schedule_id: &str,
        id: &str,
        actor: &Actor,
        now: Millis,
    ) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        let done = sqlx::query(
            "DELETE FROM schedule_overrides WHERE account_id = $1 AND schedule_id = $2 AND id = $3",
        )
        .bind(account_id)
        .bind(schedule_id)
        .bind(id)
        .execute(&mut *tx)
        .await?;
        found(done.rows_affected())?;
        let changes = json!({"override_id": id});
        insert_event(
            &mut tx,
            account_id,
            "schedule.override_delete",
            "schedule",
            schedule_id,
            actor,
            &changes,
            now,
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn load_schedule(
        &self,
        account_id: &str,
        id: &str,
        from: Millis,
    ) -> Result<ScheduleData> {
        let mut conn = self.pool.acquire().await?;
        load(&mut conn, account_id, id, from).await
    }
}

/// One schedule of the account, locked as asked; `NotFound` when there is none.
async fn fetch_schedule(
    conn: &mut PgConnection,
    account_id: &str,
    id: &str,
    lock: Lock,
) -> Result<Schedule> {
    let lock = match lock {
        Lock::None => "",
        Lock::KeyShare => " FOR KEY SHARE",
        Lock::Layers => " FOR NO KEY UPDATE",
        Lock::Delete => " FOR UPDATE",
    };
    sqlx::query_as(&format!(
        "SELECT {SCHEDULE_COLUMNS} FROM schedules WHERE account_id = $1 AND id = $2{lock}"
    ))
    .bind(account_id)
    .bind(id)
    .fetch_optional(conn)
    .await?
    .ok_or(StoreError::NotFound)
}

/// A schedule's layers, lowest first.
async fn layers_of(conn: &mut PgConnection, schedule_id: &str) -> Result<Vec<Layer>> {
    Ok(sqlx::query_as(&format!(
        r#"SELECT {LAYER_COLUMNS} FROM schedule_layers WHERE schedule_id = $1
         ORDER BY position, id COLLATE "C""#
    ))
    .bind(schedule_id)
    .fetch_all(conn)
    .await?)
}

/// A schedule with its layers and the overrides ending after `from`
/// (oldest first, so that where they overlap the newest wins).
pub(super) async fn load(
    conn: &mut PgConnection,
    account_id: &str,
    id: &str,
    from: Millis,
) -> Result<ScheduleData> {
    let schedule = fetch_schedule(conn, account_id, id, Lock::None).await?;
    let layers = layers_of(conn, id).await?;
    let overrides = sqlx::query_as(&format!(
        r#"SELECT {OVERRIDE_COLUMNS} FROM schedule_overrides WHERE schedule_id = $1 AND end_at > $2
         ORDER BY created_at, id COLLATE "C""#
    ))
    .bind(id)
    .bind(from)
    .fetch_all(&mut *conn)
    .await?;
    Ok(ScheduleData {
        schedule,
        layers,
        overrides,
    })
}

/// Every id must be a user of the account. Each is key-share locked, so it
/// cannot be deleted before this transaction commits (`delete_user` looks
/// for layers naming the user after locking them).
async fn users_exist(conn: &mut PgConnection, account_id: &str, ids: &[String]) -> Result<()> {
    if ids.is_empty() {
        return Ok(());
    }
    // Sorted and deduplicated so that concurrent writers lock in one order.
    let mut wanted: Vec<&str> = ids.iter().map(String::as_str).collect();
    wanted.sort_unstable();
    wanted.dedup();
    let rows: Vec<(String,)> = sqlx::query_as(
        r#"SELECT id FROM users WHERE account_id = $1 AND id = ANY($2)
         ORDER BY id COLLATE "C" FOR KEY SHARE"#,
    )
    .bind(account_id)
    .bind(&wanted)
    .fetch_all(&mut *conn)
    .await?;
    // The first missing id in the caller's order, as SQLite reports it.
    match ids.iter().find(|id| !rows.iter().any(|(got,)| got == *id)) {
        Some(id) => Err(StoreError::Invalid {
            field: "users",
            message: format!("user {id} does not exist"),
        }),
        None => Ok(()),
    }
}
