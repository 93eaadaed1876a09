//! PostgreSQL backend (being written).
use crate::Result;
/// The PostgreSQL store.
pub struct PgStore;
impl PgStore {
    /// Connects.
    pub async fn connect(_url: &str) -> Result<Self> {
        Err(crate::StoreError::Conflict("postgres backend not built yet".into()))
    }
}
