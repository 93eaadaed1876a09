//! On-call schedules, layers and overrides, for both backends.
//!
//! Locking, as elsewhere on PostgreSQL (see the `postgres` module docs;
//! SQLite has one writer at a time and runs the statements without the
//! lock clauses):
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

use super::row::from_row;
use super::{audit, found, query, taken, Backend, Db, Query, Write};
use crate::util::new_id;
use crate::{
    Actor, Layer, LayerInput, Result, Schedule, ScheduleData, ScheduleOverride, ScheduleStore,
    StoreError,
};

from_row!(Schedule {
    id,
    account_id,
    name,
    time_zone,
    created_at,
    updated_at,
});

from_row!(Layer {
    id,
    schedule_id,
    position,
    rotation,
    count,
    start_at,
    users,
    restrictions,
    created_at,
    updated_at,
});

from_row!(ScheduleOverride {
    id,
    schedule_id,
    user_id,
    start_at,
    end_at,
    created_at,
});

macro_rules! schedule_columns {
    () => {
        "id, account_id, name, time_zone, created_at, updated_at"
    };
}

macro_rules! layer_columns {
    () => {
        "id, schedule_id, position, rotation, count, start_at, users, restrictions, created_at, updated_at"
    };
}

macro_rules! override_columns {
    () => {
        "id, schedule_id, user_id, start_at, end_at, created_at"
    };
}

/// One schedule of the account, by id (lock clause appended by the caller).
macro_rules! schedule_by_id {
    ($($lock:literal)?) => {
        concat!(
            "SELECT ",
            schedule_columns!(),
            " FROM schedules WHERE account_id = $1 AND id = $2",
            $($lock)?
        )
    };
}

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
impl<B: Backend> ScheduleStore for B {
    async fn create_schedule(
        &self,
        account_id: &str,
        name: &str,
        time_zone: &str,
        actor: &Actor,
        now: Millis,
    ) -> Result<Schedule> {
        let mut tx = self.write().await?;
        let id = new_id();
        let schedule: Schedule = tx
            .fetch_one(
                query(concat!(
                    "INSERT INTO schedules (id, account_id, name, time_zone, created_at, updated_at)
                     VALUES ($1, $2, $3, $4, $5, $5) RETURNING ",
                    schedule_columns!()
                ))
                .bind(&id)
                .bind(account_id)
                .bind(name)
                .bind(time_zone)
                .bind(&now),
            )
            .await
            .map_err(taken("name"))?;
        audit(account_id, actor, now)
            .event(
                &mut tx,
                "schedule.create",
                ("schedule", &schedule.id),
                &json!({"name": name, "time_zone": time_zone}),
            )
            .await?;
        tx.commit().await?;
        Ok(schedule)
    }

    async fn list_schedules(&self, account_id: &str) -> Result<Vec<Schedule>> {
        self.read()
            .await?
            .fetch_all(
                query(concat!(
                    "SELECT ",
                    schedule_columns!(),
                    // Byte order, as SQLite sorts, whatever the database's collation.
                    r#" FROM schedules WHERE account_id = $1 ORDER BY name COLLATE "C", id COLLATE "C""#
                ))
                .bind(account_id),
            )
            .await
    }

    async fn get_schedule(&self, account_id: &str, id: &str) -> Result<Schedule> {
        fetch_schedule(&mut self.read().await?, account_id, id, Lock::None).await
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
        let mut tx = self.write().await?;
        let schedule: Schedule = tx
            .fetch_one(
                query(concat!(
                    "UPDATE schedules SET name = $1, time_zone = $2, updated_at = $3
                     WHERE account_id = $4 AND id = $5 RETURNING ",
                    schedule_columns!()
                ))
                .bind(name)
                .bind(time_zone)
                .bind(&now)
                .bind(account_id)
                .bind(id),
            )
            .await
            .map_err(taken("name"))?;
        audit(account_id, actor, now)
            .event(&mut tx, "schedule.update", ("schedule", id), changes)
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
        let mut tx = self.write().await?;
        // A rule being pointed at this schedule key-share locks it: it either
        // commits first and is seen below, or waits and then finds it gone.
        fetch_schedule(&mut tx, account_id, id, Lock::Delete).await?;
        let rule: Option<(String,)> = tx
            .fetch_optional(
                query(
                    "SELECT policy_id FROM policy_rules
                     WHERE account_id = $1 AND assignment_type = 'schedule' AND assignee_id = $2 LIMIT 1",
                )
                .bind(account_id)
                .bind(id),
            )
            .await?;
        if let Some((policy_id,)) = rule {
            return Err(StoreError::Conflict(format!(
                "the schedule is used by escalation policy {policy_id}; reassign that rule first"
            )));
        }
        let done = tx
            .execute(
                query("DELETE FROM schedules WHERE account_id = $1 AND id = $2")
                    .bind(account_id)
                    .bind(id),
            )
            .await?;
        found(done)?;
        audit(account_id, actor, now)
            .event(&mut tx, "schedule.delete", ("schedule", id), &json!({}))
            .await?;
        tx.commit().await
    }

