//! SQLite session store: [`SqliteStore`], a durable [`SessionStore`].
//!
//! One row per session in the table `sessions`:
//!
//! ```sql
//! CREATE TABLE sessions (
//!     session_id  TEXT PRIMARY KEY NOT NULL,
//!     state       TEXT NOT NULL,     -- State, e.g. `AwaitingConfirm`
//!     device_id   TEXT NOT NULL,
//!     deadline_ms INTEGER NULL,      -- the current wait's end, ms since the UNIX epoch
//!     updated_ms  INTEGER NOT NULL,
//!     active      INTEGER NOT NULL,  -- 1 while the engine has work for it (deadline scans)
//!     record      TEXT NOT NULL      -- the whole SessionRecord as JSON
//! );
//! ```
//!
//! `record` is the source of truth; the other columns copy fields out of it so operators
//! (and later queries) can filter without parsing JSON. The schema version is kept in
//! `PRAGMA user_version` ([`SqliteStore::SCHEMA_VERSION`]).
//!
//! A file store runs in WAL mode with `synchronous=FULL`: when [`SessionStore::save`]
//! returns, the record is on disk and survives a crash or power loss. The engine relies on
//! that: it saves the rollback journal before every client operation.
//!
//! The record holds DMS-2's account (with its secrets) while a delegation runs, so a new
//! database file is created readable by its owner only (Unix).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use dmdelegate::{SessionRecord, SessionStore, StoreError, Timestamp};
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};

/// How long a statement waits for another connection's lock before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

const CREATE_SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS sessions (
    session_id  TEXT PRIMARY KEY NOT NULL,
    state       TEXT NOT NULL,
    device_id   TEXT NOT NULL,
    deadline_ms INTEGER NULL,
    updated_ms  INTEGER NOT NULL,
    active      INTEGER NOT NULL,
    record      TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS sessions_state ON sessions(state);
CREATE INDEX IF NOT EXISTS sessions_active ON sessions(active, device_id);
";

/// A [`SessionStore`] in an SQLite database.
///
/// Cheap to clone; clones share one connection. Every operation runs on tokio's blocking
/// thread pool, so it must be used inside a tokio runtime (as the engine is).
#[derive(Clone)]
pub struct SqliteStore {
    conn: Arc<Mutex<Connection>>,
    /// Where the database is, for error messages.
    location: Arc<str>,
    path: Option<PathBuf>,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("location", &self.location)
            .finish_non_exhaustive()
    }
}

impl SqliteStore {
    /// The schema version this build writes and reads.
    pub const SCHEMA_VERSION: i64 = 1;

    /// Opens (creating when absent) the database at `path`, creates or checks the schema,
    /// and switches it to WAL mode with `synchronous=FULL`.
    ///
    /// Fails when the file is not an SQLite database or has a schema newer than
    /// [`Self::SCHEMA_VERSION`] (written by a newer build); such a file is not modified.
    ///
    /// This blocks on file I/O (and, when another process holds the database lock, for up
    /// to a few seconds): call it at startup or from a blocking task.
    pub fn open(path: impl AsRef<Path>) -> Result<SqliteStore, StoreError> {
        let path = path.as_ref();
        let location: Arc<str> = Arc::from(format!("session store {}", path.display()));
        let fail = |what: &str, e: &dyn std::fmt::Display| {
            StoreError(format!("opening {location}: {what}: {e}"))
        };
        create_private(path).map_err(|e| fail("creating the file", &e))?;
        let mut conn = Connection::open(path).map_err(|e| fail("opening", &e))?;
        conn.busy_timeout(BUSY_TIMEOUT)
            .map_err(|e| fail("setting the busy timeout", &e))?;
        // Schema first: a file we refuse (newer schema) is left exactly as it was.
        migrate(&mut conn).map_err(|e| StoreError(format!("opening {location}: {}", e.0)))?;
        // WAL: readers do not block the writer, and a commit is one append plus fsync.
        let mode: String = conn
            .query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))
            .map_err(|e| fail("enabling WAL", &e))?;
        if !mode.eq_ignore_ascii_case("wal") {
            // Some file systems (network shares) cannot do WAL; FULL sync still makes
            // every commit durable, only slower.
            tracing::warn!(store = %location, %mode, "WAL unavailable; using another journal mode");
        }
        // FULL: fsync the WAL on every commit, so `save` is durable when it returns
        // (NORMAL would only protect against corruption, not against losing the last save).
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(|e| fail("setting synchronous=FULL", &e))?;
        Ok(SqliteStore {
            conn: Arc::new(Mutex::new(conn)),
            location,
            path: Some(path.to_path_buf()),
        })
    }

    /// A private database in memory: the same schema and behaviour, gone when the last
    /// clone is dropped. For tests.
    pub fn open_in_memory() -> Result<SqliteStore, StoreError> {
        let location: Arc<str> = Arc::from("in-memory session store");
        let mut conn = Connection::open_in_memory()
            .map_err(|e| StoreError(format!("opening {location}: {e}")))?;
        migrate(&mut conn).map_err(|e| StoreError(format!("opening {location}: {}", e.0)))?;
        Ok(SqliteStore {
            conn: Arc::new(Mutex::new(conn)),
            location,
            path: None,
        })
    }

    /// The database file, or `None` in memory.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// Runs `f` with the connection on the blocking pool. `what` names the operation for
    /// the error raised when the task itself fails (a panic inside `f`).
    async fn run<T, F>(&self, what: String, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection, &str) -> Result<T, StoreError> + Send + 'static,
    {
        let conn = Arc::clone(&self.conn);
        let location = Arc::clone(&self.location);
        // The mutex is taken and released inside the blocking task: never held across an
        // await, and SQLite calls never stall a runtime worker.
        let task = tokio::task::spawn_blocking(move || {
            // A panic while holding the lock cannot leave a half-written row (each write is
            // one SQLite statement, atomic), so a poisoned lock is safe to reuse.
            let mut conn = conn.lock().unwrap_or_else(PoisonError::into_inner);
            f(&mut conn, &location)
        });
        task.await.map_err(|e| {
            StoreError(format!(
                "{what} in {}: the database task failed: {e}",
                self.location
            ))
        })?
    }
}

