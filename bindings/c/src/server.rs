//! `dmd_server`: one DM Server's delegation engine with C host callbacks, reachable over
//! the HTTPS binding with mutual TLS or over the host's own transport, on a runtime the
//! handle owns. A thin layer over `dmdelegate_net::Server`, the facade every binding wraps.

use std::ffi::{c_char, c_void, CString};
use std::hash::{BuildHasher, Hasher};
use std::net::SocketAddr;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use dmdelegate::syncml::AuthScheme;
use dmdelegate::{
    AclCommand, DelegatedSubtree, DelegationInfo, DeviceInfo, Message, Method, Receipt,
    SessionInfo, Timeouts, Timestamp, Transport, TransportError,
};
use dmdelegate_net::https::{HttpsOptions, Peer};
use dmdelegate_net::{
    DeviceHubOptions, DeviceLink, Identity, Server, ServerOptions, StartDelegation, Wire,
};
use tokio::runtime::Runtime;

use crate::guard::{
    arg_bytes, arg_ref, arg_str, check_out, copy_truncated, not_on_library_thread, opt_str,
    write_string, Failure,
};
use crate::host::{dmd_host_callbacks, dmd_role, dmd_subtree, CHost};
use crate::local::{delegation_type, dmd_delegation_type_arg, dmd_state};
use crate::result::dmd_result;

/// How long `dmd_server_free` waits for the runtime's tasks (and running callbacks).
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(10);

/// A peer DM Server this server exchanges delegation messages with.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct dmd_peer {
    /// The peer's ServerID.
    pub server_id: *const c_char,
    /// Its delegation endpoint, `https://host:port/dm-delegation`.
    pub endpoint: *const c_char,
    /// NULL, or `ip:port` to connect to instead of resolving the endpoint's host (the
    /// certificate is still checked), for example `127.0.0.1:4431`.
    pub address: *const c_char,
    /// NULL, or the DNS name the peer's TLS client certificate must carry when it is not
    /// the ServerID itself: it identifies incoming connections. Outgoing connections check
    /// the server certificate against the endpoint's host name.
    pub identity: *const c_char,
}

/// Deadlines of the protocol's steps, in milliseconds; 0 keeps a field's default (in
/// brackets). A step that passes its deadline fails the delegation, which rolls back.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct dmd_timeouts {
    /// Waiting for the peer's next protocol message [30 s].
    pub response_ms: u64,
    /// DMS-2 waiting for DELEGATION_PREPARED while DMS-1 prepares the device [120 s].
    pub preparation_ms: u64,
    /// DMS-1 waiting for DELEGATION_CONFIRM in Methods 1/2 [300 s].
    pub confirm_ms: u64,
    /// DMS-1 waiting for DELEGATION_CONFIRM in Methods 3/4 [900 s].
    pub bootstrap_confirm_ms: u64,
    /// DMS-2 waiting for the device's first DM session in Methods 3/4 [900 s].
    pub client_session_ms: u64,
}

impl dmd_timeouts {
    fn apply(&self) -> Timeouts {
        let d = Timeouts::default();
        let pick = |ms: u64, default: Duration| {
            if ms == 0 {
                default
            } else {
                Duration::from_millis(ms)
            }
        };
        Timeouts {
            response: pick(self.response_ms, d.response),
            preparation: pick(self.preparation_ms, d.preparation),
            confirm: pick(self.confirm_ms, d.confirm),
            bootstrap_confirm: pick(self.bootstrap_confirm_ms, d.bootstrap_confirm),
            client_session: pick(self.client_session_ms, d.client_session),
        }
    }
}

/// Settings of the HTTPS binding (mutual TLS), read during `dmd_server_new` only (copied);
/// 0 keeps a field's default (in brackets). Durations are in milliseconds. Values that are
/// not 0 must be usable: `dmd_server_new` refuses a body or batch cap under 1024 bytes
/// with `DMD_ERR_INVALID_ARGUMENT`, the last error message naming the field (for example
/// `https.max_body_bytes`). docs/protocol.md §8.1/§8.2 describe batching.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct dmd_https_options {
    /// TCP + TLS connect timeout of outgoing requests [5 s].
    pub connect_timeout_ms: u64,
    /// Whole-request timeout of outgoing requests [30 s].
    pub request_timeout_ms: u64,
    /// TLS handshake timeout of incoming connections [10 s].
    pub handshake_timeout_ms: u64,
    /// First delay before a failed request is retried; it doubles each attempt [200 ms].
    pub backoff_ms: u64,
    /// Delivery attempts per message, 1 = no retry [4].
    pub attempts: u32,
    /// Largest accepted request body, in bytes; at least 1024 [256 KiB].
    pub max_body_bytes: usize,
    /// Most requests in flight to one peer at a time while batching; messages sent while
    /// all are in flight leave together in the next request [2].
    pub max_requests_per_peer: usize,
    /// Most requests in flight to one peer when each message needs a request of its own
    /// (batching off, or the peer refuses batches) [32].
    pub max_unbatched_requests_per_peer: usize,
    /// Most messages one outgoing request may carry; 1 turns batching off both ways (one
    /// message per request out, incoming batches answered with 415) [64].
    pub max_batch_messages: usize,
    /// Largest batch document a request may carry, in bytes (a larger message goes
    /// alone); at least 1024, and within the peers' body cap [128 KiB].
    pub max_batch_bytes: usize,
}

impl dmd_https_options {
    fn apply(&self) -> HttpsOptions {
        let d = HttpsOptions::default();
        let ms = |ms: u64, default: Duration| {
            if ms == 0 {
                default
            } else {
                Duration::from_millis(ms)
            }
        };
        let n = |n: usize, default: usize| if n == 0 { default } else { n };
        HttpsOptions {
            max_body_bytes: n(self.max_body_bytes, d.max_body_bytes),
            connect_timeout: ms(self.connect_timeout_ms, d.connect_timeout),
            request_timeout: ms(self.request_timeout_ms, d.request_timeout),
            attempts: if self.attempts == 0 {
                d.attempts
            } else {
                self.attempts
            },
            backoff: ms(self.backoff_ms, d.backoff),
            handshake_timeout: ms(self.handshake_timeout_ms, d.handshake_timeout),
            max_requests_per_peer: n(self.max_requests_per_peer, d.max_requests_per_peer),
            max_unbatched_requests_per_peer: n(
                self.max_unbatched_requests_per_peer,
                d.max_unbatched_requests_per_peer,
            ),
            max_batch_messages: n(self.max_batch_messages, d.max_batch_messages),
            max_batch_bytes: n(self.max_batch_bytes, d.max_batch_bytes),
        }
    }
}

