//! `dmd_server`: one DM Server's delegation engine with C host callbacks, its HTTPS
//! mutual-TLS endpoint and transport, and a deadline watcher, on a runtime the handle owns.

use std::ffi::c_char;
use std::hash::{BuildHasher, Hasher};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use dmdelegate::{
    AclCommand, DelegatedSubtree, DelegationInfo, DelegationRequest, DelegationServer, DeviceInfo,
    Message, Method, ServerConfig, SessionInfo, Transport, TransportError,
};
use dmdelegate_net::https::{serve, Endpoint, HttpsOptions, HttpsSender, HttpsTransport, Peer};
use dmdelegate_net::Identity;
use tokio::runtime::Runtime;
use tokio::task::JoinHandle;

use crate::guard::{arg_ref, arg_str, check_out, copy_truncated, opt_str, write_string, Failure};
use crate::host::{dmd_host_callbacks, dmd_role, dmd_subtree, CHost};
use crate::local::{delegation_type, dmd_delegation_type_arg, dmd_state};
use crate::result::dmd_result;

/// How long `dmd_server_free` waits for the runtime's tasks (and running callbacks).
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(10);
/// How often the deadline watcher looks for sessions past their deadline.
const WATCH_PERIOD: Duration = Duration::from_millis(500);

/// A peer DM Server this server exchanges delegation messages with.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct dmd_peer {
    /// The peer's ServerID; its TLS certificate must carry it as a DNS name.
    pub server_id: *const c_char,
    /// Its delegation endpoint, `https://host:port/dm-delegation`.
    pub endpoint: *const c_char,
    /// NULL, or `ip:port` to connect to instead of resolving the endpoint's host (the
    /// certificate is still checked against the ServerID), for example `127.0.0.1:4431`.
    pub address: *const c_char,
}

/// A server's configuration, read during `dmd_server_new` only (every string is copied).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct dmd_server_config {
    /// This server's ServerID (as in its DMAcc and in ACLs). Required.
    pub server_id: *const c_char,
    /// `ip:port` the HTTPS endpoint listens on, for example `127.0.0.1:0` (port 0: any
    /// free port, see `dmd_server_local_port`). Required.
    pub listen_address: *const c_char,
    /// This server's certificate chain (PEM); it serves as TLS server and client
    /// certificate. Required.
    pub cert_pem: *const c_char,
    /// The certificate's private key (PEM). Required.
    pub key_pem: *const c_char,
    /// The CA certificates (PEM) peers' certificates must chain to. Required.
    pub trust_pem: *const c_char,
    /// The peers, `peer_count` of them; NULL with `peer_count` 0 to set them later with
    /// `dmd_server_set_peers` (once both servers know their ports).
    pub peers: *const dmd_peer,
    /// How many peers.
    pub peer_count: usize,
}

/// The transport, whose peers can be set after the server exists.
#[derive(Default)]
struct LateTransport(RwLock<Option<HttpsSender>>);

impl Transport for LateTransport {
    fn send<'a, 'b, 't>(
        &'a self,
        message: &'b Message,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), TransportError>> + Send + 't>>
    where
        'a: 't,
        'b: 't,
        Self: 't,
    {
        let sender = self.0.read().unwrap_or_else(|p| p.into_inner()).clone();
        Box::pin(async move {
            match sender {
                Some(s) => s.send(message).await,
                None => Err(TransportError {
                    message: "no peers configured (dmd_server_set_peers)".into(),
                }),
            }
        })
    }
}

struct Network {
    listener: Option<tokio::net::TcpListener>,
    endpoint: Option<Endpoint>,
    identity: Identity,
    trust_pem: String,
}

/// One DM Server: the delegation engine (DMS-1 and DMS-2 at once, any number of
/// sessions) with the host's C callbacks, serving the delegation endpoint over HTTPS with
/// mutual TLS. Opaque: `dmd_server_new`, `dmd_server_free`.
///
/// It owns a two-thread runtime on which the callbacks run. Its functions may be called
/// from any thread except those (from a callback they return `DMD_ERR_INVALID_STATE`).
pub struct dmd_server {
    server: Option<DelegationServer>,
    transport: Arc<LateTransport>,
    network: Mutex<Network>,
    local_addr: SocketAddr,
    watcher: Option<JoinHandle<()>>,
    runtime: Option<Runtime>,
}

impl Drop for dmd_server {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            {
                let _inside = runtime.enter();
                if let Some(w) = self.watcher.take() {
                    w.abort();
                }
                let mut net = self.network.lock().unwrap_or_else(|p| p.into_inner());
                if let Some(e) = net.endpoint.take() {
                    e.shutdown();
                }
                drop(net.listener.take());
                drop(net);
                *self.transport.0.write().unwrap_or_else(|p| p.into_inner()) = None;
                drop(self.server.take());
            }
            runtime.shutdown_timeout(SHUTDOWN_TIMEOUT);
        }
    }
}

