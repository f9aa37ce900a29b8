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
    records: Mutex<Records>,
}

/// The records, and which sessions each device has (what every new delegation's
/// one-per-device check asks; a scan of every record would make it linear in the store).
#[derive(Debug, Default)]
struct Records {
    by_id: HashMap<String, SessionRecord>,
    by_device: HashMap<String, Vec<String>>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Copies of the records `keep` selects.
    fn cloned_where(&self, keep: impl Fn(&SessionRecord) -> bool) -> Vec<SessionRecord> {
        self.map()
            .by_id
            .values()
            .filter(|r| keep(r))
            .cloned()
            .collect()
    }

    fn map(&self) -> std::sync::MutexGuard<'_, Records> {
        // A panic elsewhere cannot leave a half-written record: records are replaced whole,
        // and the device index is updated before the guard is released.
        self.records.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[async_trait]
impl SessionStore for MemoryStore {
    async fn save(&self, record: &SessionRecord) -> Result<(), StoreError> {
        let mut m = self.map();
        let device = &record.info.device.device_id;
        match m.by_id.get_mut(&record.session_id) {
            Some(old) if &old.info.device.device_id == device => old.overwrite_with(record),
            _ => {
                let old = m.by_id.insert(record.session_id.clone(), record.clone());
                if let Some(old) = old {
                    m.unindex(&old);
                }
                m.by_device
                    .entry(device.clone())
                    .or_default()
                    .push(record.session_id.clone());
            }
        }
        Ok(())
    }

    async fn load(&self, session_id: &str) -> Result<Option<SessionRecord>, StoreError> {
        Ok(self.map().by_id.get(session_id).cloned())
    }

    async fn list(&self) -> Result<Vec<SessionRecord>, StoreError> {
        Ok(self.cloned_where(|_| true))
    }

    async fn remove(&self, session_id: &str) -> Result<(), StoreError> {
        let mut m = self.map();
        if let Some(old) = m.by_id.remove(session_id) {
            m.unindex(&old);
        }
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
        let m = self.map();
        let ids = m.by_device.get(device_id).map(Vec::as_slice).unwrap_or(&[]);
        Ok(ids
            .iter()
            .filter_map(|id| m.by_id.get(id))
            .filter(|r| r.is_active())
            .cloned()
            .collect())
    }
}

impl Records {
    /// Drops `old` from the device index.
    fn unindex(&mut self, old: &SessionRecord) {
        let device = &old.info.device.device_id;
        if let Some(ids) = self.by_device.get_mut(device) {
            ids.retain(|id| id != &old.session_id);
            if ids.is_empty() {
                self.by_device.remove(device);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::{DelegationInfo, DelegationType, DeviceInfo, Method};
    use crate::{Role, State};

    fn record(id: &str, device: &str) -> SessionRecord {
        SessionRecord::new(
            id.into(),
            Role::Delegating,
            Method::DelegatingInitiates,
            DelegationType::Full,
            "dms2".into(),
            DelegationInfo {
                device: DeviceInfo {
                    device_id: device.into(),
                    manufacturer: "Acme".into(),
                    model: "X".into(),
                },
                subtrees: Vec::new(),
            },
            None,
            Timestamp(0),
        )
    }

    fn ids(records: Vec<SessionRecord>) -> Vec<String> {
        let mut ids: Vec<String> = records.into_iter().map(|r| r.session_id).collect();
        ids.sort();
        ids
    }

    /// A record with every optional part filled in.
    fn full_record() -> SessionRecord {
        use crate::engine::{JournalEntry, JournalStatus, Step};
        use crate::message::{DelegatedSubtree, Reason};
        use crate::{AclCommand, ClientCommand, DmAcc, ReasonCode};
        use std::sync::Arc;
        let mut r = record("s9", "IMEI:9");
        r.info.subtrees.push(DelegatedSubtree {
            uri: "./Vendor".into(),
            rights: vec![AclCommand::Get],
        });
        r.expires = Some(Timestamp(5));
        r.state = State::AwaitingConfirm;
        r.next_seq = 4;
        r.last_peer_seq = 3;
        r.deadline = Some(Timestamp(9));
        r.account = Some(Arc::new(DmAcc::simple("dms2", "https://d/dm", "c", "s")));
        r.bootstrap_url = Some("https://bs.example/bs".into());
        r.installed_account = Some("./DMAcc/d2".into());
        r.own_account_uri = Some("./DMAcc/d1".into());
        r.preexisting_peer_accounts = Some(vec!["./DMAcc/old".into()]);
        r.cleanup = vec!["./DMDelegate/Bootstrap/s9".into()];
        r.journal.push(JournalEntry {
            command: Arc::new(ClientCommand::Delete { uri: "./A".into() }),
            inverse: None,
            status: JournalStatus::Applied,
            finalizing: true,
        });
        r.reason = Some(Reason::new(ReasonCode::InternalError, "why"));
        r.history.push(Step {
            state: State::AwaitingConfirm,
            at: Timestamp(2),
        });
        r.created = Timestamp(1);
        r.updated = Timestamp(7);
        r
    }

    #[test]
    fn a_record_copied_over_another_is_equal_to_its_source() {
        let full = full_record();
        assert_eq!(full.clone(), full);
        // Over a different record (what a store's save does) and back again.
        let mut copy = record("s1", "IMEI:1");
        copy.overwrite_with(&full);
        assert_eq!(copy, full);
        let plain = record("s1", "IMEI:1");
        copy.overwrite_with(&plain);
        assert_eq!(copy, plain);
    }

    async fn active_for(store: &MemoryStore, device: &str) -> Vec<String> {
        ids(store.list_active_for_device(device).await.expect("memory"))
    }

    #[tokio::test]
    async fn device_lookup_sees_saves_state_changes_and_removals() {
        let store = MemoryStore::new();
        store.save(&record("s1", "IMEI:1")).await.unwrap();
        store.save(&record("s2", "IMEI:1")).await.unwrap();
        store.save(&record("s3", "IMEI:2")).await.unwrap();
        assert_eq!(active_for(&store, "IMEI:1").await, ["s1", "s2"]);
        assert_eq!(active_for(&store, "IMEI:2").await, ["s3"]);
        assert!(active_for(&store, "IMEI:3").await.is_empty());

        // Saving again replaces the record and keeps one index entry.
        let mut done = record("s1", "IMEI:1");
        done.state = State::Completed;
        store.save(&done).await.unwrap();
        store.save(&done).await.unwrap();
        assert_eq!(active_for(&store, "IMEI:1").await, ["s2"]);
        assert_eq!(store.load("s1").await.unwrap(), Some(done));

        store.remove("s2").await.unwrap();
        store.remove("s2").await.unwrap();
        assert!(active_for(&store, "IMEI:1").await.is_empty());
        assert_eq!(ids(store.list().await.unwrap()), ["s1", "s3"]);
    }

    #[tokio::test]
    async fn a_record_saved_under_another_device_moves_in_the_index() {
        let store = MemoryStore::new();
        store.save(&record("s1", "IMEI:1")).await.unwrap();
        store.save(&record("s1", "IMEI:2")).await.unwrap();
        assert!(active_for(&store, "IMEI:1").await.is_empty());
        assert_eq!(active_for(&store, "IMEI:2").await, ["s1"]);
        store.remove("s1").await.unwrap();
        assert!(active_for(&store, "IMEI:2").await.is_empty());
        assert!(
            store.map().by_device.is_empty(),
            "no empty index entries left"
        );
    }
}
