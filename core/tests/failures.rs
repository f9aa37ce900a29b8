//! Failure injected at every step of every method — FAILURE from either side, the device
//! refusing each operation, each timeout — must leave the device exactly as it was
//! (identical TNDS dump) and both servers rolled back. Also: nack, duplicates, out-of-order
//! and unexpected messages, impostors, temporary delegations.

mod common;

use std::time::Duration;

use common::{all_runs, assert_same_tree, settle};
use dmdelegate::message::Header;
use dmdelegate::sim::{DeviceFault, HostFaults, LinkFault, Testbed};
use dmdelegate::{
    Body, DelegationType, Error, EventKind, Message, MessageKind, Method, PolicyDecision, Reason,
    ReasonCode, Receipt, State,
};

const FIXED_ID: &str = "fixed-session-1";

async fn start(tb: &Testbed, method: Method, dtype: DelegationType) -> String {
    let mut req = tb.request(method, dtype);
    req.session_id = Some(FIXED_ID.into());
    tb.initiator(method)
        .start_delegation(req)
        .await
        .unwrap_or_else(|_| FIXED_ID.into())
}

/// Ends either side's session if it is still running, then checks the invariant.
async fn assert_rolled_back(tb: &Testbed, before: &str, label: &str) {
    settle(tb).await;
    assert_same_tree(&tb.device.dump(), before, label);
    for server in [&tb.dms1, &tb.dms2] {
        if let Ok(info) = server.session(FIXED_ID).await {
            assert!(
                matches!(info.state, State::RolledBack | State::Rejected),
                "{label}: {} ended {:?} ({:?})",
                server.server_id(),
                info.state,
                info.reason
            );
            assert_eq!(info.pending_operations, 0, "{label}: journal purged");
        }
    }
}

/// Both sides' final views, once every message in flight has landed.
async fn finish(tb: &Testbed) -> (dmdelegate::SessionInfo, dmdelegate::SessionInfo) {
    tb.finish(FIXED_ID).await.unwrap();
    settle(tb).await;
    (
        tb.dms1.session(FIXED_ID).await.unwrap(),
        tb.dms2.session(FIXED_ID).await.unwrap(),
    )
}

