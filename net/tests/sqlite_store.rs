//! `SqliteStore`: round trips of records the engine really writes, durability across
//! reopen (and from what a crash leaves on disk), a DMS-1 restart that recovers a stalled
//! delegation from the database, concurrent saves, and clear errors for newer schemas and
//! corrupt rows.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use dmdelegate::sim::{InProcessNetwork, LinkFault, SimDevice, SimHost, Testbed};
use dmdelegate::{
    Acl, DelegationInfo, DelegationRequest, DelegationServer, DelegationType, DeviceInfo, DmAcc,
    ManualClock, MemoryStore, MessageKind, Method, Node, Reason, ReasonCode, Role, ServerConfig,
    SessionInfo, SessionRecord, SessionStore, State, Timestamp,
};
use dmdelegate_net::sqlite::SqliteStore;

const FIXED_ID: &str = "fixed-session-1";
const DEVICE_ID: &str = "IMEI:490154203237518";

/// Everything of a Method 1 delegation except DMS-1, which each test builds over the store
/// it wants (and may rebuild, to simulate a restart). Mirrors `dmdelegate::sim::Testbed`.
struct World {
    clock: ManualClock,
    network: Arc<InProcessNetwork>,
    device: Arc<SimDevice>,
    host1: Arc<SimHost>,
    dms2: DelegationServer,
}

impl World {
    fn new() -> Self {
        let clock =
            ManualClock::new(Timestamp::parse_rfc3339("2026-11-21T10:00:00Z").expect("valid"));
        let network = Arc::new(InProcessNetwork::new());
        let device = Arc::new(SimDevice::new(DeviceInfo {
            device_id: DEVICE_ID.into(),
            manufacturer: "Acme".into(),
            model: "Phone X".into(),
        }));
        provision(&device);
        let host1 = Arc::new(SimHost::new(Testbed::DMS1));
        host1.add_device(device.clone());
        let host2 = Arc::new(SimHost::new(Testbed::DMS2));
        host2.add_device(device.clone());
        host2.set_account(DmAcc::simple(
            Testbed::DMS2,
            "https://dms2.enterprise.example/dm",
            "client-secret-2",
            "server-secret-2",
        ));
        let dms2 = DelegationServer::with_parts(
            ServerConfig::new(Testbed::DMS2),
            host2,
            network.clone(),
            Arc::new(MemoryStore::new()),
            Arc::new(clock.clone()),
        )
        .expect("valid config");
        network.attach(&dms2);
        World {
            clock,
            network,
            device,
            host1,
            dms2,
        }
    }

    /// A DMS-1 over `store`, attached to the network (replacing any earlier DMS-1).
    fn dms1(&self, store: Arc<dyn SessionStore>) -> DelegationServer {
        let server = DelegationServer::with_parts(
            ServerConfig::new(Testbed::DMS1),
            self.host1.clone(),
            self.network.clone(),
            store,
            Arc::new(self.clock.clone()),
        )
        .expect("valid config");
        self.network.attach(&server);
        server
    }

    fn request(&self, delegation_type: DelegationType) -> DelegationRequest {
        DelegationRequest {
            session_id: Some(FIXED_ID.into()),
            peer: Testbed::DMS2.into(),
            method: Method::DelegatingInitiates,
            delegation_type,
            info: DelegationInfo {
                device: self.device.info(),
                subtrees: Testbed::subtrees(delegation_type),
            },
            expires: None,
        }
    }
}

/// The device tree of `Testbed` (see its documentation).
fn provision(device: &SimDevice) {
    let d1 = Testbed::DMS1;
    let acl = |t: String| Acl::parse(&t).expect("static ACL");
    device.provision_account(&DmAcc::simple(
        d1,
        "https://dms1.operator.example/dm",
        "client-secret-1",
        "server-secret-1",
    ));
    let all = acl(format!("Add={d1}&Delete={d1}&Get={d1}&Replace={d1}"));
    let vendor = Node::interior(
        "Vendor",
        vec![
            Node::interior(
                "Apps",
                vec![
                    Node::interior("Mail", vec![Node::leaf("Server", "imap.operator.example")])
                        .with_acl(acl(format!("Get=*&Replace={d1}"))),
                    Node::interior(
                        "Browser",
                        vec![Node::leaf("Home", "https://portal.operator.example")],
                    ),
                ],
            ),
            Node::interior("Settings", vec![Node::leaf("Volume", "5")]),
        ],
    )
    .with_acl(all);
    device.provision(".", vendor).expect("root exists");
    let network = Node::interior(
        "Network",
        vec![Node::leaf("APN", "internet.operator.example")],
    )
    .with_acl(acl(format!("Add={d1}&Delete={d1}&Get=*&Replace={d1}")));
    device.provision(".", network).expect("root exists");
    device
        .set_acl_unchecked("./DMAcc", acl(format!("Add={d1}&Get=*&Replace={d1}")))
        .expect("exists");
}

