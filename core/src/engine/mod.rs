//! The delegation engine: one state machine per delegation per role, driven by messages
//! from the peer, by the host (start, cancel, client connected) and by deadlines.
//!
//! Concurrency: each session has its own async lock. A message is processed under that
//! lock (device operations included), the record is saved, the lock is released, and only
//! then are the resulting messages sent, so two servers can call each other directly.

mod plan;
mod state;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use tokio::sync::Notify;

use plan::Commit;
pub use plan::BOOTSTRAP_TRIGGER_ROOT;
pub use state::{JournalEntry, JournalStatus, SessionInfo, SessionRecord, State, Step, Timeouts};

use crate::acl::validate_server_id;
use crate::error::{Error, Result};
use crate::host::{
    Clock, DelegationOffer, Event, EventKind, Host, PolicyDecision, SystemClock, Transport,
};
use crate::message::{
    validate_session_id, Body, DelegationInfo, DelegationType, Header, Message, Method, Notif,
    Reason, Role, Timestamp,
};
use crate::reason::ReasonCode;
use crate::store::{MemoryStore, SessionStore};
use crate::xml::XmlLimits;

/// How many times DMS-1 asks the device whether its commit happened (one attempt per entry
/// into `Finalizing`, `response` apart) before leaving the session to an operator.
const COMMIT_CHECKS: usize = 3;

/// A server's configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerConfig {
    /// This server's ServerID (as in its DMAcc and in ACLs).
    pub server_id: String,
    /// Step deadlines.
    pub timeouts: Timeouts,
    /// Limits for decoding incoming messages.
    pub limits: XmlLimits,
}

impl ServerConfig {
    /// Defaults for `server_id`.
    pub fn new(server_id: impl Into<String>) -> Self {
        Self {
            server_id: server_id.into(),
            timeouts: Timeouts::default(),
            limits: XmlLimits::default(),
        }
    }
}

/// What the host asks for when it starts a delegation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DelegationRequest {
    /// Session id to use; a random one when `None`.
    pub session_id: Option<String>,
    /// The peer's ServerID.
    pub peer: String,
    /// Method. Methods 1/3 are started by DMS-1, Methods 2/4 by DMS-2.
    pub method: Method,
    /// Full or Partial.
    pub delegation_type: DelegationType,
    /// Device and subtrees.
    pub info: DelegationInfo,
    /// End of a temporary (Partial) delegation.
    pub expires: Option<Timestamp>,
}

/// How an incoming message was taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Receipt {
    /// Processed.
    Accepted,
    /// Already received (same session and sequence number); nothing done again.
    Duplicate,
}

/// A delegation server: DMS-1 and DMS-2 at once, for any number of sessions.
/// Cheap to clone; all clones share state.
#[derive(Clone)]
pub struct DelegationServer {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for DelegationServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DelegationServer")
            .field("server_id", &self.inner.config.server_id)
            .finish_non_exhaustive()
    }
}

pub(crate) struct Inner {
    config: ServerConfig,
    host: Arc<dyn Host>,
    transport: Arc<dyn Transport>,
    store: Arc<dyn SessionStore>,
    clock: Arc<dyn Clock>,
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// One notifier per session someone waits for: a session reaching a terminal state
    /// wakes its own waiters only (not every waiter of every session).
    waiters: Mutex<HashMap<String, Arc<Notify>>>,
}

impl DelegationServer {
    /// A server with an in-memory store and the system clock.
    pub fn new(
        config: ServerConfig,
        host: Arc<dyn Host>,
        transport: Arc<dyn Transport>,
    ) -> Result<Self> {
        Self::with_parts(
            config,
            host,
            transport,
            Arc::new(MemoryStore::new()),
            Arc::new(SystemClock),
        )
    }

    /// A server with every part given.
    pub fn with_parts(
        config: ServerConfig,
        host: Arc<dyn Host>,
        transport: Arc<dyn Transport>,
        store: Arc<dyn SessionStore>,
        clock: Arc<dyn Clock>,
    ) -> Result<Self> {
        validate_server_id(&config.server_id).map_err(|reason| Error::InvalidArgument {
            field: "server_id".into(),
            reason,
        })?;
        Ok(Self {
            inner: Arc::new(Inner {
                config,
                host,
                transport,
                store,
                clock,
                locks: Mutex::new(HashMap::new()),
                waiters: Mutex::new(HashMap::new()),
            }),
        })
    }

    /// A handle that does not keep the server alive (for transports the server owns).
    pub fn downgrade(&self) -> WeakDelegationServer {
        WeakDelegationServer(Arc::downgrade(&self.inner))
    }

    /// Tells the engine that a message of this session could not be delivered to the peer
    /// (for transports that deliver in the background): the session fails with reason
    /// 170 and rolls back. A FAILURE is still sent, best effort: "not delivered" may mean
    /// "processed, answer lost", and a peer that went on must learn it has to undo.
    /// No effect on an ended session.
    pub async fn peer_unreachable(&self, session_id: &str, detail: &str) -> Result<SessionInfo> {
        self.inner
            .fail_session(
                session_id,
                Reason::new(ReasonCode::PeerUnreachable, detail),
                true,
                false,
            )
            .await
    }