/// The host's own transport, for a server that does not use the HTTPS binding: every
/// outgoing message goes to `send`; incoming ones are handed to `dmd_server_receive`.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct dmd_transport {
    /// Passed back to `send`. May be NULL.
    pub userdata: *mut c_void,
    /// Sends one message (`document`, `len` bytes of `application/vnd.dm.delegation+xml`;
    /// the library's, valid during the call only) to the peer whose ServerID is
    /// `recipient`. Return 0 once the message is delivered or queued for delivery in
    /// order; anything else fails the delegation (reason 170, peer unreachable), which
    /// rolls back. Runs on the library's threads, one message of a session at a time and
    /// in the session's order; it should return promptly (queue, do not wait for the
    /// peer's processing) and must not call `dmd_server_*` functions. Required.
    pub send: Option<
        unsafe extern "C" fn(
            userdata: *mut c_void,
            recipient: *const c_char,
            document: *const u8,
            len: usize,
        ) -> i32,
    >,
}

/// A server's configuration, read during `dmd_server_new` only (every string is copied).
///
/// Two wires: with `transport` NULL the server serves the HTTPS binding (mutual TLS) and
/// `listen_address`, `cert_pem`, `key_pem`, `trust_pem` are required; with `transport`
/// set, messages travel over the host's own transport and those five fields, `peers` and
/// `https` must be NULL/0.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct dmd_server_config {
    /// This server's ServerID (as in its DMAcc and in ACLs). Required.
    pub server_id: *const c_char,
    /// `ip:port` the HTTPS endpoint listens on, for example `127.0.0.1:0` (port 0: any
    /// free port, see `dmd_server_local_port`).
    pub listen_address: *const c_char,
    /// This server's certificate chain (PEM); it serves as TLS server and client
    /// certificate, and must carry the ServerID as a DNS name.
    pub cert_pem: *const c_char,
    /// The certificate's private key (PEM).
    pub key_pem: *const c_char,
    /// The CA certificates (PEM) peers' certificates must chain to.
    pub trust_pem: *const c_char,
    /// The peers, `peer_count` of them; NULL with `peer_count` 0 to set them later with
    /// `dmd_server_set_peers` (once both servers know their ports).
    pub peers: *const dmd_peer,
    /// How many peers.
    pub peer_count: usize,
    /// NULL for the default deadlines, or the deadlines to use.
    pub timeouts: *const dmd_timeouts,
    /// NULL to keep sessions in memory, or the path of a SQLite file (created when
    /// missing, owner-only): unfinished delegations then resume, or roll back at their
    /// deadlines, when a server is created again on the same file.
    pub store_path: *const c_char,
    /// NULL for the HTTPS binding, or the host's own transport.
    pub transport: *const dmd_transport,
    /// NULL when the host reaches devices itself (its `execute` and `open_dm_session`
    /// callbacks), or the server's own SyncML endpoint for networked devices.
    pub device_hub: *const dmd_device_hub,
    /// NULL for the HTTPS binding's default settings, or its settings (copied). Must be
    /// NULL with `transport` set.
    pub https: *const dmd_https_options,
}

/// How a device proves itself to the device hub (the CLCRED `AAuthType`).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum dmd_auth_scheme {
    /// `syncml:auth-basic`.
    DMD_AUTH_BASIC = 0,
    /// `syncml:auth-md5`.
    DMD_AUTH_MD5 = 1,
}

/// A networked device the server's device hub manages: where to wake it (package 0) and
/// the credentials of this server's account on it.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct dmd_device_link {
    /// The device's identifier (the `Source` of its SyncML messages). Required.
    pub device_id: *const c_char,
    /// Where package 0 notifications go, `http://host:port/notify`. Required.
    pub notify_url: *const c_char,
    /// The name the device authenticates with (CLCRED `AAuthName`); NULL for `device`.
    pub client_name: *const c_char,
    /// The device's secret (CLCRED `AAuthSecret`). Required.
    pub client_secret: *const c_char,
    /// This server's secret on the device (SRVCRED), for the package 0 digest. Required.
    pub server_secret: *const c_char,
    /// A `dmd_auth_scheme` value: the scheme the device must use.
    pub scheme: u32,
}

/// The server's own SyncML DM endpoint for networked devices (`dmd_server_config`'s
/// `device_hub`). With it the server runs client commands and opens DM sessions itself,
/// and the host's `execute` and `open_dm_session` callbacks are never called (they may be
/// NULL); policy, accounts, the Bootstrap Server URL and events stay the host's.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct dmd_device_hub {
    /// `ip:port` of the SyncML endpoint (plain HTTP), e.g. `127.0.0.1:0` (port 0: any free
    /// port, see `dmd_server_device_hub_url`). Required.
    pub listen_address: *const c_char,
    /// The devices, `device_count` of them (NULL with 0: none yet, see
    /// `dmd_server_add_device`).
    pub devices: *const dmd_device_link,
    /// How many devices.
    pub device_count: usize,
}

