//! Reading rows the same way from both backends.
//!
//! A backend exposes a result row as a [`Row`]: three column readers
//! (integer, text, JSON) by position, and a lookup of a column's position
//! by name. [`Decode`] builds field types from those, and [`FromRow`] whole
//! row types; `from_row!` writes `FromRow` for a struct whose fields are
//! named like the columns.

use serde::de::DeserializeOwned;
use serde_json::Value;
use sqlx::types::Json;

use crate::{Result, StoreError};

/// One result row, as a backend reads it.
pub(crate) trait Row {
    /// The position of the column called `name`.
    fn index(&self, name: &str) -> Result<usize>;
    /// An integer column (NULL as `None`).
    fn int(&self, i: usize) -> Result<Option<i64>>;
    /// A text column (NULL as `None`).
    fn text(&self, i: usize) -> Result<Option<String>>;
    /// A JSON column (NULL as `None`).
    fn json(&self, i: usize) -> Result<Option<Value>>;
}

/// A column value decoded from a row.
pub(crate) trait Decode: Sized {
    fn decode(row: &dyn Row, i: usize) -> Result<Self>;
}

/// A row decoded into a type.
pub(crate) trait FromRow: Sized {
    fn from_row(row: &dyn Row) -> Result<Self>;
}

/// The error for a NULL where the type has no room for one.
pub(crate) fn unexpected_null(i: usize) -> StoreError {
    StoreError::decode(format!("column {i} is NULL"))
}

impl Decode for i64 {
    fn decode(row: &dyn Row, i: usize) -> Result<Self> {
        row.int(i)?.ok_or_else(|| unexpected_null(i))
    }
}

impl Decode for Option<i64> {
    fn decode(row: &dyn Row, i: usize) -> Result<Self> {
        row.int(i)
    }
}

impl Decode for String {
    fn decode(row: &dyn Row, i: usize) -> Result<Self> {
        row.text(i)?.ok_or_else(|| unexpected_null(i))
    }
}

impl Decode for Option<String> {
    fn decode(row: &dyn Row, i: usize) -> Result<Self> {
        row.text(i)
    }
}

impl Decode for Value {
    fn decode(row: &dyn Row, i: usize) -> Result<Self> {
        row.json(i)?.ok_or_else(|| unexpected_null(i))
    }
}

impl<T: DeserializeOwned> Decode for Json<T> {
    fn decode(row: &dyn Row, i: usize) -> Result<Self> {
        let value = row.json(i)?.ok_or_else(|| unexpected_null(i))?;
        serde_json::from_value(value)
            .map(Json)
            .map_err(|e| StoreError::decode(format!("column {i}: {e}")))
    }
}

impl<T: DeserializeOwned> Decode for Option<Json<T>> {
    fn decode(row: &dyn Row, i: usize) -> Result<Self> {
        match row.json(i)? {
            None => Ok(None),
            Some(value) => serde_json::from_value(value)
                .map(|v| Some(Json(v)))
                .map_err(|e| StoreError::decode(format!("column {i}: {e}"))),
        }
    }
}

macro_rules! tuple_from_row {
    ($($t:ident $i:tt),+) => {
        impl<$($t: Decode),+> FromRow for ($($t,)+) {
            fn from_row(row: &dyn Row) -> Result<Self> {
                Ok(($($t::decode(row, $i)?,)+))
            }
        }
    };
}

tuple_from_row!(A 0);
tuple_from_row!(A 0, B 1);
tuple_from_row!(A 0, B 1, C 2);
tuple_from_row!(A 0, B 1, C 2, D 3);
tuple_from_row!(A 0, B 1, C 2, D 3, E 4);

/// Implements [`FromRow`] for a struct whose listed fields are read from
/// the columns of the same names.
macro_rules! from_row {
    ($t:ident { $($f:ident),+ $(,)? $(; $($g:ident: $e:expr),+ $(,)?)? }) => {
        impl $crate::sql::FromRow for $t {
            fn from_row(row: &dyn $crate::sql::Row) -> $crate::Result<Self> {
                Ok($t {
                    $($f: $crate::sql::Decode::decode(row, row.index(stringify!($f))?)?,)+
                    $($($g: $e,)+)?
                })
            }
        }
    };
}

pub(crate) use from_row;
