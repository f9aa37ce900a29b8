//! Fault injection at every protocol step, under load, through the [`Server`] facade on a
//! custom transport ([`Wire::Custom`]) with durable SQLite stores.
//!
//! 1. **A crash at every step.** For each method (1–4), each message of its flow and each
//!    side of that message (the server sending it, the server receiving it), a batch of
//!    [`BATCH`] concurrent delegations runs until every one of them has reached that
//!    message, which the transport holds. Then the sending or the receiving server is
//!    killed and started again on the same SQLite file, with the message's fate differing
//!    per delegation of the batch (see [`Fate`]): lost with the crash, sent just before
//!    it, processed just before it, or the receiver dying right after its first or second
//!    side effect (a device write by DMS-1, the DM session opened by DMS-2) while
//!    processing it.
//! 2. **Duplicated, replayed and reordered messages.** A transport that delivers every
//!    message twice, replays older messages of the same session and other sessions'
//!    NOTIFs while delegations run, swaps consecutive messages of a session when it can,
//!    jitters delivery, and at the end replays every message of the run once more.
//!
//! Each time: every delegation ends in a terminal state on both servers within the
//! (short) deadlines, both servers agree, and the device is byte for byte as before after
//! a failure, or exactly as after a fault-free completion (DMS-2's account installed,
//! markers and triggers gone) after a completion.
//!
//! **How a crash is simulated.** Dropping a [`Server`] stops its watcher and transport,
//! but tasks already inside its engine would run on. So every incarnation of a server
//! gets its own [`Fence`]: the store, the host and the transport it was given refuse all
//! work once the fence is down. Killing a server takes the fence down and drops the
//! `Server`; from then on its leftover tasks can neither write its SQLite file, nor touch
//! a device, nor send a message, as if the process had died at its next `await`. What it
//! had saved (SQLite, `synchronous=FULL`) is what the next incarnation starts from.
//!
//! **Determinism.** Every fault decision is a function of [`SEED`] and of the message's
//! identity (session, sender, sequence number), or of the delegation's place in its batch,
//! never of arrival order; a crash is triggered by the transport when the step is
//! reached, never by a timer.
//!
//! **Found here, fixed in the engine** (protocol.md §5.6): a crash right after DMS-1
//! deleted its own account, the commit point of a Full delegation, used to leave the
//! delegation in force on the device while DMS-1 ended `RollbackFailed` and DMS-2
//! `RolledBack`. The test
//! `bug_a_crash_right_after_the_full_commit_point_leaves_the_delegation_half_done` keeps
//! it fixed with one delegation; the matrix checks it in every cell.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use dmdelegate::ops::status;
use dmdelegate::sim::{provision_sample_tree, SimBootstrapServer, SimDevice, SimHost, Testbed};
use dmdelegate::{
    AclCommand, ClientCommand, CommandOutput, DelegationInfo, DelegationOffer, DelegationType,
    DeviceError, DeviceInfo, DmAcc, Error, Event, EventKind, Host, HostError, Message, MessageKind,
    Method, PolicyDecision, Reason, ReasonCode, Receipt, Role, SessionInfo, SessionRecord,
    SessionStore, State, StoreError, Timeouts, Transport, TransportError,
};
use dmdelegate_net::sqlite::SqliteStore;
use dmdelegate_net::{Server, ServerOptions, StartDelegation, Wire};
use tokio::sync::{watch, Semaphore};

const DMS1: &str = Testbed::DMS1;
const DMS2: &str = Testbed::DMS2;
const BOOTSTRAP_URL: &str = Testbed::BOOTSTRAP_URL;

/// The seed of every fault decision.
const SEED: u64 = 0x5EED_F417_5733_0001;
/// Concurrent delegations per batch of the crash matrix.
const BATCH: usize = 8;
/// Batches of the crash matrix running at once (two cores, debug build).
const PARALLEL_BATCHES: usize = 8;
/// How long anything may take before the test calls it stuck.
const LIMIT: Duration = Duration::from_secs(30);
/// How often the servers look for deadlines.
const WATCH: Duration = Duration::from_millis(50);

/// Short deadlines for the crash matrix: a lost message costs one or two seconds.
fn crash_timeouts() -> Timeouts {
    let ms = Duration::from_millis;
    Timeouts {
        response: ms(1500),
        preparation: ms(1500),
        confirm: ms(2000),
        bootstrap_confirm: ms(2000),
        client_session: ms(1500),
    }
}

/// Deadlines no fault-free exchange comes near, for the duplicate/replay/reorder runs
/// (whose only expected failure is the detected reordering).
fn calm_timeouts() -> Timeouts {
    let s = Duration::from_secs;
    Timeouts {
        response: s(10),
        preparation: s(10),
        confirm: s(10),
        bootstrap_confirm: s(10),
        client_session: s(10),
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The `&'static` name of one of the two servers.
fn server_name(id: &str) -> &'static str {
    match id {
        DMS1 => DMS1,
        DMS2 => DMS2,
        other => panic!("unknown server `{other}`"),
    }
}

fn peer_of(id: &str) -> &'static str {
    if id == DMS1 {
        DMS2
    } else {
        DMS1
    }
}

/// The server that sends DELEGATION_NOTIF in `method`.
fn initiator(method: Method) -> &'static str {
    match method.initiator() {
        Role::Delegating => DMS1,
        Role::Delegated => DMS2,
    }
}

/// The server that sends `kind` in a fault-free run of `method`.
fn sender_of(method: Method, kind: MessageKind) -> &'static str {
    match kind {
        MessageKind::Notif => initiator(method),
        MessageKind::Res => peer_of(initiator(method)),
        MessageKind::Start | MessageKind::BootstrapUrl | MessageKind::Confirm => DMS2,
        MessageKind::Prepared | MessageKind::BootstrapUrlRequest => DMS1,
        MessageKind::Failure => panic!("FAILURE is not a step of the flow"),
    }
}

fn device_info(i: usize) -> DeviceInfo {
    DeviceInfo {
        device_id: format!("IMEI:{i:015}"),
        manufacturer: "Acme".into(),
        model: "Fault".into(),
    }
}

/// A SQLite directory; in memory when the system has one (fsync is not under test here).
fn scratch() -> tempfile::TempDir {
    match Path::new("/dev/shm").is_dir() {
        true => tempfile::tempdir_in("/dev/shm").unwrap_or_else(|_| tempfile::tempdir().unwrap()),
        false => tempfile::tempdir().unwrap(),
    }
}

// ---------------------------------------------------------------------------------------
// Seeded decisions
// ---------------------------------------------------------------------------------------

fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// The roll of decision `what` for the message (`session`, `from`, `seq`): the same in
/// every run, whatever the interleaving.
fn roll(what: &str, session: &str, from: &str, seq: u32) -> u64 {
    let mut h = mix(SEED);
    for b in what.bytes().chain([0]).chain(session.bytes()).chain([0]) {
        h = mix(h ^ u64::from(b));
    }
    for b in from.bytes() {
        h = mix(h ^ u64::from(b));
    }
    mix(h ^ u64::from(seq))
}

// ---------------------------------------------------------------------------------------
// Crash fences: the store, host and transport of one incarnation of a server
// ---------------------------------------------------------------------------------------

/// Up while one incarnation of a server lives; down once it is killed.
struct Fence(watch::Sender<bool>);

