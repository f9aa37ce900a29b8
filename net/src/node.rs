//! Whole processes from a TOML configuration: a DM Server ([`ServerNode`], what
//! `dmdelegate serve` runs) and a simulated device ([`DeviceNode`], `dmdelegate device`).
//!
//! A server node serves the delegation endpoint (HTTPS, mutual TLS), its SyncML endpoint
//! for devices, optionally a Bootstrap Server (HTTPS), and a loopback-only admin API
//! (JSON over HTTP) through which `dmdelegate delegate` and `dmdelegate sessions` drive it.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path as UrlPath, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use dmdelegate::sim::{provision_sample_tree, SimBootstrapServer, SimDevice, SimHost};
use dmdelegate::syncml::AuthScheme;
use dmdelegate::{
    AclCommand, DelegatedSubtree, DelegationInfo, DelegationRequest, DelegationServer,
    DelegationType, DeviceInfo, DmAcc, Error, Method, PolicyDecision, Reason, ReasonCode,
    ServerConfig, SessionStore, SystemClock, Timeouts,
};
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;

use crate::bootstrap::BootstrapServer;
use crate::device::{DeviceOptions, NetworkDevice};
use crate::dm::{DeviceLink, DmHub, HubHost, HubOptions};
use crate::https::{serve, Endpoint, HttpsOptions, HttpsSender, HttpsTransport, Peer};
use crate::sqlite::SqliteStore;
use crate::tls::Identity;

/// A node failure, saying what to fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct NodeError(pub String);

fn err(what: impl std::fmt::Display) -> NodeError {
    NodeError(what.to_string())
}

/// How a device authenticates to this server, and this server to it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceEntry {
    /// Device identifier.
    pub device_id: String,
    /// Manufacturer.
    pub manufacturer: String,
    /// Model.
    pub model: String,
    /// The device's package 0 endpoint.
    pub notify_url: String,
    /// CLCRED name.
    #[serde(default = "default_client_name")]
    pub client_name: String,
    /// CLCRED secret.
    pub client_secret: String,
    /// SRVCRED secret (package 0 digest).
    pub server_secret: String,
    /// `basic` or `md5`.
    #[serde(default = "default_scheme")]
    pub scheme: String,
}

fn default_client_name() -> String {
    "device".into()
}

fn default_scheme() -> String {
    "basic".into()
}

/// The secrets of the account this server offers devices as DMS-2.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountSecrets {
    /// CLCRED secret the device will use.
    pub client_secret: String,
    /// SRVCRED secret this server will use.
    pub server_secret: String,
}

/// A Bootstrap Server run by this node (as DMS-2, Methods 3/4).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BootstrapConfig {
    /// Where it listens (HTTPS), e.g. `127.0.0.1:7444`.
    pub listen: SocketAddr,
    /// The host name in the URLs it hands out; must be a DNS name of its certificate.
    pub host: String,
    /// Its TLS certificate chain (PEM file).
    pub certificate: PathBuf,
    /// Its key (PEM file).
    pub private_key: PathBuf,
}

/// Step deadlines in seconds (each optional).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimeoutSeconds {
    /// Waiting for the peer's next message.
    pub response: Option<u64>,
    /// Client preparation.
    pub preparation: Option<u64>,
    /// DMS-1 waiting for CONFIRM (Methods 1/2).
    pub confirm: Option<u64>,
    /// DMS-1 waiting for CONFIRM (Methods 3/4).
    pub bootstrap_confirm: Option<u64>,
    /// DMS-2 waiting for the device (Methods 3/4).
    pub client_session: Option<u64>,
}

/// `dmdelegate serve --config FILE.toml`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerFileConfig {
    /// This server's ServerID.
    pub server_id: String,
    /// Delegation endpoint (HTTPS, mutual TLS), e.g. `127.0.0.1:7443`.
    pub listen: SocketAddr,
    /// SyncML endpoint for devices (HTTP), e.g. `127.0.0.1:7080`.
    pub dm_listen: SocketAddr,
    /// Admin API for `delegate` and `sessions` (loopback only).
    pub admin_listen: SocketAddr,
    /// Certificate chain (PEM file) whose DNS name is the ServerID.
    pub certificate: PathBuf,
    /// Private key (PEM file).
    pub private_key: PathBuf,
    /// Trust anchors for peers (PEM file).
    pub trust: PathBuf,
    /// SQLite file for sessions; in memory when absent.
    #[serde(default)]
    pub store: Option<PathBuf>,
    /// Accept delegations offered by peers (default true).
    #[serde(default = "yes")]
    pub accept: bool,
    /// Peer servers.
    #[serde(default)]
    pub peers: Vec<Peer>,
    /// Devices this server manages.
    #[serde(default)]
    pub devices: Vec<DeviceEntry>,
    /// The account offered to devices when this server is DMS-2.
    #[serde(default)]
    pub account: Option<AccountSecrets>,
    /// A Bootstrap Server to run (DMS-2, Methods 3/4).
    #[serde(default)]
    pub bootstrap: Option<BootstrapConfig>,
    /// Step deadlines.
    #[serde(default)]
    pub timeouts: TimeoutSeconds,
}