#[derive(Debug, Clone, Copy)]
enum Action {
    CancelByDms1,
    CancelByDms2,
    Timeout,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failure_or_timeout_at_every_step_restores_the_device() {
    let mut performed = 0;
    for (method, dtype) in all_runs() {
        for (step, kind) in method.message_flow().iter().copied().enumerate() {
            for action in [Action::CancelByDms1, Action::CancelByDms2, Action::Timeout] {
                let label =
                    format!("{method} {dtype}, stalled before {kind} (step {step}), {action:?}");
                let tb = Testbed::new();
                let before = tb.device.dump();
                tb.network.inject(kind, LinkFault::Drop);
                start(&tb, method, dtype).await;
                settle(&tb).await;
                let acted = match action {
                    Action::CancelByDms1 => tb.dms1.cancel(FIXED_ID).await.is_ok(),
                    Action::CancelByDms2 => tb.dms2.cancel(FIXED_ID).await.is_ok(),
                    Action::Timeout => {
                        tb.clock.advance(Duration::from_secs(24 * 3600));
                        let a = tb.dms1.expire_due().await.unwrap();
                        let b = tb.dms2.expire_due().await.unwrap();
                        a + b > 0
                    }
                };
                if !acted {
                    // That side had no running session at this step (not yet created, or
                    // already completed): nothing to inject there.
                    continue;
                }
                performed += 1;
                assert_rolled_back(&tb, &before, &label).await;
                let failures = tb
                    .network
                    .trace()
                    .iter()
                    .filter(|l| l.contains("DELEGATION_FAILURE"))
                    .count();
                assert!(failures >= 1, "{label}: the peer was told");
            }
        }
    }
    // 8 runs × 5–6 steps × 3 actions, minus the combinations with no running session.
    assert!(performed >= 90, "only {performed} injections performed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_device_refusing_any_operation_rolls_everything_back() {
    for (method, dtype) in all_runs() {
        // Count DMS-1's writes in a clean run.
        let clean = Testbed::new();
        clean.run(method, dtype).await.unwrap();
        let writes = clean
            .device
            .log()
            .iter()
            .filter(|l| l.starts_with(Testbed::DMS1) && !l.contains(": Get "))
            .count();
        assert!(writes >= 3, "{method} {dtype}: only {writes} writes");
        for i in 0..writes {
            for status in [425, 500] {
                let label = format!("{method} {dtype}: write #{} refused with {status}", i + 1);
                let tb = Testbed::new();
                let before = tb.device.dump();
                tb.device.inject_fault(DeviceFault {
                    matching: String::new(),
                    skip: i,
                    status,
                });
                start(&tb, method, dtype).await;
                let (one, two) = finish(&tb).await;
                assert_eq!(one.state, State::RolledBack, "{label}");
                assert_eq!(two.state, State::RolledBack, "{label}");
                assert_eq!(
                    one.reason.as_ref().map(|r| r.code),
                    Some(ReasonCode::ClientOperationFailed.code()),
                    "{label}"
                );
                assert_rolled_back(&tb, &before, &label).await;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_device_fails_the_delegation_cleanly() {
    for (method, dtype) in all_runs() {
        let tb = Testbed::new();
        let before = tb.device.dump();
        tb.device.set_reachable(false);
        start(&tb, method, dtype).await;
        let (one, _) = finish(&tb).await;
        assert_eq!(one.state, State::RolledBack);
        tb.device.set_reachable(true);
        assert_rolled_back(&tb, &before, &format!("{method} {dtype} unreachable")).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_callback_failures_fail_with_their_reason() {
    let cases = [
        (
            Method::DelegatingInitiates,
            HostFaults {
                open_session: true,
                ..Default::default()
            },
            ReasonCode::DmSessionFailed,
        ),
        (
            Method::DelegatedInitiates,
            HostFaults {
                open_session: true,
                ..Default::default()
            },
            ReasonCode::DmSessionFailed,
        ),
        (
            Method::DelegatingInitiatesBootstrap,
            HostFaults {
                bootstrap_url: true,
                ..Default::default()
            },
            ReasonCode::BootstrapUrlUnavailable,
        ),
        (
            Method::DelegatedInitiatesBootstrap,
            HostFaults {
                bootstrap_url: true,
                ..Default::default()
            },
            ReasonCode::BootstrapUrlUnavailable,
        ),
    ];
    for (method, faults, reason) in cases {
        for dtype in [DelegationType::Partial, DelegationType::Full] {
            let tb = Testbed::new();
            let before = tb.device.dump();
            tb.host2.set_faults(faults.clone());
            start(&tb, method, dtype).await;
            let (one, two) = finish(&tb).await;
            assert_eq!(
                one.reason.as_ref().map(|r| r.code),
                Some(reason.code()),
                "{method}"
            );
            assert_eq!(two.state, State::RolledBack);
            assert_rolled_back(&tb, &before, &format!("{method} {dtype} {reason}")).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nack_ends_both_sides_without_touching_the_device() {
    for method in Method::ALL {
        let tb = Testbed::new();
        let before = tb.device.dump();
        let responder_host = match method.initiator() {
            dmdelegate::Role::Delegating => &tb.host2,
            dmdelegate::Role::Delegated => &tb.host1,
        };
        responder_host.set_policy(PolicyDecision::Reject(Reason::new(
            ReasonCode::RejectedByPolicy,
            "not this device",
        )));
        start(&tb, method, DelegationType::Partial).await;
        let (one, two) = finish(&tb).await;
        assert_eq!(one.state, State::Rejected);
        assert_eq!(two.state, State::Rejected);
        assert_eq!(one.reason.unwrap().code, 101);
        assert_eq!(tb.device.dump(), before);
        assert!(
            tb.device.log().is_empty(),
            "{method}: the device was never touched"
        );
    }
    // DMS-2 without an account to offer answers nack 161.
    let tb = Testbed::new();
    tb.host2.set_faults(HostFaults {
        dm_account: true,
        ..Default::default()
    });
    start(&tb, Method::DelegatingInitiates, DelegationType::Partial).await;
    let (one, _) = finish(&tb).await;
    assert_eq!(one.state, State::Rejected);
    assert_eq!(
        one.reason.unwrap().code,
        ReasonCode::InvalidDmAccount.code()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicated_messages_are_processed_once() {
    for (method, dtype) in all_runs() {
        for kind in method.message_flow().iter().copied() {
            let tb = Testbed::new();
            tb.network.inject(kind, LinkFault::Duplicate);
            start(&tb, method, dtype).await;
            let (one, two) = finish(&tb).await;
            let label = format!("{method} {dtype} duplicated {kind}");
            assert_eq!(one.state, State::Completed, "{label}: {:?}", one.reason);
            assert_eq!(two.state, State::Completed, "{label}: {:?}", two.reason);
            assert!(
                !tb.network.trace().iter().any(|l| l.contains("FAILURE")),
                "{label}"
            );
        }
    }
}

fn forged(tb: &Testbed, seq: u32, body: Body) -> Message {
    Message {
        header: Header {
            session_id: FIXED_ID.into(),
            seq,
            sender: Testbed::DMS1.into(),
            recipient: Testbed::DMS2.into(),
            method: Method::DelegatingInitiates,
            timestamp: dmdelegate::Clock::now(&tb.clock),
        },
        body,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeated_message_is_reported_as_duplicate() {
    let tb = Testbed::new();
    tb.network.inject(MessageKind::Prepared, LinkFault::Drop);
    start(&tb, Method::DelegatingInitiates, DelegationType::Partial).await;
    // DMS-2 already has DMS-1's NOTIF (seq 1): a replay is a no-op.
    let notif_again = tb
        .dms2
        .receive(&forged(&tb, 1, Body::Confirm), Some(Testbed::DMS1))
        .await
        .unwrap();
    assert_eq!(notif_again, Receipt::Duplicate);
    assert_eq!(
        tb.dms2.session(FIXED_ID).await.unwrap().state,
        State::AwaitingPrepared
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_order_and_unexpected_messages_fail_with_invalid_state() {
    // Out of order: PREPARED with sequence 3 when 2 is next.
    let tb = Testbed::new();
    let before = tb.device.dump();
    tb.network.inject(MessageKind::Prepared, LinkFault::Drop);
    start(&tb, Method::DelegatingInitiates, DelegationType::Partial).await;
    let err = tb
        .dms2
        .receive(&forged(&tb, 3, Body::Prepared), Some(Testbed::DMS1))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::InvalidState(_)), "{err}");
    let (one, two) = finish(&tb).await;
    assert_eq!(two.reason.unwrap().code, ReasonCode::InvalidState.code());
    assert_eq!(one.state, State::RolledBack);
    assert_rolled_back(&tb, &before, "out of order").await;

    // In order but unexpected: CONFIRM while DMS-2 waits for PREPARED.
    let tb = Testbed::new();
    let before = tb.device.dump();
    tb.network.inject(MessageKind::Prepared, LinkFault::Drop);
    start(&tb, Method::DelegatingInitiates, DelegationType::Partial).await;
    let err = tb
        .dms2
        .receive(&forged(&tb, 2, Body::Confirm), Some(Testbed::DMS1))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::InvalidState(_)), "{err}");
    assert_rolled_back(&tb, &before, "unexpected CONFIRM").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn impostors_wrong_recipients_and_unknown_sessions_are_refused() {
    let tb = Testbed::new();
    tb.network.inject(MessageKind::Prepared, LinkFault::Drop);
    start(&tb, Method::DelegatingInitiates, DelegationType::Partial).await;
    let msg = forged(&tb, 2, Body::Prepared);

    let err = tb
        .dms2
        .receive(&msg, Some("mallory.example"))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Authentication(_)), "{err}");
    assert_eq!(err.reason(), ReasonCode::AuthenticationFailed);
    assert_eq!(
        tb.dms2.session(FIXED_ID).await.unwrap().state,
        State::AwaitingPrepared
    );

    let err = tb
        .dms1
        .receive(&msg, Some(Testbed::DMS1))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::WrongRecipient { .. }), "{err}");

    let mut unknown = msg.clone();
    unknown.header.session_id = "nobody-knows".into();
    let sent_before = tb.network.sent();
    let err = tb
        .dms2
        .receive(&unknown, Some(Testbed::DMS1))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::UnknownSession(_)), "{err}");
    assert_eq!(tb.network.sent(), sent_before + 1);
    let trace = tb.network.trace();
    assert!(trace.last().unwrap().contains("DELEGATION_FAILURE"));
    assert!(
        tb.dms2.session("nobody-knows").await.is_err(),
        "no session created"
    );

    // The real session still completes.
    let mut real = msg.clone();
    real.header.seq = 2;
    tb.dms2.receive(&real, Some(Testbed::DMS1)).await.unwrap();
    let (one, two) = finish(&tb).await;
    assert_eq!((one.state, two.state), (State::Completed, State::Completed));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_temporary_delegation_is_reverted_at_its_end() {
    for method in Method::ALL {
        let tb = Testbed::new();
        let before = tb.device.dump();
        let mut req = tb.request(method, DelegationType::Partial);
        req.session_id = Some(FIXED_ID.into());
        req.expires = Some(dmdelegate::Clock::now(&tb.clock).plus(Duration::from_secs(3600)));
        tb.initiator(method).start_delegation(req).await.unwrap();
        let (one, two) = finish(&tb).await;
        assert_eq!(
            (one.state, two.state),
            (State::Completed, State::Completed),
            "{method}"
        );
        assert!(tb.device.permits(
            Testbed::DMS2,
            dmdelegate::AclCommand::Replace,
            "./Vendor/Apps/Mail/Server"
        ));

        tb.clock.advance(Duration::from_secs(1800));
        assert_eq!(tb.dms1.expire_due().await.unwrap(), 0, "{method}: not yet");
        tb.clock.advance(Duration::from_secs(1801));
        assert_eq!(tb.dms1.expire_due().await.unwrap(), 1);
        assert_eq!(tb.dms2.expire_due().await.unwrap(), 1);
        assert_eq!(
            tb.dms1.session(FIXED_ID).await.unwrap().state,
            State::Expired
        );
        assert_eq!(
            tb.dms2.session(FIXED_ID).await.unwrap().state,
            State::Expired
        );
        assert_eq!(tb.device.dump(), before, "{method}: authority returned");
        assert!(tb
            .host1
            .events()
            .iter()
            .any(|e| e.kind == EventKind::Expired));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollback_that_cannot_finish_is_reported_not_hidden() {
    let tb = Testbed::new();
    let before = tb.device.dump();
    // Refuse the third write (an ACL change), then refuse the account's removal.
    tb.device.inject_fault(DeviceFault {
        matching: String::new(),
        skip: 2,
        status: 425,
    });
    tb.device.inject_fault(DeviceFault {
        matching: "Delete ./DMAcc/".into(),
        skip: 0,
        status: 500,
    });
    start(&tb, Method::DelegatingInitiates, DelegationType::Partial).await;
    let (one, two) = finish(&tb).await;
    assert_eq!(one.state, State::RollbackFailed);
    assert!(
        one.pending_operations > 0,
        "the journal is kept for an operator"
    );
    assert_eq!(two.state, State::RolledBack);
    let incomplete = tb
        .host1
        .events()
        .into_iter()
        .find_map(|e| match e.kind {
            EventKind::RollbackIncomplete { failed, .. } => Some(failed),
            _ => None,
        })
        .expect("RollbackIncomplete event");
    assert_eq!(incomplete.len(), 1);
    assert!(incomplete[0].contains("Delete ./DMAcc/"), "{incomplete:?}");

    // Once the device cooperates again, an operator finishes the rollback.
    let retried = tb.dms1.retry_rollback(FIXED_ID).await.unwrap();
    assert_eq!(retried.state, State::RolledBack);
    assert_eq!(retried.pending_operations, 0);
    assert_same_tree(&tb.device.dump(), &before, "after retry");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_device_is_delegated_by_one_session_at_a_time() {
    // DMS-1's NOTIF is lost: DMS-1 has a running session, DMS-2 none.
    let tb = Testbed::new();
    tb.network.inject(MessageKind::Notif, LinkFault::Drop);
    start(&tb, Method::DelegatingInitiates, DelegationType::Partial).await;
    let second = tb
        .dms1
        .start_delegation(tb.request(Method::DelegatingInitiates, DelegationType::Partial))
        .await
        .unwrap_err();
    assert_eq!(second.reason(), ReasonCode::DeviceBusy, "{second}");
    // DMS-2 asking for the same device meanwhile gets a nack 105 from DMS-1.
    let id = tb
        .dms2
        .start_delegation(tb.request(Method::DelegatedInitiates, DelegationType::Partial))
        .await
        .unwrap();
    let info = tb.dms2.session(&id).await.unwrap();
    assert_eq!(info.state, State::Rejected);
    assert_eq!(info.reason.unwrap().code, ReasonCode::DeviceBusy.code());
    assert!(tb.device.log().is_empty(), "the device was never touched");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expiry_in_the_past_is_refused() {
    let tb = Testbed::new();
    let mut req = tb.request(Method::DelegatingInitiates, DelegationType::Partial);
    req.expires = Some(dmdelegate::Clock::now(&tb.clock));
    let err = tb.dms1.start_delegation(req).await.unwrap_err();
    assert!(
        matches!(err, Error::InvalidArgument { ref field, .. } if field == "expires"),
        "{err}"
    );
}
