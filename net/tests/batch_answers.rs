//! How a batching sender reads the answers a peer can give a batch (docs/protocol.md,
//! section 8.2), against a scripted peer over mutual TLS: each batch request takes the
//! next scripted answer, then proper ones (one 202 per entry); lone messages get 202.
//! Whatever the answer, every message ends delivered or failed, none is counted
//! delivered unless the peer took it, and nothing is lost.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use dmdelegate::batch::{self, EntryStatus, BATCH_MEDIA_TYPE};
use dmdelegate::message::MEDIA_TYPE;
use dmdelegate::{Message, Transport, XmlLimits};
use dmdelegate_net::https::{HttpsOptions, HttpsSender, HttpsTransport, Peer, DELEGATION_PATH};
use dmdelegate_net::{tls, TestPki};
use tokio::net::TcpListener;

const SENDER: &str = "dms1.batch.test";
const PEER: &str = "dms2.batch.test";

/// What the scripted peer answers a batch request.
#[derive(Clone)]
enum Answer {
    /// This status, with a plain-text body.
    Status(u16),
    /// 200 with a result of this many 202 entries, whatever the batch held.
    Entries(usize),
    /// 200 with this many bytes of filler.
    Huge(usize),
}

#[derive(Default)]
struct Seen {
    batch_requests: usize,
    /// Messages the peer took: lone ones answered 202 and batch entries answered 202.
    taken: usize,
}

struct ScriptedPeer {
    script: Mutex<VecDeque<Answer>>,
    seen: Mutex<Seen>,
}

impl ScriptedPeer {
    fn answer(&self, headers: &HeaderMap, body: &[u8]) -> Response {
        let media = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        let mut seen = self.seen.lock().unwrap();
        if media == MEDIA_TYPE {
            Message::from_xml(body).expect("the sender posts valid messages");
            seen.taken += 1;
            return StatusCode::ACCEPTED.into_response();
        }
        assert_eq!(media, BATCH_MEDIA_TYPE);
        seen.batch_requests += 1;
        let entries = batch::decode_batch(body, &XmlLimits::default())
            .expect("the sender posts valid batches")
            .len();
        let scripted = self.script.lock().unwrap().pop_front();
        match scripted.unwrap_or(Answer::Entries(entries)) {
            Answer::Status(status) => (
                StatusCode::from_u16(status).unwrap(),
                format!("scripted {status}"),
            )
                .into_response(),
            Answer::Entries(n) => {
                if n == entries {
                    seen.taken += n;
                }
                let statuses = vec![EntryStatus::accepted(); n];
                (
                    StatusCode::OK,
                    [(header::CONTENT_TYPE, BATCH_MEDIA_TYPE)],
                    batch::encode_batch_result(&statuses),
                )
                    .into_response()
            }
            Answer::Huge(bytes) => (
                StatusCode::OK,
                [(header::CONTENT_TYPE, BATCH_MEDIA_TYPE)],
                vec![b' '; bytes],
            )
                .into_response(),
        }
    }
}

/// Starts the scripted peer (TLS 1.3, client certificate required) and a batching
/// transport to it presenting `SENDER`'s certificate, one request at a time.
async fn scripted(script: Vec<Answer>) -> (Arc<ScriptedPeer>, Arc<HttpsTransport>) {
    let pki = TestPki::new("batch answers test CA").unwrap();
    let (sender_id, peer_id) = (
        pki.issue(SENDER, &[]).unwrap(),
        pki.issue(PEER, &[]).unwrap(),
    );
    let peer = Arc::new(ScriptedPeer {
        script: Mutex::new(script.into()),
        seen: Mutex::default(),
    });
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor =
        tokio_rustls::TlsAcceptor::from(tls::server_config(&peer_id, pki.ca_pem()).unwrap());
    let state = peer.clone();
    let router = Router::new().route(
        DELEGATION_PATH,
        post(move |headers: HeaderMap, body: Bytes| {
            let state = state.clone();
            async move { state.answer(&headers, &body) }
        }),
    );
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let (acceptor, router) = (acceptor.clone(), router.clone());
            tokio::spawn(async move {
                let Ok(stream) = acceptor.accept(tcp).await else {
                    return;
                };
                let service = hyper_util::service::TowerToHyperService::new(router);
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    let transport = HttpsTransport::new(
        &sender_id,
        pki.ca_pem(),
        &[peer_at(addr)],
        HttpsOptions {
            attempts: 3,
            backoff: Duration::from_millis(20),
            request_timeout: Duration::from_secs(5),
            max_requests_per_peer: 1,
            ..HttpsOptions::default()
        },
    )
    .unwrap();
    (peer, transport)
}

fn peer_at(addr: SocketAddr) -> Peer {
    Peer {
        server_id: PEER.into(),
        endpoint: format!("https://{PEER}:{}{DELEGATION_PATH}", addr.port()),
        identity: None,
        address: Some(addr),
    }
}

/// `n` NOTIFs of `n` sessions from `SENDER` to `PEER`.
fn notifs(prefix: &str, n: usize) -> Vec<Message> {
    let doc = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../vectors/valid/notif-method1-partial.xml"
    ))
    .unwrap();
    (0..n)
        .map(|i| {
            let mut m = Message::from_xml(doc.as_bytes()).unwrap();
            m.header.session_id = format!("{prefix}-{i}");
            m.header.sender = SENDER.into();
            m.header.recipient = PEER.into();
            if let dmdelegate::Body::Notif(notif) = &mut m.body {
                notif.dm_server_id = SENDER.into();
            }
            m
        })
        .collect()
}