fn yes() -> bool {
    true
}

fn read(path: &Path, what: &str) -> Result<String, NodeError> {
    std::fs::read_to_string(path)
        .map_err(|e| err(format!("cannot read {what} {}: {e}", path.display())))
}

impl ServerFileConfig {
    /// Reads and checks a configuration file; relative paths are relative to the file.
    pub fn load(path: &Path) -> Result<Self, NodeError> {
        let text = read(path, "configuration")?;
        let mut config: ServerFileConfig =
            toml::from_str(&text).map_err(|e| err(format!("{}: {e}", path.display())))?;
        let base = path.parent().unwrap_or(Path::new("."));
        for p in [
            &mut config.certificate,
            &mut config.private_key,
            &mut config.trust,
        ] {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        }
        if let Some(s) = config.store.as_mut().filter(|s| s.is_relative()) {
            *s = base.join(&*s);
        }
        if let Some(b) = config.bootstrap.as_mut() {
            for p in [&mut b.certificate, &mut b.private_key] {
                if p.is_relative() {
                    *p = base.join(&*p);
                }
            }
        }
        if !config.admin_listen.ip().is_loopback() {
            return Err(err(format!(
                "admin_listen {} must be a loopback address: the admin API has no authentication",
                config.admin_listen
            )));
        }
        Ok(config)
    }

    fn timeouts(&self) -> Timeouts {
        let d = Timeouts::default();
        let t = &self.timeouts;
        let pick =
            |v: Option<u64>, default: Duration| v.map(Duration::from_secs).unwrap_or(default);
        Timeouts {
            response: pick(t.response, d.response),
            preparation: pick(t.preparation, d.preparation),
            confirm: pick(t.confirm, d.confirm),
            bootstrap_confirm: pick(t.bootstrap_confirm, d.bootstrap_confirm),
            client_session: pick(t.client_session, d.client_session),
        }
    }
}

/// A running DM Server node.
pub struct ServerNode {
    /// The engine.
    pub server: DelegationServer,
    /// The delegation endpoint.
    pub endpoint: Endpoint,
    /// The SyncML endpoint.
    pub hub: DmHub,
    /// The Bootstrap Server, when configured.
    pub bootstrap: Option<BootstrapServer>,
    /// The admin API's address.
    pub admin: SocketAddr,
    _watcher: tokio::task::JoinHandle<()>,
    _admin: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for ServerNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerNode")
            .field("server_id", &self.server.server_id())
            .field("endpoint", &self.endpoint.local_addr())
            .field("admin", &self.admin)
            .finish_non_exhaustive()
    }
}

impl Drop for ServerNode {
    fn drop(&mut self) {
        self.hub.shutdown();
        self._watcher.abort();
        self._admin.abort();
    }
}

fn bind_err(what: &str, addr: SocketAddr) -> impl Fn(std::io::Error) -> NodeError + '_ {
    move |e| err(format!("cannot listen on {addr} ({what}): {e}"))
}

