//! [`Server`]: the one facade every binding wraps (C, Python, Kotlin/Swift).
//!
//! A DM Server's delegation engine with the host's [`Host`] implementation, reachable
//! either over the HTTPS binding with mutual TLS ([`Wire::Https`]) or over a transport the
//! host brings itself ([`Wire::Custom`], with [`Server::receive`] for incoming messages).
//! It owns the deadline watcher and, when configured, a durable SQLite store.
//!
//! Every `async` method must run inside a tokio runtime (the one [`Server::start`] ran
//! in keeps the server's background tasks). The bindings each own such a runtime.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use async_trait::async_trait;
use dmdelegate::sim::{SimBootstrapServer, SimDevice};
use dmdelegate::{
    DelegationInfo, DelegationRequest, DelegationServer, DelegationType, Error, Host, MemoryStore,
    Message, Method, Receipt, ServerConfig, SessionInfo, SessionStore, SystemClock, Timeouts,
    Timestamp, Transport, TransportError,
};
use tokio::net::TcpListener;
use tokio::runtime::Handle;
use tokio::task::JoinHandle;

use crate::dm::{DeviceLink, DmHub, HubHost, HubOptions};
use crate::https::{serve, Endpoint, HttpsOptions, HttpsSender, HttpsTransport, Peer};
use crate::sqlite::SqliteStore;
use crate::tls::Identity;

/// How far back a starting server looks for failed sessions whose FAILURE it sends again.
pub const RESEND_FAILURES_WINDOW: Duration = Duration::from_secs(15 * 60);

/// How often the deadline watcher looks for sessions past their deadline, by default.
pub const DEFAULT_WATCH_PERIOD: Duration = Duration::from_millis(500);

/// How a [`Server`] exchanges delegation messages with its peers.
// Built once per server and moved into it: boxing the HTTPS settings would only make
// every caller write `Box::new`.
#[allow(clippy::large_enum_variant)]
pub enum Wire {
    /// The HTTPS binding: an endpoint with mutual TLS and a queued HTTPS transport.
    Https {
        /// `ip:port` to listen on (port 0: any free port, see [`Server::local_addr`]).
        listen: SocketAddr,
        /// This server's certificate and key (TLS server and client certificate).
        identity: Identity,
        /// CA certificates (PEM) peers' certificates must chain to.
        trust_pem: String,
        /// The peers; empty to set them later with [`Server::set_peers`].
        peers: Vec<Peer>,
        /// Limits, timeouts and retries of the binding.
        options: HttpsOptions,
    },
    /// The host's own transport: outgoing messages go to it, incoming ones come in
    /// through [`Server::receive`].
    Custom(Arc<dyn Transport>),
}

impl std::fmt::Debug for Wire {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Wire::Https { listen, peers, .. } => f
                .debug_struct("Https")
                .field("listen", listen)
                .field("peers", peers)
                .finish_non_exhaustive(),
            Wire::Custom(_) => f.write_str("Custom"),
        }
    }
}

/// The server's own SyncML DM endpoint for networked devices ([`DmHub`]): with it, the
/// server runs client commands and opens DM sessions itself, and the host's `execute` and
/// `open_dm_session` are not called; policy, accounts, the Bootstrap Server URL and events
/// stay the host's.
#[derive(Debug, Clone)]
pub struct DeviceHubOptions {
    /// `ip:port` of the SyncML endpoint (plain HTTP; port 0: any free port, see
    /// [`Server::device_hub_url`]).
    pub listen: SocketAddr,
    /// The devices this server manages, with their credentials; more with
    /// [`Server::add_device`].
    pub devices: Vec<DeviceLink>,
    /// Waiting times of the hub.
    pub options: HubOptions,
}

impl DeviceHubOptions {
    /// A hub on `listen` for `devices`, default waiting times.
    pub fn new(listen: SocketAddr, devices: Vec<DeviceLink>) -> Self {
        Self {
            listen,
            devices,
            options: HubOptions::default(),
        }
    }
}

/// Everything a [`Server`] is made from, except the host.
pub struct ServerOptions {
    /// This server's ServerID (as in its DMAcc and in ACLs).
    pub server_id: String,
    /// How messages travel.
    pub wire: Wire,
    /// Deadlines of each protocol step.
    pub timeouts: Timeouts,
    /// A SQLite file for durable sessions (unfinished ones resume or roll back after a
    /// restart); `None` keeps them in memory.
    pub store_path: Option<PathBuf>,
    /// A store of the host's own (a database it already runs); takes precedence over
    /// `store_path`.
    pub store: Option<Arc<dyn SessionStore>>,
    /// How often deadlines are checked.
    pub watch_period: Duration,
    /// The server's own SyncML endpoint for networked devices; `None`: the host reaches
    /// devices itself.
    pub device_hub: Option<DeviceHubOptions>,
}