    /// This server's ServerID.
    pub fn server_id(&self) -> &str {
        &self.inner.config.server_id
    }

    /// The configuration.
    pub fn config(&self) -> &ServerConfig {
        &self.inner.config
    }

    /// Starts a delegation: sends DELEGATION_NOTIF and returns the session id. This server
    /// is DMS-1 for Methods 1/3 and DMS-2 for Methods 2/4. The rest runs as messages arrive.
    pub async fn start_delegation(&self, request: DelegationRequest) -> Result<String> {
        self.inner.start(request).await
    }

    /// Processes one message from the peer. `authenticated_peer` is the ServerID the
    /// transport authenticated (mutual TLS), or `None` when the transport cannot tell.
    pub async fn receive(
        &self,
        message: &Message,
        authenticated_peer: Option<&str>,
    ) -> Result<Receipt> {
        self.inner.receive(message, authenticated_peer).await
    }

    /// Decodes (under the configured limits) and processes one message.
    pub async fn receive_xml(
        &self,
        document: &[u8],
        authenticated_peer: Option<&str>,
    ) -> Result<Receipt> {
        let message = Message::from_xml_with_limits(document, &self.inner.config.limits)?;
        self.receive(&message, authenticated_peer).await
    }

    /// DMS-2, Methods 3/4: the device opened its first DM session with this server after
    /// bootstrapping. Sends DELEGATION_CONFIRM for every session waiting for that device
    /// and returns their ids.
    pub async fn client_session_established(&self, device_id: &str) -> Result<Vec<String>> {
        self.inner.client_connected(device_id).await
    }

    /// Cancels a running delegation: rolls it back and sends DELEGATION_FAILURE. DMS-1 past
    /// the commit point of a Full delegation finishes it instead (see
    /// [`SessionRecord::past_commit_point`]): the session may end `Completed`.
    pub async fn cancel(&self, session_id: &str) -> Result<SessionInfo> {
        self.inner
            .fail_session(
                session_id,
                Reason::new(ReasonCode::Cancelled, "cancelled by operator"),
                true,
                true,
            )
            .await
    }

    /// Sends DELEGATION_FAILURE again for every session that ended in failure
    /// (`RolledBack`, `RollbackFailed`) at or after `since`, and returns how many. For a
    /// server starting again: a FAILURE queued when it stopped may never have left, and a
    /// peer that had completed meanwhile must still learn to undo. Harmless to a peer that
    /// already knows (a FAILURE for an ended session is ignored).
    pub async fn resend_failures(&self, since: Timestamp) -> Result<usize> {
        let mut sent = 0;
        let failed = self
            .inner
            .store
            .list_failed_since(since)
            .await
            .map_err(|e| Error::Store(e.0))?;
        for r in failed {
            let lock = self.inner.lock_for(&r.session_id);
            let guard = lock.lock().await;
            let Some(mut rec) = self.inner.load(&r.session_id).await? else {
                continue;
            };
            let Some(reason) = rec.reason.clone() else {
                continue;
            };
            if rec.past_commit_point() {
                // Left for an operator past the commit point: the delegation may be in
                // force, and a FAILURE would make the peer roll back its side.
                continue;
            }
            let m = self.inner.outgoing(&mut rec, Body::Failure(reason));
            self.inner.save(&mut rec).await?;
            drop(guard);
            self.inner.send_all(&rec.session_id, vec![m]).await?;
            sent += 1;
        }
        Ok(sent)
    }

    /// Tries again to undo the client changes of a session that ended `RollbackFailed`
    /// (for example once the device is reachable again). For DMS-1 left past the commit
    /// point of a Full delegation, asks the device again whether the commit happened: if
    /// so the session ends `Completed`; if not it rolls back and sends FAILURE.
    pub async fn retry_rollback(&self, session_id: &str) -> Result<SessionInfo> {
        self.inner.retry_rollback(session_id).await
    }

    /// One session.
    pub async fn session(&self, session_id: &str) -> Result<SessionInfo> {
        self.inner
            .load(session_id)
            .await?
            .map(|r| SessionInfo::from(&r))
            .ok_or_else(|| Error::UnknownSession(session_id.to_string()))
    }

    /// Every session this server keeps, oldest first.
    pub async fn sessions(&self) -> Result<Vec<SessionInfo>> {
        let mut list: Vec<SessionInfo> = self
            .inner
            .records()
            .await?
            .iter()
            .map(SessionInfo::from)
            .collect();
        list.sort_by(|a, b| (a.created, &a.session_id).cmp(&(b.created, &b.session_id)));
        Ok(list)
    }

    /// Fails every session whose deadline has passed (rolling it back and telling the
    /// peer; past the commit point, finishing it instead) and reverts temporary delegations
    /// that reached their end. Returns how many sessions it acted on.
    pub async fn expire_due(&self) -> Result<usize> {
        self.inner.expire_due().await
    }