impl ServerNode {
    /// Starts every part of the node. Unfinished delegations in the store resume or roll
    /// back by their deadlines.
    pub async fn start(config: &ServerFileConfig) -> Result<Self, NodeError> {
        let identity = Identity {
            cert_chain_pem: read(&config.certificate, "certificate")?,
            key_pem: read(&config.private_key, "private key")?,
        };
        let trust = read(&config.trust, "trust anchors")?;
        let store: Arc<dyn SessionStore> = match &config.store {
            Some(path) => Arc::new(SqliteStore::open(path).map_err(|e| err(e.0))?),
            None => Arc::new(dmdelegate::MemoryStore::new()),
        };
        let dm_listener = TcpListener::bind(config.dm_listen)
            .await
            .map_err(bind_err("SyncML endpoint", config.dm_listen))?;
        let hub = DmHub::start(&config.server_id, dm_listener, HubOptions::default())
            .await
            .map_err(err)?;
        let base = Arc::new(SimHost::new(&config.server_id));
        if !config.accept {
            base.set_policy(PolicyDecision::Reject(Reason::new(
                ReasonCode::RejectedByPolicy,
                "this server accepts no delegation",
            )));
        }
        for d in &config.devices {
            let scheme = match d.scheme.as_str() {
                "basic" => AuthScheme::Basic,
                "md5" => AuthScheme::Md5,
                other => {
                    return Err(err(format!(
                        "device `{}`: scheme `{other}` is not basic or md5",
                        d.device_id
                    )))
                }
            };
            hub.add_device(DeviceLink {
                device_id: d.device_id.clone(),
                notify_url: d.notify_url.clone(),
                server_secret: d.server_secret.clone(),
                server_nonce: Vec::new(),
                client_name: d.client_name.clone(),
                client_secret: d.client_secret.clone(),
                scheme,
            });
        }
        let mut account = None;
        if let Some(secrets) = &config.account {
            let acc = DmAcc::simple(
                &config.server_id,
                hub.url(),
                &secrets.client_secret,
                &secrets.server_secret,
            );
            base.set_account(acc.clone());
            account = Some(acc);
        }
        let bootstrap = match (&config.bootstrap, &account) {
            (Some(b), Some(acc)) => {
                let id = Identity {
                    cert_chain_pem: read(&b.certificate, "bootstrap certificate")?,
                    key_pem: read(&b.private_key, "bootstrap private key")?,
                };
                let sim = Arc::new(SimBootstrapServer::new());
                let server = BootstrapServer::start_on(sim.clone(), &id, &b.host, b.listen)
                    .await
                    .map_err(err)?;
                let url = server.url("/bs");
                sim.register(&url, acc.clone());
                base.set_bootstrap_url(&url);
                Some(server)
            }
            (Some(_), None) => {
                return Err(err("a [bootstrap] needs an [account] to hand out"));
            }
            _ => None,
        };
        let transport =
            HttpsTransport::new(&identity, &trust, &config.peers, HttpsOptions::default())
                .map_err(err)?;
        let mut server_config = ServerConfig::new(&config.server_id);
        server_config.timeouts = config.timeouts();
        let server = DelegationServer::with_parts(
            server_config,
            Arc::new(HubHost {
                inner: base,
                hub: hub.clone(),
            }),
            Arc::new(HttpsSender(transport.clone())),
            store,
            Arc::new(SystemClock),
        )
        .map_err(err)?;
        transport.bind_server(&server);
        hub.bind_server(&server);
        let listener = TcpListener::bind(config.listen)
            .await
            .map_err(bind_err("delegation endpoint", config.listen))?;
        let endpoint = serve(
            listener,
            &identity,
            &trust,
            &config.peers,
            server.clone(),
            HttpsOptions::default(),
        )
        .map_err(err)?;
        let watcher = server.spawn_deadline_watcher(Duration::from_millis(500));
        let admin_listener = TcpListener::bind(config.admin_listen)
            .await
            .map_err(bind_err("admin API", config.admin_listen))?;
        let admin = admin_listener.local_addr().map_err(err)?;
        let router = Router::new()
            .route("/delegations", post(admin_start))
            .route("/sessions", get(admin_sessions))
            .route("/sessions/{id}", get(admin_session))
            .route("/sessions/{id}/cancel", post(admin_cancel))
            .with_state(server.clone());
        let admin_task = tokio::spawn(async move {
            if let Err(e) = axum::serve(admin_listener, router).await {
                tracing::warn!(error = %e, "admin API stopped");
            }
        });
        Ok(Self {
            server,
            endpoint,
            hub,
            bootstrap,
            admin,
            _watcher: watcher,
            _admin: admin_task,
        })
    }
}

/// What `POST /delegations` takes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StartRequest {
    /// The peer's ServerID.
    pub peer: String,
    /// Method 1–4.
    pub method: u8,
    /// `Full` or `Partial`.
    pub delegation_type: String,
    /// The device.
    pub device: DeviceInfo,
    /// Subtrees and the rights on each.
    pub subtrees: Vec<SubtreeRequest>,
    /// The session id to use (so that the peer's operator can follow it too); a fresh
    /// random one when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
}

/// One subtree in a [`StartRequest`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubtreeRequest {
    /// Subtree URI.
    pub uri: String,
    /// Command names (`Add`, `Delete`, `Exec`, `Get`, `Replace`).
    pub rights: Vec<String>,
}

fn problem(status: StatusCode, message: impl std::fmt::Display) -> Response {
    (
        status,
        Json(serde_json::json!({ "error": message.to_string() })),
    )
        .into_response()
}