impl std::fmt::Debug for ServerOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerOptions")
            .field("server_id", &self.server_id)
            .field("wire", &self.wire)
            .field("timeouts", &self.timeouts)
            .field("store_path", &self.store_path)
            .field("store", &self.store.as_ref().map(|_| "custom"))
            .field("watch_period", &self.watch_period)
            .field("device_hub", &self.device_hub)
            .finish()
    }
}

impl ServerOptions {
    /// Options with default timeouts, memory store and watch period.
    pub fn new(server_id: impl Into<String>, wire: Wire) -> Self {
        Self {
            server_id: server_id.into(),
            wire,
            timeouts: Timeouts::default(),
            store_path: None,
            store: None,
            watch_period: DEFAULT_WATCH_PERIOD,
            device_hub: None,
        }
    }
}

/// What a delegation is started with: [`Server::start_delegation`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StartDelegation {
    /// The peer's ServerID.
    pub peer: String,
    /// Method; this server is DMS-1 for Methods 1/3 and DMS-2 for Methods 2/4.
    pub method: Method,
    /// Full or Partial.
    pub delegation_type: DelegationType,
    /// The device and the subtrees with their rights.
    pub info: DelegationInfo,
    /// End of a temporary (Partial) delegation.
    pub expires: Option<Timestamp>,
    /// Session id to use; a fresh random one when `None`.
    pub session_id: Option<String>,
}

/// The transport whose target may be set after the server exists (HTTPS peers set late).
#[derive(Default)]
struct LateTransport(RwLock<Option<Arc<dyn Transport>>>);

#[async_trait]
impl Transport for LateTransport {
    async fn send(&self, message: &Message) -> Result<(), TransportError> {
        let target = self.0.read().unwrap_or_else(|p| p.into_inner()).clone();
        match target {
            Some(t) => t.send(message).await,
            None => Err(TransportError {
                message: "no peers configured yet (set_peers)".into(),
            }),
        }
    }
}

/// The HTTPS side before and after the peers are known.
struct HttpsParts {
    listener: Option<TcpListener>,
    endpoint: Option<Endpoint>,
    transport: Option<Arc<HttpsTransport>>,
    identity: Identity,
    trust_pem: String,
    options: HttpsOptions,
}

fn invalid(field: &str, reason: impl std::fmt::Display) -> Error {
    Error::InvalidArgument {
        field: field.to_string(),
        reason: reason.to_string(),
    }
}

fn transport_error(peer: &str, what: impl std::fmt::Display) -> Error {
    Error::Transport {
        peer: peer.to_string(),
        message: what.to_string(),
    }
}

/// A running delegation server. Dropping it (or [`Server::shutdown`]) stops the endpoint
/// and the watcher; sessions in a durable store survive for the next start.
pub struct Server {
    engine: DelegationServer,
    late: Arc<LateTransport>,
    https: Option<Mutex<HttpsParts>>,
    local_addr: Option<SocketAddr>,
    watcher: Mutex<Option<JoinHandle<()>>>,
    hub: Option<DmHub>,
    runtime: Handle,
    closed: std::sync::atomic::AtomicBool,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("server_id", &self.engine.server_id())
            .field("local_addr", &self.local_addr)
            .finish_non_exhaustive()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.shutdown();
    }
}

