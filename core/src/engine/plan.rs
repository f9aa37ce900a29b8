//! DMS-1's work on the device: the client-preparation plan, finalization, and rollback.
//!
//! Every write is journaled with its exact inverse and the record saved *before* the
//! write is sent, so a crash or failure at any point can be undone in reverse order.
//!
//! The plan, per method:
//! 1. read `./DMAcc` (values) to find DMS-1's own account (Full) and DMS-2's, if any;
//! 2. Methods 1/2: add DMS-2's account under `./DMAcc`, then its
//!    `Ext/NoAutoSession = true` marker (no automatic session to DMS-2);
//! 3. Full: add DMS-2 to every ACL on the device that names DMS-1, for the same commands;
//!    then, for each delegated subtree: read the subtree with ACLs, and write new ACLs on
//!    its root and on every descendant with an ACL of its own, adding DMS-2 for the
//!    granted rights (Full: also for every command DMS-1 holds there);
//! 4. Methods 3/4: add the bootstrap trigger `./DMDelegate/Bootstrap/<session>` holding
//!    DMS-2's Bootstrap Server URL (last, because the client acts on it at once).
//!
//! After CONFIRM: delete the marker or trigger, and (Full) DMS-1's own account, which
//! removes DMS-1 from every ACL on the device. That deletion is the commit point: once it
//! is journaled a failure or a restart finishes the delegation instead of rolling it back,
//! unless the device shows the account still there (`Inner::check_commit`).

use std::sync::Arc;

use crate::acl::{Acl, AclCommand};
use crate::error::{Error, Result};
use crate::message::{DelegatedSubtree, DelegationType};
use crate::ops::{status, ClientCommand, CommandOutput};
use crate::reason::ReasonCode;
use crate::tree::{child_uri, parent_uri, uri_segments, Node};

use super::{Inner, JournalEntry, JournalStatus, SessionRecord};

/// What the device says about a session's committing operations (DMS-1's own account).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Commit {
    /// Applied: the delegation is in force and cannot be undone.
    Done,
    /// Not applied (the account is still there): the committing entries were dropped and
    /// the session can be rolled back as before its commit point.
    NotDone,
    /// The device could not tell (unreachable, refused the read): what failed.
    Unknown(Vec<String>),
}

/// Where DMS-1 leaves the Bootstrap Server URL for the client (Methods 3/4).
pub const BOOTSTRAP_TRIGGER_ROOT: &str = "./DMDelegate/Bootstrap";

fn failed(reason: ReasonCode, message: impl Into<String>) -> Error {
    Error::Failed {
        reason,
        message: message.into(),
    }
}

impl Inner {
    /// A read: not journaled.
    async fn read(&self, rec: &SessionRecord, command: ClientCommand) -> Result<CommandOutput> {
        self.host
            .execute(&rec.info.device, &command)
            .await
            .map_err(|e| Error::Device {
                status: e.status,
                command: command.to_string(),
                message: e.message,
            })
    }

    async fn read_tree(&self, rec: &SessionRecord, uri: &str, values: bool) -> Result<Node> {
        match self
            .read(
                rec,
                ClientCommand::GetTree {
                    uri: uri.to_string(),
                    values,
                },
            )
            .await?
        {
            CommandOutput::Tree(n) => Ok(n),
            other => Err(failed(
                ReasonCode::ClientOperationFailed,
                format!("Get {uri}?list=TNDS returned {other:?}"),
            )),
        }
    }

