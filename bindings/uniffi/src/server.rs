//! [`DelegationServer`]: `dmdelegate_net::Server` as a uniffi object.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use dmdelegate::{DelegatedSubtree, DelegationInfo, Method};
use dmdelegate_net::https::HttpsOptions;
use dmdelegate_net::{DeviceHubOptions, Server, ServerOptions, StartDelegation, Wire};

use crate::error::DelegationError;
use crate::host::{DelegationHost, ForeignHost};
use crate::on_runtime;
use crate::types::{timestamp, DelegationRequest, Session};

/// A peer DM Server.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct Peer {
    /// Its ServerID.
    pub server_id: String,
    /// Its delegation endpoint, `https://host:port/dm-delegation`.
    pub endpoint: String,
    /// `ip:port` to connect to instead of resolving the endpoint's host.
    #[uniffi(default = None)]
    pub address: Option<String>,
    /// The DNS name its certificate must carry when it is not the ServerID.
    #[uniffi(default = None)]
    pub identity: Option<String>,
}

/// Deadlines of the protocol's steps in milliseconds; a step past its deadline fails
/// the delegation, which rolls back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Record)]
pub struct Timeouts {
    /// Waiting for the peer's next protocol message.
    #[uniffi(default = 30000)]
    pub response_ms: u64,
    /// DMS-2 waiting for DELEGATION_PREPARED.
    #[uniffi(default = 120000)]
    pub preparation_ms: u64,
    /// DMS-1 waiting for DELEGATION_CONFIRM, Methods 1/2.
    #[uniffi(default = 300000)]
    pub confirm_ms: u64,
    /// DMS-1 waiting for DELEGATION_CONFIRM, Methods 3/4.
    #[uniffi(default = 900000)]
    pub bootstrap_confirm_ms: u64,
    /// DMS-2 waiting for the device's first session, Methods 3/4.
    #[uniffi(default = 900000)]
    pub client_session_ms: u64,
}

impl From<Timeouts> for dmdelegate::Timeouts {
    fn from(t: Timeouts) -> Self {
        dmdelegate::Timeouts {
            response: Duration::from_millis(t.response_ms),
            preparation: Duration::from_millis(t.preparation_ms),
            confirm: Duration::from_millis(t.confirm_ms),
            bootstrap_confirm: Duration::from_millis(t.bootstrap_confirm_ms),
            client_session: Duration::from_millis(t.client_session_ms),
        }
    }
}

/// The HTTPS binding's limits, timeouts and batching (docs/protocol.md §8.1/§8.2);
/// durations in milliseconds. Every field's default is the library's. Checked when the
/// server starts: a bad value is an `InvalidArgument` naming `https.<field>` (the Rust
/// name, e.g. `https.max_body_bytes`; durations without the `_ms`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Record)]
pub struct HttpsSettings {
    /// TCP + TLS connect timeout of outgoing requests; above zero.
    #[uniffi(default = 5000)]
    pub connect_timeout_ms: u64,
    /// Whole-request timeout of outgoing requests; above zero.
    #[uniffi(default = 30000)]
    pub request_timeout_ms: u64,
    /// TLS handshake timeout of incoming connections; above zero.
    #[uniffi(default = 10000)]
    pub handshake_timeout_ms: u64,
    /// First retry delay of a failed delivery, doubled each attempt; above zero.
    #[uniffi(default = 200)]
    pub backoff_ms: u64,
    /// Delivery attempts per message (1: no retry); at least 1.
    #[uniffi(default = 4)]
    pub attempts: u32,
    /// Largest accepted request body in bytes; at least 1024.
    #[uniffi(default = 262144)]
    pub max_body_bytes: u64,
    /// Most requests in flight to one peer at a time while batching; messages sent while
    /// all are in flight leave together in the next request. At least 1.
    #[uniffi(default = 2)]
    pub max_requests_per_peer: u64,
    /// Most requests in flight to one peer when each message needs a request of its own
    /// (batching off, or the peer refuses batches). At least 1.
    #[uniffi(default = 32)]
    pub max_unbatched_requests_per_peer: u64,
    /// Most messages one outgoing request may carry; 1 turns batching off both ways (one
    /// message per request out, incoming batches refused with 415). At least 1.
    #[uniffi(default = 64)]
    pub max_batch_messages: u64,
    /// Largest batch document a request may carry in bytes (a larger message goes
    /// alone); keep it within the peers' body cap. At least 1024.
    #[uniffi(default = 131072)]
    pub max_batch_bytes: u64,
}

