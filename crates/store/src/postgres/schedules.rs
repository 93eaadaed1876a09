//! Loading a schedule on a sqlx connection, for the PostgreSQL code that
//! has not moved to the shared store logic yet (the timer engine, opening
//! incidents). The store's schedules are in `sql::schedules`, whose `load`
//! is the same query on a `Db`; this goes once its callers run on one.

use klaxon_core::time::Millis;
use sqlx::PgConnection;

use crate::{Result, ScheduleData, StoreError};

const SCHEDULE_COLUMNS: &str = "id, account_id, name, time_zone, created_at, updated_at";
const LAYER_COLUMNS: &str =
    "id, schedule_id, position, rotation, count, start_at, users, restrictions, created_at, updated_at";
const OVERRIDE_COLUMNS: &str = "id, schedule_id, user_id, start_at, end_at, created_at";

/// A schedule with its layers and the overrides ending after `from`
/// (oldest first, so that where they overlap the newest wins).
pub(super) async fn load(
    conn: &mut PgConnection,
    account_id: &str,
    id: &str,
    from: Millis,
) -> Result<ScheduleData> {
    let schedule = sqlx::query_as(&format!(
        "SELECT {SCHEDULE_COLUMNS} FROM schedules WHERE account_id = $1 AND id = $2"
    ))
    .bind(account_id)
    .bind(id)
    .fetch_optional(&mut *conn)
    .await?
    .ok_or(StoreError::NotFound)?;
    let layers = sqlx::query_as(&format!(
        r#"SELECT {LAYER_COLUMNS} FROM schedule_layers WHERE schedule_id = $1
         ORDER BY position, id COLLATE "C""#
    ))
    .bind(id)
    .fetch_all(&mut *conn)
    .await?;
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
