//! The HTTPS binding's batches: several delegation messages in one request
//! (`dmdelegate::batch`), answered entry by entry; refused as a whole only when the batch
//! is not one; refused with 415 by a receiver with batching off, which a batching sender
//! answers by falling back to one message per request.

use std::sync::Arc;
use std::time::Duration;

use dmdelegate::batch::{self, BatchWriter, EntryStatus, BATCH_MEDIA_TYPE, MAX_BATCH_ENTRIES};
use dmdelegate::message::MEDIA_TYPE;
use dmdelegate::sim::{provision_sample_tree, SimDevice, Testbed};
use dmdelegate::{
    DelegationInfo, DelegationRequest, DelegationServer, DelegationType, DeviceInfo, DmAcc,
    Message, Method, State, Timeouts, Transport,
};
use dmdelegate_net::https::HttpsOptions;
use dmdelegate_net::{
    tls, DeviceMode, HttpsSender, HttpsTransport, LocalOptions, LocalPair, DELEGATION_PATH,
};

const ELSEWHERE: &str = "dms3.elsewhere.example";

/// Short deadlines, devices in process (these tests are about the binding, not SyncML),
/// and `https` as the binding's options on both servers.
fn options(https: HttpsOptions) -> LocalOptions {
    LocalOptions {
        timeouts: Some(Timeouts {
            response: Duration::from_secs(8),
            preparation: Duration::from_secs(8),
            confirm: Duration::from_secs(8),
            bootstrap_confirm: Duration::from_secs(8),
            client_session: Duration::from_secs(8),
        }),
        https,
        device: DeviceMode::InProcess,
        ..LocalOptions::default()
    }
}

/// The binding's defaults (batching on) with quick retries.
fn quick_https() -> HttpsOptions {
    HttpsOptions {
        attempts: 3,
        backoff: Duration::from_millis(20),
        connect_timeout: Duration::from_millis(500),
        request_timeout: Duration::from_secs(5),
        ..HttpsOptions::default()
    }
}

/// A raw client presenting DMS-1's certificate, reaching `pair`'s DMS-2.
fn raw_client(pair: &LocalPair) -> (reqwest::Client, String) {
    let peer = &pair.peers.0;
    let client = reqwest::Client::builder()
        .tls_backend_preconfigured(
            tls::client_config(&pair.identities.0, pair.pki.ca_pem()).unwrap(),
        )
        .resolve(Testbed::DMS2, peer.address.unwrap())
        .build()
        .unwrap();
    assert!(peer.endpoint.ends_with(DELEGATION_PATH));
    (client, peer.endpoint.clone())
}

/// The golden Method 1 NOTIF, as session `session` from `sender` to `recipient`.
fn notif(session: &str, sender: &str, recipient: &str) -> Message {
    let doc = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../vectors/valid/notif-method1-partial.xml"
    ))
    .unwrap();
    let mut m = Message::from_xml(doc.as_bytes()).unwrap();
    m.header.session_id = session.to_string();
    m.header.sender = sender.to_string();
    m.header.recipient = recipient.to_string();
    if let dmdelegate::Body::Notif(n) = &mut m.body {
        n.dm_server_id = sender.to_string();
    }
    m
}

/// A NOTIF DMS-2 takes from DMS-1.
fn good_notif(session: &str) -> String {
    notif(session, Testbed::DMS1, Testbed::DMS2).to_xml()
}

fn batch_of<S: AsRef<[u8]>>(documents: &[S]) -> Vec<u8> {
    let mut writer = BatchWriter::new();
    for d in documents {
        writer.push_document(d.as_ref());
    }
    writer.finish()
}

async fn post(
    client: &reqwest::Client,
    url: &str,
    media_type: &str,
    body: Vec<u8>,
) -> reqwest::Response {
    client
        .post(url)
        .header(reqwest::header::CONTENT_TYPE, media_type)
        .body(body)
        .send()
        .await
        .unwrap()
}

