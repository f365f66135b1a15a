//! The PostgreSQL store (being written: see the helper's task).

use crate::{Appended, Counters, Result, Role, StoreError, StoredEvent, Who};
use confiance_core::collect::Message;
use confiance_core::source::{KeyDigest, Source, SourceKind, SourceName};

/// The PostgreSQL store.
#[derive(Clone)]
pub struct PgStore {
    pool: deadpool_postgres::Pool,
}

fn unwritten<T>() -> Result<T> {
    Err(StoreError::Database("not yet written".into()))
}

impl PgStore {
    /// Connects and migrates.
    pub async fn connect(_url: &str) -> Result<Self> {
        unwritten()
    }
    pub(crate) async fn ping(&self) -> Result<()> {
        let _ = &self.pool;
        unwritten()
    }
    pub(crate) async fn create_source(&self, _name: &SourceName, _kind: SourceKind, _key: &KeyDigest, _prefix: &str) -> Result<Source> {
        unwritten()
    }
    pub(crate) async fn list_sources(&self) -> Result<Vec<Source>> {
        unwritten()
    }
    pub(crate) async fn source_by_key(&self, _key: &KeyDigest) -> Result<Option<Source>> {
        unwritten()
    }
    pub(crate) async fn source_by_name(&self, _name: &SourceName) -> Result<Option<Source>> {
        unwritten()
    }
    pub(crate) async fn append(&self, _source_id: i64, _messages: Vec<Message>, _counters: Counters) -> Result<Appended> {
        unwritten()
    }
    pub(crate) async fn source_counters(&self, _source_id: i64) -> Result<Counters> {
        unwritten()
    }
    pub(crate) async fn events_of(&self, _who: &Who, _after_seq: i64, _limit: usize) -> Result<Vec<StoredEvent>> {
        unwritten()
    }
    pub(crate) async fn count_events(&self) -> Result<i64> {
        unwritten()
    }
    pub(crate) async fn event_summary(&self) -> Result<Vec<(i64, String, Option<String>, i64)>> {
        unwritten()
    }
    pub(crate) async fn put_token(&self, _digest: &KeyDigest, _role: Role, _name: &str) -> Result<()> {
        unwritten()
    }
    pub(crate) async fn token_role(&self, _digest: &KeyDigest) -> Result<Option<Role>> {
        unwritten()
    }
}
