//! PostgreSQL connections as a [`Db`]: sqlx runs the shared statements as
//! written, prepared once per connection.

use std::ops::DerefMut;

use serde_json::Value;
use sqlx::postgres::{PgArguments, PgRow};
use sqlx::types::Json;
use sqlx::{Column, PgConnection, Postgres, Row as _, TypeInfo};

use crate::sql::{Arg, Db, Dialect, FromRow, Query, Row};
use crate::{Result, StoreError};

/// A connection or transaction (anything that is a `PgConnection`) that
/// runs [`Query`]s.
pub(crate) struct Pg<C>(pub(crate) C);

fn prepare<'q>(text: &'q str, args: &[Arg<'q>]) -> sqlx::query::Query<'q, Postgres, PgArguments> {
    let mut q = sqlx::query(text);
    for arg in args {
        q = match *arg {
            Arg::Int(v) => q.bind(v),
            Arg::Text(v) => q.bind(v),
            Arg::Json(v) => q.bind(v.map(Json)),
        };
    }
    q
}

impl<C: DerefMut<Target = PgConnection> + Send> Db for Pg<C> {
    async fn execute(&mut self, q: Query<'_>) -> Result<u64> {
        let text = q.text(Dialect::Postgres);
        let done = prepare(&text, q.args()).execute(&mut *self.0).await?;
        Ok(done.rows_affected())
    }

    async fn fetch_all<T: FromRow + Send>(&mut self, q: Query<'_>) -> Result<Vec<T>> {
        let text = q.text(Dialect::Postgres);
        let rows = prepare(&text, q.args()).fetch_all(&mut *self.0).await?;
        rows.iter().map(|r| T::from_row(&PgRowRef(r))).collect()
    }

    async fn fetch_optional<T: FromRow + Send>(&mut self, q: Query<'_>) -> Result<Option<T>> {
        let text = q.text(Dialect::Postgres);
        let row = prepare(&text, q.args())
            .fetch_optional(&mut *self.0)
            .await?;
        row.as_ref().map(|r| T::from_row(&PgRowRef(r))).transpose()
    }
}

/// A sqlx row as a [`Row`].
pub(crate) struct PgRowRef<'r>(pub(crate) &'r PgRow);

impl Row for PgRowRef<'_> {
    fn index(&self, name: &str) -> Result<usize> {
        Ok(self.0.try_column(name)?.ordinal())
    }

    fn int(&self, i: usize) -> Result<Option<i64>> {
        // Integer columns are BIGINT; an expression may still come back as
        // a narrower integer.
        match self.0.column(i).type_info().name() {
            "INT4" => Ok(self.0.try_get::<Option<i32>, _>(i)?.map(i64::from)),
            "INT2" => Ok(self.0.try_get::<Option<i16>, _>(i)?.map(i64::from)),
            _ => Ok(self.0.try_get::<Option<i64>, _>(i)?),
        }
    }

    fn text(&self, i: usize) -> Result<Option<String>> {
        Ok(self.0.try_get::<Option<String>, _>(i)?)
    }

    fn json(&self, i: usize) -> Result<Option<Value>> {
        match self.0.column(i).type_info().name() {
            "TEXT" | "VARCHAR" => self
                .0
                .try_get::<Option<String>, _>(i)?
                .map(|s| serde_json::from_str(&s))
                .transpose()
                .map_err(|e| StoreError::decode(format!("column {i}: {e}"))),
            _ => Ok(self.0.try_get::<Option<Json<Value>>, _>(i)?.map(|j| j.0)),
        }
    }
}
