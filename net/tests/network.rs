//! The protocol over real sockets: HTTPS with mutual TLS on loopback.

use std::time::Duration;

use dmdelegate::sim::Testbed;
use dmdelegate::{DelegationType, Message, Method, State, Timeouts};
use dmdelegate_net::https::HttpsOptions;
use dmdelegate_net::{tls, LocalOptions, LocalPair, TestPki, DELEGATION_PATH};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn quick() -> LocalOptions {
    LocalOptions {
        timeouts: Some(Timeouts {
            response: Duration::from_secs(5),
            preparation: Duration::from_secs(5),
            confirm: Duration::from_secs(5),
            bootstrap_confirm: Duration::from_millis(600),
            client_session: Duration::from_secs(5),
        }),
        https: HttpsOptions {
            attempts: 3,
            backoff: Duration::from_millis(20),
            connect_timeout: Duration::from_millis(500),
            request_timeout: Duration::from_secs(5),
            ..HttpsOptions::default()
        },
        ..LocalOptions::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_method_completes_over_mutual_tls() {
    for method in Method::ALL {
        for dtype in [DelegationType::Partial, DelegationType::Full] {
            let pair = LocalPair::start(quick()).await.unwrap();
            let (one, two) = pair.testbed.run(method, dtype).await.unwrap();
            assert_eq!(
                (one.state, two.state),
                (State::Completed, State::Completed),
                "{method} {dtype}: {:?} {:?}",
                one.reason,
                two.reason
            );
            assert_eq!(pair.testbed.device.accounts_of(Testbed::DMS2).len(), 1);
            let expected = if method.uses_bootstrap() { 6 } else { 5 };
            let delivered = || -> usize {
                [&pair.transports.0, &pair.transports.1]
                    .iter()
                    .map(|t| t.deliveries().iter().filter(|d| d.outcome.is_ok()).count())
                    .sum()
            };
            // The last POST's response may still be on its way when both sides have ended.
            for _ in 0..100 {
                if delivered() >= expected {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            let delivered = delivered();
            assert_eq!(
                delivered, expected,
                "{method} {dtype}: every message went over HTTPS"
            );
        }
    }
}

/// A raw client presenting `identity`, trusting `ca`, reaching `pair`'s DMS-2.
fn raw_client(pair: &LocalPair, identity: &tls::Identity, ca: &str) -> (reqwest::Client, String) {
    let peer = &pair.peers.0;
    let client = reqwest::Client::builder()
        .tls_backend_preconfigured(tls::client_config(identity, ca).unwrap())
        .resolve(Testbed::DMS2, peer.address.unwrap())
        .build()
        .unwrap();
    (client, peer.endpoint.clone())
}

fn notif_from(sender: &str) -> String {
    let doc = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../vectors/valid/notif-method1-partial.xml"
    ))
    .unwrap();
    let mut m = Message::from_xml(doc.as_bytes()).unwrap();
    m.header.sender = sender.to_string();
    m.header.recipient = Testbed::DMS2.to_string();
    if let dmdelegate::Body::Notif(n) = &mut m.body {
        n.dm_server_id = sender.to_string();
    }
    m.to_xml()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_from_an_untrusted_ca_is_refused() {
    let pair = LocalPair::start(quick()).await.unwrap();
    let rogue = TestPki::new("rogue CA").unwrap();
    // Same ServerID, wrong issuer.
    let impostor = rogue.issue(Testbed::DMS1, &[]).unwrap();
    let mut trust = pair.pki.ca_pem().to_string();
    trust.push_str(rogue.ca_pem());
    let (client, url) = raw_client(&pair, &impostor, &trust);
    let sent = client
        .post(&url)
        .header("content-type", dmdelegate::message::MEDIA_TYPE)
        .body(notif_from(Testbed::DMS1))
        .send()
        .await;
    assert!(sent.is_err(), "the handshake must fail: {sent:?}");
    assert!(pair.testbed.dms2.sessions().await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_cannot_send_as_another_server() {
    let pair = LocalPair::start(quick()).await.unwrap();
    // DMS-1's own certificate, claiming to be someone else.
    let (client, url) = raw_client(&pair, &pair.identities.0, pair.pki.ca_pem());
    let response = client
        .post(&url)
        .header("content-type", dmdelegate::message::MEDIA_TYPE)
        .body(notif_from("dms3.elsewhere.example"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 403);
    let body = response.bytes().await.unwrap();
    let failure = Message::from_xml(&body).unwrap();
    match failure.body {
        dmdelegate::Body::Failure(r) => assert_eq!(r.code, 110),
        other => panic!("expected FAILURE, got {other:?}"),
    }
    assert!(pair.testbed.dms2.sessions().await.unwrap().is_empty());

    // A trusted certificate whose name is not a configured peer gets nothing either.
    let stranger = pair.pki.issue("dms3.elsewhere.example", &[]).unwrap();
    let (client, url) = raw_client(&pair, &stranger, pair.pki.ca_pem());
    let response = client
        .post(&url)
        .header("content-type", dmdelegate::message::MEDIA_TYPE)
        .body(notif_from("dms3.elsewhere.example"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 403);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_http_is_refused() {
    let pair = LocalPair::start(quick()).await.unwrap();
    let mut tcp = tokio::net::TcpStream::connect(pair.endpoint2.local_addr())
        .await
        .unwrap();
    let body = notif_from(Testbed::DMS1);
    let request = format!(
        "POST {DELEGATION_PATH} HTTP/1.1\r\nHost: x\r\nContent-Type: {}\r\nContent-Length: {}\r\n\r\n{body}",
        dmdelegate::message::MEDIA_TYPE,
        body.len()
    );
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut answer)).await;
    assert!(
        !answer.starts_with(b"HTTP/"),
        "plain HTTP got an HTTP answer: {:?}",
        String::from_utf8_lossy(&answer)
    );
    assert!(pair.testbed.dms2.sessions().await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_that_never_comes_back_times_out_and_rolls_back() {
    let pair = LocalPair::start(quick()).await.unwrap();
    let tb = &pair.testbed;
    let before = tb.device.dump();
    // DMS-2 hands out a Bootstrap Server URL the device cannot use: it never calls DMS-2.
    tb.host2
        .set_bootstrap_url("https://nowhere.enterprise.example/bs");
    let _w1 = tb.dms1.spawn_deadline_watcher(Duration::from_millis(50));
    let _w2 = tb.dms2.spawn_deadline_watcher(Duration::from_millis(50));
    let (one, two) = tb
        .run(Method::DelegatingInitiatesBootstrap, DelegationType::Full)
        .await
        .unwrap();
    assert_eq!(one.state, State::RolledBack);
    assert_eq!(one.reason.unwrap().code, 141, "confirmation timed out");
    assert_eq!(two.state, State::RolledBack);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(tb.device.dump(), before, "the device is as it was");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_peer_fails_the_delegation_after_retries() {
    let pair = LocalPair::start(quick()).await.unwrap();
    pair.endpoint2.shutdown();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let tb = &pair.testbed;
    let id = tb
        .dms1
        .start_delegation(tb.request(Method::DelegatingInitiates, DelegationType::Partial))
        .await
        .unwrap();
    let info = tb
        .dms1
        .wait_until_terminal(&id, Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(info.state, State::RolledBack);
    assert_eq!(info.reason.unwrap().code, 170);
    let tries = pair.transports.0.deliveries();
    assert_eq!(tries.len(), 1);
    assert!(
        tries[0]
            .outcome
            .as_ref()
            .unwrap_err()
            .contains("3 attempts"),
        "{tries:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_bodies_and_wrong_media_types_are_refused() {
    let pair = LocalPair::start(quick()).await.unwrap();
    let (client, url) = raw_client(&pair, &pair.identities.0, pair.pki.ca_pem());
    let huge = vec![b' '; HttpsOptions::default().max_body_bytes + 1];
    let response = client
        .post(&url)
        .header("content-type", dmdelegate::message::MEDIA_TYPE)
        .body(huge)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 413);
    let response = client
        .post(&url)
        .header("content-type", "text/xml")
        .body(notif_from(Testbed::DMS1))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 415);
    let response = client
        .post(&url)
        .header("content-type", dmdelegate::message::MEDIA_TYPE)
        .body("<Delegation/>")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    assert!(pair.testbed.dms2.sessions().await.unwrap().is_empty());
}