/// A device link of C strings, checked.
///
/// # Safety
///
/// The strings of `link` are NULL or valid.
unsafe fn read_device_link(link: &dmd_device_link, at: &str) -> Result<DeviceLink, Failure> {
    let field = |f: &str| format!("{at}.{f}");
    // SAFETY (this block): the caller guarantees the strings.
    let (device_id, notify_url, client_name, client_secret, server_secret) = unsafe {
        (
            arg_str(link.device_id, &field("device_id"))?,
            arg_str(link.notify_url, &field("notify_url"))?,
            opt_str(link.client_name, &field("client_name"))?,
            arg_str(link.client_secret, &field("client_secret"))?,
            arg_str(link.server_secret, &field("server_secret"))?,
        )
    };
    let scheme = match link.scheme {
        0 => AuthScheme::Basic,
        1 => AuthScheme::Md5,
        other => {
            return Err(Failure::invalid(
                &field("scheme"),
                format!("{other} is not a dmd_auth_scheme"),
            ))
        }
    };
    let device = DeviceLink {
        device_id: device_id.to_string(),
        notify_url: notify_url.to_string(),
        server_secret: server_secret.to_string(),
        server_nonce: Vec::new(),
        client_name: client_name.unwrap_or("device").to_string(),
        client_secret: client_secret.to_string(),
        scheme,
    };
    device
        .validate()
        .map_err(|e| Failure::invalid(&field(e.field), e.reason))?;
    Ok(device)
}

/// The device hub options of a `dmd_device_hub`.
///
/// # Safety
///
/// `hub`'s strings are NULL or valid; `devices` NULL or `device_count` valid links.
unsafe fn read_device_hub(hub: &dmd_device_hub) -> Result<DeviceHubOptions, Failure> {
    // SAFETY: the caller guarantees the string.
    let listen = unsafe { arg_str(hub.listen_address, "config->device_hub->listen_address") }?;
    let listen: SocketAddr = listen
        .parse()
        .map_err(|e| Failure::invalid("config->device_hub->listen_address", e))?;
    let devices = if hub.device_count == 0 {
        Vec::new()
    } else if hub.devices.is_null() {
        return Err(Failure::null("config->device_hub->devices"));
    } else {
        // SAFETY: the caller guarantees `device_count` links.
        let list = unsafe { std::slice::from_raw_parts(hub.devices, hub.device_count) };
        list.iter()
            // SAFETY: the caller guarantees each link's strings.
            .map(|l| unsafe { read_device_link(l, "config->device_hub->devices[]") })
            .collect::<Result<_, _>>()?
    };
    Ok(DeviceHubOptions::new(listen, devices))
}

/// The adapter: a Rust [`Transport`] over the host's `send` callback.
struct CTransport(dmd_transport);

// SAFETY: `dmd_transport`'s documentation requires `send` and `userdata` to be usable
// from any thread; the adapter only copies the pointers.
unsafe impl Send for CTransport {}
// SAFETY: as above.
unsafe impl Sync for CTransport {}

#[async_trait]
impl Transport for CTransport {
    async fn send(&self, message: &Message) -> Result<(), TransportError> {
        let Some(send) = self.0.send else {
            return Err(TransportError {
                message: "no send callback".into(),
            });
        };
        let xml = message.to_xml();
        let recipient =
            CString::new(message.header.recipient.replace('\0', "\u{FFFD}")).unwrap_or_default();
        let rc = catch_unwind(AssertUnwindSafe(|| {
            // SAFETY: the pointers are valid for the call; the host guarantees `send`.
            unsafe { send(self.0.userdata, recipient.as_ptr(), xml.as_ptr(), xml.len()) }
        }))
        .map_err(|_| TransportError {
            message: "the send callback glue panicked".into(),
        })?;
        if rc == 0 {
            Ok(())
        } else {
            Err(TransportError {
                message: format!("the send callback returned {rc}"),
            })
        }
    }
}

/// One DM Server: the delegation engine (DMS-1 and DMS-2 at once, any number of
/// sessions) with the host's C callbacks, on the HTTPS binding or the host's transport.
/// Opaque: `dmd_server_new`, `dmd_server_free`.
///
/// It owns a two-thread runtime on which the callbacks run. Its functions may be called
/// from any thread except those (from a callback they return `DMD_ERR_INVALID_STATE`).
pub struct dmd_server {
    server: Option<Server>,
    runtime: Option<Runtime>,
}

impl Drop for dmd_server {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            {
                let _inside = runtime.enter();
                if let Some(server) = self.server.take() {
                    server.shutdown();
                }
            }
            runtime.shutdown_timeout(SHUTDOWN_TIMEOUT);
        }
    }
}

/// The peers of a C array.
///
/// # Safety
///
/// `peers` is NULL or points to `n` valid `dmd_peer`s with valid strings.
unsafe fn read_peers(peers: *const dmd_peer, n: usize) -> Result<Vec<Peer>, Failure> {
    if n == 0 {
        return Ok(Vec::new());
    }
    if peers.is_null() {
        return Err(Failure::null("peers"));
    }
    // SAFETY: the caller guarantees `n` peers.
    let list = unsafe { std::slice::from_raw_parts(peers, n) };
    list.iter()
        .map(|p| {
            // SAFETY (this block): the caller guarantees the strings.
            let (server_id, endpoint, address, identity) = unsafe {
                (
                    arg_str(p.server_id, "peers[].server_id")?,
                    arg_str(p.endpoint, "peers[].endpoint")?,
                    opt_str(p.address, "peers[].address")?,
                    opt_str(p.identity, "peers[].identity")?,
                )
            };
            let address = address
                .map(|a| {
                    a.parse::<SocketAddr>()
                        .map_err(|e| Failure::invalid("peers[].address", e))
                })
                .transpose()?;
            Ok(Peer {
                server_id: server_id.to_string(),
                endpoint: endpoint.to_string(),
                identity: identity.map(str::to_string),
                address,
            })
        })
        .collect()
}

/// The subtrees of a C array, rights parsed.
///
/// # Safety
///
/// `subtrees` is NULL or points to `n` valid `dmd_subtree`s with valid strings.
unsafe fn read_subtrees(
    subtrees: *const dmd_subtree,
    n: usize,
) -> Result<Vec<DelegatedSubtree>, Failure> {
    let list = if n == 0 {
        &[][..]
    } else if subtrees.is_null() {
        return Err(Failure::null("subtrees"));
    } else {
        // SAFETY: the caller guarantees `n` entries.
        unsafe { std::slice::from_raw_parts(subtrees, n) }
    };
    list.iter()
        .map(|t| {
            // SAFETY: the caller guarantees the strings.
            let uri = unsafe { arg_str(t.uri, "subtrees[].uri") }?;
            // SAFETY: as above.
            let rights = unsafe { arg_str(t.rights, "subtrees[].rights") }?;
            let rights = AclCommand::parse_list(rights)
                .map_err(|e| Failure::invalid("subtrees[].rights", e))?;
            Ok(DelegatedSubtree {
                uri: uri.to_string(),
                rights,
            })
        })
        .collect()
}

