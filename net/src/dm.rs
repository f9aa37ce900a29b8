//! The server side of DM sessions: a DM Server reaches its devices in SyncML DM 1.2.
//!
//! [`DmHub`] serves the server's SyncML endpoint (`POST /dm`). To run a client command the
//! engine asks for, the hub wakes the device with a package 0 notification, waits for the
//! device's session (Alert 1200, credentials checked, Basic or MD5), sends the command,
//! and hands the device's Status/Results back. One command travels per round trip, in
//! the order the engine issues them; a session with nothing to do for a short idle time
//! ends with Final. A device that opens a session on its own after a bootstrap (Alert
//! 1201) is reported to the engine, which confirms Methods 3/4.
//!
//! [`HubHost`] is a [`Host`] whose device access goes through a hub and whose policy,
//! accounts, Bootstrap Server URL and events come from another host (the language
//! bindings' host, or a [`dmdelegate::sim::SimHost`]).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use dmdelegate::ops::status;
use dmdelegate::syncml::{
    self, alert, codes, command_output_from, commands_for, AuthScheme, Chal, Status, SyncCommand,
    SyncHeader, SyncMessage,
};
use dmdelegate::{
    ClientCommand, CommandOutput, DelegationOffer, DeviceError, DeviceInfo, DmAcc, Event, Host,
    HostError, PolicyDecision, ReasonCode, SessionInfo, WeakDelegationServer,
};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot, watch};

/// How the hub reaches and authenticates one device.
#[derive(Clone, PartialEq, Eq)]
pub struct DeviceLink {
    /// The device's identifier (the `Source` of its SyncML messages).
    pub device_id: String,
    /// Where package 0 notifications go (`http://…/notify`).
    pub notify_url: String,
    /// The server's secret on the device (its SRVCRED), for the package 0 digest.
    pub server_secret: String,
    /// The nonce for the package 0 digest (the SRVCRED AAuthData).
    pub server_nonce: Vec<u8>,
    /// The name the device authenticates with (CLCRED AAuthName).
    pub client_name: String,
    /// The device's secret (CLCRED AAuthSecret).
    pub client_secret: String,
    /// The scheme the device must use.
    pub scheme: AuthScheme,
}

/// What is wrong with a [`DeviceLink`]: the field (its Rust name) and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field} {reason}")]
pub struct InvalidDeviceLink {
    /// `device_id` or `notify_url`.
    pub field: &'static str,
    /// Why, e.g. "is empty".
    pub reason: String,
}

impl DeviceLink {
    /// Checks the link before a hub takes it: a device id, and an `http://` notification
    /// URL (package 0 goes to the device's plain-HTTP notification listener). Every
    /// binding calls this, so a bad link is refused the same way in each language.
    pub fn validate(&self) -> Result<(), InvalidDeviceLink> {
        if self.device_id.is_empty() {
            return Err(InvalidDeviceLink {
                field: "device_id",
                reason: "is empty".into(),
            });
        }
        if !self.notify_url.starts_with("http://") {
            return Err(InvalidDeviceLink {
                field: "notify_url",
                reason: format!("`{}` is not an http:// URL", self.notify_url),
            });
        }
        Ok(())
    }
}

impl std::fmt::Debug for DeviceLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceLink")
            .field("device_id", &self.device_id)
            .field("notify_url", &self.notify_url)
            .finish_non_exhaustive()
    }
}

/// Timing of the hub.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HubOptions {
    /// How long to wait for a notified device to open its session.
    pub connect_wait: Duration,
    /// How long a session waits for the next command before it ends.
    pub idle: Duration,
    /// How long one command may take to come back.
    pub command_wait: Duration,
}

impl Default for HubOptions {
    fn default() -> Self {
        Self {
            connect_wait: Duration::from_secs(10),
            idle: Duration::from_millis(250),
            command_wait: Duration::from_secs(30),
        }
    }
}

type Reply = oneshot::Sender<Result<CommandOutput, DeviceError>>;