fn transport_err(what: &str, e: impl std::fmt::Display) -> Failure {
    Failure::new(dmd_result::DMD_ERR_TRANSPORT, format!("{what}: {e}"))
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
            // SAFETY: the caller guarantees the strings.
            let server_id = unsafe { arg_str(p.server_id, "peers[].server_id") }?;
            // SAFETY: as above.
            let endpoint = unsafe { arg_str(p.endpoint, "peers[].endpoint") }?;
            // SAFETY: as above.
            let address = unsafe { opt_str(p.address, "peers[].address") }?
                .map(|a| {
                    a.parse::<SocketAddr>()
                        .map_err(|e| Failure::invalid("peers[].address", e))
                })
                .transpose()?;
            Ok(Peer {
                server_id: server_id.to_string(),
                endpoint: endpoint.to_string(),
                identity: None,
                address,
            })
        })
        .collect()
}

impl dmd_server {
    fn parts(&self) -> Result<(&DelegationServer, &Runtime), Failure> {
        if tokio::runtime::Handle::try_current().is_ok() {
            return Err(Failure::new(
                dmd_result::DMD_ERR_INVALID_STATE,
                "dmd_server functions cannot be called from a host callback",
            ));
        }
        match (&self.server, &self.runtime) {
            (Some(s), Some(r)) => Ok((s, r)),
            _ => Err(Failure::new(
                dmd_result::DMD_ERR_INVALID_STATE,
                "the server is stopped",
            )),
        }
    }

    fn set_peers(&self, peers: &[Peer]) -> Result<(), Failure> {
        let (server, runtime) = self.parts()?;
        let mut net = self.network.lock().unwrap_or_else(|p| p.into_inner());
        let Some(listener) = net.listener.take() else {
            return Err(Failure::new(
                dmd_result::DMD_ERR_INVALID_STATE,
                "the peers are already set",
            ));
        };
        let built = (|| {
            let t = HttpsTransport::new(
                &net.identity,
                &net.trust_pem,
                peers,
                HttpsOptions::default(),
            )
            .map_err(|e| transport_err("HTTPS transport", e))?;
            t.bind_server(server);
            let _inside = runtime.enter();
            let endpoint = serve(
                listener,
                &net.identity,
                &net.trust_pem,
                peers,
                server.clone(),
                HttpsOptions::default(),
            )
            .map_err(|e| transport_err("HTTPS endpoint", e))?;
            Ok::<_, Failure>((t, endpoint))
        })();
        let (t, endpoint) = built?;
        net.endpoint = Some(endpoint);
        *self.transport.0.write().unwrap_or_else(|p| p.into_inner()) = Some(HttpsSender(t));
        Ok(())
    }
}

/// Creates a server: copies `config` and `callbacks`, starts the runtime, binds the
/// listen address, and, when `config->peer_count` > 0, starts the HTTPS endpoint and
/// transport (otherwise `dmd_server_set_peers` does); stores the new server in `*out`.
///
/// Returns `DMD_OK`; `DMD_ERR_INVALID_ARGUMENT` for a bad ServerID, address or string;
/// `DMD_ERR_RUNTIME` when the runtime cannot start; `DMD_ERR_TRANSPORT` when the address
/// cannot be bound or the PEM data is not usable.
///
/// - Ownership: `config` and `callbacks` stay the caller's (copied); `callbacks->userdata`
///   must stay valid until `dmd_server_free` returns. On success `*out` is a new server
///   the caller frees with `dmd_server_free`; on failure `*out` is not written.
/// - NULL: `config`, `callbacks`, `out`, or a required string NULL gives
///   `DMD_ERR_NULL_ARGUMENT`; NULL callback functions are allowed (see
///   `dmd_host_callbacks`).
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
        // SAFETY (this block): the caller guarantees the strings and arrays.
        let (server_id, listen, cert, key, trust, peers) = unsafe {
            (
                arg_str(config.server_id, "config->server_id")?,
                arg_str(config.listen_address, "config->listen_address")?,
                arg_str(config.cert_pem, "config->cert_pem")?,
                arg_str(config.key_pem, "config->key_pem")?,
                arg_str(config.trust_pem, "config->trust_pem")?,
                read_peers(config.peers, config.peer_count)?,
            )
        };
        let listen: SocketAddr = listen
            .parse()
            .map_err(|e| Failure::invalid("config->listen_address", e))?;
        let transport = Arc::new(LateTransport::default());
        let server = DelegationServer::new(
            ServerConfig::new(server_id),
            Arc::new(CHost { callbacks }),
            transport.clone(),
        )?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("dmdelegate")
            .enable_all()
            .build()
            .map_err(|e| Failure::new(dmd_result::DMD_ERR_RUNTIME, format!("runtime: {e}")))?;
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind(listen))
            .map_err(|e| transport_err(&format!("binding {listen}"), e))?;
        let local_addr = listener
            .local_addr()
            .map_err(|e| transport_err("listener", e))?;
        let watcher = {
            let _inside = runtime.enter();
            server.spawn_deadline_watcher(WATCH_PERIOD)
        };
        let handle = dmd_server {
            server: Some(server),
            transport,
            network: Mutex::new(Network {
                listener: Some(listener),
                endpoint: None,
                identity: Identity {
                    cert_chain_pem: cert.to_string(),
                    key_pem: key.to_string(),
                },
                trust_pem: trust.to_string(),
            }),
            local_addr,
            watcher: Some(watcher),
            runtime: Some(runtime),
        };
        if !peers.is_empty() {
            handle.set_peers(&peers)?;
        }
        // SAFETY: `out` is non-NULL and writable.
        unsafe { out.write(Box::into_raw(Box::new(handle))) };
        Ok(())
    })
}