impl TryFrom<HttpsSettings> for HttpsOptions {
    type Error = DelegationError;

    /// Converts the record; only a count that does not fit this platform's `usize` is
    /// refused here, the values themselves are checked by `Server::start`.
    fn try_from(h: HttpsSettings) -> Result<Self, DelegationError> {
        let size = |field: &str, value: u64| {
            usize::try_from(value).map_err(|_| {
                DelegationError::invalid(
                    &format!("https.{field}"),
                    format!("{value} is too large for this platform"),
                )
            })
        };
        Ok(HttpsOptions {
            max_body_bytes: size("max_body_bytes", h.max_body_bytes)?,
            connect_timeout: Duration::from_millis(h.connect_timeout_ms),
            request_timeout: Duration::from_millis(h.request_timeout_ms),
            attempts: h.attempts,
            backoff: Duration::from_millis(h.backoff_ms),
            handshake_timeout: Duration::from_millis(h.handshake_timeout_ms),
            max_requests_per_peer: size("max_requests_per_peer", h.max_requests_per_peer)?,
            max_unbatched_requests_per_peer: size(
                "max_unbatched_requests_per_peer",
                h.max_unbatched_requests_per_peer,
            )?,
            max_batch_messages: size("max_batch_messages", h.max_batch_messages)?,
            max_batch_bytes: size("max_batch_bytes", h.max_batch_bytes)?,
        })
    }
}

/// How a device proves itself to a device hub (the CLCRED `AAuthType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Enum)]
pub enum DeviceAuthScheme {
    /// `syncml:auth-basic`.
    Basic,
    /// `syncml:auth-md5`.
    Md5,
}

/// A networked device the server's device hub manages: where to wake it (package 0,
/// `http://host:port/notify`) and the credentials of this server's account on it.
#[derive(Clone, PartialEq, Eq, uniffi::Record)]
pub struct DeviceLink {
    /// The device's identifier (the `Source` of its SyncML messages).
    pub device_id: String,
    /// Its package 0 endpoint.
    pub notify_url: String,
    /// The device's secret (CLCRED `AAuthSecret`).
    pub client_secret: String,
    /// This server's secret on the device (SRVCRED), for the package 0 digest.
    pub server_secret: String,
    /// The scheme the device must use.
    pub scheme: DeviceAuthScheme,
    /// The name the device authenticates with (CLCRED `AAuthName`).
    #[uniffi(default = "device")]
    pub client_name: String,
}

impl std::fmt::Debug for DeviceLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceLink")
            .field("device_id", &self.device_id)
            .field("notify_url", &self.notify_url)
            .finish_non_exhaustive()
    }
}

impl TryFrom<DeviceLink> for dmdelegate_net::DeviceLink {
    type Error = DelegationError;

    fn try_from(d: DeviceLink) -> Result<Self, DelegationError> {
        let link = dmdelegate_net::DeviceLink {
            device_id: d.device_id,
            notify_url: d.notify_url,
            server_secret: d.server_secret,
            server_nonce: Vec::new(),
            client_name: d.client_name,
            client_secret: d.client_secret,
            scheme: match d.scheme {
                DeviceAuthScheme::Basic => dmdelegate::syncml::AuthScheme::Basic,
                DeviceAuthScheme::Md5 => dmdelegate::syncml::AuthScheme::Md5,
            },
        };
        link.validate().map_err(|e| {
            // The generated bindings name the fields in camelCase.
            let field = match e.field {
                "device_id" => "deviceId",
                "notify_url" => "notifyUrl",
                other => other,
            };
            DelegationError::invalid(field, e.reason)
        })?;
        Ok(link)
    }
}

/// The server's own SyncML DM endpoint for networked devices. With it the server runs
/// client commands and opens DM sessions itself: the host's `execute` and `openDmSession`
/// are never called; policy, accounts, the Bootstrap Server URL and events stay the
/// host's.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct DeviceHub {
    /// `ip:port` of the SyncML endpoint (plain HTTP); port 0: any free port
    /// (`deviceHubUrl`).
    #[uniffi(default = "127.0.0.1:0")]
    pub listen_address: String,
    /// The devices it manages from the start (more with `addDevice`).
    #[uniffi(default = [])]
    pub devices: Vec<DeviceLink>,
}

