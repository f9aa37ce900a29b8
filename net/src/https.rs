//! The HTTPS binding: protocol messages are `POST`ed to the peer's delegation endpoint,
//! one document per request or, under load, several in a batch, over TLS 1.3 with client
//! certificates on both sides.
//!
//! Receiving: [`serve`] accepts TLS connections, maps the client certificate to a
//! configured peer, checks what it can without the session, answers 202, and hands the
//! message to the engine (one task per session, in arrival order) with that peer as the
//! authenticated sender. Sending: [`HttpsTransport`] queues messages per session and
//! delivers each session's in order from a background task, retrying transient failures
//! with backoff; sessions proceed in parallel over pooled connections. A message that
//! cannot be delivered fails its session.
//!
//! Batching: when every request a peer may have in flight is in flight, the messages that
//! queue up meanwhile (of any sessions) leave together in one request, a
//! [`dmdelegate::batch`] document, answered entry by entry. A lone message never waits
//! and goes as a document of its own; a peer that refuses batches (415) gets one message
//! per request from then on.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use async_trait::async_trait;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Extension, Router};
use dmdelegate::batch::{self, BatchWriter, EntryStatus, BATCH_MEDIA_TYPE};
use dmdelegate::message::{Header, MEDIA_TYPE};
use dmdelegate::{
    Body, DelegationServer, Error, Message, Reason, ReasonCode, Transport, TransportError,
    WeakDelegationServer, XmlLimits,
};
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot, watch, Semaphore};
use tokio_rustls::TlsAcceptor;

use crate::tls::{certificate_names, client_config, server_config, Identity, TlsError};

/// The path of the delegation endpoint.
pub const DELEGATION_PATH: &str = "/dm-delegation";

/// A peer DM Server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Peer {
    /// The peer's ServerID.
    pub server_id: String,
    /// Its delegation endpoint, `https://host:port/dm-delegation`.
    pub endpoint: String,
    /// The DNS name its TLS client certificate must carry (identifying its incoming
    /// connections); the ServerID when absent. Outgoing connections check the server
    /// certificate against the endpoint's host name.
    #[serde(default)]
    pub identity: Option<String>,
    /// Connect here instead of resolving the endpoint's host (the certificate is still
    /// checked against the host name).
    #[serde(default)]
    pub address: Option<SocketAddr>,
}

impl Peer {
    /// The name the peer's certificate must carry.
    pub fn identity(&self) -> &str {
        self.identity.as_deref().unwrap_or(&self.server_id)
    }
}

/// Limits and timeouts of the binding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpsOptions {
    /// Largest accepted request body.
    pub max_body_bytes: usize,
    /// TCP + TLS connect timeout.
    pub connect_timeout: Duration,
    /// Whole-request timeout.
    pub request_timeout: Duration,
    /// Delivery attempts per message (1 = no retry).
    pub attempts: u32,
    /// First retry delay; doubles each attempt.
    pub backoff: Duration,
    /// TLS handshake timeout on the server side.
    pub handshake_timeout: Duration,
    /// Most requests in flight to one peer at a time while batching (so as many
    /// connections). Messages sent while all are in flight wait and leave together in
    /// the next request, so a few are enough: a request's answer does not wait for the
    /// engine.
    pub max_requests_per_peer: usize,
    /// Most requests in flight to one peer when each message needs a request of its own:
    /// batching is off here (`max_batch_messages` 1) or the peer refuses batches (415).
    pub max_unbatched_requests_per_peer: usize,
    /// Most messages one outgoing request may carry: messages waiting for a request to a
    /// peer leave together in a batch of up to this many (and never more than
    /// [`batch::MAX_BATCH_ENTRIES`], what a receiver takes). Incoming batches are taken
    /// up to [`batch::MAX_BATCH_ENTRIES`] entries whatever this is, except that 1 turns
    /// batching off both ways: one message per request out, incoming batches answered
    /// with 415.
    pub max_batch_messages: usize,
    /// Largest batch document a request may carry, in bytes (a message larger than this
    /// goes alone). Keep it within the peers' body cap: a peer that answers a batch with
    /// 413 gets its messages again one by one, and batches half that size from then on.
    pub max_batch_bytes: usize,
}

impl Default for HttpsOptions {
    fn default() -> Self {
        Self {
            max_body_bytes: XmlLimits::default().max_bytes,
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(30),
            attempts: 4,
            backoff: Duration::from_millis(200),
            handshake_timeout: Duration::from_secs(10),
            max_requests_per_peer: 2,
            max_unbatched_requests_per_peer: 32,
            max_batch_messages: 64,
            max_batch_bytes: 128 * 1024,
        }
    }
}

/// What is wrong with an [`HttpsOptions`]: the field (its Rust name) and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field} {reason}")]
pub struct InvalidHttpsOption {
    /// The field, e.g. `max_requests_per_peer`.
    pub field: &'static str,
    /// Why, e.g. "must be at least 1".
    pub reason: String,
}