impl Fence {
    fn new() -> Arc<Self> {
        Arc::new(Fence(watch::Sender::new(false)))
    }

    fn is_down(&self) -> bool {
        *self.0.borrow()
    }

    fn kill(&self) {
        self.0.send_replace(true);
    }

    async fn down(&self) {
        let _ = self.0.subscribe().wait_for(|down| *down).await;
    }
}

/// The incarnation's SQLite store, dead with it.
struct FencedStore {
    inner: SqliteStore,
    fence: Arc<Fence>,
}

impl FencedStore {
    fn alive(&self) -> Result<(), StoreError> {
        match self.fence.is_down() {
            true => Err(StoreError("the server crashed".into())),
            false => Ok(()),
        }
    }
}

#[async_trait]
impl SessionStore for FencedStore {
    async fn save(&self, record: &SessionRecord) -> Result<(), StoreError> {
        self.alive()?;
        self.inner.save(record).await?;
        self.alive()
    }

    async fn load(&self, session_id: &str) -> Result<Option<SessionRecord>, StoreError> {
        self.alive()?;
        let r = self.inner.load(session_id).await?;
        self.alive().map(|()| r)
    }

    async fn list(&self) -> Result<Vec<SessionRecord>, StoreError> {
        self.alive()?;
        let r = self.inner.list().await?;
        self.alive().map(|()| r)
    }

    async fn remove(&self, session_id: &str) -> Result<(), StoreError> {
        self.alive()?;
        self.inner.remove(session_id).await?;
        self.alive()
    }

    async fn list_active(&self) -> Result<Vec<SessionRecord>, StoreError> {
        self.alive()?;
        let r = self.inner.list_active().await?;
        self.alive().map(|()| r)
    }

    async fn list_due(&self, now: dmdelegate::Timestamp) -> Result<Vec<SessionRecord>, StoreError> {
        self.alive()?;
        let r = self.inner.list_due(now).await?;
        self.alive().map(|()| r)
    }

    async fn list_failed_since(
        &self,
        since: dmdelegate::Timestamp,
    ) -> Result<Vec<SessionRecord>, StoreError> {
        self.alive()?;
        let r = self.inner.list_failed_since(since).await?;
        self.alive().map(|()| r)
    }

    async fn list_active_for_device(
        &self,
        device_id: &str,
    ) -> Result<Vec<SessionRecord>, StoreError> {
        self.alive()?;
        let r = self.inner.list_active_for_device(device_id).await?;
        self.alive().map(|()| r)
    }
}

/// The incarnation's host: the shared [`SimHost`] (the DM Server proper and its devices
/// outlive a crash of the delegation server), refusing all work once the fence is down.
/// It also counts side effects per device, so that the server can die right after one.
struct CrashHost {
    inner: Arc<SimHost>,
    fence: Arc<Fence>,
    net: Weak<Net>,
    me: &'static str,
    epoch: u32,
}

impl CrashHost {
    fn crashed() -> DeviceError {
        DeviceError::new(status::UNREACHABLE, "the server crashed")
    }

    /// After a side effect on `device`: true when the server dies right here (it waits
    /// until it is killed, and its caller never learns that the effect happened).
    async fn dies_after_side_effect(&self, device: &str) -> bool {
        let Some(net) = self.net.upgrade() else {
            return false;
        };
        if net.side_effect(self.me, self.epoch, device) {
            self.fence.down().await;
            return true;
        }
        false
    }
}

#[async_trait]
impl Host for CrashHost {
    async fn accept_delegation(&self, offer: &DelegationOffer) -> PolicyDecision {
        if self.fence.is_down() {
            return PolicyDecision::Reject(Reason::new(ReasonCode::InternalError, "crashed"));
        }
        self.inner.accept_delegation(offer).await
    }

    async fn execute(
        &self,
        device: &DeviceInfo,
        command: &ClientCommand,
    ) -> Result<CommandOutput, DeviceError> {
        if self.fence.is_down() {
            return Err(Self::crashed());
        }
        let out = self.inner.execute(device, command).await;
        let write = matches!(
            command,
            ClientCommand::Add { .. }
                | ClientCommand::Delete { .. }
                | ClientCommand::ReplaceAcl { .. }
        );
        if write && out.is_ok() && self.dies_after_side_effect(&device.device_id).await {
            return Err(Self::crashed());
        }
        out
    }

    async fn open_dm_session(&self, session: &SessionInfo) -> Result<(), HostError> {
        let crashed = || HostError::new(ReasonCode::InternalError, "the server crashed");
        if self.fence.is_down() {
            return Err(crashed());
        }
        let out = self.inner.open_dm_session(session).await;
        if out.is_ok()
            && self
                .dies_after_side_effect(&session.info.device.device_id)
                .await
        {
            return Err(crashed());
        }
        out
    }

    async fn dm_account(&self, device: &DeviceInfo) -> Result<DmAcc, HostError> {
        if self.fence.is_down() {
            return Err(HostError::new(ReasonCode::InternalError, "crashed"));
        }
        self.inner.dm_account(device).await
    }

    async fn bootstrap_server_url(&self, device: &DeviceInfo) -> Result<String, HostError> {
        if self.fence.is_down() {
            return Err(HostError::new(ReasonCode::InternalError, "crashed"));
        }
        self.inner.bootstrap_server_url(device).await
    }

    fn on_event(&self, event: &Event) {
        if !self.fence.is_down() {
            self.inner.on_event(event)
        }
    }
}

/// The incarnation's transport: hands messages to the [`Net`].
struct Link {
    net: Weak<Net>,
    from: &'static str,
    epoch: u32,
    fence: Arc<Fence>,
}

#[async_trait]
impl Transport for Link {
    async fn send(&self, message: &Message) -> Result<(), TransportError> {
        let net = match (self.fence.is_down(), self.net.upgrade()) {
            (false, Some(net)) => net,
            _ => {
                return Err(TransportError {
                    message: "the server crashed".into(),
                })
            }
        };
        net.accept(self.from, self.epoch, message);
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------
// The network between the two servers
// ---------------------------------------------------------------------------------------

/// Why a message is on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Origin {
    /// Sent by a server.
    Original,
    /// The second delivery of every message.
    Duplicate,
    /// An older message delivered again while delegations run.
    Replay,
    /// Every message delivered once more after the run.
    Storm,
}

#[derive(Debug, Clone)]
struct Envelope {
    from: &'static str,
    to: &'static str,
    session: String,
    seq: u32,
    kind: MessageKind,
    /// The sender's incarnation.
    epoch: u32,
    xml: Arc<[u8]>,
    copy: Origin,
}

/// One session's messages from one server to the other: delivered in order.
type LaneKey = (&'static str, &'static str, String);

impl Envelope {
    fn lane(&self) -> LaneKey {
        (self.from, self.to, self.session.clone())
    }

    fn copied(&self, copy: Origin) -> Envelope {
        Envelope {
            copy,
            ..self.clone()
        }
    }
}

#[derive(Default)]
struct Lane {
    queue: VecDeque<Envelope>,
    busy: bool,
}

/// What happens to a held message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Decision {
    /// Delivered (to whichever incarnation of the receiver is up).
    Deliver,
    /// Lost at the receiver.
    Drop,
    /// Lost with the sender's outbox: it and whatever the same incarnation queued behind it.
    DropWithRest,
}