/// A server's configuration.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct ServerConfig {
    /// This server's ServerID (as in its DMAcc and in ACLs).
    pub server_id: String,
    /// `ip:port` to listen on, for example `127.0.0.1:0` (0: any free port).
    pub listen_address: String,
    /// Certificate chain (PEM), TLS server and client certificate; carries the ServerID.
    pub cert_pem: String,
    /// Its private key (PEM).
    pub key_pem: String,
    /// CA certificates (PEM) peers' certificates must chain to.
    pub trust_pem: String,
    /// The peers; empty to set them later with `setPeers`.
    #[uniffi(default = [])]
    pub peers: Vec<Peer>,
    /// Deadlines; the defaults when absent.
    #[uniffi(default = None)]
    pub timeouts: Option<Timeouts>,
    /// A SQLite file for durable sessions; in memory when absent.
    #[uniffi(default = None)]
    pub store_path: Option<String>,
    /// The server's own SyncML endpoint for networked devices; absent: the host reaches
    /// devices itself.
    #[uniffi(default = None)]
    pub device_hub: Option<DeviceHub>,
    /// The HTTPS binding's limits, timeouts and batching; the defaults when absent.
    #[uniffi(default = None)]
    pub https: Option<HttpsSettings>,
}

fn peers(list: Vec<Peer>) -> Result<Vec<dmdelegate_net::Peer>, DelegationError> {
    list.into_iter()
        .map(|p| {
            let address = p
                .address
                .map(|a| {
                    a.parse::<SocketAddr>()
                        .map_err(|e| DelegationError::invalid("peers[].address", e))
                })
                .transpose()?;
            Ok(dmdelegate_net::Peer {
                server_id: p.server_id,
                endpoint: p.endpoint,
                identity: p.identity,
                address,
            })
        })
        .collect()
}

/// One DM Server's delegation engine (DMS-1 and DMS-2 at once, any number of sessions)
/// serving the HTTPS binding with mutual TLS, with the host's [`DelegationHost`].
///
/// Every method may be called from any thread; the waiting ones are `suspend` / `async`.
/// `close` stops it (also when the object is released; in Kotlin the method is
/// `shutdown()`, since `close()` is the generated `AutoCloseable` one).
///
/// Signals: the HTTPS stack may write to a socket whose peer has closed it; a process
/// that does not ignore SIGPIPE (the JVM does; a Swift program must call
/// `signal(SIGPIPE, SIG_IGN)`) is killed by such a write.
#[derive(uniffi::Object)]
pub struct DelegationServer {
    inner: Arc<Server>,
}

impl std::fmt::Debug for DelegationServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("DelegationServer")
            .field(&self.inner)
            .finish()
    }
}

impl DelegationServer {
    pub(crate) fn facade(&self) -> &Server {
        &self.inner
    }
}

#[uniffi::export]
impl DelegationServer {
    /// Starts a server: opens the store, binds the address and, when peers are given,
    /// serves at once. Unfinished delegations in a durable store resume or roll back.
    #[uniffi::constructor]
    pub async fn start(
        config: ServerConfig,
        host: Arc<dyn DelegationHost>,
    ) -> Result<Arc<Self>, DelegationError> {
        let listen: SocketAddr = config
            .listen_address
            .parse()
            .map_err(|e| DelegationError::invalid("listenAddress", e))?;
        let wire = Wire::Https {
            listen,
            identity: dmdelegate_net::Identity {
                cert_chain_pem: config.cert_pem,
                key_pem: config.key_pem,
            },
            trust_pem: config.trust_pem,
            peers: peers(config.peers)?,
            options: config
                .https
                .map(HttpsOptions::try_from)
                .transpose()?
                .unwrap_or_default(),
        };
        let mut options = ServerOptions::new(config.server_id, wire);
        if let Some(t) = config.timeouts {
            options.timeouts = t.into();
        }
        options.store_path = config.store_path.map(PathBuf::from);
        if let Some(hub) = config.device_hub {
            let listen: SocketAddr = hub
                .listen_address
                .parse()
                .map_err(|e| DelegationError::invalid("deviceHub.listenAddress", e))?;
            let devices = hub
                .devices
                .into_iter()
                .map(dmdelegate_net::DeviceLink::try_from)
                .collect::<Result<Vec<_>, _>>()?;
            options.device_hub = Some(DeviceHubOptions::new(listen, devices));
        }
        let host = Arc::new(ForeignHost(host));
        let server = on_runtime(async move { Ok(Server::start(options, host).await?) }).await?;
        Ok(Arc::new(DelegationServer {
            inner: Arc::new(server),
        }))
    }

