//! `Server`: a delegation server over HTTPS with mutual TLS whose host is a Python object,
//! wrapping `dmdelegate_net::Server`; and its configuration (`ServerConfig`, `Peer`,
//! `Timeouts`, `HttpsSettings`).

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dmdelegate::syncml::AuthScheme;
use dmdelegate::{DelegationInfo, DeviceInfo, Error, Timeouts as CoreTimeouts};
use dmdelegate_net::{
    DeviceHubOptions, DeviceLink as NetDeviceLink, HttpsOptions, Identity, Peer as NetPeer,
    Server as NetServer, ServerOptions, StartDelegation, Wire, DELEGATION_PATH,
};
use pyo3::prelude::*;

use crate::block_on;
use crate::errors::{invalid, invalid_state, to_py_err};
use crate::host::PyHost;
use crate::interpreter::awaitable;
use crate::types::{
    parse_method, parse_seconds, parse_time, parse_type, subtrees_of, Device, Session, Subtree,
};

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

/// The deadlines of each protocol step, in seconds.
#[pyclass(frozen, eq, from_py_object, module = "dmdelegate._native")]
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Timeouts {
    pub inner: CoreTimeouts,
}

#[pymethods]
impl Timeouts {
    #[new]
    #[pyo3(signature = (*, response = 30.0, preparation = 120.0, confirm = 300.0, bootstrap_confirm = 900.0, client_session = 900.0))]
    fn new(
        py: Python<'_>,
        response: f64,
        preparation: f64,
        confirm: f64,
        bootstrap_confirm: f64,
        client_session: f64,
    ) -> PyResult<Self> {
        Ok(Self {
            inner: CoreTimeouts {
                response: parse_seconds(py, "response", response)?,
                preparation: parse_seconds(py, "preparation", preparation)?,
                confirm: parse_seconds(py, "confirm", confirm)?,
                bootstrap_confirm: parse_seconds(py, "bootstrap_confirm", bootstrap_confirm)?,
                client_session: parse_seconds(py, "client_session", client_session)?,
            },
        })
    }

    /// Waiting for the peer's next protocol message.
    #[getter]
    fn response(&self) -> f64 {
        secs(self.inner.response)
    }

    /// DMS-2 waiting for DELEGATION_PREPARED while DMS-1 prepares the client.
    #[getter]
    fn preparation(&self) -> f64 {
        secs(self.inner.preparation)
    }

    /// DMS-1 waiting for DELEGATION_CONFIRM, Methods 1/2.
    #[getter]
    fn confirm(&self) -> f64 {
        secs(self.inner.confirm)
    }

    /// DMS-1 waiting for DELEGATION_CONFIRM, Methods 3/4.
    #[getter]
    fn bootstrap_confirm(&self) -> f64 {
        secs(self.inner.bootstrap_confirm)
    }

    /// DMS-2 waiting for the client's first session, Methods 3/4.
    #[getter]
    fn client_session(&self) -> f64 {
        secs(self.inner.client_session)
    }

    fn __repr__(&self) -> String {
        format!(
            "Timeouts(response={:?}, preparation={:?}, confirm={:?}, bootstrap_confirm={:?}, client_session={:?})",
            self.response(),
            self.preparation(),
            self.confirm(),
            self.bootstrap_confirm(),
            self.client_session()
        )
    }
}

/// `HttpsOptions::default()`, where the constructor's defaults come from.
fn https_default() -> HttpsOptions {
    HttpsOptions::default()
}

/// A duration setting in seconds: a number of seconds above zero.
fn positive_seconds(py: Python<'_>, field: &str, s: f64) -> PyResult<Duration> {
    let d = parse_seconds(py, field, s)?;
    if d.is_zero() {
        return Err(invalid(py, field, "must be more than 0"));
    }
    Ok(d)
}

/// A count setting: at least 1 and within `T`'s range.
fn count<T: TryFrom<i64>>(py: Python<'_>, field: &str, n: i64) -> PyResult<T> {
    if n < 1 {
        return Err(invalid(py, field, format!("must be at least 1 (is {n})")));
    }
    T::try_from(n).map_err(|_| invalid(py, field, format!("{n} is too large")))
}

/// The HTTPS binding's limits, timeouts, retries and batching (protocol sections 8.1 and
/// 8.2), durations in seconds. Local settings: nothing of them goes on the wire.
#[pyclass(frozen, eq, from_py_object, module = "dmdelegate._native")]
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpsSettings {
    pub inner: HttpsOptions,
}