/// Sets the peers and starts the HTTPS endpoint and transport, for a server created with
/// no peers (so that two servers on port 0 can learn each other's port first).
///
/// Returns `DMD_OK`; `DMD_ERR_INVALID_STATE` when the peers are already set;
/// `DMD_ERR_TRANSPORT` when the PEM data is not usable or an endpoint is not `https://`.
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
        s.set_peers(&peers)
    })
}

/// Writes the TCP port the server listens on to `*port` (useful with port 0).
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
        // SAFETY: non-NULL and writable.
        unsafe { port.write(s.local_addr.port()) };
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

/// Starts a delegation of device `device_id` with `peer`: sends DELEGATION_NOTIF and
/// writes the new session id into `session_id_buf` (needed-length convention; at most
/// `DMD_SESSION_ID_MAX` + 1 bytes are needed, so a buffer that large always fits). This
/// server is DMS-1 for methods 1 and 3, DMS-2 for 2 and 4. The rest runs in the
/// background; follow it with `dmd_server_wait` or the `on_event` callback.
///
/// `subtrees`: `subtree_count` entries, each a URI and rights such as `Add+Get+Replace`.
///
/// Returns `DMD_OK`; `DMD_ERR_BUFFER_TOO_SMALL` (checked first: nothing was started);
/// `DMD_ERR_INVALID_ARGUMENT` for a method outside 1-4, an unknown type, bad rights or
/// subtree; the engine's error (`DMD_ERR_TRANSPORT`, ...) when the NOTIF cannot be sent.
///
/// - Ownership: every argument stays the caller's.
/// - NULL: `server`, `peer`, the device strings, `needed`, or `subtrees` with
///   `subtree_count` > 0 NULL gives `DMD_ERR_NULL_ARGUMENT`.
/// - Threads: any thread except the library's own; blocks until the NOTIF is sent.
///
/// # Safety
///
/// Every pointer is NULL or valid as described.
#[no_mangle]
pub unsafe extern "C" fn dmd_server_start_delegation(
    server: *mut dmd_server,
    peer: *const c_char,
    method: u8,
    r#type: dmd_delegation_type_arg,
    device_id: *const c_char,
    manufacturer: *const c_char,
    model: *const c_char,
    subtrees: *const dmd_subtree,
    subtree_count: usize,
    session_id_buf: *mut c_char,
    len: usize,
    needed: *mut usize,
) -> dmd_result {
    crate::ffi_guard!({
        // SAFETY: forwarded from the caller.
        let s = unsafe { arg_ref(server.cast_const(), "server") }?;
        // SAFETY (this block): the caller guarantees the strings.
        let (peer, device_id, manufacturer, model) = unsafe {
            (
                arg_str(peer, "peer")?,
                arg_str(device_id, "device_id")?,
                arg_str(manufacturer, "manufacturer")?,
                arg_str(model, "model")?,
            )
        };
        let method = Method::from_number(method).ok_or_else(|| {
            Failure::invalid("method", format!("{method} is not a method (1 to 4)"))
        })?;
        let dtype = delegation_type(r#type)?;
        let list = if subtree_count == 0 {
            &[][..]
        } else if subtrees.is_null() {
            return Err(Failure::null("subtrees"));
        } else {
            // SAFETY: the caller guarantees `subtree_count` entries.
            unsafe { std::slice::from_raw_parts(subtrees, subtree_count) }
        };
        let mut trees = Vec::new();
        for t in list {
            // SAFETY: the caller guarantees the strings.
            let uri = unsafe { arg_str(t.uri, "subtrees[].uri") }?;
            // SAFETY: as above.
            let rights = unsafe { arg_str(t.rights, "subtrees[].rights") }?;
            let mut parsed = rights
                .split('+')
                .map(|r| r.trim().parse::<AclCommand>())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| Failure::invalid("subtrees[].rights", e))?;
            parsed.sort();
            parsed.dedup();
            trees.push(DelegatedSubtree {
                uri: uri.to_string(),
                rights: parsed,
            });
        }
        let id = fresh_session_id();
        // Checks the buffer before anything starts: with too small a buffer, nothing runs.
        // SAFETY: forwarded from the caller.
        unsafe { write_string(&id, std::ptr::null_mut(), 0, needed) }.or_else(|f| {
            if len > id.len() {
                Ok(())
            } else {
                Err(f)
            }
        })?;
        let (engine, runtime) = s.parts()?;
        let request = DelegationRequest {
            session_id: Some(id),
            peer: peer.to_string(),
            method,
            delegation_type: dtype,
            info: DelegationInfo {
                device: DeviceInfo {
                    device_id: device_id.to_string(),
                    manufacturer: manufacturer.to_string(),
                    model: model.to_string(),
                },
                subtrees: trees,
            },
            expires: None,
        };
        let id = runtime.block_on(engine.start_delegation(request))?;
        // SAFETY: forwarded from the caller.
        unsafe { write_string(&id, session_id_buf, len, needed) }
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
}

fn state_of(info: &SessionInfo) -> dmd_session_state {
    let mut out = dmd_session_state {
        state: info.state.into(),
        terminal: i32::from(info.state.is_terminal()),
        role: info.role.into(),
        method: info.method.number(),
        reason_code: info.reason.as_ref().map_or(0, |r| r.code),
        reason: [0; 256],
    };
    let text = info.reason.as_ref().map_or("", |r| r.text.as_str());
    // SAFETY: `out.reason` has 256 writable bytes.
    unsafe { copy_truncated(text, out.reason.as_mut_ptr(), out.reason.len()) };
    out
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
        let s = unsafe { arg_ref(server.cast_const(), "server") }?;
        // SAFETY: forwarded from the caller.
        let id = unsafe { arg_str(session_id, "session_id") }?;
        check_out(out, "out")?;
        let (engine, runtime) = s.parts()?;
        let timeout = Duration::from_millis(timeout_ms);
        let info = runtime.block_on(async {
            let start = tokio::time::Instant::now();
            loop {
                let left = timeout.saturating_sub(start.elapsed());
                match engine.wait_until_terminal(id, left).await {
                    Ok(info) => return Ok(info),
                    Err(dmdelegate::Error::UnknownSession(_)) if !left.is_zero() => {
                        tokio::time::sleep(left.min(Duration::from_millis(20))).await
                    }
                    Err(dmdelegate::Error::Failed { .. }) => return engine.session(id).await,
                    Err(e) => return Err(e),
                }
            }
        })?;
        // SAFETY: non-NULL and writable.
        unsafe { out.write(state_of(&info)) };
        Ok(())
    })
}