/// Waits (briefly) until `server`'s session reaches `state`.
async fn wait_for(server: &DelegationServer, state: State) -> SessionInfo {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(info) = server.session(FIXED_ID).await {
            if info.state == state {
                return info;
            }
            assert!(
                Instant::now() < deadline,
                "{}: still {} ({:?}), expected {state}",
                server.server_id(),
                info.state,
                info.reason
            );
        }
        assert!(
            Instant::now() < deadline,
            "no session at {}",
            server.server_id()
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Starts a Method 1 delegation whose DELEGATION_PREPARED is lost: DMS-1 has prepared the
/// device (journal written) and waits for CONFIRM; DMS-2 waits for PREPARED.
async fn stall_after_prepared(world: &World, dms1: &DelegationServer) {
    world.network.inject(MessageKind::Prepared, LinkFault::Drop);
    dms1.start_delegation(world.request(DelegationType::Partial))
        .await
        .expect("started");
    wait_for(dms1, State::AwaitingConfirm).await;
    wait_for(&world.dms2, State::AwaitingPrepared).await;
}

/// A small record with the fields the SQL columns copy set.
fn sample(id: &str, device: &str, state: State, deadline: Option<Timestamp>) -> SessionRecord {
    let at = Timestamp::parse_rfc3339("2026-11-21T10:00:00Z").expect("valid");
    let mut r = SessionRecord::new(
        id.into(),
        Role::Delegating,
        Method::DelegatingInitiates,
        DelegationType::Partial,
        Testbed::DMS2.into(),
        DelegationInfo {
            device: DeviceInfo {
                device_id: device.into(),
                manufacturer: "Acme".into(),
                model: "Phone X".into(),
            },
            subtrees: Testbed::subtrees(DelegationType::Partial),
        },
        None,
        at,
    );
    r.state = state;
    r.deadline = deadline;
    r.updated = at.plus(Duration::from_millis(id.len() as u64));
    r
}

fn db_path(dir: &tempfile::TempDir) -> std::path::PathBuf {
    dir.path().join("dms1.db")
}

fn raw(path: &Path) -> rusqlite::Connection {
    rusqlite::Connection::open(path).expect("raw connection")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_the_engine_writes_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SqliteStore::open(db_path(&dir)).unwrap());
    let world = World::new();
    let dms1 = world.dms1(store.clone());
    stall_after_prepared(&world, &dms1).await;

    // What the engine saved mid-delegation: a journal, DMS-2's account, a deadline.
    let rec = store.load(FIXED_ID).await.unwrap().expect("saved");
    assert_eq!(rec.state, State::AwaitingConfirm);
    assert!(!rec.journal.is_empty(), "journal written");
    assert!(rec.account.is_some(), "DMS-2's account kept until done");
    assert!(rec.deadline.is_some());
    assert_eq!(
        SessionInfo::from(&rec),
        dms1.session(FIXED_ID).await.unwrap()
    );
    assert_eq!(store.list().await.unwrap(), vec![rec.clone()]);

    // Another session, with an id full of SQL and JSON metacharacters and non-ASCII text.
    let mut other = rec.clone();
    other.session_id = "it's \"quoted\"; DROP TABLE sessions; --".into();
    other.state = State::RolledBack;
    other.deadline = None;
    other.journal.clear();
    other.account = None;
    other.reason = Some(Reason::new(ReasonCode::Cancelled, "annulé ✓ 取消"));
    store.save(&other).await.unwrap();
    assert_eq!(
        store.load(&other.session_id).await.unwrap(),
        Some(other.clone())
    );

    // Saving again replaces the whole record.
    let mut newer = rec.clone();
    newer.next_seq += 7;
    newer.journal.truncate(1);
    newer.updated = newer.updated.plus(Duration::from_secs(1));
    store.save(&newer).await.unwrap();
    assert_eq!(store.load(FIXED_ID).await.unwrap(), Some(newer.clone()));
    let mut both = vec![newer.clone(), other.clone()];
    both.sort_by(|a, b| a.session_id.cmp(&b.session_id));
    assert_eq!(store.list().await.unwrap(), both);

    // Remove, twice (absent is fine), and an unknown id loads as None.
    store.remove(&other.session_id).await.unwrap();
    store.remove(&other.session_id).await.unwrap();
    assert_eq!(store.load(&other.session_id).await.unwrap(), None);
    assert_eq!(store.load("never-saved").await.unwrap(), None);
    assert_eq!(store.list().await.unwrap(), vec![newer.clone()]);

    // The in-memory variant behaves the same.
    let mem = SqliteStore::open_in_memory().unwrap();
    assert_eq!(mem.path(), None);
    mem.save(&rec).await.unwrap();
    mem.save(&other).await.unwrap();
    assert_eq!(mem.load(FIXED_ID).await.unwrap(), Some(rec.clone()));
    mem.remove(FIXED_ID).await.unwrap();
    assert_eq!(mem.list().await.unwrap(), vec![other]);
    world.network.clear();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sqlite_backed_dms1_behaves_like_the_in_memory_testbed() {
    for dtype in [DelegationType::Partial, DelegationType::Full] {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(SqliteStore::open(db_path(&dir)).unwrap());
        let world = World::new();
        let before = world.device.dump();
        let dms1 = world.dms1(store.clone());
        dms1.start_delegation(world.request(dtype)).await.unwrap();
        let one = dms1
            .wait_until_terminal(FIXED_ID, Duration::from_secs(10))
            .await
            .unwrap();
        assert_eq!(one.state, State::Completed, "{dtype}: {:?}", one.reason);

        let tb = Testbed::new();
        assert_eq!(tb.device.dump(), before, "same starting tree as Testbed");
        let mut req = tb.request(Method::DelegatingInitiates, dtype);
        req.session_id = Some(FIXED_ID.into());
        tb.dms1.start_delegation(req).await.unwrap();
        tb.finish(FIXED_ID).await.unwrap();

        assert_eq!(
            dms1.sessions().await.unwrap(),
            tb.dms1.sessions().await.unwrap()
        );
        assert_eq!(
            world.device.dump(),
            tb.device.dump(),
            "{dtype}: same device"
        );
        world.network.clear();
        tb.network.clear();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn saved_records_survive_reopen_and_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    let at = Timestamp::parse_rfc3339("2026-11-21T10:05:00Z").unwrap();
    let mut records = vec![
        sample("a-running", DEVICE_ID, State::AwaitingConfirm, Some(at)),
        sample("b-done", DEVICE_ID, State::Completed, None),
        sample(
            "c-other-device",
            "IMEI:1",
            State::RollingBack,
            Some(at.plus(Duration::from_secs(30))),
        ),
    ];
    records[1].reason = Some(Reason::new(ReasonCode::Timeout, "late"));

    let store = SqliteStore::open(&path).unwrap();
    assert_eq!(store.path(), Some(path.as_path()));
    for r in &records {
        store.save(r).await.unwrap();
    }
    // Committed: another connection sees the rows while the store is still open.
    let n: i64 = raw(&path)
        .query_row("SELECT COUNT(*) FROM sessions", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, 3);
    // What a crash right now leaves on disk: the database and its WAL, no clean close.
    let crash = tempfile::tempdir().unwrap();
    let crashed = crash.path().join("dms1.db");
    std::fs::copy(&path, &crashed).unwrap();
    let wal = path.with_extension("db-wal");
    let wal_len = std::fs::copy(&wal, crash.path().join("dms1.db-wal")).unwrap();
    assert!(
        wal_len > 0,
        "the saves are in the WAL, not yet checkpointed"
    );
    drop(store);

    for p in [&path, &crashed] {
        let reopened = SqliteStore::open(p).unwrap();
        assert_eq!(reopened.list().await.unwrap(), records, "{}", p.display());
        for r in &records {
            assert_eq!(
                reopened.load(&r.session_id).await.unwrap().as_ref(),
                Some(r)
            );
        }
    }

    // The columns copy the record's fields; WAL, version 1 and both indexes are in place.
    let db = raw(&path);
    let mut stmt = db
        .prepare(
            "SELECT session_id, state, device_id, deadline_ms, updated_ms FROM sessions
             ORDER BY session_id",
        )
        .unwrap();
    let rows: Vec<(String, String, String, Option<i64>, i64)> = stmt
        .query_map([], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
        })
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let expected: Vec<_> = records
        .iter()
        .map(|r| {
            (
                r.session_id.clone(),
                r.state.to_string(),
                r.info.device.device_id.clone(),
                r.deadline.map(|d| d.unix_millis()),
                r.updated.unix_millis(),
            )
        })
        .collect();
    assert_eq!(rows, expected);
    let mode: String = db
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    let version: i64 = db
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(
        (mode.as_str(), version),
        ("wal", SqliteStore::SCHEMA_VERSION)
    );
    let mut indexes: Vec<String> = db
        .prepare("SELECT sql FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    indexes.sort();
    assert_eq!(indexes.len(), 2, "{indexes:?}");
    assert!(
        indexes[0].contains("(active, device_id)") && indexes[1].contains("(state)"),
        "{indexes:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_dms1_rolls_back_a_stalled_delegation_from_the_database() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    let world = World::new();
    let before = world.device.dump();

    // DMS-1 prepares the device, then PREPARED is lost.
    let store = Arc::new(SqliteStore::open(&path).unwrap());
    let store_alive = Arc::downgrade(&store);
    let dms1 = world.dms1(store);
    stall_after_prepared(&world, &dms1).await;
    let stalled = dms1.session(FIXED_ID).await.unwrap();
    assert!(stalled.pending_operations > 0);
    assert_ne!(world.device.dump(), before, "the device was prepared");

    // Crash: every handle on the old DMS-1 goes, and with it the store's connection.
    drop(dms1);
    world.network.clear();
    assert!(store_alive.upgrade().is_none(), "old store fully released");

    // Restart over the same file. Nothing is due yet.
    let dms1 = world.dms1(Arc::new(SqliteStore::open(&path).unwrap()));
    world.network.attach(&world.dms2);
    assert_eq!(
        dms1.session(FIXED_ID).await.unwrap(),
        stalled,
        "recovered as saved"
    );
    assert_eq!(dms1.expire_due().await.unwrap(), 0, "not yet");

    // Past the confirm deadline the new server rolls back what the old one did.
    world
        .clock
        .advance(dmdelegate::Timeouts::default().confirm + Duration::from_secs(1));
    assert_eq!(dms1.expire_due().await.unwrap(), 1);
    let one = wait_for(&dms1, State::RolledBack).await;
    assert_eq!(
        one.reason.as_ref().map(|r| r.code),
        Some(ReasonCode::ConfirmTimeout.code())
    );
    assert_eq!(one.pending_operations, 0, "journal undone");
    assert_eq!(world.device.dump(), before, "device restored");
    // DMS-2 was told (it has not run its own deadline check).
    let two = wait_for(&world.dms2, State::RolledBack).await;
    assert_eq!(two.reason, one.reason);
    let told = world.network.trace().iter().any(|l| {
        l.starts_with(&format!("{} -> {}", Testbed::DMS1, Testbed::DMS2))
            && l.contains("DELEGATION_FAILURE")
    });
    assert!(told, "{:#?}", world.network.trace());

    // And the outcome is on disk.
    drop(dms1);
    world.network.clear();
    let after = SqliteStore::open(&path).unwrap();
    let rec = after.load(FIXED_ID).await.unwrap().expect("kept");
    assert_eq!(rec.state, State::RolledBack);
    assert!(rec.journal.is_empty() && rec.account.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_saves_end_consistent() {
    const SESSIONS: usize = 200;
    const SAVES: u32 = 5;
    let steps = [
        State::NotifSent,
        State::AwaitingStart,
        State::Preparing,
        State::AwaitingConfirm,
        State::Completed,
    ];
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SqliteStore::open(db_path(&dir)).unwrap());
    let started = Instant::now();
    let mut writers = Vec::new();
    for i in 0..SESSIONS {
        let store = store.clone();
        writers.push(tokio::spawn(async move {
            let mut rec = sample(
                &format!("s-{i:03}"),
                &format!("IMEI:{i}"),
                State::NotifSent,
                None,
            );
            for (v, state) in (1..=SAVES).zip(steps) {
                rec.next_seq = v;
                rec.state = state;
                rec.deadline =
                    (!state.is_terminal()).then(|| rec.created.plus(Duration::from_secs(v.into())));
                store.save(&rec).await.unwrap();
            }
        }));
    }
    // Readers meanwhile always see whole, parseable records.
    let mut readers = Vec::new();
    for _ in 0..4 {
        let store = store.clone();
        readers.push(tokio::spawn(async move {
            for _ in 0..20 {
                let seen = store.list().await.unwrap();
                assert!(seen.len() <= SESSIONS);
                tokio::task::yield_now().await;
            }
        }));
    }
    for t in writers.into_iter().chain(readers) {
        t.await.unwrap();
    }
    let elapsed = started.elapsed();
    eprintln!(
        "{} durable saves from {SESSIONS} tasks in {elapsed:?}",
        SESSIONS * SAVES as usize
    );

    let all = store.list().await.unwrap();
    assert_eq!(all.len(), SESSIONS);
    for (i, r) in all.iter().enumerate() {
        assert_eq!(r.session_id, format!("s-{i:03}"));
        assert_eq!(
            (r.next_seq, r.state, r.deadline),
            (SAVES, State::Completed, None)
        );
    }
    let completed: i64 = raw(&db_path(&dir))
        .query_row(
            "SELECT COUNT(*) FROM sessions WHERE state = 'Completed' AND deadline_ms IS NULL",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(completed as usize, SESSIONS);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newer_schema_is_refused_and_left_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    {
        let db = raw(&path);
        db.execute_batch("CREATE TABLE sessions (x); PRAGMA user_version = 99;")
            .unwrap();
    }
    let err = SqliteStore::open(&path).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("schema version 99") && msg.contains("version 1") && msg.contains("dms1.db"),
        "{msg}"
    );
    let db = raw(&path);
    let version: i64 = db
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    let mode: String = db
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!((version, mode.as_str()), (99, "delete"), "not modified");

    // Not a database at all.
    let junk = dir.path().join("junk.db");
    std::fs::write(&junk, vec![b'x'; 4096]).unwrap();
    let msg = SqliteStore::open(&junk).unwrap_err().to_string();
    assert!(
        msg.contains("junk.db") && msg.contains("not a database"),
        "{msg}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_row_is_an_error_naming_the_session() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    let store = SqliteStore::open(&path).unwrap();
    for id in ["good-1", "bad-json", "good-2", "wrong-id"] {
        store
            .save(&sample(id, DEVICE_ID, State::AwaitingStart, None))
            .await
            .unwrap();
    }
    let db = raw(&path);
    db.execute(
        "UPDATE sessions SET record = '{\"session_id\": \"bad-json\", trunc' WHERE session_id = 'bad-json'",
        [],
    )
    .unwrap();
    let foreign =
        serde_json::to_string(&sample("someone-else", DEVICE_ID, State::Completed, None)).unwrap();
    db.execute(
        "UPDATE sessions SET record = ?1 WHERE session_id = 'wrong-id'",
        [foreign],
    )
    .unwrap();

    let msg = store.list().await.unwrap_err().to_string();
    assert!(
        msg.contains("`bad-json`") && msg.contains("corrupt"),
        "{msg}"
    );
    let msg = store.load("bad-json").await.unwrap_err().to_string();
    assert!(
        msg.contains("`bad-json`") && msg.contains("does not parse"),
        "{msg}"
    );
    let msg = store.load("wrong-id").await.unwrap_err().to_string();
    assert!(
        msg.contains("`wrong-id`") && msg.contains("`someone-else`"),
        "{msg}"
    );
    // The good rows still load, and removing the bad ones repairs the listing.
    assert!(store.load("good-1").await.unwrap().is_some());
    store.remove("bad-json").await.unwrap();
    let msg = store.list().await.unwrap_err().to_string();
    assert!(msg.contains("`wrong-id`"), "{msg}");
    store.remove("wrong-id").await.unwrap();
    let ids: Vec<String> = store
        .list()
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.session_id)
        .collect();
    assert_eq!(ids, ["good-1", "good-2"]);

    // A DMS over the corrupt store reports the store error instead of skipping the row
    // once the row is due (the deadline scan reads due rows only).
    db.execute(
        "UPDATE sessions SET record = 'null', deadline_ms = 0 WHERE session_id = 'good-2'",
        [],
    )
    .unwrap();
    let world = World::new();
    let dms1 = world.dms1(Arc::new(store));
    let err = dms1.expire_due().await.unwrap_err().to_string();
    assert!(err.contains("`good-2`"), "{err}");
    world.network.clear();
}