impl HttpsOptions {
    /// Checks the options before a server uses them: every count at least 1, every
    /// duration above zero, body and batch caps large enough for a message. Every binding
    /// passes its settings through this, so a bad value is refused the same way in each
    /// language.
    pub fn validate(&self) -> Result<(), InvalidHttpsOption> {
        let at_least = |field: &'static str, value: usize, least: usize| {
            if value < least {
                Err(InvalidHttpsOption {
                    field,
                    reason: format!("must be at least {least} (is {value})"),
                })
            } else {
                Ok(())
            }
        };
        let positive = |field: &'static str, value: Duration| {
            if value.is_zero() {
                Err(InvalidHttpsOption {
                    field,
                    reason: "must be above zero".into(),
                })
            } else {
                Ok(())
            }
        };
        at_least("max_body_bytes", self.max_body_bytes, MIN_BODY_BYTES)?;
        positive("connect_timeout", self.connect_timeout)?;
        positive("request_timeout", self.request_timeout)?;
        at_least("attempts", self.attempts as usize, 1)?;
        positive("backoff", self.backoff)?;
        positive("handshake_timeout", self.handshake_timeout)?;
        at_least("max_requests_per_peer", self.max_requests_per_peer, 1)?;
        at_least(
            "max_unbatched_requests_per_peer",
            self.max_unbatched_requests_per_peer,
            1,
        )?;
        at_least("max_batch_messages", self.max_batch_messages, 1)?;
        at_least("max_batch_bytes", self.max_batch_bytes, MIN_BODY_BYTES)?;
        Ok(())
    }
}

/// The smallest body cap [`HttpsOptions::validate`] accepts: room for the smallest
/// messages (a FAILURE with a short text is about 500 bytes).
pub const MIN_BODY_BYTES: usize = 1024;

/// The ServerID the connection's client certificate proved, if any configured peer matches.
/// Shared: the connection's router hands a copy to every request.
#[derive(Debug, Clone)]
struct AuthenticatedPeer(Option<Arc<str>>);

/// What the request's Content-Type says the body is, read in place (the `HeaderMap`
/// extractor would copy every header of every request).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DelegationMediaType {
    /// One message.
    Message,
    /// A batch of messages.
    Batch,
    /// Neither.
    Other,
}

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for DelegationMediaType {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _: &S,
    ) -> Result<Self, Self::Rejection> {
        let media = parts
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        Ok(if media.starts_with(MEDIA_TYPE) {
            DelegationMediaType::Message
        } else if media.starts_with(BATCH_MEDIA_TYPE) {
            DelegationMediaType::Batch
        } else {
            DelegationMediaType::Other
        })
    }
}

/// Ordered lanes of work, one per key (a session), that exist only while they hold items.
/// `push` says whether the caller must start the lane's draining task; that task `pop`s
/// until `None`, which removes the empty lane under the same lock — so an item is either
/// taken by the running task or starts a new one, never stranded.
struct Lanes<K, T>(Mutex<HashMap<K, VecDeque<T>>>);

