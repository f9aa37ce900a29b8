//! A [`SimDevice`] on the network: the device side of SyncML DM 1.2 sessions over HTTP.
//!
//! - **Package 0**: [`NetworkDevice`] serves `POST /notify` ([`NOTIFY_PATH`]) on plain
//!   HTTP, body a [`Notification`] (`application/vnd.syncml.notification`). The digest is
//!   checked with the SRVCRED secret and nonce of the account whose ServerID the
//!   notification names; a good one is answered 200 at once and starts a
//!   server-initiated session (Alert 1200), anything else is refused (400/401/404/415)
//!   and opens nothing.
//! - **Sessions**: the device POSTs [`SyncMessage`]s (`application/vnd.syncml.dm+xml`) to
//!   the account's `AppAddr/1/Addr`, with the CLCRED credentials (Basic, or MD5 with the
//!   CLCRED nonce); a 401/407 with a challenge is answered once with credentials for the
//!   challenge. It executes the server's Add, Replace, Delete and Get through
//!   [`SimDevice::execute`] (ACLs enforced) and sends the Statuses and Results in the next
//!   message, until a server message carries Final and nothing but Statuses.
//! - **No automatic session**: [`NetworkDevice::initiate_session`] (Alert 1201) refuses an
//!   account marked `Ext/NoAutoSession` ([`SimDevice::may_open_session_on_its_own`]).
//! - **Bootstrap (Methods 3/4)**: when a bootstrap trigger appears in the tree, the device
//!   fetches `GET <url>?device=<device id>` over HTTPS (server authentication only),
//!   installs the TNDS it gets with [`SimDevice::install_bootstrap`] and opens a
//!   client-initiated session to the new server, which is the bootstrap's acknowledgement.
//! - **Inspection**: `GET /state` ([`STATE_PATH`]) answers the tree as JSON (ACLs per
//!   URI, the ServerIDs with an account, the whole TNDS dump), so tests in other processes
//!   can check what a delegation did. A simulated device has nothing to hide; a real one
//!   would not serve this.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use dmdelegate::dmacc::{AddrType, AppAuth, AuthLevel, AuthType};
use dmdelegate::ops::status;
use dmdelegate::sim::{BootstrapTrigger, SimDevice};
use dmdelegate::syncml::{
    alert, client_command_from, codes, reply_for, Alert, AuthScheme, Chal, Cred, Notification,
    Status, SyncCommand, SyncHeader, SyncMessage, MEDIA_TYPE, NOTIFICATION_MEDIA_TYPE,
};
use dmdelegate::{DeviceError, DmAcc, MgmtTree};
use rustls::{ClientConfig, RootCertStore};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::tls::trust_anchors;

/// The path of the Package 0 endpoint.
pub const NOTIFY_PATH: &str = "/notify";

/// The path of the inspection endpoint (`GET`, JSON).
pub const STATE_PATH: &str = "/state";

/// Largest Package 0 accepted (digest, header and a 255-byte server id, with room for a
/// vendor part).
const MAX_NOTIFICATION_BYTES: usize = 4096;

/// A failure to start a [`NetworkDevice`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("network device: {0}")]
pub struct NetDeviceError(pub String);

/// How a [`NetworkDevice`] reaches servers.
#[derive(Debug, Clone)]
pub struct DeviceOptions {
    /// CA certificates (PEM) the device trusts for HTTPS: Bootstrap Servers, and DM
    /// Servers with `https://` addresses. Without it, no HTTPS server is trusted.
    pub bootstrap_ca_pem: Option<String>,
    /// Host names resolved to fixed addresses (the port of the URL is kept), for example
    /// a Bootstrap Server's certificate name to its loopback address.
    pub resolve: Vec<(String, SocketAddr)>,
    /// Timeout of each HTTP request (connect included).
    pub request_timeout: Duration,
    /// Most messages the device sends in one session before giving up.
    pub max_messages: u32,
}

impl Default for DeviceOptions {
    fn default() -> Self {
        Self {
            bootstrap_ca_pem: None,
            resolve: Vec::new(),
            request_timeout: Duration::from_secs(10),
            max_messages: 1000,
        }
    }
}

/// One DM session the device took part in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionLog {
    /// The server's ServerID.
    pub server_id: String,
    /// `SessionID` of the session.
    pub session_id: String,
    /// True when started by a Package 0 (Alert 1200), false when the device initiated it
    /// (Alert 1201).
    pub initiated_by_server: bool,
    /// How many of the server's DM Tree commands the device executed, or why the session
    /// failed.
    pub outcome: Result<usize, String>,
}

