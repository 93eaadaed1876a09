//! On-call schedules, layers and overrides (SQLite).

use async_trait::async_trait;
use klaxon_core::time::Millis;
use serde_json::{json, Value};
use sqlx::types::Json;
use sqlx::SqliteConnection;

use super::{found, insert_event, taken, SqliteStore};
use crate::util::new_id;
use crate::{
    Actor, Layer, LayerInput, Result, Schedule, ScheduleData, ScheduleOverride, ScheduleStore,
    StoreError,
};

const SCHEDULE_COLUMNS: &str = "id, account_id, name, time_zone, created_at, updated_at";
const LAYER_COLUMNS: &str =
    "id, schedule_id, position, rotation, count, start_at, users, restrictions, created_at, updated_at";
const OVERRIDE_COLUMNS: &str = "id, schedule_id, user_id, start_at, end_at, created_at";

#[async_trait]
impl ScheduleStore for SqliteStore {
    async fn create_schedule(
        &self,
        account_id: &str,
        name: &str,
        time_zone: &str,
        actor: &Actor,
        now: Millis,
    ) -> Result<Schedule> {
        let mut tx = self.begin_write().await?;
        let schedule: Schedule = sqlx::query_as(&format!(
            "INSERT INTO schedules (id, account_id, name, time_zone, created_at, updated_at)
             VALUES (?, ?, ?, ?, ?, ?) RETURNING {SCHEDULE_COLUMNS}"
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
        Ok(sqlx::query_as(&format!(
            "SELECT {SCHEDULE_COLUMNS} FROM schedules WHERE account_id = ? ORDER BY name, id"
        ))
        .bind(account_id)
        .fetch_all(&self.reader)
        .await?)
    }

    async fn get_schedule(&self, account_id: &str, id: &str) -> Result<Schedule> {
        let mut conn = self.reader.acquire().await?;
        fetch_schedule(&mut conn, account_id, id).await
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
        let mut tx = self.begin_write().await?;
        let schedule: Schedule = sqlx::query_as(&format!(
            "UPDATE schedules SET name = ?, time_zone = ?, updated_at = ?
             WHERE account_id = ? AND id = ? RETURNING {SCHEDULE_COLUMNS}"
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
        let mut tx = self.begin_write().await?;
        fetch_schedule(&mut tx, account_id, id).await?;
        let rule: Option<(String,)> = sqlx::query_as(
            "SELECT policy_id FROM policy_rules WHERE account_id = ? AND assignment_type = 'schedule' AND assignee_id = ? LIMIT 1",
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
        sqlx::query("DELETE FROM schedules WHERE account_id = ? AND id = ?")
            .bind(account_id)
            .bind(id)
            .execute(&mut *tx)
            .await?;
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
        let mut conn = self.reader.acquire().await?;
        fetch_schedule(&mut conn, account_id, schedule_id).await?;
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
        let mut tx = self.begin_write().await?;
        fetch_schedule(&mut tx, account_id, schedule_id).await?;
        users_exist(&mut tx, account_id, &input.users).await?;
        let layer: Layer = sqlx::query_as(&format!(
            "INSERT INTO schedule_layers (id, account_id, schedule_id, position, rotation, count, start_at, users, restrictions, created_at, updated_at)
             VALUES (?, ?, ?, (SELECT COALESCE(MAX(position) + 1, 0) FROM schedule_layers WHERE schedule_id = ?), ?, ?, ?, ?, ?, ?, ?)
             RETURNING {LAYER_COLUMNS}"
        ))
        .bind(new_id())
        .bind(account_id)
        .bind(schedule_id)
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
        let mut tx = self.begin_write().await?;
        users_exist(&mut tx, account_id, &input.users).await?;
        let layer: Layer = sqlx::query_as(&format!(
            "UPDATE schedule_layers SET rotation = ?, count = ?, start_at = ?, users = ?, restrictions = ?, updated_at = ?
             WHERE account_id = ? AND schedule_id = ? AND id = ? RETURNING {LAYER_COLUMNS}"
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
        let mut tx = self.begin_write().await?;
        let gone: Option<(i64,)> = sqlx::query_as(
            "DELETE FROM schedule_layers WHERE account_id = ? AND schedule_id = ? AND id = ? RETURNING position",
        )
        .bind(account_id)
        .bind(schedule_id)
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?;
        let (position,) = gone.ok_or(StoreError::NotFound)?;
        sqlx::query("UPDATE schedule_layers SET position = position - 1 WHERE schedule_id = ? AND position > ?")
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
        let mut conn = self.reader.acquire().await?;
        fetch_schedule(&mut conn, account_id, schedule_id).await?;
        Ok(sqlx::query_as(&format!(
            "SELECT {OVERRIDE_COLUMNS} FROM schedule_overrides
             WHERE schedule_id = ? AND end_at > ? AND start_at < ? ORDER BY start_at, id"
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
        let mut tx = self.begin_write().await?;
        fetch_schedule(&mut tx, account_id, schedule_id).await?;
        users_exist(
            &mut tx,
            account_id,
            std::slice::from_ref(&user_id.to_owned()),
        )
        .await?;
        let o: ScheduleOverride = sqlx::query_as(&format!(
            "INSERT INTO schedule_overrides (id, account_id, schedule_id, user_id, start_at, end_at, created_at)
             VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING {OVERRIDE_COLUMNS}"
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
        let changes = json!({"override_id": o.id, "user_id": user_id, "start_at": start_at, "end_at": end_at});
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
        let mut tx = self.begin_write().await?;
        let done = sqlx::query(
            "DELETE FROM schedule_overrides WHERE account_id = ? AND schedule_id = ? AND id = ?",
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
        let mut conn = self.reader.acquire().await?;
        load(&mut conn, account_id, id, from).await
    }
}

async fn fetch_schedule(
    conn: &mut SqliteConnection,
    account_id: &str,
    id: &str,
) -> Result<Schedule> {
    sqlx::query_as(&format!(
        "SELECT {SCHEDULE_COLUMNS} FROM schedules WHERE account_id = ? AND id = ?"
    ))
    .bind(account_id)
    .bind(id)
    .fetch_optional(conn)
    .await?
    .ok_or(StoreError::NotFound)
}

async fn layers_of(conn: &mut SqliteConnection, schedule_id: &str) -> Result<Vec<Layer>> {
    Ok(sqlx::query_as(&format!(
        "SELECT {LAYER_COLUMNS} FROM schedule_layers WHERE schedule_id = ? ORDER BY position, id"
    ))
    .bind(schedule_id)
    .fetch_all(conn)
    .await?)
}

/// A schedule with its layers and the overrides ending after `from`.
pub(super) async fn load(
    conn: &mut SqliteConnection,
    account_id: &str,
    id: &str,
    from: Millis,
) -> Result<ScheduleData> {
    let schedule = fetch_schedule(conn, account_id, id).await?;
    let layers = layers_of(conn, id).await?;
    let overrides = sqlx::query_as(&format!(
        "SELECT {OVERRIDE_COLUMNS} FROM schedule_overrides WHERE schedule_id = ? AND end_at > ? ORDER BY created_at, id"
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

/// Every id must be a user of the account (one query for the whole list).
async fn users_exist(conn: &mut SqliteConnection, account_id: &str, ids: &[String]) -> Result<()> {
    if ids.is_empty() {
        return Ok(());
    }
    let mut q = sqlx::QueryBuilder::<sqlx::Sqlite>::new("SELECT id FROM users WHERE account_id = ");
    q.push_bind(account_id).push(" AND id IN (");
    let mut list = q.separated(", ");
    for id in ids {
        list.push_bind(id);
    }
    q.push(")");
    let found: Vec<(String,)> = q.build_query_as().fetch_all(&mut *conn).await?;
    match ids.iter().find(|id| !found.iter().any(|(f,)| f == *id)) {
        Some(missing) => Err(StoreError::Invalid {
            field: "users",
            message: format!("user {missing} does not exist"),
        }),
        None => Ok(()),
    }
}