impl<K: std::hash::Hash + Eq + Clone, T> Lanes<K, T> {
    fn new() -> Self {
        Lanes(Mutex::new(HashMap::new()))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<K, VecDeque<T>>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues `item`; true when the lane is new and needs a draining task.
    fn push(&self, key: &K, item: T) -> bool {
        let mut lanes = self.lock();
        match lanes.get_mut(key) {
            Some(pending) => {
                pending.push_back(item);
                false
            }
            None => {
                lanes.insert(key.clone(), VecDeque::from([item]));
                true
            }
        }
    }

    /// The lane's next item, or `None` after removing the emptied lane.
    fn pop(&self, key: &K) -> Option<T> {
        let mut lanes = self.lock();
        let next = lanes.get_mut(key).and_then(VecDeque::pop_front);
        if next.is_none() {
            lanes.remove(key);
        }
        next
    }
}

#[derive(Clone)]
struct App {
    server: DelegationServer,
    limits: XmlLimits,
    /// Messages accepted and waiting for the engine, per session, with the peer each came
    /// from, in arrival order.
    inbound: Arc<Lanes<String, (Message, Arc<str>)>>,
    /// False when batching is off: a batch is answered with 415.
    accept_batches: bool,
}

impl App {
    /// Hands `message` to the engine behind the earlier messages of its session. The
    /// engine runs in its own task: the HTTP answer never waits for host callbacks (a DM
    /// session with a device may take minutes), and a session's messages keep their
    /// order because one task drains each session's queue.
    fn enqueue(&self, message: Message, peer: Arc<str>) {
        let session = message.header.session_id.clone();
        if !self.inbound.push(&session, (message, peer)) {
            return;
        }
        let (server, lanes) = (self.server.clone(), self.inbound.clone());
        tokio::spawn(async move {
            while let Some((message, peer)) = lanes.pop(&session) {
                if let Err(e) = server.receive(&message, Some(&peer)).await {
                    // The engine answered with its own FAILURE where the protocol asks.
                    tracing::info!(%peer, kind = %message.body.kind(), error = %e, "message not taken");
                }
            }
        });
    }
}

/// A running endpoint; dropping it (or calling [`Endpoint::shutdown`]) stops accepting.
#[derive(Debug)]
pub struct Endpoint {
    local_addr: SocketAddr,
    stop: watch::Sender<bool>,
}

impl Endpoint {
    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops accepting connections.
    pub fn shutdown(&self) {
        let _ = self.stop.send(true);
    }
}

impl Drop for Endpoint {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Serves the delegation endpoint for `server` on `listener`: TLS 1.3, client certificate
/// from `trust_pem` required, and the certificate's DNS name must be a configured peer's
/// identity. Plain HTTP never gets an answer (the TLS handshake fails).
pub fn serve(
    listener: TcpListener,
    identity: &Identity,
    trust_pem: &str,
    peers: &[Peer],
    server: DelegationServer,
    options: HttpsOptions,
) -> Result<Endpoint, TlsError> {
    let tls = TlsAcceptor::from(server_config(identity, trust_pem)?);
    let local_addr = listener
        .local_addr()
        .map_err(|e| TlsError(format!("listener: {e}")))?;
    let limits = XmlLimits {
        max_bytes: options.max_body_bytes,
        ..server.config().limits
    };
    let router = Router::new()
        .route(DELEGATION_PATH, post(receive))
        .layer(DefaultBodyLimit::max(options.max_body_bytes))
        .with_state(App {
            server,
            limits,
            inbound: Arc::new(Lanes::new()),
            accept_batches: options.max_batch_messages > 1,
        });
    let identities: Arc<Vec<(String, String)>> = Arc::new(
        peers
            .iter()
            .map(|p| (p.identity().to_string(), p.server_id.clone()))
            .collect(),
    );
    let stop = spawn_tls_server(
        listener,
        tls,
        options.handshake_timeout,
        "delegation",
        move |stream| {
            let names = stream
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|c| c.first())
                .map(certificate_names)
                .unwrap_or_default();
            let peer = identities
                .iter()
                .find(|(identity, _)| names.iter().any(|n| n == identity))
                .map(|(_, id)| Arc::<str>::from(id.as_str()));
            tracing::debug!(?names, ?peer, "TLS connection");
            router.clone().layer(Extension(AuthenticatedPeer(peer)))
        },
    );
    Ok(Endpoint { local_addr, stop })
}

/// Accepts TLS connections on `listener` until the returned sender is signalled (or
/// dropped), serving each with the router `route` builds for it (HTTP/1.1).
pub(crate) fn spawn_tls_server(
    listener: TcpListener,
    tls: TlsAcceptor,
    handshake_timeout: Duration,
    label: &'static str,
    route: impl Fn(&tokio_rustls::server::TlsStream<tokio::net::TcpStream>) -> Router
        + Send
        + Sync
        + 'static,
) -> watch::Sender<bool> {
    let (stop, mut stopped) = watch::channel(false);
    let route = Arc::new(route);
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                a = listener.accept() => a,
                _ = stopped.changed() => break,
            };
            let Ok((tcp, remote)) = accepted else {
                continue;
            };
            // Small request/response exchanges: do not wait for delayed ACKs.
            let _ = tcp.set_nodelay(true);
            let (tls, route, mut stop_connection) = (tls.clone(), route.clone(), stopped.clone());
            tokio::spawn(async move {
                let stream = match tokio::time::timeout(handshake_timeout, tls.accept(tcp)).await {
                    Ok(Ok(s)) => s,
                    Ok(Err(e)) => {
                        tracing::info!(%remote, error = %e, "{label}: TLS handshake refused");
                        return;
                    }
                    Err(_) => {
                        tracing::info!(%remote, "{label}: TLS handshake timed out");
                        return;
                    }
                };
                let service = hyper_util::service::TowerToHyperService::new(route(&stream));
                let io = hyper_util::rt::TokioIo::new(stream);
                let connection =
                    hyper::server::conn::http1::Builder::new().serve_connection(io, service);
                // A stopped endpoint also drops the connections it already has (a peer
                // reusing one must not reach a server that was shut down).
                tokio::select! {
                    served = connection => if let Err(e) = served {
                        tracing::debug!(%remote, error = %e, "{label}: connection ended");
                    },
                    _ = stop_connection.wait_for(|stop| *stop) => {
                        tracing::debug!(%remote, "{label}: connection closed by shutdown");
                    }
                }
            });
        }
    });
    stop
}

/// The HTTP client settings of the binding: TLS 1.3 with `identity` as client
/// certificate, peers checked against `trust_pem`, HTTPS only, no Nagle delay.
pub fn client_builder(
    identity: &Identity,
    trust_pem: &str,
    options: &HttpsOptions,
) -> Result<reqwest::ClientBuilder, TlsError> {
    Ok(reqwest::Client::builder()
        .tls_backend_preconfigured(client_config(identity, trust_pem)?)
        .https_only(true)
        .tcp_nodelay(true)
        .connect_timeout(options.connect_timeout)
        .timeout(options.request_timeout))
}

/// A bare HTTPS echo on the binding's stack (TLS 1.3 with client certificates, hyper
/// HTTP/1.1, axum): `POST` any path, the body comes back. The physical limit the
/// benchmarks compare delegations with; not for production.
pub fn serve_echo(
    listener: TcpListener,
    identity: &Identity,
    trust_pem: &str,
    options: HttpsOptions,
) -> Result<Endpoint, TlsError> {
    let tls = TlsAcceptor::from(server_config(identity, trust_pem)?);
    let local_addr = listener
        .local_addr()
        .map_err(|e| TlsError(format!("listener: {e}")))?;
    let router = Router::new()
        .route(DELEGATION_PATH, post(|body: Bytes| async move { body }))
        .layer(DefaultBodyLimit::max(options.max_body_bytes));
    let stop = spawn_tls_server(
        listener,
        tls,
        options.handshake_timeout,
        "echo",
        move |_| router.clone(),
    );
    Ok(Endpoint { local_addr, stop })
}

fn failure_document(to: &Message, me: &str, reason: Reason) -> String {
    Message {
        header: Header {
            session_id: to.header.session_id.clone(),
            seq: 1,
            sender: me.to_string(),
            recipient: to.header.sender.clone(),
            method: to.header.method,
            timestamp: dmdelegate::Timestamp::now(),
        },
        body: Body::Failure(reason),
    }
    .to_xml()
}

