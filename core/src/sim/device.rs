//! A simulated DM Client: a DM Tree with accounts, enforcing ACLs as DM TND requires.

use std::sync::{Arc, Mutex};

use crate::acl::{Acl, AclCommand};
use crate::dmacc::{dmacc_root_props, DmAcc};
use crate::message::DeviceInfo;
use crate::ops::{status, ClientCommand, CommandOutput, DeviceError};
use crate::tree::{child_uri, uri_segments, MgmtTree, Node, RtProperties};

/// What the device found in a bootstrap trigger left by DMS-1 (Methods 3/4).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootstrapTrigger {
    /// URI of the trigger node.
    pub uri: String,
    /// DMS-2's Bootstrap Server URL.
    pub url: String,
    /// DMS-2's ServerID.
    pub server_id: String,
    /// DMS-1's ServerID (who left the trigger).
    pub delegator: String,
}

/// Called when a bootstrap trigger appears, outside the device's lock.
pub type TriggerHook = Arc<dyn Fn(BootstrapTrigger) + Send + Sync>;

/// A fault to inject into the next matching command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceFault {
    /// Fail only commands whose rendering contains this text (empty: any write).
    pub matching: String,
    /// Skip this many matching writes first.
    pub skip: usize,
    /// Status to fail with.
    pub status: u16,
}

struct DeviceState {
    info: DeviceInfo,
    root: Node,
    reachable: bool,
    faults: Vec<DeviceFault>,
    log: Vec<String>,
    /// Whether commands are added to `log` (a long run can turn it off: it only grows).
    logging: bool,
    sessions: std::collections::VecDeque<String>,
    on_trigger: Option<TriggerHook>,
    /// Triggers already acted on: a device bootstraps once per trigger.
    fired: Vec<String>,
}

/// A simulated device. Cheap to share (`Arc`); every method is thread-safe.
pub struct SimDevice {
    state: Mutex<DeviceState>,
}

impl std::fmt::Debug for SimDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimDevice")
            .field("device_id", &self.lock().info.device_id)
            .finish_non_exhaustive()
    }
}

fn deny(status: u16, message: impl Into<String>) -> DeviceError {
    DeviceError::new(status, message)
}

fn acl(text: &str) -> Acl {
    Acl::parse(text).expect("static ACL")
}