#[pymethods]
impl HttpsSettings {
    // The defaults are `HttpsOptions::default()`'s; the text signature spells them out for
    // `inspect` and stubtest (tests/test_https_settings.py checks the two agree).
    #[new]
    #[pyo3(
        signature = (
            *,
            connect_timeout = secs(https_default().connect_timeout),
            request_timeout = secs(https_default().request_timeout),
            handshake_timeout = secs(https_default().handshake_timeout),
            backoff = secs(https_default().backoff),
            attempts = i64::from(https_default().attempts),
            max_body_bytes = https_default().max_body_bytes as i64,
            max_requests_per_peer = https_default().max_requests_per_peer as i64,
            max_unbatched_requests_per_peer = https_default().max_unbatched_requests_per_peer as i64,
            max_batch_messages = https_default().max_batch_messages as i64,
            max_batch_bytes = https_default().max_batch_bytes as i64,
        ),
        text_signature = "(*, connect_timeout=5.0, request_timeout=30.0, handshake_timeout=10.0, backoff=0.2, attempts=4, max_body_bytes=262144, max_requests_per_peer=2, max_unbatched_requests_per_peer=32, max_batch_messages=64, max_batch_bytes=131072)"
    )]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        connect_timeout: f64,
        request_timeout: f64,
        handshake_timeout: f64,
        backoff: f64,
        attempts: i64,
        max_body_bytes: i64,
        max_requests_per_peer: i64,
        max_unbatched_requests_per_peer: i64,
        max_batch_messages: i64,
        max_batch_bytes: i64,
    ) -> PyResult<Self> {
        Ok(Self {
            inner: HttpsOptions {
                connect_timeout: positive_seconds(py, "connect_timeout", connect_timeout)?,
                request_timeout: positive_seconds(py, "request_timeout", request_timeout)?,
                handshake_timeout: positive_seconds(py, "handshake_timeout", handshake_timeout)?,
                backoff: positive_seconds(py, "backoff", backoff)?,
                attempts: count(py, "attempts", attempts)?,
                max_body_bytes: count(py, "max_body_bytes", max_body_bytes)?,
                max_requests_per_peer: count(py, "max_requests_per_peer", max_requests_per_peer)?,
                max_unbatched_requests_per_peer: count(
                    py,
                    "max_unbatched_requests_per_peer",
                    max_unbatched_requests_per_peer,
                )?,
                max_batch_messages: count(py, "max_batch_messages", max_batch_messages)?,
                max_batch_bytes: count(py, "max_batch_bytes", max_batch_bytes)?,
            },
        })
    }

    /// TCP + TLS connect timeout of a request to a peer.
    #[getter]
    fn connect_timeout(&self) -> f64 {
        secs(self.inner.connect_timeout)
    }

    /// Timeout of a whole request to a peer, answer included.
    #[getter]
    fn request_timeout(&self) -> f64 {
        secs(self.inner.request_timeout)
    }

    /// TLS handshake timeout of an incoming connection.
    #[getter]
    fn handshake_timeout(&self) -> f64 {
        secs(self.inner.handshake_timeout)
    }

    /// First retry delay; it doubles each attempt.
    #[getter]
    fn backoff(&self) -> f64 {
        secs(self.inner.backoff)
    }

    /// Delivery attempts per message (1: no retry).
    #[getter]
    fn attempts(&self) -> u32 {
        self.inner.attempts
    }

    /// Largest accepted request body, in bytes (at least 1024 when the server starts).
    #[getter]
    fn max_body_bytes(&self) -> usize {
        self.inner.max_body_bytes
    }

    /// Most requests in flight to one peer while batching: messages sent while all are
    /// in flight leave together in the next request.
    #[getter]
    fn max_requests_per_peer(&self) -> usize {
        self.inner.max_requests_per_peer
    }

    /// Most requests in flight to one peer when each message has a request of its own
    /// (batching off, or a peer that takes no batches).
    #[getter]
    fn max_unbatched_requests_per_peer(&self) -> usize {
        self.inner.max_unbatched_requests_per_peer
    }

    /// Most messages one outgoing batch carries; 1 turns batching off both ways.
    #[getter]
    fn max_batch_messages(&self) -> usize {
        self.inner.max_batch_messages
    }

    /// Largest batch document a request carries, in bytes (a larger message goes alone;
    /// at least 1024 when the server starts).
    #[getter]
    fn max_batch_bytes(&self) -> usize {
        self.inner.max_batch_bytes
    }

    fn __repr__(&self) -> String {
        format!(
            "HttpsSettings(connect_timeout={:?}, request_timeout={:?}, handshake_timeout={:?}, backoff={:?}, attempts={}, max_body_bytes={}, max_requests_per_peer={}, max_unbatched_requests_per_peer={}, max_batch_messages={}, max_batch_bytes={})",
            self.connect_timeout(),
            self.request_timeout(),
            self.handshake_timeout(),
            self.backoff(),
            self.inner.attempts,
            self.inner.max_body_bytes,
            self.inner.max_requests_per_peer,
            self.inner.max_unbatched_requests_per_peer,
            self.inner.max_batch_messages,
            self.inner.max_batch_bytes
        )
    }
}