/// Why a decoded message was refused before the engine saw it.
struct Refusal {
    status: StatusCode,
    detail: String,
    /// `Sender` is not the authenticated peer: a request carrying only this message gets
    /// a DELEGATION_FAILURE 110 as its body ([`sender_failure`]).
    wrong_sender: bool,
}

/// What can be checked without the session is checked here, so the answer says it; the
/// rest is the engine's, in order, after the answer.
fn check_addressing(app: &App, message: &Message, peer: &str) -> Result<(), Refusal> {
    if message.header.recipient != app.server.server_id() {
        let e = Error::WrongRecipient {
            expected: app.server.server_id().to_string(),
            found: message.header.recipient.clone(),
        };
        return Err(Refusal {
            status: StatusCode::MISDIRECTED_REQUEST,
            detail: e.to_string(),
            wrong_sender: false,
        });
    }
    if message.header.sender != *peer {
        return Err(Refusal {
            status: StatusCode::FORBIDDEN,
            detail: format!(
                "message claims sender `{}` but the connection authenticated `{peer}`",
                message.header.sender
            ),
            wrong_sender: true,
        });
    }
    Ok(())
}

/// The DELEGATION_FAILURE 110 answering a lone message whose `Sender` is not `peer`, the
/// authenticated one (built only then: a batch's entry gets its status and text).
fn sender_failure(app: &App, message: &Message, peer: &str, detail: &str) -> String {
    let mut answer = message.clone();
    // The FAILURE goes back on this connection, to whoever really is talking.
    answer.header.sender = peer.to_string();
    failure_document(
        &answer,
        app.server.server_id(),
        Reason::new(ReasonCode::AuthenticationFailed, detail),
    )
}

async fn receive(
    State(app): State<App>,
    Extension(peer): Extension<AuthenticatedPeer>,
    media: DelegationMediaType,
    body: Bytes,
) -> Response {
    let Some(peer) = peer.0 else {
        return (
            StatusCode::FORBIDDEN,
            "the client certificate names no configured peer",
        )
            .into_response();
    };
    match media {
        DelegationMediaType::Message => {}
        DelegationMediaType::Batch if app.accept_batches => {
            return receive_batch(&app, &peer, &body)
        }
        DelegationMediaType::Batch => {
            return (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                format!("batches are turned off here: expected Content-Type {MEDIA_TYPE}"),
            )
                .into_response()
        }
        DelegationMediaType::Other => {
            return (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                format!("expected Content-Type {MEDIA_TYPE} or {BATCH_MEDIA_TYPE}"),
            )
                .into_response()
        }
    }
    let message = match Message::from_xml_with_limits(&body, &app.limits) {
        Ok(m) => m,
        Err(e) => return (StatusCode::BAD_REQUEST, e.to_string()).into_response(),
    };
    match check_addressing(&app, &message, &peer) {
        Ok(()) => {
            app.enqueue(message, peer);
            StatusCode::ACCEPTED.into_response()
        }
        Err(Refusal {
            status,
            detail,
            wrong_sender: true,
        }) => {
            tracing::warn!(%peer, claimed = %message.header.sender, "sender is not the authenticated peer");
            let failure = sender_failure(&app, &message, &peer, &detail);
            (status, [(header::CONTENT_TYPE, MEDIA_TYPE)], failure).into_response()
        }
        Err(Refusal { status, detail, .. }) => (status, detail).into_response(),
    }
}

/// A batch: each entry is checked and handed to the engine as if it had come alone, in
/// order; the answer (200) gives each entry's status. Only a batch that is not one as a
/// whole (not well-formed, empty, too many entries) gets a 400.
fn receive_batch(app: &App, peer: &Arc<str>, body: &[u8]) -> Response {
    let entries = match batch::decode_batch(body, &app.limits) {
        Ok(entries) => entries,
        Err(e) => return (StatusCode::BAD_REQUEST, e.to_string()).into_response(),
    };
    let mut wrong_senders = 0usize;
    let statuses: Vec<EntryStatus> = entries
        .into_iter()
        .map(|entry| {
            let message = match entry {
                Ok(message) => message,
                Err(e) => return EntryStatus::new(400, e.to_string()),
            };
            match check_addressing(app, &message, peer) {
                Ok(()) => {
                    app.enqueue(message, peer.clone());
                    EntryStatus::accepted()
                }
                Err(refusal) => {
                    wrong_senders += usize::from(refusal.wrong_sender);
                    EntryStatus::new(refusal.status.as_u16(), refusal.detail)
                }
            }
        })
        .collect();
    // One line per batch, not per entry: a batch holds up to MAX_BATCH_ENTRIES.
    if wrong_senders > 0 {
        tracing::warn!(%peer, entries = wrong_senders, "batch entries claim a sender that is not the authenticated peer");
    }
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, BATCH_MEDIA_TYPE)],
        batch::encode_batch_result(&statuses),
    )
        .into_response()
}

/// How one delivery attempt ended.
#[derive(Debug, Clone)]
enum Attempt {
    Delivered,
    Retry(String),
    Refused(String),
}

impl Attempt {
    /// What an answer with `status` means for the message (the table of section 8.1);
    /// `detail` is the answer's text, for a refusal.
    fn of_status(status: u16, detail: &str) -> Attempt {
        // 404/409: the peer processed the message and answered with its own FAILURE.
        if (200..300).contains(&status) || status == 404 || status == 409 {
            Attempt::Delivered
        } else if status >= 500 || status == 429 {
            Attempt::Retry(format!("HTTP {status}"))
        } else {
            Attempt::Refused(format!("HTTP {status}: {detail}"))
        }
    }