/// Sends `messages` at once and waits (at most 10 s) until each is delivered or failed.
async fn send_all(transport: &Arc<HttpsTransport>, messages: &[Message]) {
    let before = transport.stats();
    let sender = HttpsSender(transport.clone());
    for m in messages {
        sender.send(m).await.unwrap();
    }
    let want = before.delivered + before.failed + messages.len() as u64;
    for _ in 0..1000 {
        let now = transport.stats();
        if now.delivered + now.failed >= want {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("not every message ended: {:?}", transport.stats());
}

const N: usize = 8;

// Current-thread runtimes: the messages sent in one go are all queued before the
// batching task first runs, so the first request is a batch of all of them.

#[tokio::test(flavor = "current_thread")]
async fn a_batch_answered_404_is_not_delivered_and_its_messages_go_alone_from_then_on() {
    // A 404 means "processed" for a lone message; to a batch it comes from something that
    // does not know batches. Counting it delivered would lose every message in it.
    let (peer, transport) = scripted(vec![Answer::Status(404)]).await;
    send_all(&transport, &notifs("proxy", N)).await;
    let stats = transport.stats();
    assert_eq!((stats.delivered, stats.failed), (N as u64, 0), "{stats:?}");
    assert_eq!(
        peer.seen.lock().unwrap().taken,
        N,
        "the peer took every message alone"
    );

    send_all(&transport, &notifs("after", N)).await;
    let seen = peer.seen.lock().unwrap();
    assert_eq!(seen.batch_requests, 1, "no batch after the 404");
    assert_eq!(seen.taken, 2 * N);
}

#[tokio::test(flavor = "current_thread")]
async fn a_batch_answered_503_is_retried_and_then_taken() {
    let (peer, transport) = scripted(vec![Answer::Status(503)]).await;
    send_all(&transport, &notifs("busy", N)).await;
    let stats = transport.stats();
    assert_eq!((stats.delivered, stats.failed), (N as u64, 0), "{stats:?}");
    assert_eq!(stats.attempts, 2 * N as u64, "one retry each: {stats:?}");
    assert_eq!(peer.seen.lock().unwrap().taken, N);
}

#[tokio::test(flavor = "current_thread")]
async fn an_answer_with_fewer_entries_than_the_batch_is_retried_as_a_whole() {
    // The sender matches entries by position: with one missing it cannot tell whose it
    // is, so every message goes again (a duplicate of a taken one is ignored by the engine).
    let (peer, transport) = scripted(vec![Answer::Entries(N - 1)]).await;
    send_all(&transport, &notifs("short", N)).await;
    let stats = transport.stats();
    assert_eq!((stats.delivered, stats.failed), (N as u64, 0), "{stats:?}");
    assert_eq!(stats.attempts, 2 * N as u64, "{stats:?}");
    assert_eq!(peer.seen.lock().unwrap().taken, N);
}

#[tokio::test(flavor = "current_thread")]
async fn a_success_without_a_batch_result_is_retried_not_counted_delivered() {
    // 202 with no body (what a lone message gets) says nothing about the entries: the
    // peer took none of them here, and each message must go again to be taken.
    let (peer, transport) = scripted(vec![Answer::Status(202)]).await;
    send_all(&transport, &notifs("no-result", N)).await;
    let stats = transport.stats();
    assert_eq!((stats.delivered, stats.failed), (N as u64, 0), "{stats:?}");
    assert_eq!(stats.attempts, 2 * N as u64, "{stats:?}");
    assert_eq!(peer.seen.lock().unwrap().taken, N);
}

#[tokio::test(flavor = "current_thread")]
async fn an_answer_larger_than_any_result_is_not_read_and_the_batch_is_retried() {
    let (peer, transport) = scripted(vec![Answer::Huge(4 << 20)]).await;
    send_all(&transport, &notifs("huge", N)).await;
    let stats = transport.stats();
    assert_eq!((stats.delivered, stats.failed), (N as u64, 0), "{stats:?}");
    assert_eq!(stats.attempts, 2 * N as u64, "{stats:?}");
    assert_eq!(peer.seen.lock().unwrap().taken, N);
}

#[tokio::test(flavor = "current_thread")]
async fn a_batch_answered_403_refuses_every_message_in_it_without_retrying() {
    let (_, transport) = scripted(vec![Answer::Status(403)]).await;
    send_all(&transport, &notifs("unknown-peer", N)).await;
    let stats = transport.stats();
    assert_eq!((stats.delivered, stats.failed), (0, N as u64), "{stats:?}");
    assert_eq!(stats.attempts, N as u64, "{stats:?}");
    assert!(transport
        .deliveries()
        .iter()
        .all(|d| d.outcome.as_ref().is_err_and(|e| e.contains("403"))));
}