    /// Waits until the session reaches a terminal state, or `timeout` passes.
    pub async fn wait_until_terminal(
        &self,
        session_id: &str,
        timeout: Duration,
    ) -> Result<SessionInfo> {
        let notify = self.inner.waiter(session_id);
        let wait = async {
            loop {
                // Registered before the state is read, so a save in between is not missed.
                let notified = notify.notified();
                tokio::pin!(notified);
                notified.as_mut().enable();
                let info = self.session(session_id).await?;
                if info.state.is_terminal() {
                    return Ok(info);
                }
                notified.await;
            }
        };
        let result = tokio::time::timeout(timeout, wait).await;
        self.inner.release_waiter(session_id, notify);
        match result {
            Ok(r) => r,
            Err(_) => Err(Error::Failed {
                reason: ReasonCode::Timeout,
                message: format!("session `{session_id}` still running after {timeout:?}"),
            }),
        }
    }

    /// Removes terminal sessions last changed before `before` from the store.
    pub async fn purge_finished(&self, before: Timestamp) -> Result<usize> {
        let mut n = 0;
        for r in self.inner.records().await? {
            if r.state.is_terminal() && r.updated < before && r.journal.is_empty() {
                self.inner
                    .store
                    .remove(&r.session_id)
                    .await
                    .map_err(|e| Error::Store(e.0))?;
                self.inner.locks().remove(&r.session_id);
                n += 1;
            }
        }
        Ok(n)
    }

    /// Spawns a task on the current tokio runtime that calls [`Self::expire_due`] every
    /// `period` until the server is dropped.
    pub fn spawn_deadline_watcher(&self, period: Duration) -> tokio::task::JoinHandle<()> {
        let weak: Weak<Inner> = Arc::downgrade(&self.inner);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(period);
            loop {
                tick.tick().await;
                let Some(inner) = weak.upgrade() else { break };
                if let Err(e) = inner.expire_due().await {
                    tracing::warn!(error = %e, "deadline check failed");
                }
            }
        })
    }
}

/// A weak handle to a [`DelegationServer`], from [`DelegationServer::downgrade`].
#[derive(Clone)]
pub struct WeakDelegationServer(Weak<Inner>);

impl std::fmt::Debug for WeakDelegationServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WeakDelegationServer")
    }
}

impl WeakDelegationServer {
    /// The server, if it still exists.
    pub fn upgrade(&self) -> Option<DelegationServer> {
        self.0.upgrade().map(|inner| DelegationServer { inner })
    }
}

/// What one locked step produced: the caller's result and the messages to send after.
type StepOutput = (Result<Receipt>, Vec<Message>);

impl Inner {
    fn me(&self) -> &str {
        &self.config.server_id
    }

