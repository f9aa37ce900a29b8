//! Session persistence: the [`SessionStore`] trait and the in-memory store.
//!
//! The engine saves a session's record before every client operation and after every
//! transition, so a durable store lets a restarted server resume or roll back.

use std::collections::HashMap;
use std::sync::Mutex;

use async_trait::async_trait;

use crate::engine::SessionRecord;
use crate::message::Timestamp;

/// A store failure.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct StoreError(pub String);

/// Where sessions live. Implementations must make `save` durable before returning when
/// they promise durability; records are replaced whole.
#[async_trait]
pub trait SessionStore: Send + Sync {
    /// Inserts or replaces the record with this session id.
    async fn save(&self, record: &SessionRecord) -> Result<(), StoreError>;
    /// The record with this session id.
    async fn load(&self, session_id: &str) -> Result<Option<SessionRecord>, StoreError>;
    /// Every record.
    async fn list(&self) -> Result<Vec<SessionRecord>, StoreError>;
    /// Removes the record (no error when absent).
    async fn remove(&self, session_id: &str) -> Result<(), StoreError>;

    /// The records the engine still has work for ([`SessionRecord::is_active`]): what
    /// deadline checks scan. Stores with an index should override the default filter.
    async fn list_active(&self) -> Result<Vec<SessionRecord>, StoreError> {
        Ok(self
            .list()
            .await?
            .into_iter()
            .filter(|r| r.is_active())
            .collect())
    }

    /// The active sessions that may need the deadline watcher at `now`: a wait past its
    /// deadline, or a temporary delegation past its end. May return more than that (the
    /// engine checks each record again under its lock), never less. The default filters
    /// [`SessionStore::list_active`]; stores should answer from an index.
    async fn list_due(&self, now: Timestamp) -> Result<Vec<SessionRecord>, StoreError> {
        Ok(self
            .list_active()
            .await?
            .into_iter()
            .filter(|r| r.is_due(now))
            .collect())
    }

    /// The sessions that ended in failure at or after `since`
    /// ([`SessionRecord::failed_since`]): what a starting server sends FAILURE for again.
    /// The default filters [`SessionStore::list`]; stores should answer from an index.
    async fn list_failed_since(&self, since: Timestamp) -> Result<Vec<SessionRecord>, StoreError> {
        Ok(self
            .list()
            .await?
            .into_iter()
            .filter(|r| r.failed_since(since))
            .collect())
    }

    /// The active records of one device: what the one-delegation-per-device check and
    /// the device-connected lookup scan.
    async fn list_active_for_device(
        &self,
        device_id: &str,
    ) -> Result<Vec<SessionRecord>, StoreError> {
        Ok(self
            .list_active()
            .await?
            .into_iter()
            .filter(|r| r.info.device.device_id == device_id)
            .collect())
    }
}

/// A store in memory: fast, and gone with the process.
#[derive(Debug, Default)]
pub struct MemoryStore {
    records: Mutex<HashMap<String, SessionRecord>>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Copies of the records `keep` selects.
    fn cloned_where(&self, keep: impl Fn(&SessionRecord) -> bool) -> Vec<SessionRecord> {
        self.map().values().filter(|r| keep(r)).cloned().collect()
    }

    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<String, SessionRecord>> {
        // A panic elsewhere cannot leave a half-written record: records are replaced whole.
        self.records.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[async_trait]
impl SessionStore for MemoryStore {
    async fn save(&self, record: &SessionRecord) -> Result<(), StoreError> {
        self.map().insert(record.session_id.clone(), record.clone());
        Ok(())
    }

    async fn load(&self, session_id: &str) -> Result<Option<SessionRecord>, StoreError> {
        Ok(self.map().get(session_id).cloned())
    }

    async fn list(&self) -> Result<Vec<SessionRecord>, StoreError> {
        Ok(self.cloned_where(|_| true))
    }

    async fn remove(&self, session_id: &str) -> Result<(), StoreError> {
        self.map().remove(session_id);
        Ok(())
    }

    // Filter before cloning: the defaults clone every record, which is quadratic when
    // thousands of delegations start at once.
    async fn list_active(&self) -> Result<Vec<SessionRecord>, StoreError> {
        Ok(self.cloned_where(SessionRecord::is_active))
    }

    async fn list_due(&self, now: Timestamp) -> Result<Vec<SessionRecord>, StoreError> {
        Ok(self.cloned_where(|r| r.is_due(now)))
    }

    async fn list_failed_since(&self, since: Timestamp) -> Result<Vec<SessionRecord>, StoreError> {
        Ok(self.cloned_where(|r| r.failed_since(since)))
    }

    async fn list_active_for_device(
        &self,
        device_id: &str,
    ) -> Result<Vec<SessionRecord>, StoreError> {
        Ok(self.cloned_where(|r| r.is_active() && r.info.device.device_id == device_id))
    }
}