impl dmd_server {
    /// The facade, for the test helpers.
    pub(crate) fn facade(&self) -> Result<&Server, Failure> {
        self.parts().map(|(s, _)| s)
    }

    /// The facade and the runtime, refusing calls from the runtime's own threads (a
    /// callback calling back would block the thread its own session needs).
    fn parts(&self) -> Result<(&Server, &Runtime), Failure> {
        not_on_library_thread("dmd_server functions")?;
        match (&self.server, &self.runtime) {
            (Some(s), Some(r)) => Ok((s, r)),
            _ => Err(Failure::new(
                dmd_result::DMD_ERR_INVALID_STATE,
                "the server is stopped",
            )),
        }
    }
}

/// Reads a configuration into the facade's options.
///
/// # Safety
///
/// `config` is valid, with valid strings and arrays.
unsafe fn read_config(config: &dmd_server_config) -> Result<ServerOptions, Failure> {
    // SAFETY (this block): the caller guarantees the strings.
    let (server_id, store_path) = unsafe {
        (
            arg_str(config.server_id, "config->server_id")?,
            opt_str(config.store_path, "config->store_path")?,
        )
    };
    // SAFETY: the caller guarantees the pointer.
    let transport = unsafe { config.transport.as_ref() };
    let wire = match transport {
        Some(t) => {
            if t.send.is_none() {
                return Err(Failure::null("config->transport->send"));
            }
            let https_fields = [
                config.listen_address,
                config.cert_pem,
                config.key_pem,
                config.trust_pem,
            ];
            if https_fields.iter().any(|p| !p.is_null())
                || config.peer_count > 0
                || !config.https.is_null()
            {
                return Err(Failure::invalid(
                    "config->transport",
                    "a server with its own transport takes no listen address, PEM data, \
                     peers or HTTPS options",
                ));
            }
            Wire::Custom(Arc::new(CTransport(*t)))
        }
        None => {
            // SAFETY (this block): the caller guarantees the strings and arrays.
            let (listen, cert, key, trust, peers) = unsafe {
                (
                    arg_str(config.listen_address, "config->listen_address")?,
                    arg_str(config.cert_pem, "config->cert_pem")?,
                    arg_str(config.key_pem, "config->key_pem")?,
                    arg_str(config.trust_pem, "config->trust_pem")?,
                    read_peers(config.peers, config.peer_count)?,
                )
            };
            // SAFETY: the caller guarantees the pointer. Validated by `Server::start`
            // (`https.<field>` in the message).
            let options = unsafe { config.https.as_ref() }
                .map_or_else(HttpsOptions::default, dmd_https_options::apply);
            Wire::Https {
                listen: listen
                    .parse()
                    .map_err(|e| Failure::invalid("config->listen_address", e))?,
                identity: Identity {
                    cert_chain_pem: cert.to_string(),
                    key_pem: key.to_string(),
                },
                trust_pem: trust.to_string(),
                peers,
                options,
            }
        }
    };
    let mut options = ServerOptions::new(server_id, wire);
    // SAFETY: the caller guarantees the pointer.
    if let Some(t) = unsafe { config.timeouts.as_ref() } {
        options.timeouts = t.apply();
    }
    options.store_path = store_path.map(PathBuf::from);
    // SAFETY: the caller guarantees the pointer and what it points to.
    if let Some(hub) = unsafe { config.device_hub.as_ref() } {
        // SAFETY: as above.
        options.device_hub = Some(unsafe { read_device_hub(hub) }?);
    }
    Ok(options)
}

/// Creates a server: copies `config` and `callbacks`, starts the runtime, opens the
/// store, binds the listen address and, when `config->peer_count` > 0, starts the HTTPS
/// endpoint and transport (otherwise `dmd_server_set_peers` does); stores the new server
/// in `*out`. Unfinished delegations in a durable store resume, or roll back at their
/// deadlines.
///
/// Returns `DMD_OK`; `DMD_ERR_INVALID_ARGUMENT` for a bad ServerID, address, peer, PEM
/// data, string or HTTPS option (the message names the field, e.g. `https.max_body_bytes`),
/// or HTTPS fields (`https` included) given with a transport; `DMD_ERR_STORE` when the
/// store cannot be opened; `DMD_ERR_RUNTIME` when the runtime cannot start;
/// `DMD_ERR_TRANSPORT` when the address cannot be bound.
///
/// - Ownership: `config`, `callbacks`, `config->transport`, `config->timeouts` and
///   `config->https` stay the caller's (copied); `callbacks->userdata` and
///   `transport->userdata` must stay valid until `dmd_server_free` returns. On success
///   `*out` is a new server the caller frees with `dmd_server_free`; on failure `*out` is
///   not written.
/// - NULL: `config`, `callbacks`, `out`, `config->server_id`, a required HTTPS string or
///   `transport->send` NULL gives `DMD_ERR_NULL_ARGUMENT`; NULL host callback functions
///   are allowed (see `dmd_host_callbacks`); `config->timeouts` and `config->https` NULL
///   keep the defaults.
/// - Threads: any thread, concurrently.
/// - Signals: the HTTPS stack may write to a socket whose peer has closed it; the process
///   must ignore SIGPIPE (`signal(SIGPIPE, SIG_IGN)` at start, as Rust programs do),
///   otherwise such a write kills it. The library does not change signal dispositions.
///
/// # Safety
///
/// `config` and `callbacks` are NULL or valid, with valid strings and arrays; `out` is
/// NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn dmd_server_new(
    config: *const dmd_server_config,
    callbacks: *const dmd_host_callbacks,
    out: *mut *mut dmd_server,
) -> dmd_result {
    crate::ffi_guard!({
        // SAFETY: forwarded from the caller.
        let config = unsafe { arg_ref(config, "config") }?;
        // SAFETY: forwarded from the caller.
        let callbacks = *unsafe { arg_ref(callbacks, "callbacks") }?;
        check_out(out, "out")?;
        not_on_library_thread("dmd_server_new")?;
        // SAFETY: forwarded from the caller.
        let options = unsafe { read_config(config) }?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("dmdelegate")
            .enable_all()
            .build()
            .map_err(|e| Failure::new(dmd_result::DMD_ERR_RUNTIME, format!("runtime: {e}")))?;
        let server = runtime.block_on(Server::start(options, Arc::new(CHost { callbacks })))?;
        let handle = dmd_server {
            server: Some(server),
            runtime: Some(runtime),
        };
        // SAFETY: `out` is non-NULL and writable.
        unsafe { out.write(Box::into_raw(Box::new(handle))) };
        Ok(())
    })
}