/// A peer DM Server: its ServerID, its delegation endpoint
/// (`https://host:port/dm-delegation`), optionally the `ip:port` to connect to instead of
/// resolving the endpoint's host (the certificate is still checked against the host), and
/// the DNS name its certificate must carry when it is not the ServerID.
#[pyclass(frozen, eq, hash, from_py_object, module = "dmdelegate._native")]
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Peer {
    /// The peer's ServerID.
    #[pyo3(get)]
    pub server_id: String,
    /// Its delegation endpoint URL.
    #[pyo3(get)]
    pub endpoint: String,
    pub address: Option<SocketAddr>,
    /// The DNS name its certificate must carry; None: the ServerID.
    #[pyo3(get)]
    pub identity: Option<String>,
}

#[pymethods]
impl Peer {
    #[new]
    #[pyo3(signature = (server_id, endpoint, address = None, identity = None))]
    fn new(
        py: Python<'_>,
        server_id: String,
        endpoint: String,
        address: Option<&str>,
        identity: Option<String>,
    ) -> PyResult<Self> {
        let address = address
            .map(|a| {
                a.parse::<SocketAddr>()
                    .map_err(|e| invalid(py, "address", format!("`{a}` is not ip:port: {e}")))
            })
            .transpose()?;
        Ok(Self {
            server_id,
            endpoint,
            address,
            identity,
        })
    }

    /// Where to connect, `ip:port`, or None to resolve the endpoint's host.
    #[getter]
    fn address(&self) -> Option<String> {
        self.address.map(|a| a.to_string())
    }

    fn __repr__(&self) -> String {
        let mut s = format!(
            "Peer(server_id={:?}, endpoint={:?}",
            self.server_id, self.endpoint
        );
        if let Some(a) = self.address {
            s.push_str(&format!(", address={:?}", a.to_string()));
        }
        if let Some(i) = &self.identity {
            s.push_str(&format!(", identity={i:?}"));
        }
        s + ")"
    }
}

impl From<&Peer> for NetPeer {
    fn from(p: &Peer) -> Self {
        NetPeer {
            server_id: p.server_id.clone(),
            endpoint: p.endpoint.clone(),
            identity: p.identity.clone(),
            address: p.address,
        }
    }
}

/// A networked device the server's device hub manages: where to wake it (package 0,
/// `http://host:port/notify`) and the credentials of this server's account on it. The
/// secrets never appear in the `repr`.
#[pyclass(frozen, eq, from_py_object, module = "dmdelegate._native")]
#[derive(Clone, PartialEq, Eq)]
pub struct DeviceLink {
    pub inner: NetDeviceLink,
}

#[pymethods]
impl DeviceLink {
    #[new]
    #[pyo3(signature = (device_id, notify_url, *, client_secret, server_secret, client_name = "device", scheme = "basic"))]
    fn new(
        py: Python<'_>,
        device_id: String,
        notify_url: String,
        client_secret: String,
        server_secret: String,
        client_name: &str,
        scheme: &str,
    ) -> PyResult<Self> {
        let scheme = match scheme {
            "basic" => AuthScheme::Basic,
            "md5" => AuthScheme::Md5,
            other => {
                return Err(invalid(
                    py,
                    "scheme",
                    format!("`{other}` is not \"basic\" or \"md5\""),
                ))
            }
        };
        let inner = NetDeviceLink {
            device_id,
            notify_url,
            server_secret,
            server_nonce: Vec::new(),
            client_name: client_name.to_string(),
            client_secret,
            scheme,
        };
        inner
            .validate()
            .map_err(|e| invalid(py, e.field, e.reason))?;
        Ok(Self { inner })
    }