/// Creates `path` with owner-only permissions when it does not exist yet. SQLite gives the
/// `-wal` and `-shm` files the database file's permissions.
fn create_private(path: &Path) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    match options.open(path) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

/// Creates the schema in a fresh database, accepts the current one, refuses a newer one.
fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    let err = |what: &str, e: rusqlite::Error| StoreError(format!("{what}: {e}"));
    // IMMEDIATE: two processes opening a fresh file cannot both create the schema.
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(|e| err("locking the database", e))?;
    let version: i64 = tx
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .map_err(|e| err("reading the schema version", e))?;
    match version {
        0 => {
            tx.execute_batch(CREATE_SCHEMA)
                .map_err(|e| err("creating the schema", e))?;
            tx.pragma_update(None, "user_version", SqliteStore::SCHEMA_VERSION)
                .map_err(|e| err("writing the schema version", e))?;
        }
        v if v == SqliteStore::SCHEMA_VERSION => {}
        v if v > SqliteStore::SCHEMA_VERSION => {
            return Err(StoreError(format!(
                "the database has schema version {v}, newer than version {} which this \
                 build supports; it was written by a newer dmdelegate, upgrade to open it",
                SqliteStore::SCHEMA_VERSION
            )));
        }
        v => {
            return Err(StoreError(format!(
                "the database has unknown schema version {v} (expected {})",
                SqliteStore::SCHEMA_VERSION
            )))
        }
    }
    tx.commit().map_err(|e| err("committing the schema", e))
}

/// Parses a stored record, checking it belongs to the row it was read from.
fn decode(session_id: &str, json: &str, location: &str) -> Result<SessionRecord, StoreError> {
    let record: SessionRecord = serde_json::from_str(json).map_err(|e| {
        StoreError(format!(
            "session `{session_id}` in {location} is corrupt: its record does not parse: {e}"
        ))
    })?;
    if record.session_id != session_id {
        return Err(StoreError(format!(
            "session `{session_id}` in {location} is corrupt: its record is for session `{}`",
            record.session_id
        )));
    }
    Ok(record)
}

impl SqliteStore {
    /// Reads the records a `WHERE` clause selects (with at most one parameter).
    async fn select_where(
        &self,
        what: &'static str,
        filter: &'static str,
        param: i64,
    ) -> Result<Vec<SessionRecord>, StoreError> {
        self.query(what, filter, vec![Box::new(param)]).await
    }

    async fn select(
        &self,
        what: &'static str,
        filter: &'static str,
        param: Option<String>,
    ) -> Result<Vec<SessionRecord>, StoreError> {
        let params: Vec<Box<dyn rusqlite::ToSql + Send>> = match param {
            Some(p) => vec![Box::new(p)],
            None => Vec::new(),
        };
        self.query(what, filter, params).await
    }

    async fn query(
        &self,
        what: &'static str,
        filter: &'static str,
        params: Vec<Box<dyn rusqlite::ToSql + Send>>,
    ) -> Result<Vec<SessionRecord>, StoreError> {
        self.run(what.to_string(), move |conn, location| {
            let read_err = |e: rusqlite::Error| StoreError(format!("{what} in {location}: {e}"));
            let sql =
                format!("SELECT session_id, record FROM sessions {filter} ORDER BY session_id");
            let mut stmt = conn.prepare_cached(&sql).map_err(read_err)?;
            let params: Vec<&dyn rusqlite::ToSql> = params
                .iter()
                .map(|p| p.as_ref() as &dyn rusqlite::ToSql)
                .collect();
            let rows = stmt
                .query_map(params.as_slice(), |r| {
                    Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
                })
                .map_err(read_err)?;
            // One corrupt row fails the whole list: skipping it would hide a session (and
            // its rollback journal) from deadline checks and device-busy checks.
            let mut records = Vec::new();
            for row in rows {
                let (id, json) = row.map_err(read_err)?;
                records.push(decode(&id, &json, location)?);
            }
            Ok(records)
        })
        .await
    }
}