/// Sets the peers and starts the HTTPS endpoint and transport, for a server created with
/// no peers (so that two servers on port 0 can learn each other's port first).
///
/// Returns `DMD_OK`; `DMD_ERR_INVALID_STATE` when the peers are already set or the
/// server uses its own transport; `DMD_ERR_INVALID_ARGUMENT` for a bad ServerID, a
/// ServerID given twice, or an endpoint that is not `https://`.
///
/// - Ownership: `peers` stays the caller's (copied).
/// - NULL: `server` NULL, or `peers` NULL with `peer_count` > 0, gives
///   `DMD_ERR_NULL_ARGUMENT`.
/// - Threads: any thread except the library's own.
///
/// # Safety
///
/// `server` is NULL or live; `peers` NULL or `peer_count` valid peers.
#[no_mangle]
pub unsafe extern "C" fn dmd_server_set_peers(
    server: *mut dmd_server,
    peers: *const dmd_peer,
    peer_count: usize,
) -> dmd_result {
    crate::ffi_guard!({
        // SAFETY: forwarded from the caller.
        let s = unsafe { arg_ref(server.cast_const(), "server") }?;
        // SAFETY: forwarded from the caller.
        let peers = unsafe { read_peers(peers, peer_count) }?;
        let (server, _) = s.parts()?;
        Ok(server.set_peers(peers)?)
    })
}

/// Writes the TCP port the HTTPS endpoint listens on to `*port` (useful with port 0).
///
/// Returns `DMD_OK`, or `DMD_ERR_INVALID_STATE` for a server with its own transport.
///
/// - NULL: `server` or `port` NULL gives `DMD_ERR_NULL_ARGUMENT`.
/// - Threads: any thread.
///
/// # Safety
///
/// `server` is NULL or live; `port` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn dmd_server_local_port(
    server: *const dmd_server,
    port: *mut u16,
) -> dmd_result {
    crate::ffi_guard!({
        // SAFETY: forwarded from the caller.
        let s = unsafe { arg_ref(server, "server") }?;
        check_out(port, "port")?;
        let addr = s
            .server
            .as_ref()
            .and_then(Server::local_addr)
            .ok_or_else(|| {
                Failure::new(
                    dmd_result::DMD_ERR_INVALID_STATE,
                    "the server has no HTTPS endpoint (it uses the host's transport)",
                )
            })?;
        // SAFETY: non-NULL and writable.
        unsafe { port.write(addr.port()) };
        Ok(())
    })
}

/// The largest session id, NUL excluded.
pub const DMD_SESSION_ID_MAX: usize = 64;

fn fresh_session_id() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    format!("c-{:016x}", h.finish())
}

/// What `dmd_server_start_delegation` starts. Read during the call only.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct dmd_delegation_request {
    /// The peer's ServerID. Required.
    pub peer: *const c_char,
    /// The method, 1 to 4: this server is DMS-1 for 1 and 3, DMS-2 for 2 and 4.
    pub method: u8,
    /// `DMD_DELEGATION_TYPE_FULL` or `DMD_DELEGATION_TYPE_PARTIAL`.
    pub delegation_type: dmd_delegation_type_arg,
    /// The device's id. Required.
    pub device_id: *const c_char,
    /// The device's manufacturer. Required.
    pub manufacturer: *const c_char,
    /// The device's model. Required.
    pub model: *const c_char,
    /// The subtrees and the rights DMS-2 gets on each, `subtree_count` of them.
    pub subtrees: *const dmd_subtree,
    /// How many subtrees.
    pub subtree_count: usize,
    /// 0, or the end of a temporary (Partial) delegation in milliseconds since the Unix
    /// epoch: at that time DMS-1 reverts it.
    pub expires_ms: i64,
    /// NULL for a fresh session id, or the id to use (1 to `DMD_SESSION_ID_MAX` bytes of
    /// letters, digits, `-`, `.` and `_`).
    pub session_id: *const c_char,
}