/// What the transport tells the test, and the test tells the transport.
#[derive(Debug, Clone, Default)]
struct Board {
    /// Sessions whose message of the gated step is held.
    held: BTreeSet<String>,
    decisions: HashMap<String, Decision>,
    /// Sessions whose held message has been handled (processed by the receiver, or lost).
    handled: BTreeSet<String>,
    /// Devices whose armed side effect happened (the server now waits to be killed).
    reached: BTreeSet<String>,
    /// Held lanes go on once the gate is open.
    open: bool,
    /// Messages sent (originals) by server and kind.
    sent: HashMap<(&'static str, MessageKind), usize>,
}

/// How the network misbehaves besides the gate.
#[derive(Debug, Clone, Copy, Default)]
struct Mischief {
    duplicate: bool,
    replay: bool,
    reorder: bool,
}

/// One delivery and the receiver's answer.
#[derive(Debug, Clone)]
struct Delivery {
    session: String,
    from: &'static str,
    kind: MessageKind,
    seq: u32,
    copy: Origin,
    outcome: Result<Receipt, String>,
}

/// A server incarnation that dies after a side effect on a device: (server, incarnation,
/// device id).
type ArmKey = (&'static str, u32, String);

/// (the side effect to die after, side effects so far).
type Arm = (usize, usize);

struct Incarnation {
    server: Server,
    fence: Arc<Fence>,
}

struct ServerSide {
    host: Arc<SimHost>,
    store: PathBuf,
}

/// Two servers, their devices' hosts, and the wire between them.
struct Net {
    me: Weak<Net>,
    timeouts: Timeouts,
    sides: HashMap<&'static str, ServerSide>,
    up: Mutex<HashMap<&'static str, Arc<Incarnation>>>,
    epochs: Mutex<HashMap<&'static str, u32>>,
    /// Bumped whenever a server goes down or comes up.
    generation: watch::Sender<u64>,
    lanes: Mutex<HashMap<LaneKey, Lane>>,
    /// Messages queued, held or being delivered.
    inflight: watch::Sender<usize>,
    /// The step whose messages are held: (kind, sender).
    gate: Option<(MessageKind, &'static str)>,
    board: watch::Sender<Board>,
    /// Incarnations whose outgoing messages never leave (they crash before they could).
    muted: Mutex<HashSet<(&'static str, u32)>>,
    armed: Mutex<HashMap<ArmKey, Arm>>,
    mischief: Mischief,
    paused: watch::Sender<bool>,
    /// A message waiting for the next one of its lane, to be delivered after it.
    aside: Mutex<HashMap<LaneKey, Envelope>>,
    /// Every original that went on the wire, in order.
    history: Mutex<Vec<Envelope>>,
    deliveries: Mutex<Vec<Delivery>>,
    /// Sessions two of whose messages were swapped.
    swapped: Mutex<BTreeSet<String>>,
}

impl Net {
    fn new(
        dir: &Path,
        name: &str,
        timeouts: Timeouts,
        gate: Option<(MessageKind, &'static str)>,
        mischief: Mischief,
    ) -> Arc<Net> {
        let host1 = Arc::new(SimHost::new(DMS1));
        let host2 = Arc::new(SimHost::new(DMS2));
        host2.set_account(DmAcc::simple(
            DMS2,
            "https://dms2.enterprise.example/dm",
            "client-secret-2",
            "server-secret-2",
        ));
        host2.set_bootstrap_url(BOOTSTRAP_URL);
        let mut sides = HashMap::new();
        for (id, host) in [(DMS1, host1), (DMS2, host2)] {
            let store = dir.join(format!("{name}-{id}.sqlite"));
            sides.insert(id, ServerSide { host, store });
        }
        Arc::new_cyclic(|me| Net {
            me: me.clone(),
            timeouts,
            sides,
            up: Mutex::default(),
            epochs: Mutex::default(),
            generation: watch::Sender::new(0),
            lanes: Mutex::default(),
            inflight: watch::Sender::new(0),
            gate,
            board: watch::Sender::new(Board::default()),
            muted: Mutex::default(),
            armed: Mutex::default(),
            mischief,
            paused: watch::Sender::new(false),
            aside: Mutex::default(),
            history: Mutex::default(),
            deliveries: Mutex::default(),
            swapped: Mutex::default(),
        })
    }

    fn arc(&self) -> Arc<Net> {
        self.me.upgrade().expect("the net is alive")
    }

    fn host(&self, id: &str) -> Arc<SimHost> {
        self.sides[id].host.clone()
    }

    /// Starts (or starts again) `id` on its SQLite file.
    async fn start(&self, id: &'static str) {
        let epoch = {
            let mut epochs = lock(&self.epochs);
            let e = epochs.entry(id).or_insert(0);
            *e += 1;
            *e
        };
        let side = &self.sides[id];
        let path = side.store.clone();
        let sqlite = tokio::task::spawn_blocking(move || SqliteStore::open(path))
            .await
            .expect("open task")
            .expect("the store opens");
        let fence = Fence::new();
        let link = Link {
            net: self.me.clone(),
            from: id,
            epoch,
            fence: fence.clone(),
        };
        let mut options = ServerOptions::new(id, Wire::Custom(Arc::new(link)));
        options.timeouts = self.timeouts;
        options.watch_period = WATCH;
        options.store = Some(Arc::new(FencedStore {
            inner: sqlite,
            fence: fence.clone(),
        }));
        let host = Arc::new(CrashHost {
            inner: side.host.clone(),
            fence: fence.clone(),
            net: self.me.clone(),
            me: id,
            epoch,
        });
        let server = Server::start(options, host)
            .await
            .expect("the server starts");
        lock(&self.up).insert(id, Arc::new(Incarnation { server, fence }));
        self.generation.send_modify(|g| *g += 1);
    }

    /// Kills `id`: from now on its leftover tasks can change nothing.
    fn crash(&self, id: &'static str) {
        let gone = lock(&self.up).remove(id).expect("the server is up");
        gone.fence.kill();
        self.generation.send_modify(|g| *g += 1);
        drop(gone);
    }

    /// Stops both servers for good.
    fn stop(&self) {
        let all: Vec<_> = lock(&self.up).drain().collect();
        for (_, inc) in all {
            inc.fence.kill();
        }
        self.generation.send_modify(|g| *g += 1);
    }

    fn node(&self, id: &str) -> Option<Arc<Incarnation>> {
        lock(&self.up).get(id).cloned()
    }

    fn server(&self, id: &str) -> Arc<Incarnation> {
        self.node(id).expect("the server is up")
    }

    async fn wait_up(&self, id: &str) -> Arc<Incarnation> {
        let mut changes = self.generation.subscribe();
        loop {
            if let Some(n) = self.node(id) {
                return n;
            }
            let _ = changes.changed().await;
        }
    }

    /// The outgoing messages of `id`'s current incarnation are lost from now on.
    fn mute(&self, id: &'static str) {
        let epoch = lock(&self.epochs)[id];
        lock(&self.muted).insert((id, epoch));
    }

    /// The current incarnation of `id` dies right after its `after`-th side effect on
    /// `device` from now on.
    fn arm(&self, id: &'static str, device: &str, after: usize) {
        let epoch = lock(&self.epochs)[id];
        lock(&self.armed).insert((id, epoch, device.to_string()), (after, 0));
    }

    fn side_effect(&self, id: &'static str, epoch: u32, device: &str) -> bool {
        let mut armed = lock(&self.armed);
        let Some((after, count)) = armed.get_mut(&(id, epoch, device.to_string())) else {
            return false;
        };
        *count += 1;
        if *count != *after {
            return false;
        }
        drop(armed);
        self.board.send_modify(|b| {
            b.reached.insert(device.to_string());
        });
        true
    }

    fn decide(&self, session: &str, decision: Decision) {
        self.board.send_modify(|b| {
            b.decisions.insert(session.to_string(), decision);
        });
    }

    fn open_gate(&self) {
        self.board.send_modify(|b| b.open = true);
    }

    async fn board_until(&self, what: &str, done: impl FnMut(&Board) -> bool) -> Board {
        let mut rx = self.board.subscribe();
        let reached = match tokio::time::timeout(LIMIT, rx.wait_for(done)).await {
            Ok(Ok(b)) => Some(b.clone()),
            _ => None,
        };
        reached.unwrap_or_else(|| panic!("{what}: not reached in {LIMIT:?}: {:?}", *rx.borrow()))
    }

    /// Waits until no message is queued, held or being delivered.
    async fn idle(&self) -> Result<(), String> {
        let mut rx = self.inflight.subscribe();
        let quiet = tokio::time::timeout(LIMIT, rx.wait_for(|n| *n == 0))
            .await
            .is_ok();
        match quiet {
            true => Ok(()),
            false => Err(format!(
                "the network never went quiet: {} messages in flight",
                *rx.borrow()
            )),
        }
    }

    /// A server handed `message` to the wire.
    fn accept(&self, from: &'static str, epoch: u32, message: &Message) {
        let h = &message.header;
        assert_eq!(h.sender, from);
        let env = Envelope {
            from,
            to: server_name(&h.recipient),
            session: h.session_id.clone(),
            seq: h.seq,
            kind: message.body.kind(),
            epoch,
            xml: Arc::from(message.to_xml().into_bytes()),
            copy: Origin::Original,
        };
        self.board.send_modify(|b| {
            *b.sent.entry((from, env.kind)).or_default() += 1;
        });
        if lock(&self.muted).contains(&(from, epoch)) {
            return;
        }
        if self.mischief.reorder {
            let key = env.lane();
            let mut aside = lock(&self.aside);
            if let Some(first) = aside.remove(&key) {
                // The held one goes after this one: the two are swapped.
                drop(aside);
                lock(&self.swapped).insert(env.session.clone());
                self.release(env);
                self.release(first);
                self.inflight.send_modify(|n| *n -= 1);
                return;
            }
            let candidate = env.kind != MessageKind::Notif;
            if candidate && roll("swap", &env.session, env.from, env.seq).is_multiple_of(3) {
                aside.insert(key.clone(), env.clone());
                drop(aside);
                self.inflight.send_modify(|n| *n += 1);
                // Nothing followed in a moment: it goes alone, late.
                let net = self.arc();
                tokio::spawn(async move {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    let alone = {
                        let mut aside = lock(&net.aside);
                        match aside.get(&key) {
                            Some(e) if e.seq == env.seq => aside.remove(&key),
                            _ => None,
                        }
                    };
                    if let Some(e) = alone {
                        net.release(e);
                        net.inflight.send_modify(|n| *n -= 1);
                    }
                });
                return;
            }
        }
        self.release(env);
    }

    /// An original goes on the wire, with its duplicate and the replays it triggers.
    fn release(&self, env: Envelope) {
        let earlier: Vec<Envelope> = lock(&self.history).clone();
        lock(&self.history).push(env.clone());
        self.enqueue(env.clone());
        if self.mischief.duplicate {
            self.enqueue(env.copied(Origin::Duplicate));
        }
        if self.mischief.replay && env.kind != MessageKind::Notif {
            let r = roll("replay", &env.session, env.from, env.seq);
            // An older message of the same session, either direction.
            let same: Vec<&Envelope> = earlier
                .iter()
                .filter(|e| e.session == env.session)
                .collect();
            if r.is_multiple_of(2) && !same.is_empty() {
                let pick = same[(r / 2) as usize % same.len()];
                self.enqueue(pick.copied(Origin::Replay));
            }
            // Another session's NOTIF (all of them are on the wire before anything else).
            let mut others: Vec<&Envelope> = earlier
                .iter()
                .filter(|e| e.kind == MessageKind::Notif && e.session != env.session)
                .collect();
            others.sort_by(|a, b| a.session.cmp(&b.session));
            if r.is_multiple_of(3) && !others.is_empty() {
                let pick = others[(r / 3) as usize % others.len()];
                self.enqueue(pick.copied(Origin::Replay));
            }
        }
    }

    fn enqueue(&self, env: Envelope) {
        self.inflight.send_modify(|n| *n += 1);
        let key = env.lane();
        let mut lanes = lock(&self.lanes);
        let lane = lanes.entry(key.clone()).or_default();
        lane.queue.push_back(env);
        if !lane.busy {
            lane.busy = true;
            let net = self.arc();
            tokio::spawn(async move { net.drain(key).await });
        }
    }

    /// Delivers one lane's messages, one at a time, in order.
    async fn drain(self: Arc<Self>, key: LaneKey) {
        loop {
            let _ = self.paused.subscribe().wait_for(|p| !*p).await;
            let env = {
                let mut lanes = lock(&self.lanes);
                let lane = lanes.get_mut(&key).expect("lane");
                match lane.queue.pop_front() {
                    Some(e) => e,
                    None => {
                        lane.busy = false;
                        return;
                    }
                }
            };
            self.process(&key, env).await;
            self.inflight.send_modify(|n| *n -= 1);
        }
    }

    fn gated(&self, env: &Envelope) -> bool {
        self.gate == Some((env.kind, env.from))
            && env.copy == Origin::Original
            && !self.board.borrow().held.contains(&env.session)
    }

    async fn process(&self, key: &LaneKey, env: Envelope) {
        if self.gated(&env) {
            let session = env.session.clone();
            self.board.send_modify(|b| {
                b.held.insert(session.clone());
            });
            let board = self
                .board_until("a decision", |b| b.decisions.contains_key(&session))
                .await;
            match board.decisions[&session] {
                Decision::Deliver => self.deliver(&env).await,
                Decision::Drop => {}
                Decision::DropWithRest => {
                    let mut lanes = lock(&self.lanes);
                    let lane = lanes.get_mut(key).expect("lane");
                    let before = lane.queue.len();
                    lane.queue.retain(|e| e.epoch != env.epoch);
                    let lost = before - lane.queue.len();
                    drop(lanes);
                    self.inflight.send_modify(|n| *n -= lost);
                }
            }
            self.board.send_modify(|b| {
                b.handled.insert(session.clone());
            });
            self.board_until("the gate opening", |b| b.open).await;
            return;
        }
        if self.mischief.reorder {
            // Jitter: lanes overtake each other differently, the same way every run.
            let ms = roll("jitter", &env.session, env.from, env.seq) % 8;
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
        self.deliver(&env).await;
    }

    async fn deliver(&self, env: &Envelope) {
        let node = self.wait_up(env.to).await;
        let outcome = node
            .server
            .receive(&env.xml, Some(env.from))
            .await
            .map_err(|e| e.to_string());
        lock(&self.deliveries).push(Delivery {
            session: env.session.clone(),
            from: env.from,
            kind: env.kind,
            seq: env.seq,
            copy: env.copy,
            outcome,
        });
    }

    /// Every original of the run delivered once more, in a seeded order.
    fn storm(&self) {
        let mut all = lock(&self.history).clone();
        all.sort_by_key(|e| roll("storm", &e.session, e.from, e.seq));
        for e in all {
            self.enqueue(e.copied(Origin::Storm));
        }
    }
}

/// The device of a Method 3/4 delegation: on the trigger it bootstraps from DMS-2's
/// Bootstrap Server and, like a real client, keeps trying to open its first DM session
/// with DMS-2 until whichever incarnation is up answers.
fn wire_bootstrap(net: &Arc<Net>, device: &Arc<SimDevice>, bootstrap: &Arc<SimBootstrapServer>) {
    let (net, dev, bs) = (
        Arc::downgrade(net),
        Arc::downgrade(device),
        bootstrap.clone(),
    );
    device.on_bootstrap_trigger(Arc::new(move |trigger| {
        let (net, dev, bs) = (net.clone(), dev.clone(), bs.clone());
        tokio::spawn(async move {
            let (Some(net), Some(dev)) = (net.upgrade(), dev.upgrade()) else {
                return;
            };
            let id = dev.info().device_id;
            let installed = bs
                .bootstrap(&trigger.url, &id)
                .and_then(|tree| dev.install_bootstrap(&tree, Some(&trigger.delegator)));
            if installed.is_err() {
                return;
            }
            for _ in 0..300 {
                if let Some(dms2) = net.node(DMS2) {
                    if dev.open_session(&trigger.server_id).is_ok()
                        && dms2.server.client_connected(&id).await.is_ok()
                    {
                        return;
                    }
                }
                // The client's retry interval.
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        });
    }));
}

// ---------------------------------------------------------------------------------------
// Batches of delegations and what must hold at their end
// ---------------------------------------------------------------------------------------

/// One delegation of a batch.
#[derive(Debug, Clone)]
struct Planned {
    session: String,
    method: Method,
    delegation_type: DelegationType,
    device: Arc<SimDevice>,
    before: String,
}

/// Both servers' view of one session at the end; `None`: the server never heard of it.
#[derive(Debug, Clone)]
struct Seen {
    one: Option<SessionInfo>,
    two: Option<SessionInfo>,
}

impl Seen {
    fn states(&self) -> (Option<State>, Option<State>) {
        (
            self.one.as_ref().map(|s| s.state),
            self.two.as_ref().map(|s| s.state),
        )
    }

    fn completed(&self) -> bool {
        self.states() == (Some(State::Completed), Some(State::Completed))
    }
}

/// A fresh pair of servers with `plan`'s devices provisioned for DMS-1.
async fn batch(
    dir: &Path,
    name: &str,
    methods: &[(Method, DelegationType)],
    timeouts: Timeouts,
    gate: Option<(MessageKind, &'static str)>,
    mischief: Mischief,
) -> (Arc<Net>, Vec<Planned>) {
    let net = Net::new(dir, name, timeouts, gate, mischief);
    let bootstrap = Arc::new(SimBootstrapServer::new());
    bootstrap.register(
        BOOTSTRAP_URL,
        DmAcc::simple(
            DMS2,
            "https://dms2.enterprise.example/dm",
            "client-secret-2",
            "server-secret-2",
        ),
    );
    let acc1 = DmAcc::simple(
        DMS1,
        "https://dms1.operator.example/dm",
        "client-secret-1",
        "server-secret-1",
    );
    let plan = methods
        .iter()
        .enumerate()
        .map(|(i, &(method, delegation_type))| {
            let device = Arc::new(SimDevice::new(device_info(i)));
            provision_sample_tree(&device, &acc1);
            net.host(DMS1).add_device(device.clone());
            net.host(DMS2).add_device(device.clone());
            wire_bootstrap(&net, &device, &bootstrap);
            Planned {
                session: format!("{name}-{i}"),
                method,
                delegation_type,
                before: device.dump(),
                device,
            }
        })
        .collect();
    net.start(DMS1).await;
    net.start(DMS2).await;
    (net, plan)
}

async fn start_all(net: &Net, plan: &[Planned]) {
    for p in plan {
        let from = initiator(p.method);
        net.server(from)
            .server
            .start_delegation(StartDelegation {
                peer: peer_of(from).into(),
                method: p.method,
                delegation_type: p.delegation_type,
                info: DelegationInfo {
                    device: p.device.info(),
                    subtrees: Testbed::subtrees(p.delegation_type),
                },
                expires: None,
                session_id: Some(p.session.clone()),
            })
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", p.session));
    }
}

async fn snapshot(net: &Net, plan: &[Planned]) -> Vec<Seen> {
    let mut out = Vec::new();
    for p in plan {
        let view = |id: &'static str| async move {
            match net.server(id).server.session(&p.session).await {
                Ok(s) => Some(s),
                Err(Error::UnknownSession(_)) => None,
                Err(e) => panic!("{}: reading it at {id}: {e}", p.session),
            }
        };
        out.push(Seen {
            one: view(DMS1).await,
            two: view(DMS2).await,
        });
    }
    out
}

/// Waits for `session` to end at server `id`; an error names where it is stuck.
async fn wait_terminal(net: &Net, id: &str, session: &str) -> Result<(), String> {
    let s = net
        .server(id)
        .server
        .wait(session, LIMIT)
        .await
        .map_err(|e| format!("{session}: {e}"))?;
    if !s.state.is_terminal() {
        return Err(format!(
            "{session} stuck in {:?} at {id} after {LIMIT:?}: {:?}",
            s.state, s.history
        ));
    }
    Ok(())
}

/// Waits until every session has ended on every server that knows it and nothing more
/// moves; returns the final views, or what is stuck.
async fn settle(net: &Net, plan: &[Planned]) -> Result<Vec<Seen>, String> {
    for p in plan {
        let at = initiator(p.method);
        wait_terminal(net, at, &p.session).await?;
    }
    for _ in 0..50 {
        net.idle().await?;
        let first = snapshot(net, plan).await;
        let mut waited = false;
        for (p, seen) in plan.iter().zip(&first) {
            for (id, view) in [(DMS1, &seen.one), (DMS2, &seen.two)] {
                if view.as_ref().is_some_and(|s| !s.state.is_terminal()) {
                    waited = true;
                    wait_terminal(net, id, &p.session).await?;
                }
            }
        }
        if waited {
            continue;
        }
        net.idle().await?;
        let again = snapshot(net, plan).await;
        let states = |v: &[Seen]| v.iter().map(Seen::states).collect::<Vec<_>>();
        if states(&first) == states(&again) {
            return Ok(again);
        }
    }
    Err("the sessions never stopped changing".into())
}

/// The invariants of one finished delegation; violations as text.
fn check(p: &Planned, seen: &Seen, reference: Option<&str>) -> Vec<String> {
    let mut bad = Vec::new();
    let who = format!("{} ({}, {:?})", p.session, p.method, p.delegation_type);
    let describe = |s: &Option<SessionInfo>| match s {
        None => "unknown".to_string(),
        Some(s) => format!(
            "{:?} (reason {:?}) via {:?}",
            s.state,
            s.reason.as_ref().map(|r| (r.code, r.text.clone())),
            s.history.iter().map(|h| h.state).collect::<Vec<_>>()
        ),
    };
    let both = format!(
        "DMS-1 {} / DMS-2 {}",
        describe(&seen.one),
        describe(&seen.two)
    );
    for view in [&seen.one, &seen.two].into_iter().flatten() {
        if !matches!(
            view.state,
            State::Completed | State::RolledBack | State::Rejected
        ) {
            bad.push(format!("{who}: ended {:?}: {both}", view.state));
        }
        if view.pending_operations != 0 {
            bad.push(format!(
                "{who}: {} journal entries left at {}: {both}",
                view.pending_operations, view.role
            ));
        }
    }
    let failed = |s: &Option<SessionInfo>| {
        s.as_ref()
            .is_none_or(|s| matches!(s.state, State::RolledBack | State::Rejected))
    };
    let initiator_knows = match initiator(p.method) {
        DMS1 => seen.one.is_some(),
        _ => seen.two.is_some(),
    };
    if !initiator_knows {
        bad.push(format!("{who}: the initiator lost the session: {both}"));
    }
    let d = &p.device;
    if seen.completed() {
        if d.accounts_of(DMS2).len() != 1 {
            bad.push(format!(
                "{who}: completed, DMS-2 accounts {:?}",
                d.accounts_of(DMS2)
            ));
        }
        let dms1_accounts = d.accounts_of(DMS1).len();
        match p.delegation_type {
            DelegationType::Full if dms1_accounts != 0 => {
                bad.push(format!("{who}: Full completed, DMS-1 account left"))
            }
            DelegationType::Partial if dms1_accounts != 1 => {
                bad.push(format!("{who}: Partial completed, DMS-1 account gone"))
            }
            _ => {}
        }
        if !d.permits(DMS2, AclCommand::Replace, "./Vendor/Apps/Mail/Server") {
            bad.push(format!(
                "{who}: completed, DMS-2 may not Replace in ./Vendor/Apps"
            ));
        }
        if let Some(r) = reference {
            if d.dump() != r {
                bad.push(format!(
                    "{who}: completed, but the device differs from a fault-free completion:\n{}\n---\n{r}",
                    d.dump()
                ));
            }
        }
    } else if failed(&seen.one) && failed(&seen.two) {
        if d.dump() != p.before {
            bad.push(format!(
                "{who}: failed ({both}) but the device changed:\n{}",
                d.dump()
            ));
        }
    } else {
        bad.push(format!(
            "{who}: the servers disagree: {both}; on the device DMS-1 has accounts {:?}, \
             DMS-2 {:?}",
            d.accounts_of(DMS1),
            d.accounts_of(DMS2)
        ));
    }
    bad
}

// ---------------------------------------------------------------------------------------
// 1. A crash of either server at every step
// ---------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Victim {
    Sender,
    Receiver,
}

/// What a delegation's message at the crash step went through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Fate {
    /// Lost: still in the dying sender's outbox (with whatever followed it), or arriving
    /// at a receiver that died on receipt.
    Lost,
    /// Left the sender just before it died.
    Sent,
    /// Processed by the receiver, which died right after (its answers lost).
    Processed,
    /// The receiver died right after its n-th side effect while processing it (a device
    /// write by DMS-1, DMS-2's DM session); no side effect that far: as `Processed`.
    AfterSideEffect(usize),
}

fn fate(victim: Victim, i: usize) -> Fate {
    match (victim, i * 4 / BATCH) {
        (Victim::Sender, 0 | 1) => Fate::Lost,
        (Victim::Sender, _) => Fate::Sent,
        (Victim::Receiver, 0) => Fate::Lost,
        (Victim::Receiver, 1) => Fate::Processed,
        (Victim::Receiver, 2) => Fate::AfterSideEffect(1),
        (Victim::Receiver, _) => Fate::AfterSideEffect(2),
    }
}

fn batch_plan(method: Method) -> Vec<(Method, DelegationType)> {
    (0..BATCH)
        .map(|i| {
            let t = if i % 2 == 0 {
                DelegationType::Partial
            } else {
                DelegationType::Full
            };
            (method, t)
        })
        .collect()
}

fn label(kind: MessageKind) -> &'static str {
    match kind {
        MessageKind::Notif => "notif",
        MessageKind::Res => "res",
        MessageKind::Start => "start",
        MessageKind::Prepared => "prepared",
        MessageKind::Confirm => "confirm",
        MessageKind::Failure => "failure",
        MessageKind::BootstrapUrlRequest => "urlreq",
        MessageKind::BootstrapUrl => "url",
    }
}

/// One batch of the matrix: which step, which server dies, and per delegation its type
/// and what its message at that step goes through.
#[derive(Debug, Clone)]
struct Cell {
    name: String,
    method: Method,
    kind: MessageKind,
    victim: Victim,
    delegations: Vec<(DelegationType, Fate)>,
}

impl Cell {
    fn matrix(method: Method, kind: MessageKind, victim: Victim) -> Cell {
        let name = format!(
            "m{}-{}-{}",
            method.number(),
            label(kind),
            match victim {
                Victim::Sender => "snd",
                Victim::Receiver => "rcv",
            }
        );
        let delegations = batch_plan(method)
            .into_iter()
            .enumerate()
            .map(|(i, (_, t))| (t, fate(victim, i)))
            .collect();
        Cell {
            name,
            method,
            kind,
            victim,
            delegations,
        }
    }
}

#[derive(Debug)]
struct CellReport {
    name: String,
    /// Per fate: (completed, failed).
    outcomes: BTreeMap<Fate, (usize, usize)>,
    /// (delegation, what is wrong); `None`: the batch as a whole.
    violations: Vec<(Option<usize>, String)>,
    elapsed: Duration,
}

/// A batch without faults: every delegation completes; returns the devices' dumps.
async fn reference_batch(dir: &Path, method: Method) -> Vec<String> {
    let name = format!("ref{}", method.number());
    let (net, plan) = batch(
        dir,
        &name,
        &batch_plan(method),
        crash_timeouts(),
        None,
        Mischief::default(),
    )
    .await;
    start_all(&net, &plan).await;
    let seen = settle(&net, &plan).await.unwrap();
    let mut dumps = Vec::new();
    for (p, s) in plan.iter().zip(&seen) {
        assert!(s.completed(), "fault-free {}: {s:?}", p.session);
        let bad = check(p, s, None);
        assert!(bad.is_empty(), "{bad:#?}");
        dumps.push(p.device.dump());
    }
    net.stop();
    dumps
}

/// Runs one cell: the batch's delegations go until each has reached the step, whose
/// message the transport holds; the victim is killed and started again as the fates say;
/// then everything must end cleanly. `reference`: the devices after a fault-free run.
async fn crash_cell(dir: &Path, cell: &Cell, reference: Option<&[String]>) -> CellReport {
    let started = Instant::now();
    let (method, kind, name) = (cell.method, cell.kind, cell.name.as_str());
    let sender = sender_of(method, kind);
    let killed = match cell.victim {
        Victim::Sender => sender,
        Victim::Receiver => peer_of(sender),
    };
    let types: Vec<(Method, DelegationType)> =
        cell.delegations.iter().map(|(t, _)| (method, *t)).collect();
    let fates: Vec<Fate> = cell.delegations.iter().map(|(_, f)| *f).collect();
    let (net, plan) = batch(
        dir,
        name,
        &types,
        crash_timeouts(),
        Some((kind, sender)),
        Mischief::default(),
    )
    .await;
    start_all(&net, &plan).await;

    // Every delegation of the batch reaches the step (and, for RES in Methods 1/3, DMS-2
    // has queued the START that follows it in the same breath).
    let all: BTreeSet<String> = plan.iter().map(|p| p.session.clone()).collect();
    net.board_until(&format!("{name}: every delegation at {kind}"), |b| {
        b.held == all
    })
    .await;
    if kind == MessageKind::Res && method.initiator() == Role::Delegating {
        net.board_until(&format!("{name}: START after RES"), |b| {
            b.sent.get(&(DMS2, MessageKind::Start)).copied() >= Some(plan.len())
        })
        .await;
    }

    match cell.victim {
        Victim::Sender => {
            net.crash(killed);
            for (p, f) in plan.iter().zip(&fates) {
                let d = match f {
                    Fate::Lost => Decision::DropWithRest,
                    _ => Decision::Deliver,
                };
                net.decide(&p.session, d);
            }
            net.start(killed).await;
        }
        Victim::Receiver => {
            // Whatever it answers from now on dies with it.
            net.mute(killed);
            for (p, f) in plan.iter().zip(&fates) {
                if let Fate::AfterSideEffect(n) = f {
                    net.arm(killed, &p.device.info().device_id, *n);
                }
            }
            let mut pending = Vec::new();
            for (p, f) in plan.iter().zip(&fates) {
                if *f != Fate::Lost {
                    net.decide(&p.session, Decision::Deliver);
                    pending.push((p.session.clone(), p.device.info().device_id));
                }
            }
            net.board_until(&format!("{name}: processed up to the crash point"), |b| {
                pending
                    .iter()
                    .all(|(s, d)| b.handled.contains(s) || b.reached.contains(d))
            })
            .await;
            net.crash(killed);
            for (p, f) in plan.iter().zip(&fates) {
                if *f == Fate::Lost {
                    net.decide(&p.session, Decision::Drop);
                }
            }
            net.start(killed).await;
        }
    }
    net.open_gate();
    let resumed = Instant::now();

    let mut report = CellReport {
        name: name.to_string(),
        outcomes: BTreeMap::new(),
        violations: Vec::new(),
        elapsed: Duration::ZERO,
    };
    let settled = settle(&net, &plan).await;
    // Nothing waits longer than its deadline: after the restart, the deadlines of one
    // delegation add up to at most all of them.
    let t = crash_timeouts();
    let bound = t.response
        + t.preparation
        + t.confirm
        + t.bootstrap_confirm
        + t.client_session
        + Duration::from_secs(5);
    if resumed.elapsed() > bound {
        report.violations.push((
            None,
            format!(
                "{name}: took {:?} after the restart, more than the deadlines allow ({bound:?})",
                resumed.elapsed()
            ),
        ));
    }
    match settled {
        Err(stuck) => report.violations.push((None, format!("{name}: {stuck}"))),
        Ok(seen) => {
            let events = net.host(DMS1).events();
            for (i, (p, s)) in plan.iter().zip(&seen).enumerate() {
                let mut wrong = check(p, s, reference.map(|r| r[i].as_str()));
                // What DMS-1 could not undo, when it could not.
                for e in events.iter().filter(|e| e.session_id == p.session) {
                    if let EventKind::RollbackIncomplete { failed, .. } = &e.kind {
                        wrong.push(format!("{}: DMS-1 could not undo {failed:#?}", p.session));
                    }
                }
                report
                    .violations
                    .extend(wrong.into_iter().map(|v| (Some(i), format!("{name}: {v}"))));
                let f = fates[i];
                let e = report.outcomes.entry(f).or_default();
                if s.completed() {
                    e.0 += 1;
                } else {
                    e.1 += 1;
                }
                // What a crash at a message boundary must (not) cost.
                let wrong = match f {
                    Fate::Sent if !s.completed() => format!(
                        "{kind} of {} left just before the crash, yet it did not complete",
                        p.session
                    ),
                    Fate::Lost if s.completed() => {
                        format!("{kind} of {} was lost, yet it completed", p.session)
                    }
                    _ => continue,
                };
                report
                    .violations
                    .push((Some(i), format!("{name}: {wrong}: {s:?}")));
            }
        }
    }
    net.stop();
    report.elapsed = started.elapsed();
    report
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_of_either_server_at_every_step_ends_every_delegation_cleanly() {
    let dir = Arc::new(scratch());
    let started = Instant::now();

    let mut references = HashMap::new();
    for method in Method::ALL {
        references.insert(method, Arc::new(reference_batch(dir.path(), method).await));
    }

    let mut cells = Vec::new();
    for method in Method::ALL {
        for &kind in method.message_flow() {
            for victim in [Victim::Sender, Victim::Receiver] {
                cells.push(Cell::matrix(method, kind, victim));
            }
        }
    }
    let slots = Arc::new(Semaphore::new(PARALLEL_BATCHES));
    let mut tasks = Vec::new();
    for cell in cells.iter().cloned() {
        let (dir, slots) = (dir.clone(), slots.clone());
        let reference = references[&cell.method].clone();
        tasks.push(tokio::spawn(async move {
            let _slot = slots.acquire().await.unwrap();
            crash_cell(dir.path(), &cell, Some(&reference)).await
        }));
    }
    let mut violations = Vec::new();
    let mut totals: BTreeMap<Fate, (usize, usize)> = BTreeMap::new();
    for t in tasks {
        let r = t.await.expect("cell task");
        eprintln!(
            "{:<16} {:>5} ms  {}",
            r.name,
            r.elapsed.as_millis(),
            r.outcomes
                .iter()
                .map(|(f, (c, x))| format!("{f:?}: {c} completed {x} failed"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        for (f, (c, x)) in &r.outcomes {
            let t = totals.entry(*f).or_default();
            t.0 += c;
            t.1 += x;
        }
        violations.extend(r.violations.into_iter().map(|(_, v)| v));
    }
    eprintln!(
        "{} cells × {BATCH} delegations in {:?}; per fate (completed, failed): {totals:?}",
        cells.len(),
        started.elapsed()
    );
    assert!(
        violations.is_empty(),
        "{} violations:\n{}",
        violations.len(),
        violations.join("\n")
    );
    assert_eq!(
        cells.len(),
        44,
        "Methods 1/2: 5 steps, 3/4: 6 steps, 2 sides each"
    );
}

/// BUG (engine, `core/src/engine`): DMS-1 is killed right after its host reported the
/// deletion of DMS-1's own account, the commit point of a Full delegation's finalization
/// (after CONFIRM), before the record moved to `Completed`. The restarted DMS-1 finds the
/// session `Finalizing` past its deadline and rolls it back like any other step: the
/// inverses are refused (DMS-1, no longer holding an account, was scrubbed from every
/// ACL), DMS-1 ends `RollbackFailed`, and its FAILURE moves DMS-2 from `Completed` to
/// `RolledBack`, while the device keeps DMS-2's account and ACLs and has lost DMS-1's:
/// the delegation is in force and neither server says so.
///
/// One delegation, Method 1, Full; fails until the engine finishes (rather than rolls
/// back) a finalization whose commit may have happened. Run with `--ignored`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bug_a_crash_right_after_the_full_commit_point_leaves_the_delegation_half_done() {
    let dir = scratch();
    let cell = Cell {
        name: "commit".into(),
        method: Method::DelegatingInitiates,
        kind: MessageKind::Confirm,
        victim: Victim::Receiver,
        // The 1st side effect of finalizing is the marker's deletion, the 2nd DMS-1's own
        // account's.
        delegations: vec![(DelegationType::Full, Fate::AfterSideEffect(2))],
    };
    let report = crash_cell(dir.path(), &cell, None).await;
    let wrong: Vec<String> = report.violations.into_iter().map(|(_, v)| v).collect();
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

// ---------------------------------------------------------------------------------------
// 2. Duplicated, replayed and reordered messages
// ---------------------------------------------------------------------------------------

/// 32 delegations at once: each method, Partial and Full, four times.
fn mixed_plan() -> Vec<(Method, DelegationType)> {
    (0..32)
        .map(|i| {
            let t = if (i / 4) % 2 == 0 {
                DelegationType::Partial
            } else {
                DelegationType::Full
            };
            (Method::ALL[i % 4], t)
        })
        .collect()
}

struct MischiefRun {
    plan: Vec<Planned>,
    seen: Vec<Seen>,
    dumps: Vec<String>,
    net: Arc<Net>,
}

async fn mischief_run(dir: &Path, name: &str, mischief: Mischief) -> MischiefRun {
    let (net, plan) = batch(dir, name, &mixed_plan(), calm_timeouts(), None, mischief).await;
    // Every NOTIF is on the wire before anything is delivered, so that what is replayed
    // does not depend on timing.
    net.paused.send_replace(true);
    start_all(&net, &plan).await;
    net.paused.send_replace(false);
    let seen = settle(&net, &plan).await.unwrap();
    let dumps = plan.iter().map(|p| p.device.dump()).collect();
    MischiefRun {
        plan,
        seen,
        dumps,
        net,
    }
}

/// Every copy (duplicate, replay, storm) was recognised: a duplicate, or a FAILURE
/// ignored by an ended session.
fn copies_were_ignored(run: &MischiefRun) -> Vec<String> {
    lock(&run.net.deliveries)
        .iter()
        .filter(|d| d.copy != Origin::Original)
        .filter(|d| {
            !matches!(
                (&d.outcome, d.kind),
                (Ok(Receipt::Duplicate), _) | (Ok(Receipt::Accepted), MessageKind::Failure)
            )
        })
        .map(|d| {
            format!(
                "{:?} {} seq {} of {} from {}: {:?}",
                d.copy, d.kind, d.seq, d.session, d.from, d.outcome
            )
        })
        .collect()
}

/// After the run: every message once more, in a seeded order; nothing may change.
async fn storm_changes_nothing(run: &MischiefRun) {
    let before = snapshot(&run.net, &run.plan).await;
    run.net.storm();
    run.net.idle().await.unwrap();
    let after = snapshot(&run.net, &run.plan).await;
    for (i, p) in run.plan.iter().enumerate() {
        assert_eq!(
            before[i].states(),
            after[i].states(),
            "{}: the replayed messages changed its outcome",
            p.session
        );
        assert_eq!(
            p.device.dump(),
            run.dumps[i],
            "{}: the replayed messages changed the device",
            p.session
        );
    }
    let bad = copies_were_ignored(run);
    assert!(
        bad.is_empty(),
        "copies that were not ignored:\n{}",
        bad.join("\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicated_replayed_and_reordered_messages_never_change_what_is_decided() {
    let dir = scratch();
    let started = Instant::now();

    // The fault-free outcome, and the devices after it.
    let clean = mischief_run(dir.path(), "clean", Mischief::default()).await;
    for (p, s) in clean.plan.iter().zip(&clean.seen) {
        assert!(s.completed(), "fault-free {}: {s:?}", p.session);
        let bad = check(p, s, None);
        assert!(bad.is_empty(), "{bad:#?}");
    }
    clean.net.stop();

    // Every message twice, and old messages of the same session and other sessions'
    // NOTIFs replayed along the way: exactly the fault-free outcome, byte for byte.
    let noisy = mischief_run(
        dir.path(),
        "noisy",
        Mischief {
            duplicate: true,
            replay: true,
            reorder: false,
        },
    )
    .await;
    let mut copies = BTreeMap::new();
    for d in lock(&noisy.net.deliveries).iter() {
        *copies.entry(format!("{:?}", d.copy)).or_insert(0) += 1;
    }
    for (i, p) in noisy.plan.iter().enumerate() {
        let bad = check(p, &noisy.seen[i], Some(&clean.dumps[i]));
        assert!(bad.is_empty(), "{bad:#?}");
        assert_eq!(
            noisy.seen[i].states(),
            clean.seen[i].states(),
            "{}: duplicates and replays changed the outcome",
            p.session
        );
        assert_eq!(noisy.dumps[i], clean.dumps[i], "{}: device", p.session);
    }
    let bad = copies_were_ignored(&noisy);
    assert!(
        bad.is_empty(),
        "copies that were not ignored:\n{}",
        bad.join("\n")
    );
    assert!(
        copies.get("Replay").copied().unwrap_or(0) >= 10,
        "{copies:?}"
    );
    storm_changes_nothing(&noisy).await;
    noisy.net.stop();
    eprintln!("duplicates and replays: deliveries by copy {copies:?}");

    // The same, plus consecutive messages of a session swapped when the seed says so and
    // a second message follows at once (DMS-2's RES and START in Methods 1/3), and every
    // delivery jittered. A swap is a detected protocol violation (START out of order):
    // that delegation rolls back; every other one ends as without faults.
    let shuffled = mischief_run(
        dir.path(),
        "shuffled",
        Mischief {
            duplicate: true,
            replay: true,
            reorder: true,
        },
    )
    .await;
    let predicted: BTreeSet<String> = shuffled
        .plan
        .iter()
        .filter(|p| p.method.initiator() == Role::Delegating)
        .filter(|p| roll("swap", &p.session, DMS2, 1).is_multiple_of(3))
        .map(|p| p.session.clone())
        .collect();
    let swapped = lock(&shuffled.net.swapped).clone();
    assert_eq!(swapped, predicted, "the swaps are the seed's");
    assert!(!swapped.is_empty() && swapped.len() < shuffled.plan.len());
    for (i, p) in shuffled.plan.iter().enumerate() {
        let s = &shuffled.seen[i];
        if swapped.contains(&p.session) {
            let bad = check(p, s, None);
            assert!(bad.is_empty(), "{bad:#?}");
            assert_eq!(
                s.states(),
                (Some(State::RolledBack), Some(State::RolledBack)),
                "{}: START before RES must fail the delegation",
                p.session
            );
            let code = s
                .one
                .as_ref()
                .and_then(|s| s.reason.as_ref())
                .map(|r| r.code);
            assert_eq!(code, Some(ReasonCode::InvalidState.code()), "{}", p.session);
        } else {
            let bad = check(p, s, Some(&clean.dumps[i]));
            assert!(bad.is_empty(), "{bad:#?}");
            assert_eq!(s.states(), clean.seen[i].states(), "{}", p.session);
        }
    }
    let bad = copies_were_ignored(&shuffled);
    assert!(
        bad.is_empty(),
        "copies that were not ignored:\n{}",
        bad.join("\n")
    );
    storm_changes_nothing(&shuffled).await;
    shuffled.net.stop();
    eprintln!(
        "swapped {} of {} delegations; all three runs in {:?}",
        swapped.len(),
        shuffled.plan.len(),
        started.elapsed()
    );
}