/// Cancels a running delegation: rolls back what this server changed and tells the peer
/// (DELEGATION_FAILURE, reason 150).
///
/// Returns `DMD_OK`, `DMD_ERR_UNKNOWN_SESSION`, or `DMD_ERR_INVALID_STATE` when the
/// session has already ended.
///
/// - NULL: `server` or `session_id` NULL gives `DMD_ERR_NULL_ARGUMENT`.
/// - Threads: any thread except the library's own; blocks until the rollback is done.
///
/// # Safety
///
/// `server` is NULL or live; `session_id` NULL or a string.
#[no_mangle]
pub unsafe extern "C" fn dmd_server_cancel(
    server: *mut dmd_server,
    session_id: *const c_char,
) -> dmd_result {
    crate::ffi_guard!({
        // SAFETY: forwarded from the caller.
        let s = unsafe { arg_ref(server.cast_const(), "server") }?;
        // SAFETY: forwarded from the caller.
        let id = unsafe { arg_str(session_id, "session_id") }?;
        let (engine, runtime) = s.parts()?;
        runtime.block_on(engine.cancel(id))?;
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
        let (engine, runtime) = s.parts()?;
        let n = runtime.block_on(engine.sessions())?.len();
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
        let (engine, runtime) = s.parts()?;
        let list = runtime.block_on(engine.sessions())?;
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
        let (engine, runtime) = s.parts()?;
        let n = runtime
            .block_on(engine.client_session_established(id))?
            .len();
        if !confirmed.is_null() {
            // SAFETY: non-NULL and writable by the caller's guarantee.
            unsafe { confirmed.write(n) };
        }
        Ok(())
    })
}

/// Stops the endpoint, the transport and the deadline watcher, and frees the server.
/// Blocks until the runtime's threads have stopped (at most about ten seconds; a callback
/// still running after that is abandoned, so callbacks should return promptly). After it
/// returns no callback runs.
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