/// The statuses of a batch answer, after checking it is one (200, batch media type).
async fn statuses_of(response: reqwest::Response) -> Vec<EntryStatus> {
    assert_eq!(response.status(), 200);
    let media = response
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    assert_eq!(media, BATCH_MEDIA_TYPE);
    let body = response.bytes().await.unwrap();
    batch::decode_batch_result(&body).unwrap()
}

/// The ids of the sessions `server` keeps.
async fn session_ids(server: &DelegationServer) -> Vec<String> {
    let mut ids: Vec<String> = server
        .sessions()
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.session_id)
        .collect();
    ids.sort();
    ids
}

/// Waits (at most 5 s) until `server` keeps a session for each of `ids`; the sessions
/// it keeps then. The engine takes accepted messages after the HTTP answer.
async fn wait_for_sessions(server: &DelegationServer, ids: &[String]) -> Vec<String> {
    for _ in 0..500 {
        let have = session_ids(server).await;
        if ids.iter().all(|id| have.contains(id)) {
            return have;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    session_ids(server).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_is_answered_entry_by_entry_in_order_and_only_accepted_entries_reach_the_engine() {
    let pair = LocalPair::start(options(quick_https())).await.unwrap();
    let (client, url) = raw_client(&pair);
    let entries = [
        // Taken: 202.
        good_notif("batch-good"),
        // Namespaced and versioned, but no Header or body: undecodable, 400.
        "<Delegation xmlns=\"urn:dmdelegate:params:xml:ns:delegation-1\" version=\"1.0\"/>"
            .to_string(),
        // Decodes, but is for another server: 421.
        notif("batch-misdirected", Testbed::DMS1, ELSEWHERE).to_xml(),
        // For DMS-2, but claims a sender other than the one the TLS client certificate
        // proved (DMS-1): 403. `check_addressing` checks the recipient first, so this
        // entry must name DMS-2 to get 403 rather than 421.
        notif("batch-impostor", ELSEWHERE, Testbed::DMS2).to_xml(),
    ];
    let statuses =
        statuses_of(post(&client, &url, BATCH_MEDIA_TYPE, batch_of(&entries)).await).await;
    let codes: Vec<u16> = statuses.iter().map(|s| s.status).collect();
    assert_eq!(codes, [202, 400, 421, 403], "{statuses:?}");
    assert_eq!(statuses[0].detail, "", "an accepted entry carries no text");
    assert!(
        statuses[1].detail.contains("Delegation/Header"),
        "{:?}",
        statuses[1]
    );
    assert!(statuses[2].detail.contains(ELSEWHERE), "{:?}", statuses[2]);
    assert!(
        statuses[3].detail.contains(ELSEWHERE) && statuses[3].detail.contains(Testbed::DMS1),
        "{:?}",
        statuses[3]
    );

    // The accepted entry became a session on DMS-2; the refused ones did not.
    let have = wait_for_sessions(&pair.testbed.dms2, &["batch-good".to_string()]).await;
    assert_eq!(have, ["batch-good"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_that_is_not_one_as_a_whole_is_refused_with_400_and_none_of_its_entries_is_taken() {
    // A body cap well above the crowded batch below, so that it reaches the batch decoder
    // (and gets its 400) instead of being cut off with 413.
    let https = HttpsOptions {
        max_body_bytes: 4 * 1024 * 1024,
        ..quick_https()
    };
    let pair = LocalPair::start(options(https)).await.unwrap();
    let (client, url) = raw_client(&pair);
    let one = batch_of(&[good_notif("whole-1")]);
    let one = String::from_utf8(one).unwrap();
    let crowd: Vec<String> = (0..=MAX_BATCH_ENTRIES)
        .map(|i| good_notif(&format!("crowd-{i}")))
        .collect();
    let bad: Vec<(&str, Vec<u8>)> = vec![
        ("not XML", b"this is not XML at all".to_vec()),
        (
            "unclosed",
            one.replace("</DelegationBatch>", "").into_bytes(),
        ),
        (
            "wrong root",
            one.replace("DelegationBatch", "DelegationBundle")
                .into_bytes(),
        ),
        (
            "a lone message under the batch media type",
            good_notif("whole-2").into_bytes(),
        ),
        (
            "wrong namespace",
            one.replacen("delegation-batch-1", "delegation-batch-9", 1)
                .into_bytes(),
        ),
        (
            "wrong version",
            one.replacen("version=\"1.0\">", "version=\"2.0\">", 1)
                .into_bytes(),
        ),
        (
            "no version",
            one.replacen(" version=\"1.0\">", ">", 1).into_bytes(),
        ),
        ("zero entries", BatchWriter::new().finish()),
        ("more than MAX_BATCH_ENTRIES entries", batch_of(&crowd)),
    ];
    for (what, body) in bad {
        let response = post(&client, &url, BATCH_MEDIA_TYPE, body).await;
        let status = response.status();
        let text = response.text().await.unwrap();
        assert_eq!(status, 400, "{what}: {text}");
        if what.starts_with("more than") {
            assert!(
                text.contains(&MAX_BATCH_ENTRIES.to_string()),
                "{what}: {text}"
            );
        }
    }

    // A good batch after them: once its session exists, the engine has had time to take
    // anything the refused batches might have queued, and there is nothing else.
    let sentinel = batch_of(&[good_notif("whole-sentinel")]);
    let statuses = statuses_of(post(&client, &url, BATCH_MEDIA_TYPE, sentinel).await).await;
    assert_eq!(statuses, [EntryStatus::accepted()]);
    let have = wait_for_sessions(&pair.testbed.dms2, &["whole-sentinel".to_string()]).await;
    assert_eq!(have, ["whole-sentinel"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_of_exactly_max_batch_entries_is_answered_in_full() {
    let pair = LocalPair::start(options(HttpsOptions {
        max_body_bytes: 4 * 1024 * 1024,
        ..quick_https()
    }))
    .await
    .unwrap();
    let (client, url) = raw_client(&pair);
    // Misdirected entries: each is answered (421), none starts a session.
    let entries: Vec<String> = (0..MAX_BATCH_ENTRIES)
        .map(|i| notif(&format!("full-{i}"), Testbed::DMS1, ELSEWHERE).to_xml())
        .collect();
    let statuses =
        statuses_of(post(&client, &url, BATCH_MEDIA_TYPE, batch_of(&entries)).await).await;
    assert_eq!(statuses.len(), MAX_BATCH_ENTRIES);
    assert!(statuses.iter().all(|s| s.status == 421), "{statuses:?}");
    assert!(session_ids(&pair.testbed.dms2).await.is_empty());
}

/// `n` NOTIFs from DMS-1 to DMS-2, of sessions `{prefix}-0` ...
fn notifs(prefix: &str, n: usize) -> Vec<Message> {
    (0..n)
        .map(|i| notif(&format!("{prefix}-{i}"), Testbed::DMS1, Testbed::DMS2))
        .collect()
}

/// A batching sender to `pair`'s DMS-2 with DMS-1's identity, one request at a time.
fn sender_to_dms2(pair: &LocalPair, options: HttpsOptions) -> Arc<HttpsTransport> {
    HttpsTransport::new(
        &pair.identities.0,
        pair.pki.ca_pem(),
        std::slice::from_ref(&pair.peers.0),
        HttpsOptions {
            max_requests_per_peer: 1,
            ..options
        },
    )
    .unwrap()
}

/// Waits (at most 5 s) until `transport` has delivered or given up on `n` messages.
async fn wait_delivered(transport: &HttpsTransport, n: u64) {
    for _ in 0..500 {
        let stats = transport.stats();
        if stats.delivered + stats.failed >= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

// A current-thread runtime: the messages sent in one go are all queued before the
// sender's batching task first runs, so they do leave together (in a multi-threaded
// runtime they almost always do too, but the assertions on the fallback need a batch).
#[tokio::test(flavor = "current_thread")]
async fn a_receiver_with_batching_off_answers_415_and_a_batching_sender_falls_back_to_one_message_per_request(
) {
    // Both servers of the pair have batching off: DMS-2's endpoint refuses batches.
    let pair = LocalPair::start(options(HttpsOptions {
        max_batch_messages: 1,
        ..quick_https()
    }))
    .await
    .unwrap();
    let (client, url) = raw_client(&pair);
    let response = post(
        &client,
        &url,
        BATCH_MEDIA_TYPE,
        batch_of(&[good_notif("raw-batch")]),
    )
    .await;
    assert_eq!(response.status(), 415);
    assert!(response.text().await.unwrap().contains(MEDIA_TYPE));
    // A message of its own is still taken.
    let response = post(
        &client,
        &url,
        MEDIA_TYPE,
        good_notif("raw-single").into_bytes(),
    )
    .await;
    assert_eq!(response.status(), 202);

    // A sender of DMS-1's with batching on and one request at a time.
    let transport = sender_to_dms2(
        &pair,
        HttpsOptions {
            max_batch_messages: 64,
            ..quick_https()
        },
    );
    let sender = HttpsSender(transport.clone());
    const N: usize = 8;
    let first = notifs("fallback-a", N);
    for m in &first {
        sender.send(m).await.unwrap();
    }
    wait_delivered(&transport, N as u64).await;
    let stats = transport.stats();
    assert_eq!((stats.delivered, stats.failed), (N as u64, 0), "{stats:?}");
    // One batch was tried and refused with 415; then every message went alone, in the
    // same delivery attempt (the fallback is not a retry).
    assert_eq!(stats.batches, 1, "{stats:?}");
    assert_eq!(stats.requests, N as u64 + 1, "{stats:?}");
    assert_eq!(stats.attempts, N as u64, "{stats:?}");
    assert!(
        transport.deliveries().iter().all(|d| d.outcome == Ok(1)),
        "{:?}",
        transport.deliveries()
    );

    // The refusal is remembered: more messages at once go one per request, no batch.
    let second = notifs("fallback-b", N);
    for m in &second {
        sender.send(m).await.unwrap();
    }
    wait_delivered(&transport, 2 * N as u64).await;
    let stats = transport.stats();
    assert_eq!(
        (stats.delivered, stats.failed),
        (2 * N as u64, 0),
        "{stats:?}"
    );
    assert_eq!(stats.batches, 1, "{stats:?}");
    assert_eq!(stats.requests, 2 * N as u64 + 1, "{stats:?}");

    // DMS-2 took every one of them.
    let ids: Vec<String> = first
        .iter()
        .chain(&second)
        .map(|m| m.header.session_id.clone())
        .collect();
    let have = wait_for_sessions(&pair.testbed.dms2, &ids).await;
    for id in &ids {
        assert!(have.contains(id), "DMS-2 never got {id}: {have:?}");
    }
}

// Same reasoning as above for the current-thread runtime.
#[tokio::test(flavor = "current_thread")]
async fn messages_sent_while_the_only_request_is_busy_leave_together_in_a_batch_and_are_all_taken()
{
    let pair = LocalPair::start(options(quick_https())).await.unwrap();
    let transport = sender_to_dms2(&pair, quick_https());
    let sender = HttpsSender(transport.clone());
    const N: usize = 16;
    let messages = notifs("together", N);
    for m in &messages {
        sender.send(m).await.unwrap();
    }
    wait_delivered(&transport, N as u64).await;
    let stats = transport.stats();
    assert_eq!((stats.delivered, stats.failed), (N as u64, 0), "{stats:?}");
    assert!(stats.batches >= 1, "{stats:?}");
    assert!(stats.requests < N as u64, "{stats:?}");
    assert_eq!(stats.attempts, N as u64, "no retries: {stats:?}");
    let ids: Vec<String> = messages
        .iter()
        .map(|m| m.header.session_id.clone())
        .collect();
    let have = wait_for_sessions(&pair.testbed.dms2, &ids).await;
    for id in &ids {
        assert!(have.contains(id), "DMS-2 never got {id}: {have:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_concurrent_delegations_over_one_request_per_peer_all_complete_in_fewer_requests_than_messages(
) {
    const DELEGATIONS: usize = 200;
    // Method 1: NOTIF, ACK, START, PREPARED/RES, CONFIRM (see network.rs).
    const MESSAGES_EACH: u64 = 5;
    let pair = LocalPair::start(options(HttpsOptions {
        max_requests_per_peer: 1,
        ..quick_https()
    }))
    .await
    .unwrap();
    let tb = &pair.testbed;
    // One device per delegation: a device is delegated by one session at a time.
    let dms1_account = DmAcc::simple(
        Testbed::DMS1,
        "https://dms1.operator.example/dm",
        "client-secret-1",
        "server-secret-1",
    );
    let devices: Vec<Arc<SimDevice>> = (0..DELEGATIONS)
        .map(|i| {
            let d = Arc::new(SimDevice::new(DeviceInfo {
                device_id: format!("IMEI:{i:015}"),
                manufacturer: "Acme".into(),
                model: "Batch".into(),
            }));
            d.set_logging(false);
            provision_sample_tree(&d, &dms1_account);
            tb.host1.add_device(d.clone());
            tb.host2.add_device(d.clone());
            d
        })
        .collect();

    let mut starts = tokio::task::JoinSet::new();
    for (i, d) in devices.iter().enumerate() {
        let server = tb.dms1.clone();
        let request = DelegationRequest {
            session_id: Some(format!("many-{i}")),
            peer: Testbed::DMS2.into(),
            method: Method::DelegatingInitiates,
            delegation_type: DelegationType::Partial,
            info: DelegationInfo {
                device: d.info(),
                subtrees: Testbed::subtrees(DelegationType::Partial),
            },
            expires: None,
        };
        starts.spawn(async move { server.start_delegation(request).await });
    }
    let mut ids = Vec::with_capacity(DELEGATIONS);
    while let Some(started) = starts.join_next().await {
        ids.push(started.unwrap().unwrap());
    }
    assert_eq!(ids.len(), DELEGATIONS);

    for id in &ids {
        let (one, two) = tb.finish(id).await.unwrap();
        assert_eq!(
            (one.state, two.state),
            (State::Completed, State::Completed),
            "{id}: {:?} / {:?}",
            one.reason,
            two.reason
        );
    }
    for (i, d) in devices.iter().enumerate() {
        assert_eq!(d.accounts_of(Testbed::DMS2).len(), 1, "device {i}");
    }

    // Both sides have ended; the answer to the last request may still be on its way.
    let total = || {
        let (a, b) = (pair.transports.0.stats(), pair.transports.1.stats());
        (
            a.delivered + b.delivered,
            a.failed + b.failed,
            a.requests + b.requests,
            a.batches + b.batches,
        )
    };
    for _ in 0..500 {
        if total().0 >= MESSAGES_EACH * DELEGATIONS as u64 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (delivered, failed, requests, batches) = total();
    let stats = (pair.transports.0.stats(), pair.transports.1.stats());
    assert_eq!(delivered, MESSAGES_EACH * DELEGATIONS as u64, "{stats:?}");
    assert_eq!(failed, 0, "{stats:?}");
    assert!(batches > 0, "{stats:?}");
    assert!(requests < delivered, "{stats:?}");
    eprintln!("{delivered} messages in {requests} requests ({batches} batches)");
}

// A receiver refuses a batch of more than MAX_BATCH_ENTRIES as a whole, so the sender never
// makes one, whatever `max_batch_messages` allows (before the cap, all 300 failed with 400).
#[tokio::test(flavor = "current_thread")]
async fn a_sender_allowed_more_than_max_batch_entries_per_request_still_delivers_every_message() {
    let pair = LocalPair::start(options(HttpsOptions {
        max_body_bytes: 4 * 1024 * 1024,
        ..quick_https()
    }))
    .await
    .unwrap();
    let transport = sender_to_dms2(
        &pair,
        HttpsOptions {
            max_batch_messages: 1000,
            max_batch_bytes: 4 * 1024 * 1024,
            ..quick_https()
        },
    );
    let sender = HttpsSender(transport.clone());
    const N: usize = MAX_BATCH_ENTRIES + 44;
    for m in &notifs("over-limit", N) {
        sender.send(m).await.unwrap();
    }
    wait_delivered(&transport, N as u64).await;
    let stats = transport.stats();
    assert_eq!((stats.delivered, stats.failed), (N as u64, 0), "{stats:?}");
    assert!(stats.batches >= 2, "{stats:?}");
}

// A batch answered 413 (the peer's body cap is below this sender's `max_batch_bytes`) was
// refused as a whole, so nothing of it was taken: its messages go again one by one, and
// the peer gets batches half that size from then on.
#[tokio::test(flavor = "current_thread")]
async fn a_batch_too_large_for_the_peer_is_sent_again_in_smaller_requests() {
    // DMS-2 takes bodies up to 8 KiB: one NOTIF (about 1 KiB) fits, 16 in a batch do not.
    let pair = LocalPair::start(options(HttpsOptions {
        max_body_bytes: 8 * 1024,
        ..quick_https()
    }))
    .await
    .unwrap();
    let transport = sender_to_dms2(&pair, quick_https());
    let sender = HttpsSender(transport.clone());
    const N: usize = 16;
    for m in &notifs("too-large", N) {
        sender.send(m).await.unwrap();
    }
    wait_delivered(&transport, N as u64).await;
    let first = transport.stats();
    assert_eq!((first.delivered, first.failed), (N as u64, 0), "{first:?}");

    // The next messages leave in batches that fit: more than one request, fewer than one
    // per message, none refused.
    for m in &notifs("fits", N) {
        sender.send(m).await.unwrap();
    }
    wait_delivered(&transport, 2 * N as u64).await;
    let second = transport.stats();
    assert_eq!(
        (second.delivered, second.failed),
        (2 * N as u64, 0),
        "{second:?}"
    );
    let requests = second.requests - first.requests;
    assert!(
        (2..N as u64).contains(&requests),
        "{requests} requests: {second:?}"
    );
    assert!(second.batches > first.batches, "{second:?}");
}

// An entry refused inside a batch (here 403: it claims a sender the connection did not
// authenticate) fails only that message, after one attempt: a refusal is not retried, and
// the stats count the attempt it took, not the attempts it was allowed.
#[tokio::test(flavor = "current_thread")]
async fn an_entry_refused_inside_a_batch_fails_only_its_message_after_one_attempt() {
    let pair = LocalPair::start(options(quick_https())).await.unwrap();
    let transport = sender_to_dms2(&pair, quick_https());
    let sender = HttpsSender(transport.clone());
    let mut messages = notifs("refused-neighbour", 4);
    messages.insert(
        2,
        notif("impostor", "dms3.elsewhere.example", Testbed::DMS2),
    );
    for m in &messages {
        sender.send(m).await.unwrap();
    }
    wait_delivered(&transport, messages.len() as u64).await;
    let stats = transport.stats();
    assert_eq!((stats.delivered, stats.failed), (4, 1), "{stats:?}");
    assert_eq!(stats.attempts, 5, "{stats:?}");
    assert!(stats.batches >= 1, "{stats:?}");
    let refused: Vec<_> = transport
        .deliveries()
        .into_iter()
        .filter(|d| d.outcome.is_err())
        .collect();
    assert_eq!(refused.len(), 1);
    assert_eq!(refused[0].session_id, "impostor");
    let why = refused[0].outcome.as_ref().unwrap_err();
    assert!(why.contains("403"), "{why}");
}
