//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::time::Duration;

use dmdelegate::sim::Testbed;
use dmdelegate::{AclCommand, DelegationType, Method};

/// Every (method, type) pair: the 8 runs.
pub fn all_runs() -> Vec<(Method, DelegationType)> {
    Method::ALL
        .into_iter()
        .flat_map(|m| [(m, DelegationType::Partial), (m, DelegationType::Full)])
        .collect()
}

/// For each node URI, the commands each server may perform there.
pub type Rights = BTreeMap<String, (Vec<AclCommand>, Vec<AclCommand>)>;

/// (DMS-1's, DMS-2's) permitted commands at every node of the device.
pub fn rights(tb: &Testbed) -> Rights {
    tb.device
        .uris()
        .into_iter()
        .map(|uri| {
            let of = |server: &str| {
                AclCommand::ALL
                    .into_iter()
                    .filter(|c| tb.device.permits(server, *c, &uri))
                    .collect::<Vec<_>>()
            };
            let r = (of(Testbed::DMS1), of(Testbed::DMS2));
            (uri, r)
        })
        .collect()
}

/// Lets spawned tasks (the device's bootstrap in Methods 3/4) run until the network is
/// quiet.
pub async fn settle(tb: &Testbed) {
    let mut last = usize::MAX;
    let mut quiet = 0;
    for _ in 0..400 {
        tokio::time::sleep(Duration::from_millis(2)).await;
        let n = tb.network.sent() as usize + tb.device.log().len();
        if n == last {
            quiet += 1;
            if quiet >= 10 {
                return;
            }
        } else {
            quiet = 0;
            last = n;
        }
    }
}

/// Asserts two TNDS dumps are equal, showing only where they first differ.
pub fn assert_same_tree(after: &str, before: &str, label: &str) {
    if after == before {
        return;
    }
    let at = after
        .bytes()
        .zip(before.bytes())
        .position(|(a, b)| a != b)
        .unwrap_or(after.len().min(before.len()));
    let window = |s: &str| {
        let start = s.floor_char_boundary(at.saturating_sub(150));
        let end = s.ceil_char_boundary((at + 250).min(s.len()));
        s[start..end].to_string()
    };
    panic!(
        "{label}: device tree changed at byte {at}\n after: …{}…\nbefore: …{}…",
        window(after),
        window(before)
    );
}