struct Pending {
    command: ClientCommand,
    reply: Reply,
}

/// One DM session with one device.
struct Session {
    id: String,
    queue: mpsc::UnboundedSender<Pending>,
    incoming: tokio::sync::Mutex<mpsc::UnboundedReceiver<Pending>>,
    awaiting: Mutex<HashMap<u32, (ClientCommand, Reply)>>,
    next_cmd: AtomicU32,
    msg_id: AtomicU32,
    connected: watch::Sender<bool>,
    notified: std::sync::atomic::AtomicBool,
}

impl Session {
    fn new(id: String) -> Arc<Self> {
        let (queue, incoming) = mpsc::unbounded_channel();
        Arc::new(Self {
            id,
            queue,
            incoming: tokio::sync::Mutex::new(incoming),
            awaiting: Mutex::new(HashMap::new()),
            next_cmd: AtomicU32::new(1),
            msg_id: AtomicU32::new(1),
            connected: watch::channel(false).0,
            notified: std::sync::atomic::AtomicBool::new(false),
        })
    }
}

struct HubInner {
    server_id: String,
    url: String,
    options: HubOptions,
    links: Mutex<HashMap<String, DeviceLink>>,
    sessions: Mutex<HashMap<String, Arc<Session>>>,
    nonces: Mutex<HashMap<String, Vec<u8>>>,
    counter: AtomicU32,
    http: reqwest::Client,
    engine: OnceLock<WeakDelegationServer>,
    stop: watch::Sender<bool>,
}

/// A DM Server's SyncML endpoint and its sessions with devices. Cheap to clone.
#[derive(Clone)]
pub struct DmHub {
    inner: Arc<HubInner>,
}

impl std::fmt::Debug for DmHub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DmHub")
            .field("server_id", &self.inner.server_id)
            .field("url", &self.inner.url)
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn unreachable(message: impl Into<String>) -> DeviceError {
    DeviceError::new(status::UNREACHABLE, message)
}

impl DmHub {
    /// Serves `POST /dm` on `listener` (plain HTTP: SyncML credentials authenticate the
    /// device, the package 0 digest authenticates the server).
    pub async fn start(
        server_id: &str,
        listener: TcpListener,
        options: HubOptions,
    ) -> std::io::Result<Self> {
        let addr: SocketAddr = listener.local_addr()?;
        let (stop, mut stopped) = watch::channel(false);
        let http = reqwest::Client::builder()
            .tls_backend_preconfigured(crate::tls::plain_http_client_config())
            .timeout(Duration::from_secs(10))
            .build()
            .map_err(std::io::Error::other)?;
        let hub = DmHub {
            inner: Arc::new(HubInner {
                server_id: server_id.to_string(),
                url: format!("http://{addr}/dm"),
                options,
                links: Mutex::new(HashMap::new()),
                sessions: Mutex::new(HashMap::new()),
                nonces: Mutex::new(HashMap::new()),
                counter: AtomicU32::new(1),
                http,
                engine: OnceLock::new(),
                stop,
            }),
        };
        let router = Router::new()
            .route("/dm", post(handle))
            .with_state(hub.clone());
        tokio::spawn(async move {
            let shutdown = async move {
                let _ = stopped.changed().await;
            };
            if let Err(e) = axum::serve(listener, router)
                .with_graceful_shutdown(shutdown)
                .await
            {
                tracing::warn!(error = %e, "DM endpoint stopped");
            }
        });
        Ok(hub)
    }

    /// The SyncML endpoint, for the server's DMAcc `AppAddr`.
    pub fn url(&self) -> &str {
        &self.inner.url
    }

    /// Manages a device from now on.
    pub fn add_device(&self, link: DeviceLink) {
        lock(&self.inner.links).insert(link.device_id.clone(), link);
    }

    /// Which engine to tell when a device opens a session on its own (Methods 3/4).
    pub fn bind_server(&self, server: &dmdelegate::DelegationServer) {
        let _ = self.inner.engine.set(server.downgrade());
    }

