//! All four methods × Full/Partial, end to end in process: afterwards DMS-2 holds exactly
//! the granted rights, can act inside the delegated subtrees and not outside; Full removes
//! DMS-1's account, Partial leaves DMS-1's rights as they were.

mod common;

use common::{all_runs, rights};
use dmdelegate::sim::Testbed;
use dmdelegate::tree::uri_within;
use dmdelegate::{AclCommand, DelegationType, EventKind, Method, Role, State};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_method_and_type_completes_with_exactly_the_granted_rights() {
    for (method, dtype) in all_runs() {
        let tb = Testbed::new();
        let before = rights(&tb);
        assert!(tb.device.accounts_of(Testbed::DMS2).is_empty());

        let (one, two) = tb.run(method, dtype).await.expect("delegation runs");
        let label = format!("{method} {dtype}");
        assert_eq!(
            one.state,
            State::Completed,
            "{label}: DMS-1 {:?}",
            one.reason
        );
        assert_eq!(
            two.state,
            State::Completed,
            "{label}: DMS-2 {:?}",
            two.reason
        );
        assert_eq!(one.role, Role::Delegating);
        assert_eq!(two.role, Role::Delegated);
        assert_eq!(one.pending_operations, 0, "{label}: journal purged");

        let after = rights(&tb);
        let subtrees = Testbed::subtrees(dtype);
        for (uri, (d1_before, d2_before)) in &before {
            let Some((d1_after, d2_after)) = after.get(uri) else {
                // Only DMS-1's own account may disappear (Full).
                assert_eq!(dtype, DelegationType::Full, "{label}: {uri} vanished");
                assert!(uri.starts_with("./DMAcc/"), "{label}: {uri} vanished");
                continue;
            };
            match dtype {
                DelegationType::Partial => {
                    assert_eq!(d1_after, d1_before, "{label}: DMS-1 rights at {uri}");
                    let inside = subtrees.iter().find(|s| uri_within(uri, &s.uri));
                    let expected: Vec<AclCommand> = match inside {
                        Some(s) => AclCommand::ALL
                            .into_iter()
                            .filter(|c| s.rights.contains(c) || d2_before.contains(c))
                            .collect(),
                        None => d2_before.clone(),
                    };
                    assert_eq!(d2_after, &expected, "{label}: DMS-2 rights at {uri}");
                }
                DelegationType::Full => {
                    // DMS-2 holds what DMS-1 held; DMS-1 keeps only what everyone has.
                    let expected: Vec<AclCommand> = AclCommand::ALL
                        .into_iter()
                        .filter(|c| d1_before.contains(c) || d2_before.contains(c))
                        .collect();
                    assert_eq!(d2_after, &expected, "{label}: DMS-2 rights at {uri}");
                    assert_eq!(d1_after, d2_before, "{label}: DMS-1 rights at {uri}");
                }
            }
        }

        // DMS-2 acts inside the delegation, and not outside it.
        tb.device
            .replace_value(
                Testbed::DMS2,
                "./Vendor/Apps/Mail/Server",
                "imap.enterprise.example",
            )
            .unwrap_or_else(|e| panic!("{label}: DMS-2 inside: {e}"));
        let outside = tb
            .device
            .replace_value(Testbed::DMS2, "./Vendor/Settings/Volume", "7");
        match dtype {
            DelegationType::Partial => {
                assert_eq!(outside.unwrap_err().status, 425, "{label}: outside refused")
            }
            DelegationType::Full => outside.expect("Full: everything is delegated"),
        }

        // Accounts: DMS-2 has one; Full removed DMS-1's, Partial kept it.
        assert_eq!(tb.device.accounts_of(Testbed::DMS2).len(), 1, "{label}");
        let dms1_accounts = tb.device.accounts_of(Testbed::DMS1).len();
        match dtype {
            DelegationType::Full => assert_eq!(dms1_accounts, 0, "{label}"),
            DelegationType::Partial => assert_eq!(dms1_accounts, 1, "{label}"),
        }
        if dtype == DelegationType::Full {
            let e = tb
                .device
                .replace_value(Testbed::DMS1, "./Network/APN", "x")
                .unwrap_err();
            assert_eq!(e.status, 425, "{label}: DMS-1 has no authority left");
        }

        // The markers and triggers are gone; DMS-2 really had its session.
        assert_eq!(tb.device.value("./DMDelegate"), None);
        assert!(
            tb.device.acl_of("./DMDelegate").is_none(),
            "{label}: trigger removed"
        );
        assert!(
            tb.device.may_open_session_on_its_own(Testbed::DMS2),
            "{label}: marker removed"
        );
        assert_eq!(
            tb.device.sessions(),
            vec![Testbed::DMS2.to_string()],
            "{label}"
        );
        if method.uses_bootstrap() {
            assert_eq!(tb.bootstrap.served().len(), 1, "{label}: one bootstrap");
        } else {
            assert!(tb.bootstrap.served().is_empty(), "{label}: no bootstrap");
        }

        // Both hosts were told.
        for host in [&tb.host1, &tb.host2] {
            let events = host.events();
            assert_eq!(
                events
                    .iter()
                    .filter(|e| e.kind == EventKind::Completed)
                    .count(),
                1,
                "{label}: one Completed event"
            );
            assert!(events
                .iter()
                .all(|e| !matches!(e.kind, EventKind::Failed { .. })));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn method_1_sends_the_specified_messages_in_order() {
    let tb = Testbed::new();
    tb.run(Method::DelegatingInitiates, DelegationType::Partial)
        .await
        .unwrap();
    let kinds: Vec<String> = tb
        .network
        .trace()
        .iter()
        .map(|l| {
            l.split(": ")
                .nth(1)
                .unwrap()
                .split(' ')
                .next()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(
        kinds,
        [
            "DELEGATION_NOTIF",
            "DELEGATION_RES",
            "DELEGATION_START",
            "DELEGATION_PREPARED",
            "DELEGATION_CONFIRM"
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn method_1_installs_the_account_marked_no_automatic_session_until_confirm() {
    let tb = Testbed::new();
    // Stop after preparation by dropping PREPARED: the client is prepared, not yet used.
    tb.network.inject(
        dmdelegate::MessageKind::Prepared,
        dmdelegate::sim::LinkFault::Drop,
    );
    let id = tb
        .dms1
        .start_delegation(tb.request(Method::DelegatingInitiates, DelegationType::Partial))
        .await
        .unwrap();
    assert_eq!(
        tb.dms1.session(&id).await.unwrap().state,
        State::AwaitingConfirm
    );
    assert_eq!(tb.device.accounts_of(Testbed::DMS2).len(), 1);
    assert!(
        !tb.device.may_open_session_on_its_own(Testbed::DMS2),
        "the client must not open a session to DMS-2 on its own"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_delegation_hands_over_acls_outside_the_listed_subtrees_too() {
    let tb = Testbed::new();
    let mut request = tb.request(Method::DelegatingInitiates, DelegationType::Full);
    request.info.subtrees = vec![dmdelegate::DelegatedSubtree {
        uri: "./Vendor".into(),
        rights: vec![AclCommand::Get],
    }];
    let id = tb.dms1.start_delegation(request).await.unwrap();
    let (one, _) = tb.finish(&id).await.unwrap();
    assert_eq!(one.state, State::Completed);
    // ./Network named only DMS-1 for Add, Delete and Replace: DMS-2 holds them now, and
    // the ACL did not fall back to inheriting the root's.
    let network = tb.device.acl_of("./Network").unwrap();
    assert!(!network.is_empty());
    for cmd in [AclCommand::Add, AclCommand::Delete, AclCommand::Replace] {
        assert!(
            network.permits(cmd, Testbed::DMS2),
            "{cmd} on ./Network: {network}"
        );
        assert!(!network.permits(cmd, Testbed::DMS1));
    }
}