impl Server {
    /// Starts a server: validates the options, opens the store, binds the endpoint (HTTPS
    /// peers given: serving at once), starts the deadline watcher. Unfinished sessions in
    /// a durable store resume or roll back by their deadlines.
    ///
    /// Errors: [`Error::InvalidArgument`] for a bad ServerID, peer or PEM data,
    /// [`Error::Store`] when the store cannot be opened, [`Error::Transport`] when the
    /// address cannot be bound.
    pub async fn start(options: ServerOptions, host: Arc<dyn Host>) -> Result<Self, Error> {
        let mut config = ServerConfig::new(&options.server_id);
        config.timeouts = options.timeouts;
        let store: Arc<dyn SessionStore> = match (options.store, &options.store_path) {
            (Some(store), _) => store,
            (None, Some(path)) => Arc::new(SqliteStore::open(path).map_err(|e| Error::Store(e.0))?),
            (None, None) => Arc::new(MemoryStore::new()),
        };
        let late = Arc::new(LateTransport::default());
        let (host, hub) = match options.device_hub {
            None => (host, None),
            Some(h) => {
                for (i, d) in h.devices.iter().enumerate() {
                    d.validate().map_err(|e| {
                        invalid(&format!("device_hub.devices[{i}].{}", e.field), e.reason)
                    })?;
                }
                let listener = TcpListener::bind(h.listen).await.map_err(|e| {
                    transport_error(
                        "",
                        format!("cannot listen on {} (device hub): {e}", h.listen),
                    )
                })?;
                let hub = DmHub::start(&options.server_id, listener, h.options)
                    .await
                    .map_err(|e| transport_error("", e))?;
                for d in h.devices {
                    hub.add_device(d);
                }
                let wrapped: Arc<dyn Host> = Arc::new(HubHost {
                    inner: host,
                    hub: hub.clone(),
                });
                (wrapped, Some(hub))
            }
        };
        let engine =
            DelegationServer::with_parts(config, host, late.clone(), store, Arc::new(SystemClock))?;
        if let Some(hub) = &hub {
            hub.bind_server(&engine);
        }
        let (https, local_addr, peers) = match options.wire {
            Wire::Custom(t) => {
                *late.0.write().unwrap_or_else(|p| p.into_inner()) = Some(t);
                (None, None, Vec::new())
            }
            Wire::Https {
                listen,
                identity,
                trust_pem,
                peers,
                options,
            } => {
                options
                    .validate()
                    .map_err(|e| invalid(&format!("https.{}", e.field), e.reason))?;
                // Fail on unusable PEM data now rather than when the peers arrive.
                crate::tls::server_config(&identity, &trust_pem)
                    .map_err(|e| invalid("identity", e))?;
                let listener = TcpListener::bind(listen)
                    .await
                    .map_err(|e| transport_error("", format!("cannot listen on {listen}: {e}")))?;
                let addr = listener.local_addr().map_err(|e| transport_error("", e))?;
                let parts = HttpsParts {
                    listener: Some(listener),
                    endpoint: None,
                    transport: None,
                    identity,
                    trust_pem,
                    options,
                };
                (Some(Mutex::new(parts)), Some(addr), peers)
            }
        };
        let watcher = engine.spawn_deadline_watcher(options.watch_period);
        let server = Self {
            engine,
            late,
            https,
            local_addr,
            watcher: Mutex::new(Some(watcher)),
            hub,
            runtime: Handle::current(),
            closed: std::sync::atomic::AtomicBool::new(false),
        };
        if server.https.is_none() {
            server.spawn_resend_failures();
        }
        if !peers.is_empty() {
            server.set_peers(peers)?;
        }
        Ok(server)
    }

    /// Sets the HTTPS peers and starts serving, for a server started without them (two
    /// servers on port 0 learn each other's port first). Once only.
    ///
    /// Errors: [`Error::InvalidState`] on a custom wire or when already set;
    /// [`Error::InvalidArgument`] for a peer whose endpoint is not `https://`.
    pub fn set_peers(&self, peers: Vec<Peer>) -> Result<(), Error> {
        self.check_open()?;
        let Some(https) = &self.https else {
            return Err(Error::InvalidState(
                "peers are set only on an HTTPS server".into(),
            ));
        };
        let mut parts = https.lock().unwrap_or_else(|p| p.into_inner());
        if parts.listener.is_none() {
            return Err(Error::InvalidState("the peers are already set".into()));
        }
        let mut ids = std::collections::HashSet::new();
        for p in &peers {
            dmdelegate::acl::validate_server_id(&p.server_id)
                .map_err(|e| invalid("peers[].server_id", e))?;
            if !ids.insert(p.server_id.as_str()) {
                return Err(invalid(
                    "peers[].server_id",
                    format!("`{}` appears twice", p.server_id),
                ));
            }
        }
        let transport =
            HttpsTransport::new(&parts.identity, &parts.trust_pem, &peers, parts.options)
                .map_err(|e| invalid("peers", e))?;
        transport.bind_server(&self.engine);
        let _inside = self.runtime.enter();
        let listener = parts.listener.take().expect("checked above");
        let endpoint = serve(
            listener,
            &parts.identity,
            &parts.trust_pem,
            &peers,
            self.engine.clone(),
            parts.options,
        )
        .map_err(|e| invalid("identity", e))?;
        parts.endpoint = Some(endpoint);
        parts.transport = Some(transport.clone());
        *self.late.0.write().unwrap_or_else(|p| p.into_inner()) =
            Some(Arc::new(HttpsSender(transport)));
        self.spawn_resend_failures();
        Ok(())
    }