    /// Sets the peers and starts serving, for a server started without them. Once only.
    pub fn set_peers(&self, peers: Vec<Peer>) -> Result<(), DelegationError> {
        let list = self::peers(peers)?;
        Ok(self.inner.set_peers(list)?)
    }

    /// This server's ServerID.
    pub fn server_id(&self) -> String {
        self.inner.server_id().to_string()
    }

    /// The TCP port the endpoint listens on.
    pub fn local_port(&self) -> u16 {
        self.inner.local_addr().map_or(0, |a| a.port())
    }

    /// The delegation endpoint's URL on `host`, for a peer's configuration.
    pub fn endpoint_url(&self, host: String) -> String {
        self.inner.endpoint_url(&host).unwrap_or_default()
    }

    /// The device hub's SyncML endpoint, `http://ip:port/dm` (the `AppAddr` of the
    /// accounts the host hands out); absent without a hub.
    pub fn device_hub_url(&self) -> Option<String> {
        self.inner.device_hub_url().map(str::to_string)
    }

    /// Manages one more device through the device hub (a link with the same device id
    /// is replaced). `InvalidState` without a hub.
    pub fn add_device(&self, link: DeviceLink) -> Result<(), DelegationError> {
        Ok(self.inner.add_device(link.try_into()?)?)
    }

    /// Starts a delegation (sends DELEGATION_NOTIF) and returns its session id; the rest
    /// runs in the background (`wait`, or the host's `onEvent`).
    pub async fn start_delegation(
        &self,
        request: DelegationRequest,
    ) -> Result<String, DelegationError> {
        let method = Method::from_number(request.method).ok_or_else(|| {
            DelegationError::invalid("method", format!("{} is not 1 to 4", request.method))
        })?;
        let subtrees = request
            .subtrees
            .into_iter()
            .map(DelegatedSubtree::try_from)
            .collect::<Result<Vec<_>, _>>()?;
        let start = StartDelegation {
            peer: request.peer,
            method,
            delegation_type: request.delegation_type.into(),
            info: DelegationInfo {
                device: request.device.into(),
                subtrees,
            },
            expires: timestamp(request.expires_ms, "expiresMs")?,
            session_id: request.session_id,
        };
        let server = self.inner.clone();
        on_runtime(async move { Ok(server.start_delegation(start).await?) }).await
    }

    /// Waits at most `timeout_ms` for the session to finish (Completed, Rejected,
    /// RolledBack, RollbackFailed, Expired) and returns it as it is then. A session not
    /// known yet is waited for too.
    pub async fn wait(
        &self,
        session_id: String,
        timeout_ms: u64,
    ) -> Result<Session, DelegationError> {
        let server = self.inner.clone();
        on_runtime(async move {
            Ok(server
                .wait(&session_id, Duration::from_millis(timeout_ms))
                .await?
                .into())
        })
        .await
    }

    /// One session.
    pub async fn session(&self, session_id: String) -> Result<Session, DelegationError> {
        let server = self.inner.clone();
        on_runtime(async move { Ok(server.session(&session_id).await?.into()) }).await
    }

    /// Every session this server keeps, finished ones included, oldest first.
    pub async fn sessions(&self) -> Result<Vec<Session>, DelegationError> {
        let server = self.inner.clone();
        on_runtime(async move {
            Ok(server
                .sessions()
                .await?
                .into_iter()
                .map(Session::from)
                .collect())
        })
        .await
    }

    /// Cancels an unfinished delegation: DELEGATION_FAILURE to the peer, rollback.
    pub async fn cancel(&self, session_id: String) -> Result<Session, DelegationError> {
        let server = self.inner.clone();
        on_runtime(async move { Ok(server.cancel(&session_id).await?.into()) }).await
    }

    /// Runs the inverse operations of a RollbackFailed session again.
    pub async fn retry_rollback(&self, session_id: String) -> Result<Session, DelegationError> {
        let server = self.inner.clone();
        on_runtime(async move { Ok(server.retry_rollback(&session_id).await?.into()) }).await
    }

    /// DMS-2, Methods 3/4: the device opened its first DM session after bootstrapping;
    /// confirms the sessions waiting for it and returns their ids.
    pub async fn client_connected(
        &self,
        device_id: String,
    ) -> Result<Vec<String>, DelegationError> {
        let server = self.inner.clone();
        on_runtime(async move { Ok(server.client_connected(&device_id).await?) }).await
    }