    /// The device's identifier.
    #[getter]
    fn device_id(&self) -> &str {
        &self.inner.device_id
    }

    /// Its package 0 endpoint.
    #[getter]
    fn notify_url(&self) -> &str {
        &self.inner.notify_url
    }

    /// The name the device authenticates with (CLCRED AAuthName).
    #[getter]
    fn client_name(&self) -> &str {
        &self.inner.client_name
    }

    /// `"basic"` or `"md5"`.
    #[getter]
    fn scheme(&self) -> &'static str {
        match self.inner.scheme {
            AuthScheme::Basic => "basic",
            AuthScheme::Md5 => "md5",
        }
    }

    fn __repr__(&self) -> String {
        format!(
            "DeviceLink(device_id={:?}, notify_url={:?}, client_name={:?}, scheme={:?})",
            self.inner.device_id,
            self.inner.notify_url,
            self.inner.client_name,
            self.scheme()
        )
    }
}

/// The server's own SyncML DM endpoint for networked devices. With it the server runs
/// client commands and opens DM sessions itself: the host's `execute` and
/// `open_dm_session` are never called; policy, accounts, the Bootstrap Server URL and
/// events stay the host's.
#[pyclass(frozen, eq, from_py_object, module = "dmdelegate._native")]
#[derive(Clone, PartialEq)]
pub struct DeviceHub {
    pub listen: SocketAddr,
    /// The devices it manages from the start (more with `Server.add_device`).
    #[pyo3(get)]
    pub devices: Vec<DeviceLink>,
}

#[pymethods]
impl DeviceHub {
    #[new]
    #[pyo3(signature = (listen = "127.0.0.1:0", devices = None))]
    fn new(py: Python<'_>, listen: &str, devices: Option<Vec<DeviceLink>>) -> PyResult<Self> {
        let listen = listen
            .parse::<SocketAddr>()
            .map_err(|e| invalid(py, "listen", format!("`{listen}` is not ip:port: {e}")))?;
        Ok(Self {
            listen,
            devices: devices.unwrap_or_default(),
        })
    }

    /// The `ip:port` of the SyncML endpoint (port 0: any free port).
    #[getter]
    fn listen(&self) -> String {
        self.listen.to_string()
    }

    fn __repr__(&self) -> String {
        format!(
            "DeviceHub(listen={:?}, devices={:?})",
            self.listen.to_string(),
            self.devices
                .iter()
                .map(|d| d.inner.device_id.as_str())
                .collect::<Vec<_>>()
        )
    }
}

/// Everything a `Server` is made from, except the host. The private key never appears in
/// the `repr`.
#[pyclass(frozen, eq, from_py_object, module = "dmdelegate._native")]
#[derive(Clone, PartialEq)]
pub struct ServerConfig {
    /// This server's ServerID.
    #[pyo3(get)]
    pub server_id: String,
    pub listen: SocketAddr,
    /// This server's certificate chain (PEM), TLS server and client certificate.
    #[pyo3(get)]
    pub cert_pem: String,
    /// Its private key (PEM).
    #[pyo3(get)]
    pub key_pem: String,
    /// The CA certificates (PEM) peers' certificates must chain to.
    #[pyo3(get)]
    pub trust_pem: String,
    /// The peers; empty to set them later with `Server.set_peers`.
    #[pyo3(get)]
    pub peers: Vec<Peer>,
    /// Deadlines; None for the defaults.
    #[pyo3(get)]
    pub timeouts: Option<Timeouts>,
    /// A SQLite file for durable sessions; None keeps them in memory.
    #[pyo3(get)]
    pub store_path: Option<PathBuf>,
    /// How often deadlines are checked, in seconds.
    #[pyo3(get)]
    pub watch_period: f64,
    /// The server's own SyncML endpoint for networked devices; None: the host reaches
    /// devices itself.
    #[pyo3(get)]
    pub device_hub: Option<DeviceHub>,
    /// The HTTPS binding's settings; None for the defaults.
    #[pyo3(get)]
    pub https: Option<HttpsSettings>,
}