    /// What a request that got no answer means: connecting, timing out and sending are
    /// worth another try.
    fn of_error(e: &reqwest::Error) -> Attempt {
        if e.is_connect() || e.is_timeout() || e.is_request() {
            Attempt::Retry(e.to_string())
        } else {
            Attempt::Refused(e.to_string())
        }
    }
}

/// Gives every gathered message the same outcome.
fn send_to_all(gathered: Vec<Waiting>, outcome: Attempt) {
    for w in gathered {
        let _ = w.outcome.send(outcome.clone());
    }
}

/// Most bytes read of the answer to a batch of `entries`: room for a refusal's text per
/// entry, far more than a receiver writes.
fn batch_result_cap(entries: usize) -> usize {
    4096 + entries * 2048
}

/// The answer's body, or an error once it is longer than `cap` (a peer cannot make the
/// sender hold an answer of any size).
async fn read_capped(mut r: reqwest::Response, cap: usize) -> Result<Vec<u8>, String> {
    if r.content_length().is_some_and(|n| n > cap as u64) {
        return Err(format!("batch answer over {cap} bytes"));
    }
    let mut body = Vec::new();
    while let Some(chunk) = r.chunk().await.map_err(|e| format!("batch answer: {e}"))? {
        if body.len() + chunk.len() > cap {
            return Err(format!("batch answer over {cap} bytes"));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// An answer's status, with its text read only when the message was refused.
async fn attempt_of_response(r: reqwest::Response) -> Attempt {
    let status = r.status().as_u16();
    match Attempt::of_status(status, "") {
        Attempt::Refused(_) => Attempt::of_status(status, &r.text().await.unwrap_or_default()),
        other => other,
    }
}

/// Sends messages to peers over HTTPS with this server's client certificate. Each
/// session's messages are delivered in order by a background task of the session's
/// (started with its first message, ended when its queue is empty); a task per peer
/// gathers what waits for that peer's requests into batches.
pub struct HttpsTransport {
    client: reqwest::Client,
    peers: HashMap<String, Arc<PeerLink>>,
    options: HttpsOptions,
    server: OnceLock<WeakDelegationServer>,
    /// One ordered queue per (peer, session) with messages waiting: a session's messages
    /// keep their order, different sessions do not wait for each other.
    queues: Lanes<(String, String), Outgoing>,
    delivered: Mutex<DeliveryLog>,
    /// HTTP requests made, and how many of them carried a batch.
    requests: AtomicU64,
    batches: AtomicU64,
}

/// A configured peer as the transport uses it: the endpoint parsed once, and the
/// permits for requests in flight to it ([`HttpsOptions::max_requests_per_peer`]).
/// Shared (`Arc`) with the delivery task of every session that has messages queued.
struct PeerLink {
    peer: Peer,
    url: reqwest::Url,
    in_flight: Arc<Semaphore>,
    /// With batching on, where messages wait for the next request to this peer; the
    /// batching task starts with the first message.
    waiting: OnceLock<mpsc::UnboundedSender<Waiting>>,
    /// Set when the peer answered a batch with 415: one message per request from then on.
    batches_refused: AtomicBool,
    /// Largest batch this peer is sent now, in bytes: halved when a batch breaks its
    /// request, doubled back (up to the ceiling) when one goes through.
    batch_bytes: AtomicUsize,
    /// Largest batch this peer is ever sent: `max_batch_bytes`, halved each time the peer
    /// answers a batch with 413 (its body cap is smaller).
    batch_bytes_ceiling: AtomicUsize,
}

impl PeerLink {
    /// The peer takes no batches: one message per request from now on, with the
    /// unbatched number of requests in flight.
    fn refuse_batches(&self, status: StatusCode, options: &HttpsOptions) {
        if !self.batches_refused.swap(true, Ordering::AcqRel) {
            tracing::info!(peer = %self.peer.server_id, %status, "peer takes no batches: one message per request from now on");
            self.in_flight.add_permits(
                options
                    .max_unbatched_requests_per_peer
                    .saturating_sub(options.max_requests_per_peer.max(1)),
            );
        }
    }

    /// A batch of `bytes` did not get through: the next ones are at most half as large;
    /// for good when the peer said it was too large (`cap_hit`).
    fn shrink_batches(&self, bytes: usize, cap_hit: bool) {
        let smaller = (bytes / 2).max(batch::ENVELOPE_BYTES);
        self.batch_bytes.fetch_min(smaller, Ordering::Relaxed);
        if cap_hit {
            self.batch_bytes_ceiling
                .fetch_min(smaller, Ordering::Relaxed);
        }
    }

    /// A batch went through: batches may grow back toward the ceiling.
    fn batch_went_through(&self) {
        let ceiling = self.batch_bytes_ceiling.load(Ordering::Relaxed);
        let _ = self
            .batch_bytes
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |now| {
                (now < ceiling).then(|| now.saturating_mul(2).min(ceiling))
            });
    }
}

/// A message waiting for a request to its peer, and where its attempt's outcome goes.
struct Waiting {
    xml: Bytes,
    outcome: oneshot::Sender<Attempt>,
}

/// A message waiting for delivery: encoded when it is sent (so a delivery task holds
/// the bytes every attempt posts, not a copy of the message), with what the log and the
/// failure handling need.
struct Outgoing {
    xml: Bytes,
    session_id: String,
    kind: dmdelegate::MessageKind,
    seq: u32,
}

/// How many recent deliveries the transport remembers: a long-running server must not
/// grow without bound.
pub const DELIVERY_LOG_CAPACITY: usize = 4096;

/// The recent deliveries and the running totals.
#[derive(Debug, Default)]
struct DeliveryLog {
    recent: std::collections::VecDeque<Delivery>,
    stats: DeliveryStats,
}

/// Totals of a transport since it started.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct DeliveryStats {
    /// Messages delivered.
    pub delivered: u64,
    /// Messages given up on.
    pub failed: u64,
    /// Delivery attempts (retries included). Messages that leave together in a batch
    /// make one attempt each and one request in all (plus one request each when the
    /// peer refuses the batch as a whole and they go again alone).
    pub attempts: u64,
    /// HTTP requests made.
    pub requests: u64,
    /// Requests that carried a batch of messages.
    pub batches: u64,
}

/// One message this transport delivered (or gave up on).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// When the delivery began.
    pub at: dmdelegate::Timestamp,
    /// Session.
    pub session_id: String,
    /// Recipient ServerID.
    pub recipient: String,
    /// Message type.
    pub kind: dmdelegate::MessageKind,
    /// Sequence number.
    pub seq: u32,
    /// `Ok` with the number of attempts, or why it failed.
    pub outcome: Result<u32, String>,
}