    /// How many DM sessions with devices are open.
    pub fn active_sessions(&self) -> usize {
        lock(&self.inner.sessions).len()
    }

    /// Waits until no DM session is open (or `timeout` passes); true when idle.
    pub async fn wait_idle(&self, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        while self.active_sessions() > 0 {
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        true
    }

    /// Stops serving.
    pub fn shutdown(&self) {
        let _ = self.inner.stop.send(true);
    }

    /// Runs one command on the device, opening a DM session if none is active.
    pub async fn execute(
        &self,
        device_id: &str,
        command: &ClientCommand,
    ) -> Result<CommandOutput, DeviceError> {
        let (reply, answer) = oneshot::channel();
        let session = {
            let mut sessions = lock(&self.inner.sessions);
            let session = match sessions.get(device_id) {
                Some(s) => s.clone(),
                None => {
                    let n = self.inner.counter.fetch_add(1, Ordering::Relaxed);
                    let s = Session::new((n % 0xFFFF).max(1).to_string());
                    sessions.insert(device_id.to_string(), s.clone());
                    s
                }
            };
            // Queued under the map lock, so a session that is ending cannot miss it.
            let _ = session.queue.send(Pending {
                command: command.clone(),
                reply,
            });
            session
        };
        if !*session.connected.borrow() {
            self.notify(device_id, &session).await?;
        }
        match tokio::time::timeout(self.inner.options.command_wait, answer).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(unreachable(
                "the DM session ended before the device answered",
            )),
            Err(_) => Err(unreachable(format!(
                "no answer from the device within {:?}",
                self.inner.options.command_wait
            ))),
        }
    }

    /// Sends package 0 (once per session) and waits for the device to connect.
    async fn notify(&self, device_id: &str, session: &Arc<Session>) -> Result<(), DeviceError> {
        let link = lock(&self.inner.links)
            .get(device_id)
            .cloned()
            .ok_or_else(|| unreachable(format!("device `{device_id}` is not managed here")))?;
        let mut connected = session.connected.subscribe();
        let numeric: u16 = session.id.parse().unwrap_or(1);
        let package0 = syncml::Notification::new(numeric, self.inner.server_id.clone())
            .encode(&link.server_secret, &link.server_nonce);
        // Only the first caller of a fresh session sends the notification.
        if !session.notified.swap(true, Ordering::SeqCst) {
            let sent = self
                .inner
                .http
                .post(&link.notify_url)
                .header(header::CONTENT_TYPE, syncml::NOTIFICATION_MEDIA_TYPE)
                .body(package0)
                .send()
                .await;
            match sent {
                Ok(r) if r.status().is_success() => {}
                Ok(r) => {
                    self.drop_session(device_id, session);
                    return Err(unreachable(format!(
                        "the device refused the notification: HTTP {}",
                        r.status()
                    )));
                }
                Err(e) => {
                    self.drop_session(device_id, session);
                    return Err(unreachable(format!("cannot notify the device: {e}")));
                }
            }
        }
        let connect_wait = self.inner.options.connect_wait;
        let outcome = tokio::time::timeout(connect_wait, connected.wait_for(|c| *c))
            .await
            .map(|r| r.is_ok());
        match outcome {
            Ok(true) => Ok(()),
            _ => {
                self.drop_session(device_id, session);
                Err(unreachable(format!(
                    "the device did not open a session within {:?}",
                    self.inner.options.connect_wait
                )))
            }
        }
    }

    fn drop_session(&self, device_id: &str, session: &Arc<Session>) {
        let mut sessions = lock(&self.inner.sessions);
        if sessions
            .get(device_id)
            .is_some_and(|s| Arc::ptr_eq(s, session))
        {
            sessions.remove(device_id);
        }
    }

    fn nonce_for(&self, device_id: &str) -> Vec<u8> {
        lock(&self.inner.nonces)
            .get(device_id)
            .cloned()
            .unwrap_or_default()
    }