impl SimDevice {
    /// A device with `./DevInfo` (readable by all), an empty `./DMAcc` and the root ACL
    /// `Add=*&Get=*`.
    pub fn new(info: DeviceInfo) -> Self {
        let mut root = Node::interior(".", Vec::new()).with_acl(acl("Add=*&Get=*"));
        root.children.push(
            Node::interior(
                "DevInfo",
                vec![
                    Node::leaf("DevId", &info.device_id),
                    Node::leaf("Man", &info.manufacturer),
                    Node::leaf("Mod", &info.model),
                ],
            )
            .with_acl(acl("Get=*")),
        );
        let mut dmacc = Node::interior("DMAcc", Vec::new()).with_acl(acl("Get=*"));
        dmacc.props = Some(RtProperties {
            acl: Some(acl("Get=*")),
            ..dmacc_root_props()
        });
        root.children.push(dmacc);
        Self {
            state: Mutex::new(DeviceState {
                info,
                root,
                reachable: true,
                faults: Vec::new(),
                log: Vec::new(),
                logging: true,
                sessions: std::collections::VecDeque::new(),
                on_trigger: None,
                fired: Vec::new(),
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, DeviceState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The device's identity.
    pub fn info(&self) -> DeviceInfo {
        self.lock().info.clone()
    }

    /// Installs an account as a bootstrap would (no ACL check); the account node gets
    /// `Add=S&Delete=S&Get=S&Replace=S` for its own server S.
    pub fn provision_account(&self, acc: &DmAcc) {
        let s = &acc.server_id;
        let node = acc
            .to_node()
            .with_acl(acl(&format!("Add={s}&Delete={s}&Get={s}&Replace={s}")));
        let mut st = self.lock();
        let dmacc = st.root.child_mut("DMAcc").expect("DMAcc exists");
        dmacc.children.retain(|c| c.name != node.name);
        dmacc.children.push(node);
    }

    /// Adds or replaces a node with no ACL check (factory provisioning).
    pub fn provision(&self, parent: &str, node: Node) -> Result<(), DeviceError> {
        let mut st = self.lock();
        let segs = segments(parent)?;
        let p = st
            .root
            .descendant_mut(&segs)
            .ok_or_else(|| deny(status::NOT_FOUND, format!("{parent} not found")))?;
        p.children.retain(|c| c.name != node.name);
        p.children.push(node);
        Ok(())
    }

    /// Sets a node's ACL with no ACL check (factory provisioning).
    pub fn set_acl_unchecked(&self, uri: &str, acl: Acl) -> Result<(), DeviceError> {
        let mut st = self.lock();
        let segs = segments(uri)?;
        st.root
            .descendant_mut(&segs)
            .ok_or_else(|| deny(status::NOT_FOUND, format!("{uri} not found")))?
            .set_acl(acl);
        Ok(())
    }

    /// Makes the device reachable or not (unreachable: every command fails with 503).
    pub fn set_reachable(&self, reachable: bool) {
        self.lock().reachable = reachable;
    }

    /// Injects a fault into a later write.
    pub fn inject_fault(&self, fault: DeviceFault) {
        self.lock().faults.push(fault);
    }

    /// Sets the hook called when a bootstrap trigger is added (Methods 3/4).
    pub fn on_bootstrap_trigger(&self, hook: TriggerHook) {
        self.lock().on_trigger = Some(hook);
    }

    /// Turns the command log on (the default) or off. A benchmark or soak test running
    /// thousands of delegations turns it off: the log grows with every command.
    pub fn set_logging(&self, on: bool) {
        self.lock().logging = on;
    }

    /// Every command executed so far, as `server: command -> status` (while logging is on).
    pub fn log(&self) -> Vec<String> {
        self.lock().log.clone()
    }

    /// ServerIDs that opened DM sessions, in order: the last
    /// [`super::SIM_LOG_CAPACITY`] of them.
    pub fn sessions(&self) -> Vec<String> {
        self.lock().sessions.iter().cloned().collect()
    }

    /// The whole tree, with ACLs and values, as TNDS: compare dumps to prove nothing changed.
    pub fn dump(&self) -> String {
        let st = self.lock();
        MgmtTree::new(vec![st.root.clone()]).to_xml()
    }

    /// Every node's URI with its own ACL as text (empty when it inherits).
    pub fn acls(&self) -> std::collections::BTreeMap<String, String> {
        let st = self.lock();
        let mut out = std::collections::BTreeMap::new();
        st.root.walk(".", &mut |u, n| {
            out.insert(u.to_string(), n.acl().to_string());
        });
        out
    }

    /// Every node's URI, parents first.
    pub fn uris(&self) -> Vec<String> {
        let st = self.lock();
        let mut out = Vec::new();
        st.root.walk(".", &mut |u, _| out.push(u.to_string()));
        out
    }

    /// The account node names whose ServerID is `server_id`.
    pub fn accounts_of(&self, server_id: &str) -> Vec<String> {
        let st = self.lock();
        accounts_of(&st.root, server_id)
    }

    /// The value of a leaf, read with no ACL check.
    pub fn value(&self, uri: &str) -> Option<String> {
        let st = self.lock();
        let segs = uri_segments(uri).ok()?;
        st.root.descendant(&segs)?.value.clone()
    }

    /// The node's own ACL, read with no ACL check.
    pub fn acl_of(&self, uri: &str) -> Option<Acl> {
        let st = self.lock();
        let segs = uri_segments(uri).ok()?;
        Some(st.root.descendant(&segs)?.acl())
    }

    /// Whether `server_id` may perform `cmd` on the node at `uri` (its effective ACL).
    pub fn permits(&self, server_id: &str, cmd: AclCommand, uri: &str) -> bool {
        let st = self.lock();
        segments(uri)
            .ok()
            .and_then(|s| effective(&st.root, &s))
            .is_some_and(|a| a.permits(cmd, server_id))
    }

    /// Whether the client would open a session to `server_id` on its own: it has an
    /// account without the `Ext/NoAutoSession` marker.
    pub fn may_open_session_on_its_own(&self, server_id: &str) -> bool {
        let st = self.lock();
        let Some(dmacc) = st.root.child("DMAcc") else {
            return false;
        };
        accounts_of(&st.root, server_id).iter().any(|name| {
            dmacc
                .child(name)
                .and_then(|a| a.descendant(&["Ext", "NoAutoSession"]))
                .and_then(|n| n.value.as_deref())
                != Some("true")
        })
    }

    /// A DM session from `server_id`: the server must have an account on the device; the
    /// session reads `./DevInfo/DevId` as that server.
    pub fn open_session(&self, server_id: &str) -> Result<(), DeviceError> {
        if self.accounts_of(server_id).is_empty() {
            return Err(deny(
                401,
                format!("no account for `{server_id}`: session refused"),
            ));
        }
        self.execute(
            server_id,
            &ClientCommand::GetAcl {
                uri: "./DevInfo/DevId".into(),
            },
        )?;
        super::push_bounded(&mut self.lock().sessions, server_id.to_string());
        Ok(())
    }

    /// Replaces a leaf's value as `server_id`, enforcing the ACL (Replace on the leaf).
    pub fn replace_value(
        &self,
        server_id: &str,
        uri: &str,
        value: &str,
    ) -> Result<(), DeviceError> {
        let mut st = self.lock();
        if !st.reachable {
            return Err(deny(status::UNREACHABLE, "device unreachable"));
        }
        let segs = segments(uri)?;
        let allowed =
            effective(&st.root, &segs).is_some_and(|a| a.permits(AclCommand::Replace, server_id));
        let node = st
            .root
            .descendant_mut(&segs)
            .ok_or_else(|| deny(status::NOT_FOUND, format!("{uri} not found")))?;
        if !allowed {
            return Err(deny(
                status::PERMISSION_DENIED,
                format!("Replace {uri} denied to {server_id}"),
            ));
        }
        if node.value.is_none() {
            return Err(deny(status::NOT_ALLOWED, format!("{uri} is interior")));
        }
        node.value = Some(value.to_string());
        Ok(())
    }

    /// Installs a bootstrap (TNDS with the account under `./DMAcc`). When the bootstrap
    /// came through a delegation trigger, the delegator gets Get and Delete on the new
    /// account so it can roll the delegation back.
    pub fn install_bootstrap(
        &self,
        tree: &MgmtTree,
        delegator: Option<&str>,
    ) -> Result<(), DeviceError> {
        let mut st = self.lock();
        if !st.reachable {
            return Err(deny(status::UNREACHABLE, "device unreachable"));
        }
        for node in &tree.nodes {
            let parent = node.path.clone().unwrap_or_else(|| "./DMAcc".into());
            let segs = segments(&parent)?;
            let mut node = node.clone();
            node.path = None;
            if let Some(d) = delegator {
                let mut a = node.acl();
                a.grant(AclCommand::Get, d);
                a.grant(AclCommand::Delete, d);
                node.set_acl(a);
            }
            let p = st
                .root
                .descendant_mut(&segs)
                .ok_or_else(|| deny(status::NOT_FOUND, format!("{parent} not found")))?;
            p.children.retain(|c| c.name != node.name);
            p.children.push(node);
        }
        let id = st.info.device_id.clone();
        if st.logging {
            st.log.push(format!("bootstrap -> {id}: installed"));
        }
        Ok(())
    }

    /// Executes one command as `server_id`, enforcing ACLs.
    pub fn execute(
        &self,
        server_id: &str,
        cmd: &ClientCommand,
    ) -> Result<CommandOutput, DeviceError> {
        let (result, trigger) = {
            let mut st = self.lock();
            let result = execute_locked(&mut st, server_id, cmd);
            let code = match &result {
                Ok(_) => status::OK,
                Err(e) => e.status,
            };
            if st.logging {
                st.log.push(format!("{server_id}: {cmd} -> {code}"));
            }
            let trigger = match (&result, cmd) {
                (Ok(_), ClientCommand::Add { .. }) => {
                    find_trigger(&st.root, &cmd.uri()).filter(|t| !st.fired.contains(&t.uri))
                }
                _ => None,
            };
            if let Some(t) = &trigger {
                st.fired.push(t.uri.clone());
            }
            (result, trigger.map(|t| (t, st.on_trigger.clone())))
        };
        if let Some((t, Some(hook))) = trigger {
            hook(t);
        }
        result
    }
}

fn segments(uri: &str) -> Result<Vec<&str>, DeviceError> {
    uri_segments(uri).map_err(|r| deny(status::NOT_FOUND, r))
}

fn accounts_of(root: &Node, server_id: &str) -> Vec<String> {
    root.child("DMAcc")
        .map(|d| {
            d.children
                .iter()
                .filter(|a| a.child("ServerID").and_then(|s| s.value.as_deref()) == Some(server_id))
                .map(|a| a.name.clone())
                .collect()
        })
        .unwrap_or_default()
}

/// The effective ACL at `segs`: the nearest non-empty one on the path from the root.
fn effective<'t>(root: &'t Node, segs: &[&str]) -> Option<&'t Acl> {
    let mut node = root;
    let mut acl = root.own_acl();
    for s in segs {
        node = node.child(s)?;
        let own = node.own_acl();
        if !own.is_empty() {
            acl = own;
        }
    }
    Some(acl)
}

fn find_trigger(root: &Node, added: &str) -> Option<BootstrapTrigger> {
    let base = crate::engine::BOOTSTRAP_TRIGGER_ROOT;
    let segs = uri_segments(base).ok()?;
    let list = root.descendant(&segs)?;
    list.children.iter().find_map(|t| {
        let uri = child_uri(base, &t.name);
        if !crate::tree::uri_within(&uri, added) && !crate::tree::uri_within(added, &uri) {
            return None;
        }
        let v = |n: &str| t.child(n).and_then(|c| c.value.clone());
        Some(BootstrapTrigger {
            uri,
            url: v("URI")?,
            server_id: v("ServerID")?,
            delegator: v("Delegator")?,
        })
    })
}

/// A copy of `node` without the values the requester may not read: all of them unless
/// asked, and always the "No Get" secrets of accounts (left out while copying, so they
/// are never copied at all).
fn redacted(node: &Node, values: bool) -> Node {
    let keep = values && !matches!(node.name.as_str(), "AAuthSecret" | "AAuthData");
    Node {
        name: node.name.clone(),
        path: node.path.clone(),
        props: node.props.clone(),
        children: node.children.iter().map(|c| redacted(c, values)).collect(),
        value: if keep { node.value.clone() } else { None },
    }
}

fn execute_locked(
    st: &mut DeviceState,
    server: &str,
    cmd: &ClientCommand,
) -> Result<CommandOutput, DeviceError> {
    if !st.reachable {
        return Err(deny(status::UNREACHABLE, "device unreachable"));
    }
    if cmd.is_write() && !st.faults.is_empty() {
        let text = cmd.to_string();
        if let Some(i) = st
            .faults
            .iter()
            .position(|f| f.matching.is_empty() || text.contains(&f.matching))
        {
            if st.faults[i].skip > 0 {
                st.faults[i].skip -= 1;
            } else {
                let f = st.faults.remove(i);
                return Err(deny(f.status, format!("injected fault on {text}")));
            }
        }
    }
    let uri = cmd.uri();
    // `what` names the operation in the error; only formatted when there is one.
    let need = |st: &DeviceState,
                segs: &[&str],
                c: AclCommand,
                what: &dyn Fn() -> String|
     -> Result<(), DeviceError> {
        match effective(&st.root, segs) {
            Some(a) if a.permits(c, server) => Ok(()),
            Some(_) => Err(deny(
                status::PERMISSION_DENIED,
                format!("{} denied to {server}", what()),
            )),
            None => Err(deny(status::NOT_FOUND, format!("{}: not found", what()))),
        }
    };
    match cmd {
        ClientCommand::GetTree { uri, values } => {
            let segs = segments(uri)?;
            let node = st
                .root
                .descendant(&segs)
                .ok_or_else(|| deny(status::NOT_FOUND, format!("{uri} not found")))?;
            need(st, &segs, AclCommand::Get, &|| format!("Get {uri}"))?;
            Ok(CommandOutput::Tree(redacted(node, *values)))
        }
        ClientCommand::GetAcl { uri } => {
            let segs = segments(uri)?;
            let node = st
                .root
                .descendant(&segs)
                .ok_or_else(|| deny(status::NOT_FOUND, format!("{uri} not found")))?;
            let own = node.acl();
            need(st, &segs, AclCommand::Get, &|| {
                format!("Get {uri}?prop=ACL")
            })?;
            Ok(CommandOutput::Acl(own))
        }
        ClientCommand::Add { parent, node } => {
            let segs = segments(parent)?;
            let p = st
                .root
                .descendant(&segs)
                .ok_or_else(|| deny(status::NOT_FOUND, format!("{parent} not found")))?;
            if p.value.is_some() {
                return Err(deny(status::NOT_ALLOWED, format!("{parent} is a leaf")));
            }
            if p.child(&node.name).is_some() {
                return Err(deny(
                    status::ALREADY_EXISTS,
                    format!("{uri} already exists"),
                ));
            }
            need(st, &segs, AclCommand::Add, &|| format!("Add {uri}"))?;
            let mut node = node.clone();
            node.path = None;
            st.root
                .descendant_mut(&segs)
                .expect("checked above")
                .children
                .push(node);
            Ok(CommandOutput::Done)
        }
        ClientCommand::ReplaceAcl { uri, acl } => {
            let segs = segments(uri)?;
            let node = st
                .root
                .descendant(&segs)
                .ok_or_else(|| deny(status::NOT_FOUND, format!("{uri} not found")))?;
            if segs.is_empty() && acl.is_empty() {
                return Err(deny(status::NOT_ALLOWED, "the root must keep an ACL"));
            }
            // Interior node: Replace on the node; leaf: Replace on its parent (DM TND).
            let check: &[&str] = if node.value.is_some() {
                &segs[..segs.len() - 1]
            } else {
                &segs
            };
            need(st, check, AclCommand::Replace, &|| {
                format!("Replace {uri}?prop=ACL")
            })?;
            st.root
                .descendant_mut(&segs)
                .expect("checked")
                .set_acl(acl.clone());
            Ok(CommandOutput::Done)
        }
        ClientCommand::Delete { uri } => {
            let segs = segments(uri)?;
            if segs.is_empty() {
                return Err(deny(status::NOT_ALLOWED, "the root cannot be deleted"));
            }
            if st.root.descendant(&segs).is_none() {
                return Err(deny(status::NOT_FOUND, format!("{uri} not found")));
            }
            need(st, &segs, AclCommand::Delete, &|| format!("Delete {uri}"))?;
            let (name, parent_segs) = segs.split_last().expect("non-empty");
            let parent = st.root.descendant_mut(parent_segs).expect("parent exists");
            let removed = parent
                .children
                .iter()
                .position(|c| c.name == *name)
                .map(|i| parent.children.remove(i));
            // Deleting an account removes its server from every ACL (DM TND), unless the
            // server still has another account.
            let mut gone = Vec::new();
            if let Some(n) = &removed {
                n.walk(uri, &mut |u, node| {
                    let is_account = u.starts_with("./DMAcc/") && u.matches('/').count() == 2;
                    if is_account {
                        if let Some(sid) = node.child("ServerID").and_then(|s| s.value.clone()) {
                            gone.push(sid);
                        }
                    }
                });
            }
            for sid in gone {
                if accounts_of(&st.root, &sid).is_empty() {
                    scrub(&mut st.root, &sid);
                }
            }
            Ok(CommandOutput::Done)
        }
    }
}

fn scrub(node: &mut Node, server_id: &str) {
    let own = node.acl();
    if !own.is_empty() {
        let mut a = own.clone();
        a.scrub(server_id);
        if a != own {
            // Keep the root's ACL non-empty.
            node.set_acl(if a.is_empty() && node.name == "." {
                acl("Get=*")
            } else {
                a
            });
        }
    }
    for c in node.children.iter_mut() {
        scrub(c, server_id);
    }
}