impl std::fmt::Debug for HttpsTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpsTransport")
            .field("peers", &self.peers.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl HttpsTransport {
    /// A transport presenting `identity` and trusting peers issued by `trust_pem`.
    pub fn new(
        identity: &Identity,
        trust_pem: &str,
        peers: &[Peer],
        options: HttpsOptions,
    ) -> Result<Arc<Self>, TlsError> {
        let mut builder = client_builder(identity, trust_pem, &options)?;
        let mut links = HashMap::with_capacity(peers.len());
        let permits = if options.max_batch_messages <= 1 {
            options.max_unbatched_requests_per_peer.max(1)
        } else {
            options.max_requests_per_peer.max(1)
        };
        for p in peers {
            if !p.endpoint.starts_with("https://") {
                return Err(TlsError(format!(
                    "peer `{}`: endpoint `{}` is not https://",
                    p.server_id, p.endpoint
                )));
            }
            let url = reqwest::Url::parse(&p.endpoint)
                .ok()
                .filter(|u| u.host_str().is_some())
                .ok_or_else(|| TlsError(format!("peer `{}`: bad endpoint", p.server_id)))?;
            if let Some(addr) = p.address {
                builder = builder.resolve(url.host_str().unwrap_or_default(), addr);
            }
            links.insert(
                p.server_id.clone(),
                Arc::new(PeerLink {
                    peer: p.clone(),
                    url,
                    in_flight: Arc::new(Semaphore::new(permits)),
                    waiting: OnceLock::new(),
                    batches_refused: AtomicBool::new(false),
                    batch_bytes: AtomicUsize::new(options.max_batch_bytes),
                    batch_bytes_ceiling: AtomicUsize::new(options.max_batch_bytes),
                }),
            );
        }
        let client = builder
            .build()
            .map_err(|e| TlsError(format!("HTTPS client: {e}")))?;
        Ok(Arc::new(Self {
            client,
            peers: links,
            options,
            server: OnceLock::new(),
            queues: Lanes::new(),
            delivered: Mutex::new(DeliveryLog::default()),
            requests: AtomicU64::new(0),
            batches: AtomicU64::new(0),
        }))
    }

    /// True when `server_id` is one of the configured peers.
    pub fn has_peer(&self, server_id: &str) -> bool {
        self.peers.contains_key(server_id)
    }

    /// Tells the transport which server's sessions fail when a message cannot be delivered.
    pub fn bind_server(&self, server: &DelegationServer) {
        let _ = self.server.set(server.downgrade());
    }

    /// One request carrying one message.
    async fn attempt(&self, link: &PeerLink, xml: &Bytes) -> Attempt {
        self.requests.fetch_add(1, Ordering::Relaxed);
        let sent = self
            .client
            .post(link.url.clone())
            .header(
                reqwest::header::CONTENT_TYPE,
                reqwest::header::HeaderValue::from_static(MEDIA_TYPE),
            )
            // A `Bytes` clone shares the encoded message: retries post it without a copy.
            .body(xml.clone())
            .send()
            .await;
        match sent {
            Err(e) => Attempt::of_error(&e),
            Ok(r) => attempt_of_response(r).await,
        }
    }

    /// One delivery attempt of one message: a request of its own under a permit, or,
    /// with batching on, a place in the peer's next request.
    async fn post(self: &Arc<Self>, link: &Arc<PeerLink>, xml: &Bytes) -> Attempt {
        if self.options.max_batch_messages <= 1 || link.batches_refused.load(Ordering::Relaxed) {
            let _permit = link.in_flight.acquire().await;
            return self.attempt(link, xml).await;
        }
        let waiting = link.waiting.get_or_init(|| {
            let (sender, receiver) = mpsc::unbounded_channel();
            tokio::spawn(gather_batches(
                Arc::downgrade(self),
                Arc::downgrade(link),
                receiver,
            ));
            sender
        });
        let (outcome, answer) = oneshot::channel();
        let queued = waiting.send(Waiting {
            xml: xml.clone(),
            outcome,
        });
        if queued.is_err() {
            return Attempt::Retry("the transport is stopping".into());
        }
        answer
            .await
            .unwrap_or_else(|_| Attempt::Retry("the transport stopped".into()))
    }

    /// Sends the messages gathered for one request: alone, or as a batch answered entry
    /// by entry. Every message gets its outcome.
    async fn post_gathered(
        self: &Arc<Self>,
        link: &Arc<PeerLink>,
        mut gathered: Vec<Waiting>,
        bytes: usize,
    ) {
        if gathered.len() == 1 {
            let w = gathered.pop().expect("one message");
            let _ = w.outcome.send(self.attempt(link, &w.xml).await);
            return;
        }
        let mut writer = BatchWriter::with_capacity(bytes);
        for w in &gathered {
            writer.push_document(&w.xml);
        }
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.batches.fetch_add(1, Ordering::Relaxed);
        let sent = self
            .client
            .post(link.url.clone())
            .header(
                reqwest::header::CONTENT_TYPE,
                reqwest::header::HeaderValue::from_static(BATCH_MEDIA_TYPE),
            )
            .body(writer.finish())
            .send()
            .await;
        let r = match sent {
            Ok(r) => r,
            Err(e) => {
                // A request that broke once connected may have hit the peer's body cap:
                // a receiver that stops reading answers 413 and closes, and the reset
                // can overtake the answer. Smaller batches until one goes through.
                if !e.is_connect() {
                    link.shrink_batches(bytes, false);
                }
                return send_to_all(gathered, Attempt::of_error(&e));
            }
        };
        let status = r.status();
        let whole = match status {
            s if s.is_success() => {
                let answer = read_capped(r, batch_result_cap(gathered.len())).await;
                match answer.and_then(|body| {
                    batch::decode_batch_result(&body).map_err(|e| format!("batch answer: {e}"))
                }) {
                    Ok(statuses) if statuses.len() == gathered.len() => {
                        link.batch_went_through();
                        for (w, s) in gathered.into_iter().zip(statuses) {
                            let _ = w.outcome.send(Attempt::of_status(s.status, &s.detail));
                        }
                        return;
                    }
                    // The receiver may have taken some: a retried message is a duplicate
                    // the engine ignores.
                    Ok(statuses) => Attempt::Retry(format!(
                        "batch answer has {} entries for {} messages",
                        statuses.len(),
                        gathered.len()
                    )),
                    Err(e) => Attempt::Retry(e),
                }
            }
            // Refused as a whole, so none of it was taken: each message may still be fine
            // alone (a smaller body cap, or a stricter reading of the envelope).
            StatusCode::PAYLOAD_TOO_LARGE | StatusCode::BAD_REQUEST => {
                if status == StatusCode::PAYLOAD_TOO_LARGE {
                    link.shrink_batches(bytes, true);
                    tracing::info!(peer = %link.peer.server_id, bytes, "peer refused a batch as too large: smaller batches from now on");
                } else {
                    tracing::warn!(peer = %link.peer.server_id, "peer refused a batch as a whole (400): sending its messages one by one");
                }
                return self.post_each_alone(link, gathered);
            }
            // The certificate names no configured peer: every message would hear the same.
            StatusCode::FORBIDDEN => attempt_of_response(r).await,
            s if s.is_server_error() || s == StatusCode::TOO_MANY_REQUESTS => {
                Attempt::Retry(format!("HTTP {s}"))
            }
            // 415, or an answer a batch cannot have (404 and 409 mean "processed" only
            // for a lone message): a peer, or something in front of it, that takes no
            // batches. Nothing was taken; the messages go one per request.
            other => {
                link.refuse_batches(other, &self.options);
                return self.post_each_alone(link, gathered);
            }
        };
        send_to_all(gathered, whole);
    }

    /// Each message in a request of its own, as many at once as the peer's permits allow
    /// (the refused batch's permit is released as this returns).
    fn post_each_alone(self: &Arc<Self>, link: &Arc<PeerLink>, gathered: Vec<Waiting>) {
        for w in gathered {
            let (transport, link) = (self.clone(), link.clone());
            tokio::spawn(async move {
                let _permit = link.in_flight.clone().acquire_owned().await;
                let _ = w.outcome.send(transport.attempt(&link, &w.xml).await);
            });
        }
    }

    /// The most recent deliveries (at most [`DELIVERY_LOG_CAPACITY`]), oldest first.
    pub fn deliveries(&self) -> Vec<Delivery> {
        let log = self.delivered.lock().unwrap_or_else(|p| p.into_inner());
        log.recent.iter().cloned().collect()
    }

    /// Totals since the transport started.
    pub fn stats(&self) -> DeliveryStats {
        let mut stats = self
            .delivered
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .stats;
        stats.requests = self.requests.load(Ordering::Relaxed);
        stats.batches = self.batches.load(Ordering::Relaxed);
        stats
    }

    /// Delivers one message and records the outcome.
    async fn deliver(
        self: &Arc<Self>,
        link: &Arc<PeerLink>,
        message: &Outgoing,
    ) -> Result<(), String> {
        let began = dmdelegate::Timestamp::now();
        let (attempts, outcome) = match self.deliver_with_retries(link, &message.xml).await {
            Ok(attempts) => (attempts, Ok(attempts)),
            Err((attempts, e)) => (attempts, Err(e)),
        };
        let mut log = self.delivered.lock().unwrap_or_else(|p| p.into_inner());
        match &outcome {
            Ok(_) => log.stats.delivered += 1,
            Err(_) => log.stats.failed += 1,
        }
        log.stats.attempts += u64::from(attempts);
        if log.recent.len() == DELIVERY_LOG_CAPACITY {
            log.recent.pop_front();
        }
        log.recent.push_back(Delivery {
            at: began,
            session_id: message.session_id.clone(),
            recipient: link.peer.server_id.clone(),
            kind: message.kind,
            seq: message.seq,
            outcome: outcome.clone(),
        });
        drop(log);
        outcome.map(|_| ())
    }

    /// Delivers one message, retrying transient failures with exponential backoff;
    /// returns the number of attempts it took, or made before it was refused or gave up.
    async fn deliver_with_retries(
        self: &Arc<Self>,
        link: &Arc<PeerLink>,
        xml: &Bytes,
    ) -> Result<u32, (u32, String)> {
        let mut delay = self.options.backoff;
        let mut last = String::new();
        for attempt in 1..=self.options.attempts.max(1) {
            match self.post(link, xml).await {
                Attempt::Delivered => return Ok(attempt),
                Attempt::Refused(e) => return Err((attempt, e)),
                Attempt::Retry(e) => {
                    tracing::debug!(peer = %link.peer.server_id, attempt, error = %e, "retrying");
                    last = e;
                }
            }
            if attempt < self.options.attempts {
                tokio::time::sleep(delay).await;
                delay *= 2;
            }
        }
        let attempts = self.options.attempts.max(1);
        Err((
            attempts,
            format!("gave up after {attempts} attempts: {last}"),
        ))
    }

    /// Queues `message` for `peer` behind the earlier messages of its session, starting
    /// the session's delivery task when it has none. An idle session costs nothing.
    fn enqueue(self: &Arc<Self>, link: &Arc<PeerLink>, message: Outgoing) {
        let key = (link.peer.server_id.clone(), message.session_id.clone());
        if !self.queues.push(&key, message) {
            return;
        }
        let (this, target) = (Arc::downgrade(self), link.clone());
        tokio::spawn(async move {
            while let Some(transport) = this.upgrade() {
                let Some(message) = transport.queues.pop(&key) else {
                    break;
                };
                if let Err(e) = transport.deliver(&target, &message).await {
                    let peer = &target.peer.server_id;
                    tracing::warn!(%peer, kind = %message.kind, error = %e, "delivery failed");
                    if message.kind == dmdelegate::MessageKind::Failure {
                        continue;
                    }
                    let server = transport.server.get().and_then(|w| w.upgrade());
                    if let Some(server) = server {
                        let detail = format!("{} to `{peer}`: {e}", message.kind);
                        let _ = server.peer_unreachable(&message.session_id, &detail).await;
                    }
                }
            }
        });
    }
}

/// Gathers the messages waiting for requests to one peer: takes a request permit, then
/// everything that is waiting (up to the batch limits), and sends it in a task of its
/// own. While every permit is in use, messages gather. Ends with the transport.
async fn gather_batches(
    transport: Weak<HttpsTransport>,
    link: Weak<PeerLink>,
    mut waiting: mpsc::UnboundedReceiver<Waiting>,
) {
    let Some((permits, options)) = transport
        .upgrade()
        .zip(link.upgrade())
        .map(|(t, l)| (l.in_flight.clone(), t.options))
    else {
        return;
    };
    let mut carried: Option<Waiting> = None;
    loop {
        let first = match carried.take() {
            Some(w) => w,
            None => match waiting.recv().await {
                Some(w) => w,
                None => break,
            },
        };
        // The permit after the first message, not before: an idle task must not hold one
        // that messages sent alone (after a refused batch) wait for. What arrives while
        // this waits leaves with `first`.
        let Ok(permit) = permits.clone().acquire_owned().await else {
            break;
        };
        // Strong references only while a request is made: the transport must be able to
        // drop, which closes the queue and ends this task.
        let (Some(transport), Some(link)) = (transport.upgrade(), link.upgrade()) else {
            break;
        };
        // A receiver refuses a batch of more than MAX_BATCH_ENTRIES as a whole.
        let most = if link.batches_refused.load(Ordering::Relaxed) {
            1
        } else {
            options.max_batch_messages.min(batch::MAX_BATCH_ENTRIES)
        };
        let max_bytes = link.batch_bytes.load(Ordering::Relaxed);
        let mut bytes = batch::ENVELOPE_BYTES + first.xml.len();
        let mut gathered = vec![first];
        while gathered.len() < most {
            let Ok(next) = waiting.try_recv() else {
                break;
            };
            if bytes + next.xml.len() > max_bytes {
                carried = Some(next);
                break;
            }
            bytes += next.xml.len();
            gathered.push(next);
        }
        tokio::spawn(async move {
            transport.post_gathered(&link, gathered, bytes).await;
            drop(permit);
        });
    }
}

/// A handle implementing [`Transport`] for an `Arc<HttpsTransport>` (queues need the Arc).
#[derive(Debug, Clone)]
pub struct HttpsSender(pub Arc<HttpsTransport>);

#[async_trait]
impl Transport for HttpsSender {
    async fn send(&self, message: &Message) -> Result<(), TransportError> {
        let link = self
            .0
            .peers
            .get(&message.header.recipient)
            .ok_or_else(|| TransportError {
                message: format!("no peer `{}` configured", message.header.recipient),
            })?;
        let outgoing = Outgoing {
            xml: Bytes::from(message.to_xml()),
            session_id: message.header.session_id.clone(),
            kind: message.body.kind(),
            seq: message.header.seq,
        };
        self.0.enqueue(link, outgoing);
        Ok(())
    }
}