    async fn list_layers(&self, account_id: &str, schedule_id: &str) -> Result<Vec<Layer>> {
        let mut db = self.read().await?;
        fetch_schedule(&mut db, account_id, schedule_id, Lock::None).await?;
        layers_of(&mut db, schedule_id).await
    }

    async fn create_layer(
        &self,
        account_id: &str,
        schedule_id: &str,
        input: &LayerInput,
        actor: &Actor,
        now: Millis,
    ) -> Result<Layer> {
        let mut tx = self.write().await?;
        // Two layers appended at once must not both read the same MAX(position).
        fetch_schedule(&mut tx, account_id, schedule_id, Lock::Layers).await?;
        users_exist(&mut tx, account_id, &input.users).await?;
        let id = new_id();
        let (users, restrictions) = layer_json(input)?;
        let layer: Layer = tx
            .fetch_one(
                query(concat!(
                    "INSERT INTO schedule_layers (id, account_id, schedule_id, position, rotation, count,
                        start_at, users, restrictions, created_at, updated_at)
                     VALUES ($1, $2, $3, (SELECT COALESCE(MAX(position) + 1, 0) FROM schedule_layers WHERE schedule_id = $3),
                        $4, $5, $6, $7, $8, $9, $9)
                     RETURNING ",
                    layer_columns!()
                ))
                .bind(&id)
                .bind(account_id)
                .bind(schedule_id)
                .bind(&input.rotation)
                .bind(&input.count)
                .bind(&input.start_at)
                .bind(&users)
                .bind(&restrictions)
                .bind(&now),
            )
            .await?;
        audit(account_id, actor, now)
            .event(
                &mut tx,
                "schedule.layer_create",
                ("schedule", schedule_id),
                &crate::util::layer_changeset(&layer),
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
        let mut tx = self.write().await?;
        users_exist(&mut tx, account_id, &input.users).await?;
        let (users, restrictions) = layer_json(input)?;
        // The position is left alone, so the row lock the UPDATE takes is
        // enough: a concurrent delete of this layer is waited for and then
        // found (no row), renumbering of the others does not matter.
        let layer: Layer = tx
            .fetch_one(
                query(concat!(
                    "UPDATE schedule_layers SET rotation = $1, count = $2, start_at = $3, users = $4,
                        restrictions = $5, updated_at = $6
                     WHERE account_id = $7 AND schedule_id = $8 AND id = $9 RETURNING ",
                    layer_columns!()
                ))
                .bind(&input.rotation)
                .bind(&input.count)
                .bind(&input.start_at)
                .bind(&users)
                .bind(&restrictions)
                .bind(&now)
                .bind(account_id)
                .bind(schedule_id)
                .bind(id),
            )
            .await?;
        audit(account_id, actor, now)
            .event(
                &mut tx,
                "schedule.layer_update",
                ("schedule", schedule_id),
                changes,
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
        let mut tx = self.write().await?;
        fetch_schedule(&mut tx, account_id, schedule_id, Lock::Layers).await?;
        let (position,): (i64,) = tx
            .fetch_one(
                query(
                    "DELETE FROM schedule_layers WHERE account_id = $1 AND schedule_id = $2 AND id = $3
                     RETURNING position",
                )
                .bind(account_id)
                .bind(schedule_id)
                .bind(id),
            )
            .await?;
        tx.execute(
            query(
                "UPDATE schedule_layers SET position = position - 1 WHERE schedule_id = $1 AND position > $2",
            )
            .bind(schedule_id)
            .bind(&position),
        )
        .await?;
        audit(account_id, actor, now)
            .event(
                &mut tx,
                "schedule.layer_delete",
                ("schedule", schedule_id),
                &json!({"layer_id": id}),
            )
            .await?;
        tx.commit().await
    }

    async fn list_overrides(
        &self,
        account_id: &str,
        schedule_id: &str,
        since: Millis,
        until: Millis,
    ) -> Result<Vec<ScheduleOverride>> {
        let mut db = self.read().await?;
        fetch_schedule(&mut db, account_id, schedule_id, Lock::None).await?;
        db.fetch_all(
            query(concat!(
                "SELECT ",
                override_columns!(),
                r#" FROM schedule_overrides
                 WHERE schedule_id = $1 AND end_at > $2 AND start_at < $3
                 ORDER BY start_at, id COLLATE "C""#
            ))
            .bind(schedule_id)
            .bind(&since)
            .bind(&until),
        )
        .await
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
        let mut tx = self.write().await?;
        // Waits for a concurrent delete of the schedule and then finds it
        // gone, rather than failing on the foreign key.
        fetch_schedule(&mut tx, account_id, schedule_id, Lock::KeyShare).await?;
        users_exist(
            &mut tx,
            account_id,
            std::slice::from_ref(&user_id.to_owned()),
        )
        .await?;
        let id = new_id();
        let o: ScheduleOverride = tx
            .fetch_one(
                query(concat!(
                    "INSERT INTO schedule_overrides (id, account_id, schedule_id, user_id, start_at, end_at, created_at)
                     VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING ",
                    override_columns!()
                ))
                .bind(&id)
                .bind(account_id)
                .bind(schedule_id)
                .bind(user_id)
                .bind(&start_at)
                .bind(&end_at)
                .bind(&now),
            )
            .await?;
        audit(account_id, actor, now)
            .event(
                &mut tx,
                "schedule.override_create",
                ("schedule", schedule_id),
                &json!({
                    "override_id": o.id, "user_id": user_id, "start_at": start_at, "end_at": end_at,
                }),
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
        let mut tx = self.write().await?;
        let done = tx
            .execute(
                query(
                    "DELETE FROM schedule_overrides WHERE account_id = $1 AND schedule_id = $2 AND id = $3",
                )
                .bind(account_id)
                .bind(schedule_id)
                .bind(id),
            )
            .await?;
        found(done)?;
        audit(account_id, actor, now)
            .event(
                &mut tx,
                "schedule.override_delete",
                ("schedule", schedule_id),
                &json!({"override_id": id}),
            )
            .await?;
        tx.commit().await
    }

    async fn load_schedule(
        &self,
        account_id: &str,
        id: &str,
        from: Millis,
    ) -> Result<ScheduleData> {
        load(&mut self.read().await?, account_id, id, from).await
    }
}

/// One schedule of the account, locked as asked; `NotFound` when there is none.
async fn fetch_schedule(
    db: &mut impl Db,
    account_id: &str,
    id: &str,
    lock: Lock,
) -> Result<Schedule> {
    let q: Query<'_> = match lock {
        Lock::None => query(schedule_by_id!()),
        Lock::KeyShare => query(schedule_by_id!(" FOR KEY SHARE")),
        Lock::Layers => query(schedule_by_id!(" FOR NO KEY UPDATE")),
        Lock::Delete => query(schedule_by_id!(" FOR UPDATE")),
    };
    db.fetch_one(q.bind(account_id).bind(id)).await
}

/// A schedule's layers, lowest first.
async fn layers_of(db: &mut impl Db, schedule_id: &str) -> Result<Vec<Layer>> {
    db.fetch_all(
        query(concat!(
            "SELECT ",
            layer_columns!(),
            r#" FROM schedule_layers WHERE schedule_id = $1 ORDER BY position, id COLLATE "C""#
        ))
        .bind(schedule_id),
    )
    .await
}

/// A schedule with its layers and the overrides ending after `from`
/// (oldest first, so that where they overlap the newest wins).
pub(crate) async fn load(
    db: &mut impl Db,
    account_id: &str,
    id: &str,
    from: Millis,
) -> Result<ScheduleData> {
    let schedule = fetch_schedule(db, account_id, id, Lock::None).await?;
    let layers = layers_of(db, id).await?;
    let overrides = db
        .fetch_all(
            query(concat!(
                "SELECT ",
                override_columns!(),
                r#" FROM schedule_overrides WHERE schedule_id = $1 AND end_at > $2
                 ORDER BY created_at, id COLLATE "C""#
            ))
            .bind(id)
            .bind(&from),
        )
        .await?;
    Ok(ScheduleData {
        schedule,
        layers,
        overrides,
    })
}

/// A layer's users and restrictions as JSON parameters.
fn layer_json(input: &LayerInput) -> Result<(Value, Value)> {
    // Cannot fail for these types; mapped rather than unwrapped all the same.
    let encode = |e: serde_json::Error| StoreError::decode(format!("layer: {e}"));
    Ok((
        serde_json::to_value(&input.users).map_err(encode)?,
        serde_json::to_value(&input.restrictions).map_err(encode)?,
    ))
}

/// Every id must be a user of the account (one query for the whole list).
/// Each is key-share locked, so it cannot be deleted before this
/// transaction commits (`delete_user` looks for layers naming the user
/// after locking them).
async fn users_exist(db: &mut impl Db, account_id: &str, ids: &[String]) -> Result<()> {
    if ids.is_empty() {
        return Ok(());
    }
    // Sorted and deduplicated so that concurrent writers lock in one order.
    let mut wanted: Vec<&str> = ids.iter().map(String::as_str).collect();
    wanted.sort_unstable();
    wanted.dedup();
    let mut q = query("SELECT id FROM users WHERE account_id = $1 AND id IN ").bind(account_id);
    q.push_list(&wanted)
        .push(r#" ORDER BY id COLLATE "C" FOR KEY SHARE"#);
    let rows: Vec<(String,)> = db.fetch_all(q).await?;
    // The first missing id in the caller's order.
    match ids.iter().find(|id| !rows.iter().any(|(got,)| got == *id)) {
        Some(id) => Err(StoreError::Invalid {
            field: "users",
            message: format!("user {id} does not exist"),
        }),
        None => Ok(()),
    }
}