/// One bootstrap the device fetched on a trigger.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootstrapLog {
    /// The new server's ServerID (from the trigger).
    pub server_id: String,
    /// The Bootstrap Server URL (from the trigger).
    pub url: String,
    /// Whether the bootstrap was fetched and installed, or why not.
    pub outcome: Result<(), String>,
}

struct Inner {
    device: Arc<SimDevice>,
    client: reqwest::Client,
    max_messages: u32,
    sessions: Mutex<Vec<SessionLog>>,
    bootstraps: Mutex<Vec<BootstrapLog>>,
    refused: AtomicUsize,
    initiations_refused: AtomicUsize,
    next_session: AtomicU32,
}

/// A simulated device reachable over the network; dropping it (or
/// [`NetworkDevice::shutdown`]) stops its Package 0 endpoint.
pub struct NetworkDevice {
    inner: Arc<Inner>,
    local_addr: SocketAddr,
    stop: watch::Sender<bool>,
}

impl std::fmt::Debug for NetworkDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NetworkDevice")
            .field("device", &self.inner.device)
            .field("local_addr", &self.local_addr)
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Standard base64 (padding optional), as `AAuthData` holds nonces.
fn b64_decode(text: &str) -> Option<Vec<u8>> {
    let (mut out, mut acc, mut bits) = (Vec::new(), 0u32, 0u32);
    for c in text.trim().trim_end_matches('=').bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

/// The nonce an `AppAuth` holds in `AAuthData` (empty when absent or not base64).
fn nonce_of(auth: &AppAuth) -> Vec<u8> {
    auth.data
        .as_deref()
        .and_then(b64_decode)
        .unwrap_or_default()
}

/// The credentials a device presents in `SyncHdr/Cred`.
struct ClientAuth {
    name: String,
    secret: String,
    scheme: Option<AuthScheme>,
    nonce: Vec<u8>,
}

impl ClientAuth {
    fn new(acc: &DmAcc, device_id: &str) -> Self {
        let clcred = acc.auths.iter().find(|a| a.level == AuthLevel::ClCred);
        let scheme = clcred.and_then(|a| match a.auth_type {
            AuthType::Basic | AuthType::HttpBasic => Some(AuthScheme::Basic),
            AuthType::Digest | AuthType::HttpDigest => Some(AuthScheme::Md5),
            _ => None,
        });
        Self {
            name: clcred
                .and_then(|a| a.name.clone())
                .unwrap_or_else(|| device_id.to_string()),
            secret: clcred.and_then(|a| a.secret.clone()).unwrap_or_default(),
            scheme,
            nonce: clcred.map(nonce_of).unwrap_or_default(),
        }
    }

    fn cred(&self) -> Option<Cred> {
        self.scheme.map(|s| match s {
            AuthScheme::Basic => Cred::basic(&self.name, &self.secret),
            AuthScheme::Md5 => Cred::md5(&self.name, &self.secret, &self.nonce),
        })
    }

    fn challenged(&mut self, chal: &Chal) {
        self.scheme = Some(chal.scheme);
        if let Some(n) = &chal.next_nonce {
            self.nonce = n.clone();
        }
    }
}

/// The device's Status for the `SyncHdr` of `msg`.
fn header_status(msg: &SyncMessage, cmd_id: u32) -> SyncCommand {
    SyncCommand::Status(Status {
        cmd_id,
        msg_ref: msg.header.msg_id,
        cmd_ref: 0,
        cmd: "SyncHdr".into(),
        target_ref: Some(msg.header.target.clone()),
        source_ref: Some(msg.header.source.clone()),
        chal: None,
        data: status::OK,
        items: Vec::new(),
    })
}

fn session_alert(cmd_id: u32, by_server: bool) -> SyncCommand {
    SyncCommand::Alert(Alert {
        cmd_id,
        data: if by_server {
            alert::SERVER_INITIATED
        } else {
            alert::CLIENT_INITIATED
        },
        items: Vec::new(),
    })
}

impl NetworkDevice {
    /// Binds `127.0.0.1:0`, serves the Package 0 endpoint for `device`, and sets the
    /// device's bootstrap trigger hook (replacing any other) to bootstrap over HTTPS.
    /// Must be called within a Tokio runtime, which runs the sessions.
    pub async fn start(
        device: Arc<SimDevice>,
        options: DeviceOptions,
    ) -> Result<NetworkDevice, NetDeviceError> {
        let any_port = SocketAddr::from(([127, 0, 0, 1], 0));
        Self::start_on(device, any_port, options).await
    }

    /// As [`NetworkDevice::start`], with the package 0 endpoint on `listen`.
    pub async fn start_on(
        device: Arc<SimDevice>,
        listen: SocketAddr,
        options: DeviceOptions,
    ) -> Result<NetworkDevice, NetDeviceError> {
        let roots = match &options.bootstrap_ca_pem {
            Some(pem) => trust_anchors(pem).map_err(|e| NetDeviceError(e.to_string()))?,
            None => Arc::new(RootCertStore::empty()),
        };
        let mut tls =
            ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_protocol_versions(&[&rustls::version::TLS13])
                .map_err(|e| NetDeviceError(format!("TLS client config: {e}")))?
                .with_root_certificates(roots)
                .with_no_client_auth();
        tls.alpn_protocols = vec![b"http/1.1".to_vec()];
        let mut builder = reqwest::Client::builder()
            .tls_backend_preconfigured(tls)
            .connect_timeout(options.request_timeout)
            .timeout(options.request_timeout);
        for (host, addr) in &options.resolve {
            builder = builder.resolve(host, *addr);
        }
        let client = builder
            .build()
            .map_err(|e| NetDeviceError(format!("HTTP client: {e}")))?;
        let listener = TcpListener::bind(listen)
            .await
            .map_err(|e| NetDeviceError(format!("listener: {e}")))?;
        let local_addr = listener
            .local_addr()
            .map_err(|e| NetDeviceError(format!("listener: {e}")))?;
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or_default();
        let inner = Arc::new(Inner {
            device: device.clone(),
            client,
            max_messages: options.max_messages.max(1),
            sessions: Mutex::new(Vec::new()),
            bootstraps: Mutex::new(Vec::new()),
            refused: AtomicUsize::new(0),
            initiations_refused: AtomicUsize::new(0),
            next_session: AtomicU32::new(seed),
        });
        let weak = Arc::downgrade(&inner);
        let runtime = tokio::runtime::Handle::current();
        device.on_bootstrap_trigger(Arc::new(move |trigger: BootstrapTrigger| {
            if let Some(inner) = weak.upgrade() {
                runtime.spawn(inner.bootstrap(trigger));
            }
        }));
        let router = Router::new()
            .route(NOTIFY_PATH, post(notify))
            .route(STATE_PATH, get(state))
            .layer(DefaultBodyLimit::max(MAX_NOTIFICATION_BYTES))
            .with_state(inner.clone());
        let (stop, mut stopped) = watch::channel(false);
        tokio::spawn(async move {
            let shutdown = async move {
                let _ = stopped.wait_for(|s| *s).await;
            };
            if let Err(e) = axum::serve(listener, router)
                .with_graceful_shutdown(shutdown)
                .await
            {
                tracing::warn!(error = %e, "device: Package 0 endpoint stopped");
            }
        });
        Ok(NetworkDevice {
            inner,
            local_addr,
            stop,
        })
    }

    /// The simulated device behind it.
    pub fn device(&self) -> &Arc<SimDevice> {
        &self.inner.device
    }

    /// The address of the Package 0 endpoint.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Where servers POST Package 0: `http://127.0.0.1:<port>/notify`.
    pub fn notify_url(&self) -> String {
        format!("http://{}{NOTIFY_PATH}", self.local_addr)
    }

    /// Opens a client-initiated session (Alert 1201) to `server_id` and runs it to the
    /// end, unless the device may not open one on its own (no account, or the account is
    /// marked `Ext/NoAutoSession`): then nothing is sent and the refusal is counted in
    /// [`NetworkDevice::initiations_refused`]. Returns the number of commands executed.
    pub async fn initiate_session(&self, server_id: &str) -> Result<usize, String> {
        self.inner.initiate(server_id).await
    }

    /// Every session so far (ended ones, successful or not), in the order they ended.
    pub fn sessions(&self) -> Vec<SessionLog> {
        lock(&self.inner.sessions).clone()
    }

    /// Every bootstrap fetched on a trigger, in order.
    pub fn bootstraps(&self) -> Vec<BootstrapLog> {
        lock(&self.inner.bootstraps).clone()
    }

    /// Package 0 notifications refused (malformed, unknown server, bad digest).
    pub fn notifications_refused(&self) -> usize {
        self.inner.refused.load(Ordering::SeqCst)
    }

    /// Client-initiated sessions the device declined to open (no account, or
    /// `Ext/NoAutoSession`).
    pub fn initiations_refused(&self) -> usize {
        self.inner.initiations_refused.load(Ordering::SeqCst)
    }

    /// Waits until at least `count` sessions have ended or `timeout` passes; returns the
    /// sessions so far.
    pub async fn wait_for_sessions(&self, count: usize, timeout: Duration) -> Vec<SessionLog> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let sessions = self.sessions();
            if sessions.len() >= count || tokio::time::Instant::now() >= deadline {
                return sessions;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Stops the Package 0 endpoint (sessions under way run to their end).
    pub fn shutdown(&self) {
        let _ = self.stop.send(true);
    }
}

impl Drop for NetworkDevice {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// `GET /state`: `{"device_id", "acls": {uri: acl}, "accounts": [ServerID…], "dump"}`.
async fn state(State(inner): State<Arc<Inner>>) -> Json<serde_json::Value> {
    let device = &inner.device;
    let uris = device.uris();
    let mut accounts: Vec<String> = uris
        .iter()
        .filter(|u| u.starts_with("./DMAcc/") && u.ends_with("/ServerID"))
        .filter_map(|u| device.value(u))
        .collect();
    accounts.sort();
    Json(serde_json::json!({
        "device_id": device.info().device_id,
        "acls": device.acls(),
        "accounts": accounts,
        "dump": device.dump(),
    }))
}

async fn notify(State(inner): State<Arc<Inner>>, headers: HeaderMap, body: Bytes) -> Response {
    let media = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    let checked = match media {
        Some(m) if !m.starts_with(NOTIFICATION_MEDIA_TYPE) => Err((
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!("expected Content-Type {NOTIFICATION_MEDIA_TYPE}"),
        )),
        _ => inner.check_notification(&body),
    };
    match checked {
        Ok(n) => {
            tracing::info!(server = %n.server_id, session = n.session_id, "Package 0 accepted");
            let session_id = n.session_id.to_string();
            tokio::spawn(async move {
                let _ = inner.run_session(&n.server_id, session_id, true).await;
            });
            (StatusCode::OK, "session starting").into_response()
        }
        Err((code, why)) => {
            inner.refused.fetch_add(1, Ordering::SeqCst);
            tracing::warn!(%code, reason = %why, "Package 0 refused");
            (code, why).into_response()
        }
    }
}

impl Inner {
    /// The device's accounts for `server_id`, read from its tree (secrets included).
    fn accounts(&self, server_id: &str) -> Vec<DmAcc> {
        let Ok(tree) = MgmtTree::from_xml(self.device.dump().as_bytes()) else {
            return Vec::new();
        };
        tree.nodes
            .first()
            .and_then(|root| root.child("DMAcc"))
            .map(|d| {
                d.children
                    .iter()
                    .filter_map(|n| DmAcc::from_node(n).ok())
                    .filter(|a| a.server_id == server_id)
                    .collect()
            })
            .unwrap_or_default()
    }

    /// A Package 0 whose digest is right for one of the named server's accounts.
    fn check_notification(&self, bytes: &[u8]) -> Result<Notification, (StatusCode, String)> {
        let (n, _) = Notification::decode(bytes)
            .map_err(|e| (StatusCode::BAD_REQUEST, format!("not a Package 0: {e}")))?;
        let accounts = self.accounts(&n.server_id);
        if accounts.is_empty() {
            return Err((
                StatusCode::NOT_FOUND,
                format!("no account for `{}`", n.server_id),
            ));
        }
        let verified = accounts
            .iter()
            .flat_map(|a| &a.auths)
            .filter(|a| a.level == AuthLevel::SrvCred)
            .any(|a| {
                let secret = a.secret.as_deref().unwrap_or_default();
                Notification::verify_digest(bytes, secret, &nonce_of(a))
            });
        if !verified {
            return Err((
                StatusCode::UNAUTHORIZED,
                format!("wrong digest for `{}`", n.server_id),
            ));
        }
        Ok(n)
    }

    fn fresh_session_id(&self) -> String {
        (self.next_session.fetch_add(1, Ordering::SeqCst) % 0x1_0000).to_string()
    }

    async fn initiate(&self, server_id: &str) -> Result<usize, String> {
        if !self.device.may_open_session_on_its_own(server_id) {
            self.initiations_refused.fetch_add(1, Ordering::SeqCst);
            let why = format!("no session to `{server_id}` on the device's own initiative (no account, or Ext/NoAutoSession)");
            tracing::info!(server = %server_id, "{why}");
            return Err(why);
        }
        self.run_session(server_id, self.fresh_session_id(), false)
            .await
    }

    /// Runs one session and records it.
    async fn run_session(
        &self,
        server_id: &str,
        session_id: String,
        by_server: bool,
    ) -> Result<usize, String> {
        let outcome = self.session(server_id, &session_id, by_server).await;
        match &outcome {
            Ok(n) => {
                tracing::info!(server = %server_id, session = %session_id, commands = n, "DM session ended")
            }
            Err(e) => {
                tracing::warn!(server = %server_id, session = %session_id, error = %e, "DM session failed")
            }
        }
        lock(&self.sessions).push(SessionLog {
            server_id: server_id.to_string(),
            session_id,
            initiated_by_server: by_server,
            outcome: outcome.clone(),
        });
        outcome
    }

    async fn post(&self, url: &str, msg: &SyncMessage) -> Result<SyncMessage, String> {
        let answer = self
            .client
            .post(url)
            .header(reqwest::header::CONTENT_TYPE, MEDIA_TYPE)
            .body(msg.to_xml())
            .send()
            .await
            .map_err(|e| format!("POST {url}: {e}"))?;
        let code = answer.status();
        let body = answer
            .bytes()
            .await
            .map_err(|e| format!("POST {url}: {e}"))?;
        if !code.is_success() {
            let text = String::from_utf8_lossy(&body);
            return Err(format!("POST {url}: HTTP {code}: {text}"));
        }
        SyncMessage::from_xml(&body).map_err(|e| format!("server message: {e}"))
    }

    /// The session itself: message exchange until the server ends it.
    async fn session(
        &self,
        server_id: &str,
        session_id: &str,
        by_server: bool,
    ) -> Result<usize, String> {
        let accounts = self.accounts(server_id);
        let (acc, server_url) = accounts
            .iter()
            .find_map(|a| {
                a.addresses
                    .iter()
                    .find(|ad| ad.addr_type == AddrType::Uri)
                    .map(|ad| (a, ad.addr.clone()))
            })
            .ok_or_else(|| format!("no account with a URI address for `{server_id}`"))?;
        let device_id = self.device.info().device_id;
        let mut auth = ClientAuth::new(acc, &device_id);
        let mut url = server_url.clone();
        let mut body = vec![session_alert(1, by_server)];
        let (mut msg_id, mut retried, mut authenticated, mut executed) = (1u32, false, false, 0);
        loop {
            if msg_id > self.max_messages {
                return Err(format!("more than {} messages", self.max_messages));
            }
            let msg = SyncMessage {
                header: SyncHeader {
                    session_id: session_id.to_string(),
                    msg_id,
                    target: server_url.clone(),
                    source: device_id.clone(),
                    source_name: Some(auth.name.clone()),
                    resp_uri: None,
                    cred: auth.cred(),
                    max_msg_size: None,
                },
                body: std::mem::take(&mut body),
                final_: true,
            };
            let reply = self.post(&url, &msg).await?;
            if reply.header.session_id != session_id {
                return Err(format!(
                    "server answered in session `{}`",
                    reply.header.session_id
                ));
            }
            if let Some(r) = &reply.header.resp_uri {
                url = r.clone();
            }
            msg_id += 1;
            let hdr = reply.body.iter().find_map(|c| match c {
                SyncCommand::Status(s) if s.cmd_ref == 0 => Some(s),
                _ => None,
            });
            if let Some(h) = hdr {
                if let Some(chal) = &h.chal {
                    auth.challenged(chal);
                }
                match h.data {
                    codes::INVALID_CREDENTIALS | codes::MISSING_CREDENTIALS => {
                        if retried || h.chal.is_none() {
                            return Err(format!("credentials refused (status {})", h.data));
                        }
                        retried = true;
                        body = vec![header_status(&reply, 1), session_alert(2, by_server)];
                        continue;
                    }
                    200..=299 => {}
                    other => return Err(format!("server refused the session (status {other})")),
                }
            }
            if !authenticated {
                authenticated = true;
                self.device
                    .open_session(server_id)
                    .map_err(|e| format!("device refused the session: {e}"))?;
            }
            let mut out = vec![header_status(&reply, 1)];
            let mut commands = 0;
            for cmd in &reply.body {
                let next = u32::try_from(out.len() + 1).unwrap_or(u32::MAX);
                let outcome = match cmd {
                    SyncCommand::Status(_) | SyncCommand::Results(_) => continue,
                    SyncCommand::Alert(a) if a.data == alert::SESSION_ABORT => {
                        return Err("the server aborted the session".into());
                    }
                    SyncCommand::Alert(_) => Ok(dmdelegate::CommandOutput::Done),
                    SyncCommand::Exec(_) => Err(DeviceError::new(
                        codes::OPTIONAL_FEATURE_NOT_SUPPORTED,
                        "Exec is not supported",
                    )),
                    _ => match client_command_from(cmd) {
                        Ok(op) => {
                            executed += 1;
                            self.device.execute(server_id, &op)
                        }
                        Err(e) => Err(DeviceError::new(
                            codes::OPTIONAL_FEATURE_NOT_SUPPORTED,
                            e.to_string(),
                        )),
                    },
                };
                commands += 1;
                out.extend(reply_for(reply.header.msg_id, cmd, next, &outcome));
            }
            if reply.final_ && commands == 0 {
                return Ok(executed);
            }
            if commands == 0 {
                // The server's package goes on: ask for its next message.
                out.push(SyncCommand::Alert(Alert {
                    cmd_id: u32::try_from(out.len() + 1).unwrap_or(u32::MAX),
                    data: alert::NEXT_MESSAGE,
                    items: Vec::new(),
                }));
            }
            body = out;
        }
    }

    /// Fetches and installs the bootstrap a trigger points at, then opens the
    /// client-initiated session that acknowledges it.
    async fn bootstrap(self: Arc<Self>, trigger: BootstrapTrigger) {
        let outcome = self.fetch_and_install(&trigger).await;
        match &outcome {
            Ok(()) => {
                tracing::info!(server = %trigger.server_id, url = %trigger.url, "bootstrap installed")
            }
            Err(e) => {
                tracing::warn!(server = %trigger.server_id, url = %trigger.url, error = %e, "bootstrap failed")
            }
        }
        lock(&self.bootstraps).push(BootstrapLog {
            server_id: trigger.server_id.clone(),
            url: trigger.url.clone(),
            outcome: outcome.clone(),
        });
        if outcome.is_ok() {
            let _ = self.initiate(&trigger.server_id).await;
        }
    }

    async fn fetch_and_install(&self, trigger: &BootstrapTrigger) -> Result<(), String> {
        let mut url = reqwest::Url::parse(&trigger.url)
            .map_err(|e| format!("bootstrap URL `{}`: {e}", trigger.url))?;
        if url.scheme() != "https" {
            return Err(format!("bootstrap URL `{}` is not https://", trigger.url));
        }
        url.query_pairs_mut()
            .append_pair("device", &self.device.info().device_id);
        let answer = self
            .client
            .get(url)
            .send()
            .await
            .map_err(|e| format!("GET {}: {e}", trigger.url))?;
        let code = answer.status();
        let body = answer
            .bytes()
            .await
            .map_err(|e| format!("GET {}: {e}", trigger.url))?;
        if !code.is_success() {
            let text = String::from_utf8_lossy(&body);
            return Err(format!("GET {}: HTTP {code}: {text}", trigger.url));
        }
        let tree = MgmtTree::from_xml(&body).map_err(|e| format!("bootstrap message: {e}"))?;
        self.device
            .install_bootstrap(&tree, Some(&trigger.delegator))
            .map_err(|e| format!("installing the bootstrap: {e}"))?;
        if self.device.accounts_of(&trigger.server_id).is_empty() {
            return Err(format!(
                "the bootstrap set no account for `{}`",
                trigger.server_id
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::b64_decode;

    #[test]
    fn base64_decodes() {
        assert_eq!(b64_decode("").unwrap(), b"");
        assert_eq!(b64_decode("bm9uY2U=").unwrap(), b"nonce");
        assert_eq!(b64_decode("bm9uY2Vz").unwrap(), b"nonces");
        assert_eq!(b64_decode("bm9uYw").unwrap(), b"nonc");
        assert!(b64_decode("no!").is_none());
    }
}