    fn fresh_nonce(&self, device_id: &str) -> Vec<u8> {
        let n = self.inner.counter.fetch_add(1, Ordering::Relaxed);
        let nonce = format!("{}-{n}-{device_id}", self.inner.server_id).into_bytes();
        lock(&self.inner.nonces).insert(device_id.to_string(), nonce.clone());
        nonce
    }

    fn answer(
        &self,
        to: &SyncMessage,
        status_code: u16,
        chal: Option<Chal>,
        msg_id: u32,
    ) -> SyncMessage {
        SyncMessage {
            header: SyncHeader {
                session_id: to.header.session_id.clone(),
                msg_id,
                target: to.header.source.clone(),
                source: self.inner.url.clone(),
                source_name: None,
                resp_uri: None,
                cred: None,
                max_msg_size: None,
            },
            body: vec![SyncCommand::Status(Status {
                cmd_id: 1,
                msg_ref: to.header.msg_id,
                cmd_ref: 0,
                cmd: "SyncHdr".into(),
                target_ref: Some(to.header.target.clone()),
                source_ref: Some(to.header.source.clone()),
                chal,
                data: status_code,
                items: Vec::new(),
            })],
            final_: true,
        }
    }

    /// One SyncML message from a device; returns the answer.
    async fn on_message(&self, message: SyncMessage) -> SyncMessage {
        let device_id = message.header.source.clone();
        let opening = message.body.iter().find_map(|c| match c {
            SyncCommand::Alert(a)
                if a.data == alert::SERVER_INITIATED || a.data == alert::CLIENT_INITIATED =>
            {
                Some(a.data)
            }
            _ => None,
        });
        let existing = lock(&self.inner.sessions).get(&device_id).cloned();
        let session = match (opening, existing) {
            (Some(kind), existing) => {
                let Some(link) = lock(&self.inner.links).get(&device_id).cloned() else {
                    return self.answer(&message, codes::INVALID_CREDENTIALS, None, 1);
                };
                let nonce = self.nonce_for(&device_id);
                let authentic = message
                    .header
                    .cred
                    .as_ref()
                    .is_some_and(|c| c.verify(&link.client_name, &link.client_secret, &nonce));
                if !authentic {
                    let chal = match link.scheme {
                        AuthScheme::Md5 => Chal::md5(self.fresh_nonce(&device_id)),
                        AuthScheme::Basic => Chal::basic(),
                    };
                    let code = if message.header.cred.is_some() {
                        codes::INVALID_CREDENTIALS
                    } else {
                        codes::MISSING_CREDENTIALS
                    };
                    return self.answer(&message, code, Some(chal), 1);
                }
                let session = match (kind, existing) {
                    (alert::SERVER_INITIATED, Some(s)) => s,
                    _ => {
                        // A session the device started (after a bootstrap), or one we no
                        // longer wait for: serve it with whatever gets queued.
                        let s = Session::new(message.header.session_id.clone());
                        lock(&self.inner.sessions).insert(device_id.clone(), s.clone());
                        s
                    }
                };
                let _ = session.connected.send(true);
                if kind == alert::CLIENT_INITIATED {
                    if let Some(server) = self.inner.engine.get().and_then(|w| w.upgrade()) {
                        let id = device_id.clone();
                        tokio::spawn(async move {
                            if let Err(e) = server.client_session_established(&id).await {
                                tracing::warn!(device = %id, error = %e, "confirming the client session failed");
                            }
                        });
                    }
                }
                session
            }
            (None, Some(s)) => s,
            (None, None) => return self.answer(&message, status::NOT_FOUND, None, 1),
        };

        // Hand back what the device answered.
        let statuses: Vec<&Status> = message
            .body
            .iter()
            .filter_map(|c| match c {
                SyncCommand::Status(s) if s.cmd_ref != 0 => Some(s),
                _ => None,
            })
            .collect();
        for s in statuses {
            let results = message.body.iter().find(|c| {
                matches!(c, SyncCommand::Results(r) if r.cmd_ref == s.cmd_ref && r.msg_ref.unwrap_or(s.msg_ref) == s.msg_ref)
            });
            let waiting = lock(&session.awaiting).remove(&s.cmd_ref);
            if let Some((_, reply)) = waiting {
                let status = SyncCommand::Status(s.clone());
                let _ = reply.send(command_output_from(&status, results));
            }
        }

        // The next command, if the engine has one within the idle time.
        let msg_id = session.msg_id.fetch_add(1, Ordering::SeqCst);
        let mut answer = self.answer(&message, codes::AUTH_ACCEPTED, None, msg_id);
        let next = {
            let mut incoming = session.incoming.lock().await;
            match tokio::time::timeout(self.inner.options.idle, incoming.recv()).await {
                Ok(Some(p)) => Some(p),
                _ => {
                    // End the session, unless a command slipped in meanwhile.
                    let mut sessions = lock(&self.inner.sessions);
                    match incoming.try_recv() {
                        Ok(p) => Some(p),
                        Err(_) => {
                            if sessions
                                .get(&device_id)
                                .is_some_and(|s| Arc::ptr_eq(s, &session))
                            {
                                sessions.remove(&device_id);
                            }
                            None
                        }
                    }
                }
            }
        };
        if let Some(p) = next {
            let cmd_id = session.next_cmd.fetch_add(1, Ordering::SeqCst) + 1;
            answer
                .body
                .extend(commands_for(std::slice::from_ref(&p.command), cmd_id));
            lock(&session.awaiting).insert(cmd_id, (p.command, p.reply));
        } else {
            // Anything still waiting will never be answered in this session.
            lock(&session.awaiting).clear();
        }
        answer
    }
}