    /// Stops the endpoint, the transport and the deadline watcher. Idempotent; sessions in
    /// a durable store stay for the next start.
    pub fn close(&self) {
        self.inner.shutdown();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use uniffi::metadata::codes;

    /// The `#[uniffi(default = ...)]` of each field of `HttpsSettings`, read from the
    /// metadata the derive embeds (what the generated Kotlin and Swift use), by field name.
    fn record_defaults() -> Vec<(String, u64)> {
        let mut meta: &[u8] = &UNIFFI_META_DMDELEGATE_UNIFFI_RECORD_HTTPSSETTINGS;
        fn byte(m: &mut &[u8]) -> u8 {
            let (b, rest) = m.split_first().expect("metadata ends early");
            *m = rest;
            *b
        }
        fn string(m: &mut &[u8]) -> String {
            let len = byte(m) as usize;
            let (s, rest) = m.split_at(len);
            *m = rest;
            String::from_utf8(s.to_vec()).unwrap()
        }
        fn long_string(m: &mut &[u8]) {
            let len = u16::from_le_bytes([byte(m), byte(m)]) as usize;
            *m = &m[len..];
        }
        assert_eq!(byte(&mut meta), codes::RECORD);
        string(&mut meta); // module path
        assert_eq!(string(&mut meta), "HttpsSettings");
        assert_eq!(byte(&mut meta), 0, "no renamed record");
        let fields = byte(&mut meta);
        let mut defaults = Vec::new();
        for _ in 0..fields {
            let name = string(&mut meta);
            assert_eq!(byte(&mut meta), 0, "{name}: no renamed field");
            let ty = byte(&mut meta);
            assert!(
                ty == codes::TYPE_U64 || ty == codes::TYPE_U32,
                "{name}: type {ty}"
            );
            assert_eq!(byte(&mut meta), 1, "{name} has no default");
            assert_eq!(byte(&mut meta), codes::DEFVALUE_LITERAL, "{name}");
            assert_eq!(byte(&mut meta), codes::LIT_INT, "{name}");
            let value = string(&mut meta).parse().unwrap();
            long_string(&mut meta); // docstring
            defaults.push((name, value));
        }
        long_string(&mut meta);
        assert!(meta.is_empty(), "metadata left over");
        defaults
    }

    #[test]
    fn the_record_defaults_are_the_librarys() {
        let d: std::collections::HashMap<String, u64> = record_defaults().into_iter().collect();
        let settings = HttpsSettings {
            connect_timeout_ms: d["connect_timeout_ms"],
            request_timeout_ms: d["request_timeout_ms"],
            handshake_timeout_ms: d["handshake_timeout_ms"],
            backoff_ms: d["backoff_ms"],
            attempts: d["attempts"].try_into().unwrap(),
            max_body_bytes: d["max_body_bytes"],
            max_requests_per_peer: d["max_requests_per_peer"],
            max_unbatched_requests_per_peer: d["max_unbatched_requests_per_peer"],
            max_batch_messages: d["max_batch_messages"],
            max_batch_bytes: d["max_batch_bytes"],
        };
        assert_eq!(d.len(), 10, "a field without a default: {d:?}");
        assert_eq!(
            HttpsOptions::try_from(settings).unwrap(),
            HttpsOptions::default()
        );
    }

    #[test]
    fn settings_convert_field_by_field() {
        let settings = HttpsSettings {
            connect_timeout_ms: 1,
            request_timeout_ms: 2,
            handshake_timeout_ms: 3,
            backoff_ms: 4,
            attempts: 5,
            max_body_bytes: 6,
            max_requests_per_peer: 7,
            max_unbatched_requests_per_peer: 8,
            max_batch_messages: 9,
            max_batch_bytes: 10,
        };
        let o = HttpsOptions::try_from(settings).unwrap();
        assert_eq!(o.connect_timeout, Duration::from_millis(1));
        assert_eq!(o.request_timeout, Duration::from_millis(2));
        assert_eq!(o.handshake_timeout, Duration::from_millis(3));
        assert_eq!(o.backoff, Duration::from_millis(4));
        assert_eq!(o.attempts, 5);
        assert_eq!(o.max_body_bytes, 6);
        assert_eq!(o.max_requests_per_peer, 7);
        assert_eq!(o.max_unbatched_requests_per_peer, 8);
        assert_eq!(o.max_batch_messages, 9);
        assert_eq!(o.max_batch_bytes, 10);
    }
}