/// Starts a delegation: sends DELEGATION_NOTIF and writes the session id into
/// `session_id_buf` (needed-length convention; `DMD_SESSION_ID_MAX` + 1 bytes always
/// fit). The rest runs in the background; follow it with `dmd_server_wait` or the
/// `on_event` callback.
///
/// Returns `DMD_OK`; `DMD_ERR_BUFFER_TOO_SMALL` (checked first: nothing was started);
/// `DMD_ERR_INVALID_ARGUMENT` for a method outside 1-4, an unknown type, bad rights,
/// session id or expiry; `DMD_ERR_DECODE` for a subtree list the protocol refuses (none,
/// or a bad URI); `DMD_ERR_FAILED` (reason 105) when the device is already in a
/// delegation here; the engine's error (`DMD_ERR_TRANSPORT`, ...) when the NOTIF cannot
/// be sent.
///
/// - Ownership: every argument stays the caller's.
/// - NULL: `server`, `request`, a required string, `needed`, or `subtrees` with
///   `subtree_count` > 0 NULL gives `DMD_ERR_NULL_ARGUMENT`.
/// - Threads: any thread except the library's own; blocks until the NOTIF is sent.
///
/// # Safety
///
/// Every pointer is NULL or valid as described.
#[no_mangle]
pub unsafe extern "C" fn dmd_server_start_delegation(
    server: *mut dmd_server,
    request: *const dmd_delegation_request,
    session_id_buf: *mut c_char,
    len: usize,
    needed: *mut usize,
) -> dmd_result {
    crate::ffi_guard!({
        // SAFETY: forwarded from the caller.
        let s = unsafe { arg_ref(server.cast_const(), "server") }?;
        // SAFETY: forwarded from the caller.
        let r = unsafe { arg_ref(request, "request") }?;
        check_out(needed, "needed")?;
        // SAFETY (this block): the caller guarantees the strings and the array.
        let (peer, device_id, manufacturer, model, subtrees, chosen) = unsafe {
            (
                arg_str(r.peer, "request->peer")?,
                arg_str(r.device_id, "request->device_id")?,
                arg_str(r.manufacturer, "request->manufacturer")?,
                arg_str(r.model, "request->model")?,
                read_subtrees(r.subtrees, r.subtree_count)?,
                opt_str(r.session_id, "request->session_id")?,
            )
        };
        let method = Method::from_number(r.method).ok_or_else(|| {
            Failure::invalid(
                "request->method",
                format!("{} is not a method (1 to 4)", r.method),
            )
        })?;
        let dtype = delegation_type(r.delegation_type)?;
        let expires = match r.expires_ms {
            0 => None,
            ms if ms < 0 => {
                return Err(Failure::invalid(
                    "request->expires_ms",
                    "must be 0 or a time after 1970",
                ))
            }
            ms => Some(Timestamp(ms)),
        };
        let id = chosen.map_or_else(fresh_session_id, str::to_string);
        if id.len() > DMD_SESSION_ID_MAX {
            return Err(Failure::invalid(
                "request->session_id",
                format!("longer than {DMD_SESSION_ID_MAX} bytes"),
            ));
        }
        // Checks the buffer before anything starts: with too small a buffer, nothing runs.
        if len <= id.len() {
            // SAFETY: forwarded from the caller.
            return unsafe { write_string(&id, session_id_buf, len, needed) };
        }
        let (server, runtime) = s.parts()?;
        let request = StartDelegation {
            peer: peer.to_string(),
            method,
            delegation_type: dtype,
            info: DelegationInfo {
                device: DeviceInfo {
                    device_id: device_id.to_string(),
                    manufacturer: manufacturer.to_string(),
                    model: model.to_string(),
                },
                subtrees,
            },
            expires,
            session_id: Some(id),
        };
        let id = runtime.block_on(server.start_delegation(request))?;
        // SAFETY: forwarded from the caller.
        unsafe { write_string(&id, session_id_buf, len, needed) }
    })
}

/// Hands the server one message that arrived over the host's own transport (or any
/// other way), sent by the peer the transport authenticated. The engine processes it,
/// answering over the transport (`send`) as the protocol requires, including a
/// DELEGATION_FAILURE for a message that does not fit its session.
///
/// `peer`: the ServerID the transport authenticated, or NULL when it authenticates
/// nobody (then the header's Sender is trusted: use only on a trusted link).
/// `duplicate`: when not NULL, set to 1 when the message had been received before (same
/// session and sequence number; nothing was done again), else 0.
///
/// Returns `DMD_OK`; `DMD_ERR_DECODE` for a document that is not a valid message;
/// `DMD_ERR_AUTHENTICATION` when the Sender is not `peer`; `DMD_ERR_WRONG_RECIPIENT`;
/// `DMD_ERR_UNKNOWN_SESSION`; `DMD_ERR_INVALID_STATE` for a message out of order. A
/// transport can map these to its own answer (HTTP: 400, 403, 421, 404, 409).
///
/// - Ownership: `document` and `peer` stay the caller's.
/// - NULL: `server` or `document` NULL gives `DMD_ERR_NULL_ARGUMENT` (even with `len` 0).
/// - Threads: any thread except the library's own; blocks while the message is processed
///   (host callbacks may run meanwhile on the library's threads).
///
/// # Safety
///
/// `server` is NULL or live; `document` NULL or `len` readable bytes; `peer` NULL or a
/// string; `duplicate` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn dmd_server_receive(
    server: *mut dmd_server,
    peer: *const c_char,
    document: *const u8,
    len: usize,
    duplicate: *mut i32,
) -> dmd_result {
    crate::ffi_guard!({
        // SAFETY: forwarded from the caller.
        let s = unsafe { arg_ref(server.cast_const(), "server") }?;
        // SAFETY: forwarded from the caller.
        let peer = unsafe { opt_str(peer, "peer") }?;
        // SAFETY: forwarded from the caller.
        let bytes = unsafe { arg_bytes(document, len, "document") }?;
        let (server, runtime) = s.parts()?;
        let receipt = runtime.block_on(server.receive(bytes, peer))?;
        if !duplicate.is_null() {
            // SAFETY: non-NULL and writable by the caller's guarantee.
            unsafe { duplicate.write(i32::from(receipt == Receipt::Duplicate)) };
        }
        Ok(())
    })
}

/// The state of one delegation session at one server.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct dmd_session_state {
    /// The state.
    pub state: dmd_state,
    /// 1 when the state is terminal (COMPLETED, REJECTED, ROLLED_BACK, ROLLBACK_FAILED,
    /// EXPIRED), else 0.
    pub terminal: i32,
    /// This server's role in the session.
    pub role: dmd_role,
    /// The method, 1 to 4.
    pub method: u8,
    /// The failure's reason code (100-999), 0 when none.
    pub reason_code: u16,
    /// The failure's text, NUL-terminated, cut at a UTF-8 boundary if longer; empty when
    /// none.
    pub reason: [c_char; 256],
    /// End of a temporary delegation (milliseconds since the Unix epoch), 0 when none.
    pub expires_ms: i64,
    /// When the current wait ends (milliseconds since the Unix epoch), 0 when none.
    pub deadline_ms: i64,
    /// DMS-1: journaled device operations not yet undone; after `ROLLBACK_FAILED`, what
    /// `dmd_server_retry_rollback` would retry.
    pub pending_operations: usize,
}