    fn locks(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<tokio::sync::Mutex<()>>>> {
        self.locks.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn lock_for(&self, session_id: &str) -> Arc<tokio::sync::Mutex<()>> {
        self.locks()
            .entry(session_id.to_string())
            .or_default()
            .clone()
    }

    async fn load(&self, session_id: &str) -> Result<Option<SessionRecord>> {
        self.store
            .load(session_id)
            .await
            .map_err(|e| Error::Store(e.0))
    }

    pub(crate) async fn save(&self, rec: &mut SessionRecord) -> Result<()> {
        rec.updated = self.clock.now();
        self.store.save(rec).await.map_err(|e| Error::Store(e.0))?;
        if rec.state.is_terminal() {
            // After the save, so a woken waiter reads the terminal state.
            let waiting = self.waiters_map().get(&rec.session_id).cloned();
            if let Some(n) = waiting {
                n.notify_waiters();
            }
        }
        Ok(())
    }

    fn waiters_map(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Notify>>> {
        self.waiters.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The notifier of `session_id`'s waiters, created for the first one.
    fn waiter(&self, session_id: &str) -> Arc<Notify> {
        self.waiters_map()
            .entry(session_id.to_string())
            .or_default()
            .clone()
    }

    /// Drops the notifier when its last waiter leaves.
    fn release_waiter(&self, session_id: &str, notify: Arc<Notify>) {
        let mut map = self.waiters_map();
        // The map's reference and ours: nobody else waits.
        if Arc::strong_count(&notify) == 2 {
            map.remove(session_id);
        }
    }

    fn emit(&self, rec: &SessionRecord, kind: EventKind) {
        let event = Event {
            session_id: rec.session_id.clone(),
            role: rec.role,
            device_id: rec.info.device.device_id.clone(),
            kind,
        };
        self.host.on_event(&event);
    }

    /// Moves to `state`, recording the step and setting the deadline for the new wait.
    pub(crate) fn enter(&self, rec: &mut SessionRecord, state: State, wait: Option<Duration>) {
        let now = self.clock.now();
        let from = rec.state;
        rec.state = state;
        rec.deadline = wait.map(|d| now.plus(d));
        rec.history.push(Step { state, at: now });
        tracing::debug!(session = %rec.session_id, role = %rec.role, %from, to = %state, "state");
        if from != state {
            self.emit(rec, EventKind::StateChanged { from, to: state });
        }
    }

    fn outgoing(&self, rec: &mut SessionRecord, body: Body) -> Message {
        let body = match body {
            Body::Failure(r) => Body::Failure(r.for_wire()),
            Body::Nack(r) => Body::Nack(r.for_wire()),
            other => other,
        };
        let seq = rec.next_seq;
        rec.next_seq += 1;
        Message {
            header: Header {
                session_id: rec.session_id.clone(),
                seq,
                sender: self.me().to_string(),
                recipient: rec.peer.clone(),
                method: rec.method,
                timestamp: self.clock.now(),
            },
            body,
        }
    }

    /// Refuses a second concurrent delegation of one device: interleaved ACL edits would
    /// make each session's journal undo the other's changes.
    async fn check_device_free(&self, device_id: &str, except: &str) -> Result<()> {
        let busy = self
            .store
            .list_active_for_device(device_id)
            .await
            .map_err(|e| Error::Store(e.0))?
            .into_iter()
            .find(|r| !r.state.is_terminal() && r.session_id != except);
        match busy {
            Some(r) => Err(Error::Failed {
                reason: ReasonCode::DeviceBusy,
                message: format!(
                    "device `{device_id}` is being delegated in session `{}` ({})",
                    r.session_id, r.state
                ),
            }),
            None => Ok(()),
        }
    }

    fn check_expiry(&self, expires: Option<Timestamp>) -> Result<()> {
        match expires {
            Some(e) if e <= self.clock.now() => Err(Error::InvalidArgument {
                field: "expires".into(),
                reason: format!("{} is not in the future", e.to_rfc3339()),
            }),
            _ => Ok(()),
        }
    }

    async fn start(&self, req: DelegationRequest) -> Result<String> {
        self.check_expiry(req.expires)?;
        validate_server_id(&req.peer).map_err(|reason| Error::InvalidArgument {
            field: "peer".into(),
            reason,
        })?;
        if req.peer == self.me() {
            return Err(Error::InvalidArgument {
                field: "peer".into(),
                reason: "a server cannot delegate to itself".into(),
            });
        }
        let session_id = req
            .session_id
            .clone()
            .unwrap_or_else(|| uuid::Uuid::new_v4().simple().to_string());
        validate_session_id(&session_id).map_err(|reason| Error::InvalidArgument {
            field: "session_id".into(),
            reason,
        })?;
        let role = req.method.initiator();
        let now = self.clock.now();
        let mut rec = SessionRecord::new(
            session_id.clone(),
            role,
            req.method,
            req.delegation_type,
            req.peer.clone(),
            req.info.clone(),
            req.expires,
            now,
        );
        let notif = self.outgoing(
            &mut rec,
            Body::Notif(Notif {
                dm_server_id: self.me().to_string(),
                delegation_type: req.delegation_type,
                info: req.info,
                expires: req.expires,
            }),
        );
        notif.validate().map_err(|e| match e {
            crate::DecodeError::InvalidField { field, reason } => {
                Error::InvalidArgument { field, reason }
            }
            other => Error::Decode(other),
        })?;
        let lock = self.lock_for(&session_id);
        let _guard = lock.lock().await;
        if self.load(&session_id).await?.is_some() {
            return Err(Error::InvalidArgument {
                field: "session_id".into(),
                reason: format!("session `{session_id}` already exists"),
            });
        }
        self.check_device_free(&rec.info.device.device_id, &session_id)
            .await?;
        let wait = self.config.timeouts.response;
        self.enter(&mut rec, State::NotifSent, Some(wait));
        self.save(&mut rec).await?;
        drop(_guard);
        self.send_all(&session_id, vec![notif]).await?;
        Ok(session_id)
    }

    /// Sends messages in order; on a transport failure the session fails locally.
    fn send_all<'a>(
        &'a self,
        session_id: &'a str,
        messages: Vec<Message>,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<()>> + Send + 'a>> {
        // Boxed: a failed send fails the session, which may send again.
        Box::pin(async move { self.send_all_inner(session_id, messages).await })
    }

    async fn send_all_inner(&self, session_id: &str, messages: Vec<Message>) -> Result<()> {
        for m in messages {
            if let Err(e) = self.transport.send(&m).await {
                tracing::warn!(session = session_id, peer = %m.header.recipient, error = %e, "send failed");
                if matches!(m.body, Body::Failure(_)) {
                    // The peer will time out on its own; nothing more to undo here.
                    continue;
                }
                let reason = Reason::new(
                    ReasonCode::PeerUnreachable,
                    format!("sending {} failed: {e}", m.body.kind()),
                );
                let _ = self.fail_session(session_id, reason, false, false).await;
                return Err(Error::Transport {
                    peer: m.header.recipient.clone(),
                    message: e.message,
                });
            }
        }
        Ok(())
    }

    async fn receive(&self, msg: &Message, authenticated_peer: Option<&str>) -> Result<Receipt> {
        msg.validate()?;
        let h = &msg.header;
        if h.recipient != self.me() {
            return Err(Error::WrongRecipient {
                expected: self.me().to_string(),
                found: h.recipient.clone(),
            });
        }
        if let Some(peer) = authenticated_peer {
            if peer != h.sender {
                return Err(Error::Authentication(format!(
                    "message claims sender `{}` but the connection authenticated `{peer}`",
                    h.sender
                )));
            }
        }
        let lock = self.lock_for(&h.session_id);
        let guard = lock.lock().await;
        let existing = self.load(&h.session_id).await?;
        let (result, out) = match existing {
            None => match &msg.body {
                Body::Notif(n) => self.on_notif(msg, n).await,
                Body::Failure(_) => (Ok(Receipt::Accepted), Vec::new()),
                _ => {
                    // No session to fail: answer with FAILURE without creating one.
                    let reply = Message {
                        header: Header {
                            session_id: h.session_id.clone(),
                            seq: 1,
                            sender: self.me().to_string(),
                            recipient: h.sender.clone(),
                            method: h.method,
                            timestamp: self.clock.now(),
                        },
                        body: Body::Failure(Reason::new(
                            ReasonCode::UnknownSession,
                            format!("no session `{}`", h.session_id),
                        )),
                    };
                    (
                        Err(Error::UnknownSession(h.session_id.clone())),
                        vec![reply],
                    )
                }
            },
            Some(mut rec) => {
                let step = self.on_message(&mut rec, msg).await;
                self.save(&mut rec).await?;
                step
            }
        };
        drop(guard);
        self.send_all(&h.session_id, out).await?;
        result
    }

    async fn on_notif(&self, msg: &Message, notif: &Notif) -> StepOutput {
        let h = &msg.header;
        let role = h.method.initiator().peer();
        let now = self.clock.now();
        let mut rec = SessionRecord::new(
            h.session_id.clone(),
            role,
            h.method,
            notif.delegation_type,
            h.sender.clone(),
            notif.info.clone(),
            notif.expires,
            now,
        );
        rec.last_peer_seq = h.seq;
        let offer = DelegationOffer {
            session_id: rec.session_id.clone(),
            peer: rec.peer.clone(),
            role,
            method: rec.method,
            delegation_type: rec.delegation_type,
            info: rec.info.clone(),
            expires: rec.expires,
        };
        let mut out = Vec::new();
        let precheck = match self.check_expiry(rec.expires) {
            Ok(()) => self.check_device_free(&rec.info.device.device_id, "").await,
            Err(e) => Err(e),
        };
        let decision = match precheck {
            Err(e) => PolicyDecision::Reject(Reason::new(e.reason(), e.to_string())),
            Ok(()) => self.host.accept_delegation(&offer).await,
        };
        let decision = match (decision, role) {
            (PolicyDecision::Accept, Role::Delegated) => {
                match self.our_account(&rec.info.device).await {
                    Ok(acc) => {
                        rec.account = Some(Arc::new(acc));
                        PolicyDecision::Accept
                    }
                    Err(e) => PolicyDecision::Reject(Reason::new(e.reason(), e.to_string())),
                }
            }
            (d, _) => d,
        };
        match decision {
            PolicyDecision::Reject(reason) => {
                out.push(self.outgoing(&mut rec, Body::Nack(reason.clone())));
                rec.reason = Some(reason.clone());
                self.enter(&mut rec, State::Rejected, None);
                self.emit(&rec, EventKind::Rejected { reason });
            }
            PolicyDecision::Accept => {
                out.push(self.outgoing(&mut rec, Body::Ack));
                match role {
                    Role::Delegating => {
                        let wait = self.config.timeouts.response;
                        self.enter(&mut rec, State::AwaitingStart, Some(wait));
                    }
                    Role::Delegated => {
                        out.push(self.start_message(&mut rec));
                    }
                }
            }
        }
        if let Err(e) = self.save(&mut rec).await {
            return (Err(e), Vec::new());
        }
        (Ok(Receipt::Accepted), out)
    }

    /// DMS-2: the account to send, validated and checked against our ServerID.
    async fn our_account(&self, device: &crate::DeviceInfo) -> Result<crate::DmAcc> {
        let acc = self.host.dm_account(device).await?;
        acc.validate().map_err(|e| Error::Host {
            reason: ReasonCode::InvalidDmAccount,
            message: e.to_string(),
        })?;
        if acc.server_id != self.me() {
            return Err(Error::Host {
                reason: ReasonCode::InvalidDmAccount,
                message: format!(
                    "the account's ServerID `{}` is not this server's `{}`",
                    acc.server_id,
                    self.me()
                ),
            });
        }
        Ok(acc)
    }

    /// DMS-2: DELEGATION_START and the matching wait.
    fn start_message(&self, rec: &mut SessionRecord) -> Message {
        let acc = crate::DmAcc::clone(
            rec.account
                .as_deref()
                .expect("account fetched before START"),
        );
        let msg = self.outgoing(rec, Body::Start(acc));
        let t = self.config.timeouts;
        if rec.method.uses_bootstrap() {
            self.enter(rec, State::AwaitingBootstrapRequest, Some(t.response));
        } else {
            // DMS-1's preparation clock starts after START arrives: allow one message more.
            self.enter(
                rec,
                State::AwaitingPrepared,
                Some(t.preparation + t.response),
            );
        }
        msg
    }

    async fn on_message(&self, rec: &mut SessionRecord, msg: &Message) -> StepOutput {
        let h = &msg.header;
        if h.sender != rec.peer {
            return (
                Err(Error::Authentication(format!(
                    "session `{}` belongs to `{}`, not `{}`",
                    rec.session_id, rec.peer, h.sender
                ))),
                Vec::new(),
            );
        }
        // FAILURE is honoured whatever its sequence number: either side may send it at any
        // time, including a server that lost the session and answers with sequence 1.
        if let Body::Failure(reason) = &msg.body {
            rec.last_peer_seq = rec.last_peer_seq.max(h.seq);
            let may_fail = !rec.state.is_terminal()
                || (rec.state == State::Completed && rec.role == Role::Delegated);
            if may_fail {
                let out = self.fail_locked(rec, reason.clone(), false).await;
                return (Ok(Receipt::Accepted), out);
            }
            return (Ok(Receipt::Accepted), Vec::new());
        }
        if h.seq <= rec.last_peer_seq {
            return (Ok(Receipt::Duplicate), Vec::new());
        }
        let in_order = h.seq == rec.last_peer_seq + 1;
        rec.last_peer_seq = h.seq;
        if rec.state.is_terminal() {
            let reply = self.outgoing(
                rec,
                Body::Failure(Reason::new(
                    ReasonCode::InvalidState,
                    format!(
                        "session is {} ; {} not expected",
                        rec.state,
                        msg.body.kind()
                    ),
                )),
            );
            return (
                Err(Error::InvalidState(format!(
                    "{} received in terminal state {}",
                    msg.body.kind(),
                    rec.state
                ))),
                vec![reply],
            );
        }
        let expected = rec.state.expected(rec.role, rec.method);
        if !in_order || h.method != rec.method || !expected.contains(&msg.body.kind()) {
            let what = if !in_order {
                format!("sequence {} out of order", h.seq)
            } else if h.method != rec.method {
                format!("{} does not match the session's {}", h.method, rec.method)
            } else {
                format!(
                    "{} not expected by {} in state {}",
                    msg.body.kind(),
                    rec.role,
                    rec.state
                )
            };
            let out = self
                .fail_locked(
                    rec,
                    Reason::new(ReasonCode::InvalidState, what.clone()),
                    true,
                )
                .await;
            return (Err(Error::InvalidState(what)), out);
        }
        match self.advance(rec, &msg.body).await {
            Ok(out) => (Ok(Receipt::Accepted), out),
            Err(e) => {
                let reason = Reason::new(e.reason(), e.to_string());
                let out = self.fail_locked(rec, reason, true).await;
                (Ok(Receipt::Accepted), out)
            }
        }
    }

    /// Applies an expected message. An error fails (and rolls back) the session.
    async fn advance(&self, rec: &mut SessionRecord, body: &Body) -> Result<Vec<Message>> {
        let t = self.config.timeouts;
        match (rec.role, body) {
            (Role::Delegating, Body::Ack) => {
                self.enter(rec, State::AwaitingStart, Some(t.response));
                Ok(Vec::new())
            }
            (Role::Delegated, Body::Ack) => {
                let acc = self.our_account(&rec.info.device).await?;
                rec.account = Some(Arc::new(acc));
                Ok(vec![self.start_message(rec)])
            }
            (_, Body::Nack(reason)) => {
                rec.reason = Some(reason.clone());
                self.enter(rec, State::Rejected, None);
                self.emit(
                    rec,
                    EventKind::Rejected {
                        reason: reason.clone(),
                    },
                );
                Ok(Vec::new())
            }
            (Role::Delegating, Body::Start(acc)) => {
                if acc.server_id != rec.peer {
                    return Err(Error::Failed {
                        reason: ReasonCode::InvalidDmAccount,
                        message: format!(
                            "account ServerID `{}` is not the peer `{}`",
                            acc.server_id, rec.peer
                        ),
                    });
                }
                rec.account = Some(Arc::new(acc.clone()));
                if rec.method.uses_bootstrap() {
                    let m = self.outgoing(rec, Body::BootstrapUrlRequest);
                    self.enter(rec, State::AwaitingBootstrapUrl, Some(t.response));
                    Ok(vec![m])
                } else {
                    self.enter(rec, State::Preparing, Some(t.preparation));
                    self.prepare_client(rec).await?;
                    let m = self.outgoing(rec, Body::Prepared);
                    self.enter(rec, State::AwaitingConfirm, Some(t.confirm));
                    Ok(vec![m])
                }
            }
            (Role::Delegating, Body::BootstrapUrl(url)) => {
                rec.bootstrap_url = Some(url.clone());
                self.enter(rec, State::Preparing, Some(t.preparation));
                self.prepare_client(rec).await?;
                self.enter(rec, State::AwaitingConfirm, Some(t.bootstrap_confirm));
                Ok(Vec::new())
            }
            (Role::Delegating, Body::Confirm) => {
                self.enter(rec, State::Finalizing, Some(t.preparation));
                self.finalize(rec).await?;
                self.enter(rec, State::Completed, None);
                self.emit(rec, EventKind::Completed);
                Ok(Vec::new())
            }
            (Role::Delegated, Body::Prepared) => {
                self.enter(rec, State::OpeningSession, Some(t.preparation));
                let info = SessionInfo::from(&*rec);
                self.host.open_dm_session(&info).await?;
                let m = self.outgoing(rec, Body::Confirm);
                self.complete_delegated(rec);
                Ok(vec![m])
            }
            (Role::Delegated, Body::BootstrapUrlRequest) => {
                let url = self.host.bootstrap_server_url(&rec.info.device).await?;
                crate::message::validate_https_url(&url).map_err(|message| Error::Host {
                    reason: ReasonCode::BootstrapUrlUnavailable,
                    message,
                })?;
                rec.bootstrap_url = Some(url.clone());
                let m = self.outgoing(rec, Body::BootstrapUrl(url));
                self.enter(rec, State::AwaitingClient, Some(t.client_session));
                Ok(vec![m])
            }
            (role, body) => Err(Error::InvalidState(format!(
                "{} cannot handle {} in state {}",
                role,
                body.kind(),
                rec.state
            ))),
        }
    }

    fn complete_delegated(&self, rec: &mut SessionRecord) {
        // DMS-2 keeps no secrets once the device holds its account.
        rec.account = None;
        self.enter(rec, State::Completed, None);
        self.emit(rec, EventKind::Completed);
    }

    async fn client_connected(&self, device_id: &str) -> Result<Vec<String>> {
        let waiting: Vec<String> = self
            .store
            .list_active_for_device(device_id)
            .await
            .map_err(|e| Error::Store(e.0))?
            .into_iter()
            .filter(|r| {
                r.role == Role::Delegated
                    && r.state == State::AwaitingClient
                    && r.info.device.device_id == device_id
            })
            .map(|r| r.session_id)
            .collect();
        let mut confirmed = Vec::new();
        for id in waiting {
            let lock = self.lock_for(&id);
            let guard = lock.lock().await;
            let Some(mut rec) = self.load(&id).await? else {
                continue;
            };
            if rec.state != State::AwaitingClient {
                continue;
            }
            let m = self.outgoing(&mut rec, Body::Confirm);
            self.complete_delegated(&mut rec);
            self.save(&mut rec).await?;
            drop(guard);
            self.send_all(&id, vec![m]).await?;
            confirmed.push(id);
        }
        Ok(confirmed)
    }

    /// Fails a session by id (cancel, timeout, transport failure).
    async fn fail_session(
        &self,
        session_id: &str,
        reason: Reason,
        notify_peer: bool,
        must_be_running: bool,
    ) -> Result<SessionInfo> {
        let lock = self.lock_for(session_id);
        let guard = lock.lock().await;
        let mut rec = self
            .load(session_id)
            .await?
            .ok_or_else(|| Error::UnknownSession(session_id.to_string()))?;
        if rec.state.is_terminal() {
            if must_be_running {
                return Err(Error::InvalidState(format!(
                    "session `{session_id}` already ended ({})",
                    rec.state
                )));
            }
            return Ok(SessionInfo::from(&rec));
        }
        let out = self.fail_locked(&mut rec, reason, notify_peer).await;
        self.save(&mut rec).await?;
        drop(guard);
        self.send_all(session_id, out).await?;
        Ok(SessionInfo::from(&rec))
    }

    /// Fails the session: undoes the journal (DMS-1), purges it, and returns the
    /// DELEGATION_FAILURE to send when `notify_peer`.
    ///
    /// DMS-1 past the commit point (its own account's deletion attempted) first asks the
    /// device whether the commit happened: if so it completes the delegation and sends
    /// nothing; if the device cannot tell, it asks again later and finally leaves the
    /// session `RollbackFailed` for an operator, sending nothing either. Only when the
    /// account is still there does it roll back (and tell the peer) as before.
    async fn fail_locked(
        &self,
        rec: &mut SessionRecord,
        reason: Reason,
        notify_peer: bool,
    ) -> Vec<Message> {
        if rec.past_commit_point() {
            match self.check_commit(rec).await {
                Commit::Done => {
                    tracing::info!(session = %rec.session_id, %reason, "failure past the commit point: the commit happened, the delegation is completed");
                    self.close_finalized(rec);
                    rec.reason = None;
                    self.enter(rec, State::Completed, None);
                    self.emit(rec, EventKind::Completed);
                    return Vec::new();
                }
                Commit::Unknown(failed) => {
                    self.commit_unknown(rec, reason, failed);
                    return Vec::new();
                }
                // The account is still there: nothing was committed, roll back.
                Commit::NotDone => {}
            }
        }
        if rec.state != State::RollingBack {
            tracing::info!(session = %rec.session_id, role = %rec.role, %reason, "delegation failed");
            self.emit(
                rec,
                EventKind::Failed {
                    reason: reason.clone(),
                },
            );
            // A deadline, so a rollback interrupted by a crash is resumed by `expire_due`.
            let retry = self.config.timeouts.response;
            self.enter(rec, State::RollingBack, Some(retry));
            // Persist the decision before touching the device again.
            if let Err(e) = self.save(rec).await {
                // Rollback goes on (the device must be restored), but a store that
                // cannot record progress means a crash now would replay inverses.
                tracing::error!(session = %rec.session_id, error = %e, "saving rollback progress failed");
            }
        }
        rec.reason = Some(reason.clone());
        rec.account = None;
        self.revert(
            rec,
            State::RolledBack,
            EventKind::RolledBack {
                reason: reason.clone(),
            },
        )
        .await;
        if notify_peer {
            vec![self.outgoing(rec, Body::Failure(reason))]
        } else {
            Vec::new()
        }
    }

    /// Past the commit point, the device could not tell whether the commit happened: ask
    /// again after the `response` deadline, up to [`COMMIT_CHECKS`] times; then leave the
    /// session `RollbackFailed` (journal kept) for an operator. No FAILURE either way.
    fn commit_unknown(&self, rec: &mut SessionRecord, cause: Reason, failed: Vec<String>) {
        rec.account = None;
        let checks = rec
            .history
            .iter()
            .filter(|s| s.state == State::Finalizing)
            .count();
        if rec.state != State::RollbackFailed && checks < COMMIT_CHECKS {
            tracing::warn!(session = %rec.session_id, %cause, ?failed, "past the commit point, the device cannot tell whether it committed; asking again later");
            self.enter(rec, State::Finalizing, Some(self.config.timeouts.response));
            return;
        }
        let reason = match (rec.state, rec.reason.clone()) {
            (State::RollbackFailed, Some(r)) => r,
            _ => Reason::new(
                ReasonCode::ClientOperationFailed,
                format!(
                    "past the commit point ({cause}), the device never told whether DMS-1's \
                     account is gone: the device needs attention"
                ),
            ),
        };
        tracing::error!(session = %rec.session_id, %reason, ?failed, "delegation left past its commit point");
        rec.reason = Some(reason.clone());
        if rec.state != State::RollbackFailed {
            self.enter(rec, State::RollbackFailed, None);
        }
        self.emit(rec, EventKind::RollbackIncomplete { reason, failed });
    }

    async fn retry_rollback(&self, session_id: &str) -> Result<SessionInfo> {
        let lock = self.lock_for(session_id);
        let guard = lock.lock().await;
        let mut rec = self
            .load(session_id)
            .await?
            .ok_or_else(|| Error::UnknownSession(session_id.to_string()))?;
        if rec.state != State::RollbackFailed {
            return Err(Error::InvalidState(format!(
                "session `{session_id}` is {}, not RollbackFailed",
                rec.state
            )));
        }
        let reason = rec
            .reason
            .clone()
            .unwrap_or_else(|| Reason::new(ReasonCode::Unspecified, "rollback retried"));
        if rec.past_commit_point() {
            // No FAILURE was sent: one goes out only if the device shows no commit.
            let out = self.fail_locked(&mut rec, reason, true).await;
            self.save(&mut rec).await?;
            drop(guard);
            self.send_all(session_id, out).await?;
            return Ok(SessionInfo::from(&rec));
        }
        self.revert(
            &mut rec,
            State::RolledBack,
            EventKind::RolledBack { reason },
        )
        .await;
        self.save(&mut rec).await?;
        Ok(SessionInfo::from(&rec))
    }

    /// Undoes the client changes (DMS-1; DMS-2 has none) and ends the session in `done`
    /// with `event`, or in `RollbackFailed` (journal kept) when an inverse fails.
    async fn revert(&self, rec: &mut SessionRecord, done: State, event: EventKind) {
        let failed = if rec.role == Role::Delegating {
            self.rollback_client(rec).await
        } else {
            Vec::new()
        };
        if failed.is_empty() {
            rec.journal.clear();
            rec.preexisting_peer_accounts = None;
            self.enter(rec, done, None);
            self.emit(rec, event);
        } else {
            let reason = rec.reason.clone().unwrap_or_else(|| {
                Reason::new(
                    ReasonCode::ClientOperationFailed,
                    "reverting the client failed",
                )
            });
            rec.reason = Some(reason.clone());
            if rec.state != State::RollbackFailed {
                self.enter(rec, State::RollbackFailed, None);
            }
            self.emit(rec, EventKind::RollbackIncomplete { reason, failed });
        }
    }

    /// Every stored session record.
    async fn records(&self) -> Result<Vec<SessionRecord>> {
        self.store.list().await.map_err(|e| Error::Store(e.0))
    }

    async fn expire_due(&self) -> Result<usize> {
        let now = self.clock.now();
        let mut ended = 0;
        for r in self
            .store
            .list_due(now)
            .await
            .map_err(|e| Error::Store(e.0))?
        {
            if r.is_overdue(now) {
                let code = match r.state {
                    State::AwaitingConfirm => ReasonCode::ConfirmTimeout,
                    _ => ReasonCode::Timeout,
                };
                let reason = Reason::new(code, format!("no progress in state {}", r.state));
                self.fail_session(&r.session_id, reason, true, false)
                    .await?;
                ended += 1;
            } else if r.is_expired(now) {
                self.expire_temporary(&r.session_id).await?;
                ended += 1;
            }
        }
        Ok(ended)
    }

    /// A temporary delegation ended: DMS-1 reverts the client, both sides mark it Expired.
    async fn expire_temporary(&self, session_id: &str) -> Result<()> {
        let lock = self.lock_for(session_id);
        let _guard = lock.lock().await;
        let Some(mut rec) = self.load(session_id).await? else {
            return Ok(());
        };
        if rec.state != State::Completed {
            return Ok(());
        }
        self.revert(&mut rec, State::Expired, EventKind::Expired)
            .await;
        self.save(&mut rec).await
    }
}
