//! Loading a schedule on a sqlx connection, for the SQLite code that has
//! not moved to the shared store logic yet (the timer engine). The store's
//! schedules are in `sql::schedules`, whose `load` is the same query on a
//! `Db`; this goes once its callers run on one.

use klaxon_core::time::Millis;
use sqlx::SqliteConnection;

use crate::{Result, ScheduleData, StoreError};

const SCHEDULE_COLUMNS: &str = "id, account_id, name, time_zone, created_at, updated_at";
const LAYER_COLUMNS: &str =
    "id, schedule_id, position, rotation, count, start_at, users, restrictions, created_at, updated_at";
const OVERRIDE_COLUMNS: &str = "id, schedule_id, user_id, start_at, end_at, created_at";

/// A schedule with its layers and the overrides ending after `from`
/// (oldest first, so that where they overlap the newest wins).
pub(super) async fn load(
    conn: &mut SqliteConnection,
    account_id: &str,
    id: &str,
    from: Millis,
) -> Result<ScheduleData> {
    let schedule = sqlx::query_as(&format!(
        "SELECT {SCHEDULE_COLUMNS} FROM schedules WHERE account_id = ? AND id = ?"
    ))
    .bind(account_id)
    .bind(id)
    .fetch_optional(&mut *conn)
    .await?
    .ok_or(StoreError::NotFound)?;
    let layers = sqlx::query_as(&format!(
        "SELECT {LAYER_COLUMNS} FROM schedule_layers WHERE schedule_id = ? ORDER BY position, id"
    ))
    .bind(id)
    .fetch_all(&mut *conn)
    .await?;
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