fn state_of(info: &SessionInfo) -> dmd_session_state {
    let mut out = dmd_session_state {
        state: info.state.into(),
        terminal: i32::from(info.state.is_terminal()),
        role: info.role.into(),
        method: info.method.number(),
        reason_code: info.reason.as_ref().map_or(0, |r| r.code),
        reason: [0; 256],
        expires_ms: info.expires.map_or(0, |t| t.0),
        deadline_ms: info.deadline.map_or(0, |t| t.0),
        pending_operations: info.pending_operations,
    };
    let text = info.reason.as_ref().map_or("", |r| r.text.as_str());
    // SAFETY: `out.reason` has 256 writable bytes.
    unsafe { copy_truncated(text, out.reason.as_mut_ptr(), out.reason.len()) };
    out
}

/// The server, its runtime and a session id argument.
///
/// # Safety
///
/// `server` is NULL or live; `session_id` NULL or a string.
unsafe fn session_args<'a>(
    server: *mut dmd_server,
    session_id: *const c_char,
) -> Result<(&'a Server, &'a Runtime, &'a str), Failure> {
    // SAFETY: forwarded from the caller.
    let s: &'a dmd_server = unsafe { arg_ref(server.cast_const(), "server") }?;
    // SAFETY: forwarded from the caller.
    let id = unsafe { arg_str(session_id, "session_id") }?;
    let (server, runtime) = s.parts()?;
    Ok((server, runtime, id))
}

/// Writes a session's state to `out` unless it is NULL.
///
/// # Safety
///
/// `out` is NULL or writable.
unsafe fn write_state(out: *mut dmd_session_state, info: &SessionInfo) {
    if !out.is_null() {
        // SAFETY: non-NULL and writable by the caller's guarantee.
        unsafe { out.write(state_of(info)) };
    }
}

/// Waits up to `timeout_ms` milliseconds for session `session_id` to reach a terminal
/// state at this server, and writes its state then (terminal or not) to `*out`.
/// `timeout_ms` 0 only reads the current state. A session this server does not know yet
/// (its peer's message may be on the way) is waited for too.
///
/// Returns `DMD_OK` (check `out->terminal`), or `DMD_ERR_UNKNOWN_SESSION` when the server
/// still does not know the session at the end.
///
/// - NULL: `server`, `session_id` or `out` NULL gives `DMD_ERR_NULL_ARGUMENT`.
/// - Threads: any thread except the library's own; blocks. Several threads may wait at
///   once.
///
/// # Safety
///
/// `server` is NULL or live; `session_id` NULL or a string; `out` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn dmd_server_wait(
    server: *mut dmd_server,
    session_id: *const c_char,
    timeout_ms: u64,
    out: *mut dmd_session_state,
) -> dmd_result {
    crate::ffi_guard!({
        // SAFETY: forwarded from the caller.
        let (server, runtime, id) = unsafe { session_args(server, session_id) }?;
        check_out(out, "out")?;
        let info = runtime.block_on(server.wait(id, Duration::from_millis(timeout_ms)))?;
        // SAFETY: checked non-NULL, writable by the caller's guarantee.
        unsafe { write_state(out, &info) };
        Ok(())
    })
}

/// Cancels a running delegation: rolls back what this server changed and tells the peer
/// (DELEGATION_FAILURE, reason 150). Writes the session's state afterwards to `*out`
/// when `out` is not NULL.
///
/// Returns `DMD_OK`, `DMD_ERR_UNKNOWN_SESSION`, or `DMD_ERR_INVALID_STATE` when the
/// session has already ended.
///
/// - NULL: `server` or `session_id` NULL gives `DMD_ERR_NULL_ARGUMENT`; `out` may be NULL.
/// - Threads: any thread except the library's own; blocks until the rollback is done.
///
/// # Safety
///
/// `server` is NULL or live; `session_id` NULL or a string; `out` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn dmd_server_cancel(
    server: *mut dmd_server,
    session_id: *const c_char,
    out: *mut dmd_session_state,
) -> dmd_result {
    crate::ffi_guard!({
        // SAFETY: forwarded from the caller.
        let (server, runtime, id) = unsafe { session_args(server, session_id) }?;
        let info = runtime.block_on(server.cancel(id))?;
        // SAFETY: `out` is NULL or writable by the caller's guarantee.
        unsafe { write_state(out, &info) };
        Ok(())
    })
}

/// Runs the inverse operations of a session in `DMD_STATE_ROLLBACK_FAILED` again (for
/// example once the device is reachable again), and writes the state afterwards to
/// `*out` when `out` is not NULL: `DMD_STATE_ROLLED_BACK` when every change is undone.
///
/// Returns `DMD_OK` (check `out->state`), `DMD_ERR_UNKNOWN_SESSION`, or
/// `DMD_ERR_INVALID_STATE` when the session is not in `DMD_STATE_ROLLBACK_FAILED`.
///
/// - NULL: `server` or `session_id` NULL gives `DMD_ERR_NULL_ARGUMENT`; `out` may be NULL.
/// - Threads: any thread except the library's own; blocks (the `execute` callback runs).
///
/// # Safety
///
/// `server` is NULL or live; `session_id` NULL or a string; `out` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn dmd_server_retry_rollback(
    server: *mut dmd_server,
    session_id: *const c_char,
    out: *mut dmd_session_state,
) -> dmd_result {
    crate::ffi_guard!({
        // SAFETY: forwarded from the caller.
        let (server, runtime, id) = unsafe { session_args(server, session_id) }?;
        let info = runtime.block_on(server.retry_rollback(id))?;
        // SAFETY: `out` is NULL or writable by the caller's guarantee.
        unsafe { write_state(out, &info) };
        Ok(())
    })
}

/// Writes how many sessions (running or ended) the server keeps to `*count`.
///
/// - NULL: `server` or `count` NULL gives `DMD_ERR_NULL_ARGUMENT`.
/// - Threads: any thread except the library's own.
///
/// # Safety
///
/// `server` is NULL or live; `count` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn dmd_server_session_count(
    server: *mut dmd_server,
    count: *mut usize,
) -> dmd_result {
    crate::ffi_guard!({
        // SAFETY: forwarded from the caller.
        let s = unsafe { arg_ref(server.cast_const(), "server") }?;
        check_out(count, "count")?;
        let (server, runtime) = s.parts()?;
        let n = runtime.block_on(server.sessions())?.len();
        // SAFETY: non-NULL and writable.
        unsafe { count.write(n) };
        Ok(())
    })
}