#[pymethods]
impl ServerConfig {
    #[new]
    #[pyo3(signature = (server_id, *, cert_pem, key_pem, trust_pem, listen = "127.0.0.1:0", peers = None, timeouts = None, store_path = None, watch_period = 0.5, device_hub = None, https = None))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        server_id: String,
        cert_pem: String,
        key_pem: String,
        trust_pem: String,
        listen: &str,
        peers: Option<Vec<Peer>>,
        timeouts: Option<Timeouts>,
        store_path: Option<PathBuf>,
        watch_period: f64,
        device_hub: Option<DeviceHub>,
        https: Option<HttpsSettings>,
    ) -> PyResult<Self> {
        let listen = listen
            .parse::<SocketAddr>()
            .map_err(|e| invalid(py, "listen", format!("`{listen}` is not ip:port: {e}")))?;
        let period = parse_seconds(py, "watch_period", watch_period)?;
        if period.is_zero() {
            return Err(invalid(py, "watch_period", "must be more than 0"));
        }
        Ok(Self {
            server_id,
            listen,
            peers: peers.unwrap_or_default(),
            cert_pem,
            key_pem,
            trust_pem,
            timeouts,
            store_path,
            watch_period,
            device_hub,
            https,
        })
    }

    /// The `ip:port` to listen on (port 0: any free port).
    #[getter]
    fn listen(&self) -> String {
        self.listen.to_string()
    }

    fn __repr__(&self) -> String {
        format!(
            "ServerConfig(server_id={:?}, listen={:?}, peers={:?}, store_path={})",
            self.server_id,
            self.listen.to_string(),
            self.peers
                .iter()
                .map(|p| p.server_id.as_str())
                .collect::<Vec<_>>(),
            self.store_path
                .as_ref()
                .map_or("None".into(), |p| format!("{:?}", p.display().to_string()))
        )
    }
}

/// Whether the calling thread is one of the runtime's (a host callback runs on one).
fn current_runtime_thread() -> bool {
    tokio::runtime::Handle::try_current().is_ok()
}

/// A DM Server's delegation engine over HTTPS with mutual TLS, with a Python host.
#[pyclass(frozen, module = "dmdelegate._native")]
pub struct Server {
    inner: Mutex<Option<Arc<NetServer>>>,
    server_id: String,
    local_port: u16,
    event_loop: Option<Py<PyAny>>,
}

/// Runs an operation that changes sessions as its own task: a caller that stops waiting
/// (Ctrl-C, a cancelled asyncio task) never cuts it short halfway.
async fn detached<T, F>(fut: F) -> Result<T, Error>
where
    F: Future<Output = Result<T, Error>> + Send + 'static,
    T: Send + 'static,
{
    tokio::spawn(fut).await.unwrap_or_else(|e| {
        Err(Error::InvalidState(format!(
            "the operation stopped unexpectedly: {e}"
        )))
    })
}

fn sessions_of(list: Vec<dmdelegate::SessionInfo>) -> Vec<Session> {
    list.into_iter().map(|inner| Session { inner }).collect()
}

impl Server {
    /// The facade, unless closed.
    pub fn net(&self, py: Python<'_>) -> PyResult<Arc<NetServer>> {
        self.inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .ok_or_else(|| invalid_state(py, format!("the server `{}` is closed", self.server_id)))
    }

    /// Whether the calling thread runs the event loop the host's coroutines run on.
    fn on_callback_loop(&self, py: Python<'_>) -> bool {
        let Some(lp) = &self.event_loop else {
            return false;
        };
        py.import("asyncio")
            .and_then(|a| a.call_method0("_get_running_loop"))
            .is_ok_and(|running| running.is(lp.bind(py)))
    }

    /// Runs `f(server)` to its end, blocking without the GIL (Ctrl-C interrupts).
    fn blocking<T, F, Fut>(
        &self,
        py: Python<'_>,
        what: &str,
        waits_for_host: bool,
        f: F,
    ) -> PyResult<T>
    where
        F: FnOnce(Arc<NetServer>) -> Fut,
        Fut: Future<Output = Result<T, Error>> + Send + 'static,
        T: Send + 'static,
    {
        if current_runtime_thread() {
            return Err(invalid_state(
                py,
                format!(
                    "`{what}` blocks, so a host callback cannot call it (it runs on the server's \
                     runtime); use `{what}_async` in an async callback, or call it later"
                ),
            ));
        }
        if waits_for_host && self.on_callback_loop(py) {
            return Err(invalid_state(
                py,
                format!(
                    "`{what}` would block the event loop the host's coroutines run on: \
                     use `await server.{what}_async(...)`"
                ),
            ));
        }
        let server = self.net(py)?;
        block_on(py, f(server))?.map_err(|e| to_py_err(py, e))
    }