#[async_trait]
impl SessionStore for SqliteStore {
    async fn save(&self, record: &SessionRecord) -> Result<(), StoreError> {
        let id = record.session_id.clone();
        // Serialized here, before the blocking task, so the task need not own a clone.
        let json = serde_json::to_string(record).map_err(|e| {
            StoreError(format!(
                "saving session `{id}` in {}: encoding the record: {e}",
                self.location
            ))
        })?;
        let state = record.state.to_string();
        let device_id = record.info.device.device_id.clone();
        let deadline = record.deadline.map(|d| d.unix_millis());
        let updated = record.updated.unix_millis();
        let active = record.is_active();
        self.run(format!("saving session `{id}`"), move |conn, location| {
            // One autocommit statement: atomic, and durable on return (synchronous=FULL).
            conn.prepare_cached(
                "INSERT INTO sessions
                     (session_id, state, device_id, deadline_ms, updated_ms, active, record)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                 ON CONFLICT(session_id) DO UPDATE SET
                     state = excluded.state,
                     device_id = excluded.device_id,
                     deadline_ms = excluded.deadline_ms,
                     updated_ms = excluded.updated_ms,
                     active = excluded.active,
                     record = excluded.record",
            )
            .and_then(|mut stmt| {
                stmt.execute(params![
                    id, state, device_id, deadline, updated, active, json
                ])
            })
            .map_err(|e| StoreError(format!("saving session `{id}` in {location}: {e}")))?;
            Ok(())
        })
        .await
    }

    async fn load(&self, session_id: &str) -> Result<Option<SessionRecord>, StoreError> {
        let id = session_id.to_string();
        self.run(format!("loading session `{id}`"), move |conn, location| {
            let json: Option<String> = conn
                .prepare_cached("SELECT record FROM sessions WHERE session_id = ?1")
                .and_then(|mut stmt| stmt.query_row([&id], |r| r.get(0)).optional())
                .map_err(|e| StoreError(format!("loading session `{id}` from {location}: {e}")))?;
            json.map(|j| decode(&id, &j, location)).transpose()
        })
        .await
    }

    async fn list(&self) -> Result<Vec<SessionRecord>, StoreError> {
        self.select("listing sessions", "", None).await
    }

    async fn list_active(&self) -> Result<Vec<SessionRecord>, StoreError> {
        self.select("listing active sessions", "WHERE active = 1", None)
            .await
    }

    async fn list_due(&self, now: Timestamp) -> Result<Vec<SessionRecord>, StoreError> {
        // The index on `active` narrows the scan; only rows past their deadline (and the
        // few completed temporary delegations, whose end is inside the record) are parsed.
        let now_ms = now.unix_millis();
        let records = self
            .select_where(
                "listing due sessions",
                "WHERE active = 1 AND (deadline_ms <= ?1 OR state = 'Completed')",
                now_ms,
            )
            .await?;
        Ok(records.into_iter().filter(|r| r.is_due(now)).collect())
    }

    async fn list_failed_since(&self, since: Timestamp) -> Result<Vec<SessionRecord>, StoreError> {
        // From the state index: only failed sessions are parsed, not every one ever kept.
        let records = self
            .select_where(
                "listing recently failed sessions",
                "WHERE state IN ('RolledBack', 'RollbackFailed') AND updated_ms >= ?1",
                since.unix_millis(),
            )
            .await?;
        Ok(records
            .into_iter()
            .filter(|r| r.failed_since(since))
            .collect())
    }

    async fn list_active_for_device(
        &self,
        device_id: &str,
    ) -> Result<Vec<SessionRecord>, StoreError> {
        self.select(
            "listing the device's active sessions",
            "WHERE active = 1 AND device_id = ?1",
            Some(device_id.to_string()),
        )
        .await
    }

    async fn remove(&self, session_id: &str) -> Result<(), StoreError> {
        let id = session_id.to_string();
        self.run(format!("removing session `{id}`"), move |conn, location| {
            conn.prepare_cached("DELETE FROM sessions WHERE session_id = ?1")
                .and_then(|mut stmt| stmt.execute([&id]))
                .map_err(|e| StoreError(format!("removing session `{id}` from {location}: {e}")))?;
            Ok(())
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The per-connection settings the durability promise rests on.
    #[test]
    fn a_file_store_is_wal_with_full_sync() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path().join("s.db")).unwrap();
        let conn = store.conn.lock().unwrap();
        let mode: String = conn
            .pragma_query_value(None, "journal_mode", |r| r.get(0))
            .unwrap();
        let sync: i64 = conn
            .pragma_query_value(None, "synchronous", |r| r.get(0))
            .unwrap();
        let busy: i64 = conn
            .pragma_query_value(None, "busy_timeout", |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
        assert_eq!(sync, 2, "FULL");
        assert_eq!(busy, BUSY_TIMEOUT.as_millis() as i64);
    }

    #[cfg(unix)]
    #[test]
    fn a_new_file_is_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        let _store = SqliteStore::open(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