async fn handle(State(hub): State<DmHub>, body: Bytes) -> Response {
    let message = match SyncMessage::from_xml(&body) {
        Ok(m) => m,
        Err(e) => return (StatusCode::BAD_REQUEST, e.to_string()).into_response(),
    };
    let answer = hub.on_message(message).await;
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, syncml::MEDIA_TYPE)],
        answer.to_xml(),
    )
        .into_response()
}

/// A host whose device access (`execute`, `open_dm_session`) goes through a [`DmHub`]
/// and whose policy, account, Bootstrap Server URL and events are `inner`'s.
pub struct HubHost {
    /// Policy, account, URL, events.
    pub inner: Arc<dyn Host>,
    /// Device access.
    pub hub: DmHub,
}

impl std::fmt::Debug for HubHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HubHost")
            .field("hub", &self.hub)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl Host for HubHost {
    async fn accept_delegation(&self, offer: &DelegationOffer) -> PolicyDecision {
        self.inner.accept_delegation(offer).await
    }

    async fn execute(
        &self,
        device: &DeviceInfo,
        command: &ClientCommand,
    ) -> Result<CommandOutput, DeviceError> {
        self.hub.execute(&device.device_id, command).await
    }

    async fn open_dm_session(&self, session: &SessionInfo) -> Result<(), HostError> {
        // A server-initiated session that reads the device's identity proves access.
        let probe = ClientCommand::GetAcl {
            uri: "./DevInfo/DevId".into(),
        };
        self.hub
            .execute(&session.info.device.device_id, &probe)
            .await
            .map(|_| ())
            .map_err(|e| HostError::new(ReasonCode::DmSessionFailed, e.to_string()))
    }

    async fn dm_account(&self, device: &DeviceInfo) -> Result<DmAcc, HostError> {
        self.inner.dm_account(device).await
    }

    async fn bootstrap_server_url(&self, device: &DeviceInfo) -> Result<String, HostError> {
        self.inner.bootstrap_server_url(device).await
    }

    fn on_event(&self, event: &Event) {
        self.inner.on_event(event)
    }
}
