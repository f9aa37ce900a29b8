//! Simulated surroundings for tests and demos: a DM Client ([`SimDevice`]), a Bootstrap
//! Server ([`SimBootstrapServer`]), an in-process network ([`InProcessNetwork`]), a host
//! ([`SimHost`]) and a two-server [`Testbed`] wiring them together.

mod bootstrap;
mod device;
mod host;
mod network;
mod testbed;

/// How many entries the simulator's logs keep (the most recent): the network's trace and
/// a device's sessions. A soak run of millions of messages must not grow them forever.
pub const SIM_LOG_CAPACITY: usize = 4096;

/// Appends `entry` to a log kept at [`SIM_LOG_CAPACITY`] entries.
fn push_bounded(log: &mut std::collections::VecDeque<String>, entry: String) {
    if log.len() == SIM_LOG_CAPACITY {
        log.pop_front();
    }
    log.push_back(entry);
}

pub use bootstrap::SimBootstrapServer;
pub use device::{BootstrapTrigger, DeviceFault, SimDevice, TriggerHook};
pub use host::{HostFaults, SimHost};
pub use network::{InProcessNetwork, LinkFault};
pub use testbed::{provision_sample_tree, HostWrapper, PartFactory, Testbed, TestbedOptions};

/// What changed between two [`SimDevice::acls`] snapshots, one line per node: `+ uri` for
/// an added subtree, `- uri` for a removed one, `~ uri  ACL old → new` for a changed ACL.
pub fn describe_changes(
    before: &std::collections::BTreeMap<String, String>,
    after: &std::collections::BTreeMap<String, String>,
) -> Vec<String> {
    let shown = |acl: &str| {
        if acl.is_empty() {
            "(inherited)".to_string()
        } else {
            acl.to_string()
        }
    };
    // Only the top of an added or removed subtree is listed.
    let top = |map: &std::collections::BTreeMap<String, String>,
               other: &std::collections::BTreeMap<String, String>,
               uri: &str| {
        !uri.rfind('/')
            .is_some_and(|i| map.contains_key(&uri[..i]) && !other.contains_key(&uri[..i]))
    };
    let mut out = Vec::new();
    for (uri, acl) in after {
        match before.get(uri) {
            None if top(after, before, uri) => out.push(format!("+ {uri}  ACL {}", shown(acl))),
            Some(old) if old != acl => {
                out.push(format!("~ {uri}  ACL {} → {}", shown(old), shown(acl)))
            }
            _ => {}
        }
    }
    for uri in before.keys() {
        if !after.contains_key(uri) && top(before, after, uri) {
            out.push(format!("- {uri}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_logs_keep_the_most_recent_entries() {
        let mut log = std::collections::VecDeque::new();
        for i in 0..SIM_LOG_CAPACITY + 10 {
            push_bounded(&mut log, i.to_string());
        }
        assert_eq!(log.len(), SIM_LOG_CAPACITY);
        assert_eq!(log.front().map(String::as_str), Some("10"));
        let last = (SIM_LOG_CAPACITY + 9).to_string();
        assert_eq!(log.back(), Some(&last));
    }
}