/// Writes the id of the session at `index` (oldest first, as in
/// `dmd_server_session_count`) into `buf`, following the needed-length convention.
/// Sessions may start meanwhile: the list is read anew on each call.
///
/// Returns `DMD_OK`, `DMD_ERR_INVALID_ARGUMENT` when `index` is past the end, or
/// `DMD_ERR_BUFFER_TOO_SMALL`.
///
/// - NULL: `server` or `needed` NULL gives `DMD_ERR_NULL_ARGUMENT`.
/// - Threads: any thread except the library's own.
///
/// # Safety
///
/// `server` is NULL or live; `buf` NULL or `len` writable bytes; `needed` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn dmd_server_session_id(
    server: *mut dmd_server,
    index: usize,
    buf: *mut c_char,
    len: usize,
    needed: *mut usize,
) -> dmd_result {
    crate::ffi_guard!({
        // SAFETY: forwarded from the caller.
        let s = unsafe { arg_ref(server.cast_const(), "server") }?;
        check_out(needed, "needed")?;
        let (server, runtime) = s.parts()?;
        let list = runtime.block_on(server.sessions())?;
        let info = list.get(index).ok_or_else(|| {
            Failure::invalid(
                "index",
                format!("{index} is past the {} sessions", list.len()),
            )
        })?;
        // SAFETY: forwarded from the caller.
        unsafe { write_string(&info.session_id, buf, len, needed) }
    })
}

/// DMS-2, Methods 3/4: the device `device_id` has opened its first DM session with this
/// server after its bootstrap. Sends DELEGATION_CONFIRM for every session waiting for
/// that device and writes how many to `*confirmed` (when not NULL).
///
/// - NULL: `server` or `device_id` NULL gives `DMD_ERR_NULL_ARGUMENT`; `confirmed` may be
///   NULL.
/// - Threads: any thread except the library's own.
///
/// # Safety
///
/// `server` is NULL or live; `device_id` NULL or a string; `confirmed` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn dmd_server_client_connected(
    server: *mut dmd_server,
    device_id: *const c_char,
    confirmed: *mut usize,
) -> dmd_result {
    crate::ffi_guard!({
        // SAFETY: forwarded from the caller.
        let s = unsafe { arg_ref(server.cast_const(), "server") }?;
        // SAFETY: forwarded from the caller.
        let id = unsafe { arg_str(device_id, "device_id") }?;
        let (server, runtime) = s.parts()?;
        let n = runtime.block_on(server.client_connected(id))?.len();
        if !confirmed.is_null() {
            // SAFETY: non-NULL and writable by the caller's guarantee.
            unsafe { confirmed.write(n) };
        }
        Ok(())
    })
}

/// Writes the device hub's SyncML endpoint, `http://ip:port/dm` (for the `AppAddr` of
/// the accounts the host hands out), into `buf`, following the needed-length convention.
///
/// Returns `DMD_OK`, `DMD_ERR_INVALID_STATE` for a server without a device hub, or
/// `DMD_ERR_BUFFER_TOO_SMALL`.
///
/// - NULL: `server` or `needed` NULL gives `DMD_ERR_NULL_ARGUMENT`.
/// - Threads: any thread except the library's own.
///
/// # Safety
///
/// `server` is NULL or live; `buf` NULL or `len` writable bytes; `needed` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn dmd_server_device_hub_url(
    server: *const dmd_server,
    buf: *mut c_char,
    len: usize,
    needed: *mut usize,
) -> dmd_result {
    crate::ffi_guard!({
        // SAFETY: forwarded from the caller.
        let s = unsafe { arg_ref(server, "server") }?;
        let (server, _) = s.parts()?;
        let url = server.device_hub_url().ok_or_else(|| {
            Failure::new(
                dmd_result::DMD_ERR_INVALID_STATE,
                "the server has no device hub (dmd_server_config.device_hub)",
            )
        })?;
        // SAFETY: forwarded from the caller.
        unsafe { write_string(url, buf, len, needed) }
    })
}

/// Manages one more device through the device hub (a link with the same device id is
/// replaced).
///
/// Returns `DMD_OK`, `DMD_ERR_INVALID_STATE` for a server without a device hub, or
/// `DMD_ERR_INVALID_ARGUMENT` for an empty device id, a `notify_url` that is not
/// `http://` or an unknown scheme.
///
/// - Ownership: `link` stays the caller's (copied).
/// - NULL: `server`, `link` or a required string NULL gives `DMD_ERR_NULL_ARGUMENT`.
/// - Threads: any thread except the library's own.
///
/// # Safety
///
/// `server` is NULL or live; `link` NULL or a link whose strings are NULL or valid.
#[no_mangle]
pub unsafe extern "C" fn dmd_server_add_device(
    server: *mut dmd_server,
    link: *const dmd_device_link,
) -> dmd_result {
    crate::ffi_guard!({
        // SAFETY: forwarded from the caller.
        let s = unsafe { arg_ref(server.cast_const(), "server") }?;
        // SAFETY: forwarded from the caller.
        let link = unsafe { arg_ref(link, "link") }?;
        // SAFETY: forwarded from the caller.
        let link = unsafe { read_device_link(link, "link") }?;
        let (server, _) = s.parts()?;
        Ok(server.add_device(link)?)
    })
}

/// Stops the endpoint, the transport and the deadline watcher, and frees the server.
/// Blocks until the runtime's threads have stopped (at most about ten seconds; a callback
/// still running after that is abandoned, so callbacks should return promptly). After it
/// returns no callback runs. Sessions in a durable store stay there for the next server.
///
/// - Ownership: takes `server`; it must not be used afterwards.
/// - NULL: `server` NULL does nothing.
/// - Threads: any thread except the library's own, once no other thread uses the server.
///
/// # Safety
///
/// `server` is NULL or a server from `dmd_server_new` not yet freed.
#[no_mangle]
pub unsafe extern "C" fn dmd_server_free(server: *mut dmd_server) {
    crate::ffi_guard!((); {
        if !server.is_null() {
            // SAFETY: the caller gives back a pointer from `Box::into_raw`, once.
            drop(unsafe { Box::from_raw(server) });
        }
    })
}
