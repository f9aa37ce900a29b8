//! The HTTPS binding's settings are checked before a server uses them: every binding
//! (C, Python, Kotlin, Swift) passes its settings through `HttpsOptions::validate`, so a
//! bad value is refused with the field named, the same way in each language.

use std::sync::Arc;
use std::time::Duration;

use dmdelegate::sim::SimHost;
use dmdelegate::Error;
use dmdelegate_net::{HttpsOptions, Server, ServerOptions, TestPki, Wire, MIN_BODY_BYTES};

#[test]
fn the_defaults_are_valid() {
    assert_eq!(HttpsOptions::default().validate(), Ok(()));
}

#[test]
fn every_count_below_one_and_every_zero_duration_is_refused_by_name() {
    type Breaks = fn(&mut HttpsOptions);
    let cases: [(&str, Breaks); 10] = [
        ("max_body_bytes", |o| o.max_body_bytes = MIN_BODY_BYTES - 1),
        ("connect_timeout", |o| o.connect_timeout = Duration::ZERO),
        ("request_timeout", |o| o.request_timeout = Duration::ZERO),
        ("attempts", |o| o.attempts = 0),
        ("backoff", |o| o.backoff = Duration::ZERO),
        ("handshake_timeout", |o| {
            o.handshake_timeout = Duration::ZERO
        }),
        ("max_requests_per_peer", |o| o.max_requests_per_peer = 0),
        ("max_unbatched_requests_per_peer", |o| {
            o.max_unbatched_requests_per_peer = 0
        }),
        ("max_batch_messages", |o| o.max_batch_messages = 0),
        ("max_batch_bytes", |o| o.max_batch_bytes = 10),
    ];
    for (field, breaks) in cases {
        let mut options = HttpsOptions::default();
        breaks(&mut options);
        let e = options.validate().expect_err(field);
        assert_eq!(e.field, field);
        assert!(e.to_string().starts_with(field), "{e}");
    }
}

#[test]
fn batching_off_and_the_smallest_caps_are_valid() {
    let options = HttpsOptions {
        max_batch_messages: 1,
        max_requests_per_peer: 1,
        max_body_bytes: MIN_BODY_BYTES,
        max_batch_bytes: MIN_BODY_BYTES,
        ..HttpsOptions::default()
    };
    assert_eq!(options.validate(), Ok(()));
}

#[tokio::test]
async fn a_server_with_a_bad_setting_does_not_start_and_says_which() {
    let pki = TestPki::new("https options test CA").unwrap();
    let identity = pki.issue("dms1.options.test", &[]).unwrap();
    let options = ServerOptions::new(
        "dms1.options.test",
        Wire::Https {
            listen: "127.0.0.1:0".parse().unwrap(),
            identity,
            trust_pem: pki.ca_pem().to_string(),
            peers: Vec::new(),
            options: HttpsOptions {
                max_body_bytes: 100,
                ..HttpsOptions::default()
            },
        },
    );
    let host = Arc::new(SimHost::new("dms1.options.test"));
    match Server::start(options, host).await {
        Err(Error::InvalidArgument { field, reason }) => {
            assert_eq!(field, "https.max_body_bytes");
            assert!(reason.contains("at least 1024"), "{reason}");
        }
        Err(other) => panic!("wrong error: {other}"),
        Ok(_) => panic!("a server started with a 100-byte body cap"),
    }
}