    /// The node's own ACL, or `None` when it does not exist (404).
    async fn read_acl(&self, rec: &SessionRecord, uri: &str) -> Result<Option<Acl>> {
        match self
            .read(
                rec,
                ClientCommand::GetAcl {
                    uri: uri.to_string(),
                },
            )
            .await
        {
            Ok(CommandOutput::Acl(a)) => Ok(Some(a)),
            Ok(other) => Err(failed(
                ReasonCode::ClientOperationFailed,
                format!("Get {uri}?prop=ACL returned {other:?}"),
            )),
            Err(Error::Device {
                status: status::NOT_FOUND,
                ..
            }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Journals `command` with `inverse`, saves, then applies it.
    async fn apply(
        &self,
        rec: &mut SessionRecord,
        command: ClientCommand,
        inverse: Option<ClientCommand>,
        finalizing: bool,
    ) -> Result<()> {
        let command = Arc::new(command);
        rec.journal.push(JournalEntry {
            command: command.clone(),
            inverse: inverse.map(Arc::new),
            status: JournalStatus::Pending,
            finalizing,
        });
        self.save(rec).await?;
        match self.host.execute(&rec.info.device, &command).await {
            Ok(_) => {
                if let Some(last) = rec.journal.last_mut() {
                    last.status = JournalStatus::Applied;
                }
                Ok(())
            }
            Err(e) => {
                // A definite refusal (4xx) means the device did not apply the command: drop
                // the entry so rollback cannot "undo" what was never done (a 418 Add would
                // otherwise delete a node that existed before). Otherwise keep it pending.
                // The committing operation (no inverse) is always kept: whatever the
                // answer, `check_commit` reads the device to learn whether it happened.
                let committing = rec.journal.last().is_some_and(|j| j.inverse.is_none());
                if (400..500).contains(&e.status) && !committing {
                    rec.journal.pop();
                }
                Err(Error::Device {
                    status: e.status,
                    command: command.to_string(),
                    message: e.message,
                })
            }
        }
    }

    /// The ACL in force at `uri` when its own is empty: the nearest ancestor's.
    async fn inherited_acl(&self, rec: &SessionRecord, uri: &str) -> Result<Acl> {
        let mut current = uri;
        while let Some(parent) = parent_uri(current) {
            if let Some(acl) = self.read_acl(rec, parent).await? {
                if !acl.is_empty() {
                    return Ok(acl);
                }
            }
            current = parent;
        }
        // The root always has an ACL; a device that reports none gets the default.
        Ok(Acl::parse("Add=*&Get=*").expect("default root ACL"))
    }

    pub(super) async fn prepare_client(&self, rec: &mut SessionRecord) -> Result<()> {
        let acc = rec
            .account
            .clone()
            .ok_or_else(|| failed(ReasonCode::InvalidDmAccount, "no DMS-2 account received"))?;
        let accounts = self.read_tree(rec, "./DMAcc", true).await?;
        let accounts_of = |server_id: &str| -> Vec<String> {
            accounts
                .children
                .iter()
                .filter(|a| a.child("ServerID").and_then(|s| s.value.as_deref()) == Some(server_id))
                .map(|a| child_uri("./DMAcc", &a.name))
                .collect()
        };
        if rec.delegation_type == DelegationType::Full {
            let own = accounts_of(self.me()).into_iter().next().ok_or_else(|| {
                failed(
                    ReasonCode::InvalidSubtree,
                    format!("the device has no account for `{}` to hand over", self.me()),
                )
            })?;
            rec.own_account_uri = Some(own);
        }
        let peer_accounts = accounts_of(&rec.peer);
        if rec.method.uses_bootstrap() {
            rec.preexisting_peer_accounts = Some(peer_accounts);
        } else if peer_accounts.is_empty() {
            let mut name = acc.node_name.clone();
            let mut n = 1;
            while accounts.child(&name).is_some() {
                n += 1;
                name = format!("{}_{n}", acc.node_name);
            }
            let uri = child_uri("./DMAcc", &name);
            let both = format!("{}+{}", self.me(), rec.peer);
            let mut node = acc.to_node();
            node.name = name.clone();
            node.set_acl(
                Acl::parse(&format!(
                    "Add={both}&Delete={both}&Get={both}&Replace={both}"
                ))
                .map_err(|e| failed(ReasonCode::InternalError, e.to_string()))?,
            );
            self.apply(
                rec,
                ClientCommand::Add {
                    parent: "./DMAcc".into(),
                    node,
                },
                Some(ClientCommand::Delete { uri: uri.clone() }),
                false,
            )
            .await?;
            rec.installed_account = Some(name);
            let marker = Node::interior("Ext", vec![Node::leaf("NoAutoSession", "true")]);
            let marker_uri = child_uri(&uri, "Ext");
            self.apply(
                rec,
                ClientCommand::Add {
                    parent: uri,
                    node: marker,
                },
                Some(ClientCommand::Delete {
                    uri: marker_uri.clone(),
                }),
                false,
            )
            .await?;
            rec.cleanup.push(marker_uri);
        }
        let mut subtrees = rec.info.subtrees.clone();
        if rec.delegation_type == DelegationType::Full {
            // Full: DMS-2 takes over everything DMS-1 holds, listed or not. Without this an
            // ACL naming only DMS-1 would be left empty by the final account deletion, and
            // an empty ACL inherits its parent's, which may grant more. A listed `.` walks
            // the same nodes, so its rights join this pass: the same ACLs result, with one
            // read of the tree and one Replace per node instead of two.
            let (whole_tree, rest): (Vec<_>, Vec<_>) =
                subtrees.into_iter().partition(|s| s.uri == ".");
            subtrees = rest;
            let everything = DelegatedSubtree {
                uri: ".".into(),
                rights: whole_tree.into_iter().flat_map(|s| s.rights).collect(),
            };
            self.delegate_subtree(rec, &everything).await?;
        }
        for subtree in subtrees {
            self.delegate_subtree(rec, &subtree).await?;
        }
        if rec.method.uses_bootstrap() {
            let url = rec.bootstrap_url.clone().ok_or_else(|| {
                failed(
                    ReasonCode::BootstrapUrlUnavailable,
                    "no Bootstrap Server URL",
                )
            })?;
            let trigger = Node::interior(
                rec.session_id.clone(),
                vec![
                    Node::leaf("URI", url),
                    Node::leaf("ServerID", rec.peer.clone()),
                    Node::leaf("Delegator", self.me()),
                ],
            );
            let top = self
                .add_with_parents(rec, BOOTSTRAP_TRIGGER_ROOT, trigger)
                .await?;
            rec.cleanup.push(top);
        }
        Ok(())
    }

    /// Adds DMS-2 to the ACLs of one delegated subtree.
    async fn delegate_subtree(&self, rec: &mut SessionRecord, s: &DelegatedSubtree) -> Result<()> {
        let tree = match self.read_tree(rec, &s.uri, false).await {
            Ok(t) => t,
            Err(Error::Device {
                status: status::NOT_FOUND,
                ..
            }) => {
                return Err(failed(
                    ReasonCode::InvalidSubtree,
                    format!("subtree `{}` does not exist on the device", s.uri),
                ))
            }
            Err(e) => return Err(e),
        };
        let root_own = tree.acl();
        let root_base = if root_own.is_empty() {
            self.inherited_acl(rec, &s.uri).await?
        } else {
            root_own.clone()
        };
        let full = rec.delegation_type == DelegationType::Full;
        let me = self.me().to_string();
        let grants = |base: &Acl| -> Vec<AclCommand> {
            let mut g = s.rights.clone();
            if full {
                g.extend(base.commands_naming(&me));
            }
            g
        };
        let mut changes: Vec<(String, Acl, Acl)> = Vec::new();
        tree.walk(&s.uri, &mut |uri, node| {
            let (old, base) = if uri == s.uri {
                (root_own.clone(), root_base.clone())
            } else {
                let own = node.own_acl();
                if own.is_empty() {
                    return;
                }
                (own.clone(), own.clone())
            };
            let mut new = base.clone();
            for cmd in grants(&base) {
                new.grant(cmd, &rec.peer);
            }
            if new != old {
                changes.push((uri.to_string(), old, new));
            }
        });
        for (uri, old, new) in changes {
            self.apply(
                rec,
                ClientCommand::ReplaceAcl {
                    uri: uri.clone(),
                    acl: new,
                },
                Some(ClientCommand::ReplaceAcl { uri, acl: old }),
                false,
            )
            .await?;
        }
        Ok(())
    }

    /// Adds `node` under `parent`, creating missing interior nodes; returns the URI of the
    /// topmost node created (what deleting undoes it all).
    async fn add_with_parents(
        &self,
        rec: &mut SessionRecord,
        parent: &str,
        node: Node,
    ) -> Result<String> {
        let segments: Vec<String> = uri_segments(parent)
            .map_err(|r| failed(ReasonCode::InternalError, r))?
            .into_iter()
            .map(str::to_string)
            .collect();
        let prefix = |n: usize| -> String {
            if n == 0 {
                ".".to_string()
            } else {
                format!("./{}", segments[..n].join("/"))
            }
        };
        let mut existing = segments.len();
        while existing > 0 && self.read_acl(rec, &prefix(existing)).await?.is_none() {
            existing -= 1;
        }
        let mut top = node;
        for name in segments[existing..].iter().rev() {
            top = Node::interior(name.clone(), vec![top]);
        }
        top.set_acl(
            Acl::parse(&format!(
                "Add={me}&Delete={me}&Get={me}+{peer}&Replace={me}",
                me = self.me(),
                peer = rec.peer
            ))
            .map_err(|e| failed(ReasonCode::InternalError, e.to_string()))?,
        );
        let at = prefix(existing);
        let top_uri = child_uri(&at, &top.name);
        self.apply(
            rec,
            ClientCommand::Add {
                parent: at,
                node: top,
            },
            Some(ClientCommand::Delete {
                uri: top_uri.clone(),
            }),
            false,
        )
        .await?;
        Ok(top_uri)
    }

    /// After CONFIRM: remove markers and triggers, and (Full) DMS-1's own account.
    pub(super) async fn finalize(&self, rec: &mut SessionRecord) -> Result<()> {
        for uri in rec.cleanup.clone() {
            let node = match self.read_tree(rec, &uri, true).await {
                Ok(n) => n,
                // The client may already have removed a consumed trigger.
                Err(Error::Device {
                    status: status::NOT_FOUND,
                    ..
                }) => continue,
                Err(e) => return Err(e),
            };
            let parent = parent_uri(&uri).unwrap_or(".").to_string();
            self.apply(
                rec,
                ClientCommand::Delete { uri: uri.clone() },
                Some(ClientCommand::Add { parent, node }),
                true,
            )
            .await?;
        }
        if rec.delegation_type == DelegationType::Full {
            let own = rec
                .own_account_uri
                .clone()
                .ok_or_else(|| failed(ReasonCode::InternalError, "own account not recorded"))?;
            // The commit point: no inverse (the account's secrets cannot be read back), and
            // nothing follows it. From the moment it is journaled a failure no longer rolls
            // back: `Inner::fail_locked` checks the device (`check_commit`) and finishes.
            self.apply(rec, ClientCommand::Delete { uri: own }, None, true)
                .await?;
        }
        self.close_finalized(rec);
        Ok(())
    }

    /// What remains once finalization is done: no deadline, the journal discarded (a
    /// temporary delegation keeps what reverts it at expiry), no cleanup, no secrets.
    pub(super) fn close_finalized(&self, rec: &mut SessionRecord) {
        rec.deadline = None;
        if rec.expires.is_some() {
            // A temporary delegation keeps what reverts it at expiry.
            rec.journal.retain(|j| !j.finalizing);
        } else {
            rec.journal.clear();
            rec.preexisting_peer_accounts = None;
        }
        rec.cleanup.clear();
        rec.account = None;
    }

    /// Past the commit point (see [`SessionRecord::past_commit_point`]): reads the device
    /// to learn whether the committing operations happened. Each is a `Delete`; its node
    /// answering 404 means it did, its node being there means it did not.
    pub(super) async fn check_commit(&self, rec: &mut SessionRecord) -> Commit {
        let mut gone = Vec::new();
        let mut there = 0;
        let mut unknown = Vec::new();
        for (i, entry) in rec.journal.iter().enumerate() {
            if !entry.commits() {
                continue;
            }
            let ClientCommand::Delete { uri } = &*entry.command else {
                unknown.push(format!(
                    "{}: not a Delete, cannot be checked",
                    entry.command
                ));
                continue;
            };
            match self.read_acl(rec, uri).await {
                Ok(None) => gone.push(i),
                Ok(Some(_)) => there += 1,
                Err(e) => unknown.push(format!("{}: checking it failed: {e}", entry.command)),
            }
        }
        if !unknown.is_empty() {
            return Commit::Unknown(unknown);
        }
        match (gone.is_empty(), there) {
            (false, 0) => {
                for i in gone {
                    rec.journal[i].status = JournalStatus::Applied;
                }
                Commit::Done
            }
            (true, _) => {
                // Not applied: the session is back before its commit point.
                rec.journal.retain(|j| !j.commits());
                Commit::NotDone
            }
            (false, _) => Commit::Unknown(vec![format!(
                "{} committing operations applied, {there} not",
                gone.len()
            )]),
        }
    }

    /// Applies the journal's inverses in reverse order, then (Methods 3/4) removes any
    /// account the client bootstrapped for DMS-2. Returns what could not be undone.
    pub(super) async fn rollback_client(&self, rec: &mut SessionRecord) -> Vec<String> {
        let mut failed_ops = Vec::new();
        for i in (0..rec.journal.len()).rev() {
            let entry = &rec.journal[i];
            if entry.status == JournalStatus::Undone {
                continue;
            }
            let Some(inverse) = entry.inverse.clone() else {
                continue;
            };
            let outcome = self.host.execute(&rec.info.device, &inverse).await;
            let pending = entry.status == JournalStatus::Pending;
            let undone = match (&outcome, &*inverse) {
                (Ok(_), _) => true,
                // Already gone: the write never happened, or the client removed it.
                (Err(e), ClientCommand::Delete { .. }) => e.status == status::NOT_FOUND,
                // A delete that may not have happened: the node is still there.
                (Err(e), ClientCommand::Add { .. }) => {
                    pending && e.status == status::ALREADY_EXISTS
                }
                _ => false,
            };
            if undone {
                rec.journal[i].status = JournalStatus::Undone;
                if let Err(e) = self.save(rec).await {
                    // Rollback goes on (the device must be restored), but a store that
                    // cannot record progress means a crash now would replay inverses.
                    tracing::error!(session = %rec.session_id, error = %e, "saving rollback progress failed");
                }
            } else if let Err(e) = outcome {
                failed_ops.push(format!("{inverse}: {e}"));
            }
        }
        if let Some(before) = rec.preexisting_peer_accounts.clone() {
            match self.read_tree(rec, "./DMAcc", true).await {
                Ok(accounts) => {
                    for a in &accounts.children {
                        let uri = child_uri("./DMAcc", &a.name);
                        let is_peer = a.child("ServerID").and_then(|s| s.value.as_deref())
                            == Some(rec.peer.as_str());
                        if is_peer && !before.contains(&uri) {
                            let del = ClientCommand::Delete { uri };
                            if let Err(e) = self.host.execute(&rec.info.device, &del).await {
                                failed_ops.push(format!("{del}: {e}"));
                            }
                        }
                    }
                }
                Err(e) => failed_ops.push(format!("Get ./DMAcc: {e}")),
            }
        }
        failed_ops
    }
}