fn engine_problem(e: Error) -> Response {
    let status = match &e {
        Error::UnknownSession(_) => StatusCode::NOT_FOUND,
        Error::InvalidArgument { .. } | Error::Decode(_) => StatusCode::BAD_REQUEST,
        Error::InvalidState(_) | Error::Failed { .. } => StatusCode::CONFLICT,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    problem(status, e)
}

impl StartRequest {
    fn into_engine(self) -> Result<DelegationRequest, String> {
        let method = Method::from_number(self.method)
            .ok_or_else(|| format!("method {} is not 1 to 4", self.method))?;
        let delegation_type = self
            .delegation_type
            .parse::<DelegationType>()
            .map_err(|e| format!("delegation_type: {e}"))?;
        let subtrees = self
            .subtrees
            .into_iter()
            .map(|s| {
                let mut rights = s
                    .rights
                    .iter()
                    .map(|r| r.parse::<AclCommand>().map_err(|e| e.to_string()))
                    .collect::<Result<Vec<_>, _>>()?;
                rights.sort();
                rights.dedup();
                Ok(DelegatedSubtree { uri: s.uri, rights })
            })
            .collect::<Result<Vec<_>, String>>()?;
        Ok(DelegationRequest {
            session_id: self.session_id.clone(),
            peer: self.peer,
            method,
            delegation_type,
            info: DelegationInfo {
                device: self.device,
                subtrees,
            },
            expires: None,
        })
    }
}

async fn admin_start(
    State(server): State<DelegationServer>,
    Json(request): Json<StartRequest>,
) -> Response {
    let request = match request.into_engine() {
        Ok(r) => r,
        Err(e) => return problem(StatusCode::BAD_REQUEST, e),
    };
    match server.start_delegation(request).await {
        Ok(id) => (
            StatusCode::CREATED,
            Json(serde_json::json!({ "session_id": id })),
        )
            .into_response(),
        Err(e) => engine_problem(e),
    }
}

async fn admin_sessions(State(server): State<DelegationServer>) -> Response {
    match server.sessions().await {
        Ok(list) => Json(list).into_response(),
        Err(e) => engine_problem(e),
    }
}

async fn admin_session(
    State(server): State<DelegationServer>,
    UrlPath(id): UrlPath<String>,
) -> Response {
    match server.session(&id).await {
        Ok(info) => Json(info).into_response(),
        Err(e) => engine_problem(e),
    }
}

async fn admin_cancel(
    State(server): State<DelegationServer>,
    UrlPath(id): UrlPath<String>,
) -> Response {
    match server.cancel(&id).await {
        Ok(info) => Json(info).into_response(),
        Err(e) => engine_problem(e),
    }
}

/// `dmdelegate device --config FILE.toml`: a simulated device on the network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceFileConfig {
    /// Device identifier.
    pub device_id: String,
    /// Manufacturer.
    pub manufacturer: String,
    /// Model.
    pub model: String,
    /// Package 0 endpoint, e.g. `127.0.0.1:9000`.
    pub listen: SocketAddr,
    /// CA trusted for Bootstrap Servers (PEM file).
    #[serde(default)]
    pub bootstrap_trust: Option<PathBuf>,
    /// Host names of Bootstrap Servers and the addresses to reach them at.
    #[serde(default)]
    pub resolve: Vec<(String, SocketAddr)>,
    /// The server that owns the sample tree, and its account.
    pub owner: OwnerAccount,
}

/// The owning server's account on a simulated device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OwnerAccount {
    /// ServerID.
    pub server_id: String,
    /// Its SyncML endpoint.
    pub url: String,
    /// CLCRED secret.
    pub client_secret: String,
    /// SRVCRED secret.
    pub server_secret: String,
}

/// A running simulated device.
#[derive(Debug)]
pub struct DeviceNode {
    /// The device's network side.
    pub device: NetworkDevice,
}

impl DeviceFileConfig {
    /// Reads a device configuration; relative paths are relative to the file.
    pub fn load(path: &Path) -> Result<Self, NodeError> {
        let text = read(path, "configuration")?;
        let mut config: DeviceFileConfig =
            toml::from_str(&text).map_err(|e| err(format!("{}: {e}", path.display())))?;
        if let Some(t) = config.bootstrap_trust.as_mut().filter(|t| t.is_relative()) {
            *t = path.parent().unwrap_or(Path::new(".")).join(&*t);
        }
        Ok(config)
    }
}

impl DeviceNode {
    /// Provisions the sample tree owned by the configured server and starts listening.
    pub async fn start(config: &DeviceFileConfig) -> Result<Self, NodeError> {
        let sim = Arc::new(SimDevice::new(DeviceInfo {
            device_id: config.device_id.clone(),
            manufacturer: config.manufacturer.clone(),
            model: config.model.clone(),
        }));
        let o = &config.owner;
        provision_sample_tree(
            &sim,
            &DmAcc::simple(&o.server_id, &o.url, &o.client_secret, &o.server_secret),
        );
        let bootstrap_ca_pem = match &config.bootstrap_trust {
            Some(p) => Some(read(p, "bootstrap trust anchors")?),
            None => None,
        };
        let device = NetworkDevice::start_on(
            sim,
            config.listen,
            DeviceOptions {
                bootstrap_ca_pem,
                resolve: config.resolve.clone(),
                ..DeviceOptions::default()
            },
        )
        .await
        .map_err(err)?;
        Ok(Self { device })
    }
}