    /// Once the transport is there: FAILUREs of sessions that failed shortly before a
    /// restart go out again (they may have been queued when the server stopped).
    fn spawn_resend_failures(&self) {
        let engine = self.engine.downgrade();
        self.runtime.spawn(async move {
            let Some(engine) = engine.upgrade() else {
                return;
            };
            let since = Timestamp(Timestamp::now().0 - RESEND_FAILURES_WINDOW.as_millis() as i64);
            match engine.resend_failures(since).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(sessions = n, "FAILUREs sent again after start"),
                Err(e) => tracing::warn!(error = %e, "sending FAILUREs again failed"),
            }
        });
    }

    fn check_open(&self) -> Result<(), Error> {
        if self.is_shut_down() {
            return Err(Error::InvalidState("the server is shut down".into()));
        }
        Ok(())
    }

    /// True once [`Server::shutdown`] ran.
    pub fn is_shut_down(&self) -> bool {
        self.closed.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// This server's ServerID.
    pub fn server_id(&self) -> &str {
        self.engine.server_id()
    }

    /// The address the HTTPS endpoint listens on (`None` on a custom wire).
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.local_addr
    }

    /// The delegation endpoint URL on `host` (for a peer's configuration), when HTTPS.
    pub fn endpoint_url(&self, host: &str) -> Option<String> {
        self.local_addr
            .map(|a| format!("https://{host}:{}{}", a.port(), crate::DELEGATION_PATH))
    }

    /// The device hub's SyncML endpoint (`http://ip:port/dm`, for the `AppAddr` of the
    /// DM accounts the host hands out), when the server has one.
    pub fn device_hub_url(&self) -> Option<&str> {
        self.hub.as_ref().map(|h| h.url())
    }

    /// Manages one more device through the device hub (replacing a link with the same
    /// device id).
    ///
    /// Errors: [`Error::InvalidState`] without a hub or once shut down,
    /// [`Error::InvalidArgument`] for a link [`DeviceLink::validate`] refuses.
    pub fn add_device(&self, link: DeviceLink) -> Result<(), Error> {
        self.check_open()?;
        let Some(hub) = &self.hub else {
            return Err(Error::InvalidState(
                "the server has no device hub (ServerOptions::device_hub)".into(),
            ));
        };
        link.validate().map_err(|e| invalid(e.field, e.reason))?;
        hub.add_device(link);
        Ok(())
    }

    /// Totals of the HTTPS transport (zero on a custom wire or before the peers are set).
    pub fn delivery_stats(&self) -> crate::https::DeliveryStats {
        self.https
            .as_ref()
            .and_then(|h| {
                let parts = h.lock().unwrap_or_else(|p| p.into_inner());
                parts.transport.as_ref().map(|t| t.stats())
            })
            .unwrap_or_default()
    }

    /// The engine, for what this facade does not cover.
    pub fn engine(&self) -> &DelegationServer {
        &self.engine
    }

    /// The runtime the server's tasks run on.
    pub fn runtime(&self) -> &Handle {
        &self.runtime
    }

    /// Starts a delegation (sends DELEGATION_NOTIF) and returns its session id; the rest
    /// runs in the background.
    pub async fn start_delegation(&self, request: StartDelegation) -> Result<String, Error> {
        self.check_open()?;
        if let Some(https) = &self.https {
            // Refused before a session exists: an unknown peer is the caller's mistake.
            let parts = https.lock().unwrap_or_else(|p| p.into_inner());
            match &parts.transport {
                // (Delegating to itself is the engine's to refuse, with its own words.)
                Some(t) if !t.has_peer(&request.peer) && request.peer != self.server_id() => {
                    return Err(invalid(
                        "peer",
                        format!("`{}` is not a configured peer", request.peer),
                    ))
                }
                None => {
                    return Err(Error::InvalidState(
                        "no peers configured yet (set_peers)".into(),
                    ))
                }
                Some(_) => {}
            }
        }
        self.engine
            .start_delegation(DelegationRequest {
                session_id: request.session_id,
                peer: request.peer,
                method: request.method,
                delegation_type: request.delegation_type,
                info: request.info,
                expires: request.expires,
            })
            .await
    }

    /// Takes one message that arrived over the host's own transport, sent by the
    /// authenticated peer `peer` (`None` when the transport authenticates nobody).
    pub async fn receive(&self, document: &[u8], peer: Option<&str>) -> Result<Receipt, Error> {
        self.check_open()?;
        self.engine.receive_xml(document, peer).await
    }

    /// Waits at most `timeout` for the session to reach a terminal state (Completed,
    /// Rejected, RolledBack, RollbackFailed, Expired) and returns it as it is then,
    /// finished or not. A session this server does not know yet (the peer's message may
    /// be on its way) is waited for too; [`Error::UnknownSession`] when it is still
    /// unknown at the end.
    pub async fn wait(&self, session_id: &str, timeout: Duration) -> Result<SessionInfo, Error> {
        let start = tokio::time::Instant::now();
        loop {
            let left = timeout.saturating_sub(start.elapsed());
            match self.engine.wait_until_terminal(session_id, left).await {
                Err(Error::UnknownSession(_)) if !left.is_zero() => {
                    tokio::time::sleep(left.min(Duration::from_millis(20))).await
                }
                // A failed delegation is an answer here, not an error: return its record.
                Err(Error::Failed { .. }) => return self.engine.session(session_id).await,
                other => return other,
            }
        }
    }

    /// One session.
    pub async fn session(&self, session_id: &str) -> Result<SessionInfo, Error> {
        self.engine.session(session_id).await
    }

    /// Every session this server knows, finished ones included.
    pub async fn sessions(&self) -> Result<Vec<SessionInfo>, Error> {
        self.engine.sessions().await
    }

    /// Cancels an unfinished delegation: FAILURE to the peer, rollback.
    pub async fn cancel(&self, session_id: &str) -> Result<SessionInfo, Error> {
        self.engine.cancel(session_id).await
    }

    /// Runs the inverse operations of a `RollbackIncomplete` session again.
    pub async fn retry_rollback(&self, session_id: &str) -> Result<SessionInfo, Error> {
        self.engine.retry_rollback(session_id).await
    }

    /// DMS-2, Methods 3/4: the device opened its first DM session after bootstrapping;
    /// confirms every session waiting for it and returns their ids.
    pub async fn client_connected(&self, device_id: &str) -> Result<Vec<String>, Error> {
        self.engine.client_session_established(device_id).await
    }

    /// Stops the endpoint, the transport and the deadline watcher. Idempotent.
    pub fn shutdown(&self) {
        // Stopping the endpoint and watcher may touch tasks: inside the server's runtime.
        let _inside = self.runtime.enter();
        self.closed.store(true, std::sync::atomic::Ordering::SeqCst);
        if let Some(w) = self
            .watcher
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        {
            w.abort();
        }
        if let Some(hub) = &self.hub {
            hub.shutdown();
        }
        if let Some(https) = &self.https {
            let mut parts = https.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(e) = parts.endpoint.take() {
                e.shutdown();
            }
            parts.listener.take();
            parts.transport.take();
        }
        *self.late.0.write().unwrap_or_else(|p| p.into_inner()) = None;
    }
}