    #[allow(clippy::too_many_arguments)]
    fn request(
        py: Python<'_>,
        peer: String,
        method: i64,
        delegation_type: &str,
        device: &Device,
        subtrees: &[Subtree],
        expires: Option<&Bound<'_, PyAny>>,
        session_id: Option<String>,
    ) -> PyResult<StartDelegation> {
        Ok(StartDelegation {
            peer,
            method: parse_method(py, method)?,
            delegation_type: parse_type(py, delegation_type)?,
            info: DelegationInfo {
                device: DeviceInfo::from(device),
                subtrees: subtrees_of(subtrees),
            },
            expires: expires.map(|e| parse_time(py, "expires", e)).transpose()?,
            session_id,
        })
    }
}

#[pymethods]
impl Server {
    /// Starts the server: opens the store, binds the endpoint (serving at once when the
    /// peers are configured), starts the deadline watcher. Blocking (GIL released).
    ///
    /// `async def` callbacks of `host` run on `loop`, by default the event loop running in
    /// the calling thread, if any.
    #[new]
    #[pyo3(signature = (config, host, *, r#loop = None))]
    fn new(
        py: Python<'_>,
        config: ServerConfig,
        host: Bound<'_, PyAny>,
        r#loop: Option<Bound<'_, PyAny>>,
    ) -> PyResult<Self> {
        let event_loop = match r#loop {
            Some(l) => Some(l.unbind()),
            None => py
                .import("asyncio")?
                .call_method0("_get_running_loop")
                .ok()
                .filter(|l| !l.is_none())
                .map(Bound::unbind),
        };
        let mut options = ServerOptions::new(
            config.server_id.clone(),
            Wire::Https {
                listen: config.listen,
                identity: Identity {
                    cert_chain_pem: config.cert_pem.clone(),
                    key_pem: config.key_pem.clone(),
                },
                trust_pem: config.trust_pem.clone(),
                peers: config.peers.iter().map(NetPeer::from).collect(),
                // Checked by `start` (`HttpsOptions::validate`): a value the constructor
                // took but the binding cannot use is refused as `https.<field>`.
                options: config
                    .https
                    .as_ref()
                    .map_or_else(HttpsOptions::default, |h| h.inner),
            },
        );
        if let Some(t) = &config.timeouts {
            options.timeouts = t.inner;
        }
        options.store_path = config.store_path.clone();
        options.watch_period = parse_seconds(py, "watch_period", config.watch_period)?;
        options.device_hub = config.device_hub.as_ref().map(|h| {
            DeviceHubOptions::new(
                h.listen,
                h.devices.iter().map(|d| d.inner.clone()).collect(),
            )
        });
        let loop_for_host = event_loop.as_ref().map(|l| l.clone_ref(py));
        let host = Arc::new(PyHost::new(host.unbind(), loop_for_host));
        let server = block_on(py, async move { NetServer::start(options, host).await })?
            .map_err(|e| to_py_err(py, e))?;
        let local_port = server.local_addr().map_or(0, |a| a.port());
        Ok(Self {
            server_id: server.server_id().to_string(),
            inner: Mutex::new(Some(Arc::new(server))),
            local_port,
            event_loop,
        })
    }

    /// This server's ServerID.
    #[getter]
    fn server_id(&self) -> &str {
        &self.server_id
    }

    /// The port the HTTPS endpoint listens on.
    #[getter]
    fn local_port(&self) -> u16 {
        self.local_port
    }

    /// Whether `close()` was called.
    #[getter]
    fn closed(&self) -> bool {
        self.inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_none()
    }

    /// The delegation endpoint URL on `host`: `https://host:port/dm-delegation`.
    fn endpoint_url(&self, host: &str) -> String {
        format!("https://{host}:{}{DELEGATION_PATH}", self.local_port)
    }

    /// This server as another server's peer: its endpoint named by its ServerID (the name
    /// its certificate carries), reached at `connect_host`:port.
    #[pyo3(signature = (connect_host = "127.0.0.1"))]
    fn as_peer(&self, py: Python<'_>, connect_host: &str) -> PyResult<Peer> {
        let address = format!("{connect_host}:{}", self.local_port);
        let address = address
            .parse::<SocketAddr>()
            .map_err(|e| invalid(py, "connect_host", format!("`{address}`: {e}")))?;
        Ok(Peer {
            server_id: self.server_id.clone(),
            endpoint: self.endpoint_url(&self.server_id),
            address: Some(address),
            identity: None,
        })
    }

    /// The device hub's SyncML endpoint, `http://ip:port/dm` (the `AppAddr` of the
    /// accounts the host hands out), or None without a hub.
    #[getter]
    fn device_hub_url(&self, py: Python<'_>) -> PyResult<Option<String>> {
        Ok(self.net(py)?.device_hub_url().map(str::to_string))
    }

    /// Manages one more device through the device hub (a link with the same device id
    /// is replaced). Raises InvalidStateError without a hub.
    fn add_device(&self, py: Python<'_>, link: DeviceLink) -> PyResult<()> {
        let server = self.net(py)?;
        server.add_device(link.inner).map_err(|e| to_py_err(py, e))
    }

    /// Sets the peers and starts serving, for a server configured without them. Once.
    fn set_peers(&self, py: Python<'_>, peers: Vec<Peer>) -> PyResult<()> {
        let server = self.net(py)?;
        let peers: Vec<NetPeer> = peers.iter().map(NetPeer::from).collect();
        py.detach(move || server.set_peers(peers))
            .map_err(|e| to_py_err(py, e))
    }

    /// Starts a delegation (sends DELEGATION_NOTIF) and returns its session id; the rest
    /// runs in the background. This server is DMS-1 for Methods 1/3, DMS-2 for 2/4.
    #[pyo3(signature = (peer, method, delegation_type, device, subtrees, expires = None, session_id = None))]
    #[allow(clippy::too_many_arguments)]
    fn start_delegation(
        &self,
        py: Python<'_>,
        peer: String,
        method: i64,
        delegation_type: &str,
        device: Device,
        subtrees: Vec<Subtree>,
        expires: Option<Bound<'_, PyAny>>,
        session_id: Option<String>,
    ) -> PyResult<String> {
        let request = Self::request(
            py,
            peer,
            method,
            delegation_type,
            &device,
            &subtrees,
            expires.as_ref(),
            session_id,
        )?;
        self.blocking(py, "start_delegation", false, |s| {
            detached(async move { s.start_delegation(request).await })
        })
    }

    /// `start_delegation` for asyncio.
    #[pyo3(signature = (peer, method, delegation_type, device, subtrees, expires = None, session_id = None))]
    #[allow(clippy::too_many_arguments)]
    fn start_delegation_async<'py>(
        &self,
        py: Python<'py>,
        peer: String,
        method: i64,
        delegation_type: &str,
        device: Device,
        subtrees: Vec<Subtree>,
        expires: Option<Bound<'py, PyAny>>,
        session_id: Option<String>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let request = Self::request(
            py,
            peer,
            method,
            delegation_type,
            &device,
            &subtrees,
            expires.as_ref(),
            session_id,
        )?;
        let s = self.net(py)?;
        awaitable(
            py,
            detached(async move { s.start_delegation(request).await }),
        )
    }

    /// Waits until the session is finished, at most `timeout` seconds; returns it as it
    /// is then (check `Session.finished`).
    #[pyo3(signature = (session_id, timeout = 60.0))]
    fn wait(&self, py: Python<'_>, session_id: String, timeout: f64) -> PyResult<Session> {
        let t = parse_seconds(py, "timeout", timeout)?;
        self.blocking(py, "wait", true, |s| async move {
            s.wait(&session_id, t).await.map(|inner| Session { inner })
        })
    }

    /// `wait` for asyncio.
    #[pyo3(signature = (session_id, timeout = 60.0))]
    fn wait_async<'py>(
        &self,
        py: Python<'py>,
        session_id: String,
        timeout: f64,
    ) -> PyResult<Bound<'py, PyAny>> {
        let t = parse_seconds(py, "timeout", timeout)?;
        let s = self.net(py)?;
        awaitable(py, async move {
            s.wait(&session_id, t).await.map(|inner| Session { inner })
        })
    }

    /// One session.
    fn session(&self, py: Python<'_>, session_id: String) -> PyResult<Session> {
        self.blocking(py, "session", false, |s| async move {
            s.session(&session_id).await.map(|inner| Session { inner })
        })
    }

    /// `session` for asyncio.
    fn session_async<'py>(
        &self,
        py: Python<'py>,
        session_id: String,
    ) -> PyResult<Bound<'py, PyAny>> {
        let s = self.net(py)?;
        awaitable(py, async move {
            s.session(&session_id).await.map(|inner| Session { inner })
        })
    }

    /// Every session this server keeps, finished ones included, oldest first.
    fn sessions(&self, py: Python<'_>) -> PyResult<Vec<Session>> {
        self.blocking(py, "sessions", false, |s| async move {
            s.sessions().await.map(sessions_of)
        })
    }

    /// `sessions` for asyncio.
    fn sessions_async<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let s = self.net(py)?;
        awaitable(py, async move { s.sessions().await.map(sessions_of) })
    }

    /// Cancels an unfinished delegation: rollback, FAILURE 150 to the peer.
    fn cancel(&self, py: Python<'_>, session_id: String) -> PyResult<Session> {
        self.blocking(py, "cancel", true, |s| {
            detached(async move { s.cancel(&session_id).await.map(|inner| Session { inner }) })
        })
    }

    /// `cancel` for asyncio.
    fn cancel_async<'py>(
        &self,
        py: Python<'py>,
        session_id: String,
    ) -> PyResult<Bound<'py, PyAny>> {
        let s = self.net(py)?;
        awaitable(
            py,
            detached(async move { s.cancel(&session_id).await.map(|inner| Session { inner }) }),
        )
    }

    /// Runs the remaining inverse operations of a `RollbackFailed` session again.
    fn retry_rollback(&self, py: Python<'_>, session_id: String) -> PyResult<Session> {
        self.blocking(py, "retry_rollback", true, |s| {
            detached(async move {
                s.retry_rollback(&session_id)
                    .await
                    .map(|inner| Session { inner })
            })
        })
    }

    /// `retry_rollback` for asyncio.
    fn retry_rollback_async<'py>(
        &self,
        py: Python<'py>,
        session_id: String,
    ) -> PyResult<Bound<'py, PyAny>> {
        let s = self.net(py)?;
        awaitable(
            py,
            detached(async move {
                s.retry_rollback(&session_id)
                    .await
                    .map(|inner| Session { inner })
            }),
        )
    }

    /// DMS-2, Methods 3/4: the device opened its first DM session after bootstrapping;
    /// confirms every session waiting for it and returns their ids.
    fn client_connected(&self, py: Python<'_>, device_id: String) -> PyResult<Vec<String>> {
        self.blocking(py, "client_connected", false, |s| {
            detached(async move { s.client_connected(&device_id).await })
        })
    }

    /// `client_connected` for asyncio.
    fn client_connected_async<'py>(
        &self,
        py: Python<'py>,
        device_id: String,
    ) -> PyResult<Bound<'py, PyAny>> {
        let s = self.net(py)?;
        awaitable(
            py,
            detached(async move { s.client_connected(&device_id).await }),
        )
    }

    /// Stops the endpoint, the transport and the deadline watcher; sessions in a SQLite
    /// store survive for the next start. Idempotent.
    fn close(&self, py: Python<'_>) {
        let taken = self.inner.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(server) = taken {
            py.detach(move || {
                // Inside the runtime: the endpoint's and transport's teardown may need it.
                let runtime = server.runtime().clone();
                let _inside = runtime.enter();
                server.shutdown();
                drop(server);
            });
        }
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    #[pyo3(signature = (*_args))]
    fn __exit__(&self, py: Python<'_>, _args: &Bound<'_, pyo3::types::PyTuple>) -> bool {
        self.close(py);
        false
    }

    fn __aenter__<'py>(slf: Py<Self>, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        crate::interpreter::ready(py, slf.into_bound(py).into_any())
    }

    #[pyo3(signature = (*_args))]
    fn __aexit__<'py>(
        &self,
        py: Python<'py>,
        _args: &Bound<'py, pyo3::types::PyTuple>,
    ) -> PyResult<Bound<'py, PyAny>> {
        self.close(py);
        crate::interpreter::ready(
            py,
            pyo3::types::PyBool::new(py, false).to_owned().into_any(),
        )
    }

    fn __repr__(&self) -> String {
        format!(
            "Server(server_id={:?}, local_port={}, closed={})",
            self.server_id,
            self.local_port,
            if self.closed() { "True" } else { "False" }
        )
    }
}