/// Wires a simulated device's bootstrap (Methods 3/4) the way a real one behaves: when a
/// DMS-1 triggers it, it fetches its bootstrap from `bootstrap`, installs it, opens its
/// first DM session with DMS-2 and DMS-2 (`dms2`) is told so. Runs on `dms2`'s runtime.
pub fn route_bootstrap(device: &Arc<SimDevice>, bootstrap: Arc<SimBootstrapServer>, dms2: &Server) {
    let dev = Arc::downgrade(device);
    let engine = dms2.engine.downgrade();
    let runtime = dms2.runtime.clone();
    device.on_bootstrap_trigger(Arc::new(move |trigger| {
        let (dev, bootstrap, engine) = (dev.clone(), bootstrap.clone(), engine.clone());
        runtime.spawn(async move {
            let Some(dev) = dev.upgrade() else { return };
            let id = dev.info().device_id;
            let outcome = bootstrap
                .bootstrap(&trigger.url, &id)
                .and_then(|tree| dev.install_bootstrap(&tree, Some(&trigger.delegator)))
                .and_then(|()| dev.open_session(&trigger.server_id));
            match (outcome, engine.upgrade()) {
                (Ok(()), Some(server)) => {
                    if let Err(e) = server.client_session_established(&id).await {
                        tracing::warn!(error = %e, "confirming the client session failed");
                    }
                }
                (Ok(()), None) => tracing::info!("DMS-2 stopped before the device connected"),
                (Err(e), _) => tracing::info!(error = %e, "device bootstrap failed"),
            }
        });
    }));
}
