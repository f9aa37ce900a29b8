//! Records and enums that cross the boundary, with their conversions from and to the
//! core's types.

use dmdelegate::{
    Acl, AclCommand, ClientCommand, DelegatedSubtree, DelegationOffer, DeviceInfo, Event,
    EventKind as CoreEventKind, MgmtTree, Role as CoreRole, SessionInfo, State, Timestamp,
};

use crate::error::DelegationError;

/// Full or Partial delegation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, uniffi::Enum)]
pub enum DelegationType {
    /// DMS-2 takes over the whole device; DMS-1's account is removed at the end.
    Full,
    /// DMS-2 gets rights on some subtrees; DMS-1 stays.
    Partial,
}

impl From<DelegationType> for dmdelegate::DelegationType {
    fn from(t: DelegationType) -> Self {
        match t {
            DelegationType::Full => dmdelegate::DelegationType::Full,
            DelegationType::Partial => dmdelegate::DelegationType::Partial,
        }
    }
}

impl From<dmdelegate::DelegationType> for DelegationType {
    fn from(t: dmdelegate::DelegationType) -> Self {
        match t {
            dmdelegate::DelegationType::Full => DelegationType::Full,
            dmdelegate::DelegationType::Partial => DelegationType::Partial,
        }
    }
}

/// A server's role in one delegation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, uniffi::Enum)]
pub enum Role {
    /// DMS-1: holds authority and hands it over.
    Delegating,
    /// DMS-2: receives authority.
    Delegated,
}

impl From<CoreRole> for Role {
    fn from(r: CoreRole) -> Self {
        match r {
            CoreRole::Delegating => Role::Delegating,
            CoreRole::Delegated => Role::Delegated,
        }
    }
}

/// Where a delegation session stands (see docs/protocol.md for each step).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, uniffi::Enum)]
pub enum SessionState {
    /// Initiator: NOTIF sent, waiting for the answer.
    NotifSent,
    /// DMS-1: waiting for DELEGATION_START.
    AwaitingStart,
    /// DMS-1, Methods 3/4: waiting for the Bootstrap Server URL.
    AwaitingBootstrapUrl,
    /// DMS-1: preparing the device.
    Preparing,
    /// DMS-1: waiting for DELEGATION_CONFIRM.
    AwaitingConfirm,
    /// DMS-1: confirmed, cleaning up.
    Finalizing,
    /// DMS-2, Methods 1/2: waiting for DELEGATION_PREPARED.
    AwaitingPrepared,
    /// DMS-2, Methods 3/4: waiting for the URL request.
    AwaitingBootstrapRequest,
    /// DMS-2, Methods 1/2: opening its DM session with the device.
    OpeningSession,
    /// DMS-2, Methods 3/4: waiting for the device's first session.
    AwaitingClient,
    /// Undoing the device changes.
    RollingBack,
    /// The delegation is in force.
    Completed,
    /// Refused; nothing was changed.
    Rejected,
    /// Failed and fully undone.
    RolledBack,
    /// Failed, and some inverse operations failed too: the device needs attention
    /// (`DelegationServer.retryRollback`).
    RollbackFailed,
    /// A temporary delegation ended and was reverted.
    Expired,
}

impl From<State> for SessionState {
    fn from(s: State) -> Self {
        match s {
            State::NotifSent => SessionState::NotifSent,
            State::AwaitingStart => SessionState::AwaitingStart,
            State::AwaitingBootstrapUrl => SessionState::AwaitingBootstrapUrl,
            State::Preparing => SessionState::Preparing,
            State::AwaitingConfirm => SessionState::AwaitingConfirm,
            State::Finalizing => SessionState::Finalizing,
            State::AwaitingPrepared => SessionState::AwaitingPrepared,
            State::AwaitingBootstrapRequest => SessionState::AwaitingBootstrapRequest,
            State::OpeningSession => SessionState::OpeningSession,
            State::AwaitingClient => SessionState::AwaitingClient,
            State::RollingBack => SessionState::RollingBack,
            State::Completed => SessionState::Completed,
            State::Rejected => SessionState::Rejected,
            State::RolledBack => SessionState::RolledBack,
            State::RollbackFailed => SessionState::RollbackFailed,
            State::Expired => SessionState::Expired,
        }
    }
}

/// A managed device (DM Client).
#[derive(Debug, Clone, PartialEq, Eq, Hash, uniffi::Record)]
pub struct Device {
    /// Its id, for example `IMEI:490154203237518`.
    pub device_id: String,
    /// Manufacturer.
    pub manufacturer: String,
    /// Model.
    pub model: String,
}

impl From<DeviceInfo> for Device {
    fn from(d: DeviceInfo) -> Self {
        Device {
            device_id: d.device_id,
            manufacturer: d.manufacturer,
            model: d.model,
        }
    }
}

impl From<Device> for DeviceInfo {
    fn from(d: Device) -> Self {
        DeviceInfo {
            device_id: d.device_id,
            manufacturer: d.manufacturer,
            model: d.model,
        }
    }
}

/// A delegated subtree and the rights DMS-2 gets on it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, uniffi::Record)]
pub struct Subtree {
    /// Absolute URI of its root, `.` for the whole tree.
    pub uri: String,
    /// ACL command names joined by `+`, for example `Add+Get+Replace`.
    pub rights: String,
}

impl From<&DelegatedSubtree> for Subtree {
    fn from(t: &DelegatedSubtree) -> Self {
        let rights: Vec<String> = t.rights.iter().map(|r| r.to_string()).collect();
        Subtree {
            uri: t.uri.clone(),
            rights: rights.join("+"),
        }
    }
}

impl TryFrom<Subtree> for DelegatedSubtree {
    type Error = DelegationError;

    fn try_from(t: Subtree) -> Result<Self, DelegationError> {
        let rights = AclCommand::parse_list(&t.rights)
            .map_err(|e| DelegationError::invalid("subtrees[].rights", e))?;
        Ok(DelegatedSubtree { uri: t.uri, rights })
    }
}

/// What `DelegationServer.startDelegation` starts.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct DelegationRequest {
    /// The peer's ServerID.
    pub peer: String,
    /// Method 1-4: this server is DMS-1 for 1 and 3, DMS-2 for 2 and 4.
    pub method: u8,
    /// Full or Partial.
    pub delegation_type: DelegationType,
    /// The device.
    pub device: Device,
    /// The subtrees and rights.
    pub subtrees: Vec<Subtree>,
    /// End of a temporary (Partial) delegation, milliseconds since the Unix epoch.
    #[uniffi(default = None)]
    pub expires_ms: Option<i64>,
    /// Session id to use; a fresh one when absent.
    #[uniffi(default = None)]
    pub session_id: Option<String>,
}

/// One delegation session as a server sees it.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct Session {
    /// Session id.
    pub session_id: String,
    /// This server's role.
    pub role: Role,
    /// Method 1-4.
    pub method: u8,
    /// Full or Partial.
    pub delegation_type: DelegationType,
    /// The peer's ServerID.
    pub peer: String,
    /// The device.
    pub device: Device,
    /// The subtrees and rights.
    pub subtrees: Vec<Subtree>,
    /// Where it stands.
    pub state: SessionState,
    /// True when no message moves it any more (Completed, Rejected, RolledBack,
    /// RollbackFailed, Expired).
    pub terminal: bool,
    /// Why it failed or was refused (reason code 100-999).
    pub reason_code: Option<u16>,
    /// The reason's text.
    pub reason_text: Option<String>,
    /// End of a temporary delegation, milliseconds since the Unix epoch.
    pub expires_ms: Option<i64>,
    /// When the current wait ends, milliseconds since the Unix epoch.
    pub deadline_ms: Option<i64>,
    /// DMS-1: journaled device operations not yet undone.
    pub pending_operations: u64,
    /// Created, milliseconds since the Unix epoch.
    pub created_ms: i64,
    /// Last changed, milliseconds since the Unix epoch.
    pub updated_ms: i64,
}

impl From<SessionInfo> for Session {
    fn from(s: SessionInfo) -> Self {
        Session {
            subtrees: s.info.subtrees.iter().map(Subtree::from).collect(),
            session_id: s.session_id,
            role: s.role.into(),
            method: s.method.number(),
            delegation_type: s.delegation_type.into(),
            peer: s.peer,
            device: s.info.device.into(),
            state: s.state.into(),
            terminal: s.state.is_terminal(),
            reason_code: s.reason.as_ref().map(|r| r.code),
            reason_text: s.reason.map(|r| r.text),
            expires_ms: s.expires.map(|t| t.0),
            deadline_ms: s.deadline.map(|t| t.0),
            pending_operations: s.pending_operations as u64,
            created_ms: s.created.0,
            updated_ms: s.updated.0,
        }
    }
}

/// A delegation a peer offers, for the host's policy.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct Offer {
    /// The session id the peer chose.
    pub session_id: String,
    /// The peer's ServerID, authenticated by mutual TLS.
    pub peer: String,
    /// The role this server would play.
    pub role: Role,
    /// Method 1-4.
    pub method: u8,
    /// Full or Partial.
    pub delegation_type: DelegationType,
    /// The device.
    pub device: Device,
    /// The subtrees and rights.
    pub subtrees: Vec<Subtree>,
    /// End of a temporary delegation, milliseconds since the Unix epoch.
    pub expires_ms: Option<i64>,
}

impl From<&DelegationOffer> for Offer {
    fn from(o: &DelegationOffer) -> Self {
        Offer {
            session_id: o.session_id.clone(),
            peer: o.peer.clone(),
            role: o.role.into(),
            method: o.method.number(),
            delegation_type: o.delegation_type.into(),
            device: o.info.device.clone().into(),
            subtrees: o.info.subtrees.iter().map(Subtree::from).collect(),
            expires_ms: o.expires.map(|t| t.0),
        }
    }
}

/// What happened to a delegation.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Enum)]
pub enum EventKind {
    /// The session moved from one state to another.
    StateChanged {
        /// Before.
        from: SessionState,
        /// After.
        to: SessionState,
    },
    /// The delegation completed.
    Completed,
    /// The delegation failed; a rollback follows.
    Failed {
        /// Reason code.
        reason_code: u16,
        /// Reason text.
        reason_text: String,
    },
    /// Every change made to the device was undone.
    RolledBack {
        /// Reason code of the failure.
        reason_code: u16,
        /// Reason text.
        reason_text: String,
    },
    /// Some inverse operations failed: the device needs attention.
    RollbackIncomplete {
        /// Reason code of the failure.
        reason_code: u16,
        /// Reason text.
        reason_text: String,
        /// The inverse operations that failed.
        failed: Vec<String>,
    },
    /// The peer refused the delegation.
    Rejected {
        /// The peer's reason code.
        reason_code: u16,
        /// The peer's reason text.
        reason_text: String,
    },
    /// A temporary delegation ended and was reverted.
    Expired,
}

/// An event, reported to `DelegationHost.onEvent`.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct DelegationEvent {
    /// Session.
    pub session_id: String,
    /// This server's role in it.
    pub role: Role,
    /// The device.
    pub device_id: String,
    /// What happened.
    pub kind: EventKind,
}

impl From<&Event> for DelegationEvent {
    fn from(e: &Event) -> Self {
        let kind = match &e.kind {
            CoreEventKind::StateChanged { from, to } => EventKind::StateChanged {
                from: (*from).into(),
                to: (*to).into(),
            },
            CoreEventKind::Completed => EventKind::Completed,
            CoreEventKind::Failed { reason } => EventKind::Failed {
                reason_code: reason.code,
                reason_text: reason.text.clone(),
            },
            CoreEventKind::RolledBack { reason } => EventKind::RolledBack {
                reason_code: reason.code,
                reason_text: reason.text.clone(),
            },
            CoreEventKind::RollbackIncomplete { reason, failed } => EventKind::RollbackIncomplete {
                reason_code: reason.code,
                reason_text: reason.text.clone(),
                failed: failed.clone(),
            },
            CoreEventKind::Rejected { reason } => EventKind::Rejected {
                reason_code: reason.code,
                reason_text: reason.text.clone(),
            },
            CoreEventKind::Expired => EventKind::Expired,
        };
        DelegationEvent {
            session_id: e.session_id.clone(),
            role: e.role.into(),
            device_id: e.device_id.clone(),
            kind,
        }
    }
}

/// The kinds of [`Command`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, uniffi::Enum)]
pub enum CommandKind {
    /// Read the subtree at `uri` with every node's ACL (`Get <uri>?list=TNDS+ACL`, plus
    /// `+Value` when `values`). Reply: the subtree's TNDS document.
    GetTree,
    /// Read a node's own ACL (`Get <uri>?prop=ACL`). Reply: the ACL text (empty: inherits).
    GetAcl,
    /// Add the subtree in `tnds` under `parent`. No reply.
    Add,
    /// Replace the node's whole ACL with `acl`. No reply.
    ReplaceAcl,
    /// Delete the node at `uri` and everything below. No reply.
    Delete,
}

/// One operation on the device's DM Tree that DMS-1's host executes in its DM session
/// with the device (`DelegationHost.execute`).
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct Command {
    /// What to do.
    pub kind: CommandKind,
    /// The node it targets (for `Add`, the new node's URI).
    pub uri: String,
    /// `GetTree`: whether leaf values are wanted.
    pub values: bool,
    /// `Add`: the parent URI.
    pub parent: Option<String>,
    /// `Add`: the new subtree as a TNDS document.
    pub tnds: Option<String>,
    /// `ReplaceAcl`: the new ACL text.
    pub acl: Option<String>,
    /// The command as SyncML DM 1.2 XML, for hosts that send it as it is.
    pub syncml: String,
}

impl From<&ClientCommand> for Command {
    fn from(c: &ClientCommand) -> Self {
        let (kind, values, parent, tnds, acl) = match c {
            ClientCommand::GetTree { values, .. } => {
                (CommandKind::GetTree, *values, None, None, None)
            }
            ClientCommand::GetAcl { .. } => (CommandKind::GetAcl, false, None, None, None),
            ClientCommand::Add { parent, node } => (
                CommandKind::Add,
                false,
                Some(parent.clone()),
                Some(MgmtTree::new(vec![node.clone()]).to_xml()),
                None,
            ),
            ClientCommand::ReplaceAcl { acl, .. } => (
                CommandKind::ReplaceAcl,
                false,
                None,
                None,
                Some(acl.to_string()),
            ),
            ClientCommand::Delete { .. } => (CommandKind::Delete, false, None, None, None),
        };
        Command {
            kind,
            uri: c.uri(),
            values,
            parent,
            tnds,
            acl,
            syncml: c.to_syncml(1),
        }
    }
}

impl TryFrom<&Command> for ClientCommand {
    type Error = DelegationError;

    fn try_from(c: &Command) -> Result<Self, DelegationError> {
        let need = |v: &Option<String>, field: &str| {
            v.clone()
                .ok_or_else(|| DelegationError::invalid(field, "required for this kind"))
        };
        Ok(match c.kind {
            CommandKind::GetTree => ClientCommand::GetTree {
                uri: c.uri.clone(),
                values: c.values,
            },
            CommandKind::GetAcl => ClientCommand::GetAcl { uri: c.uri.clone() },
            CommandKind::Add => {
                let tnds = need(&c.tnds, "command.tnds")?;
                let node = MgmtTree::single_node_from_xml(tnds.as_bytes())?;
                ClientCommand::Add {
                    parent: need(&c.parent, "command.parent")?,
                    node,
                }
            }
            CommandKind::ReplaceAcl => ClientCommand::ReplaceAcl {
                uri: c.uri.clone(),
                acl: Acl::parse(&need(&c.acl, "command.acl")?)
                    .map_err(|e| DelegationError::invalid("command.acl", e))?,
            },
            CommandKind::Delete => ClientCommand::Delete { uri: c.uri.clone() },
        })
    }
}

/// Milliseconds since the Unix epoch, checked.
pub(crate) fn timestamp(
    ms: Option<i64>,
    field: &str,
) -> Result<Option<Timestamp>, DelegationError> {
    match ms {
        None => Ok(None),
        Some(ms) if ms <= 0 => Err(DelegationError::invalid(field, "must be after 1970")),
        Some(ms) => Ok(Some(Timestamp(ms))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_survive_the_round_trip() {
        let node = dmdelegate::Node::interior("Apps", vec![dmdelegate::Node::leaf("Name", "x")]);
        let cases = vec![
            ClientCommand::GetTree {
                uri: "./Vendor".into(),
                values: true,
            },
            ClientCommand::GetAcl {
                uri: "./Vendor".into(),
            },
            ClientCommand::Add {
                parent: "./Vendor".into(),
                node,
            },
            ClientCommand::ReplaceAcl {
                uri: "./Vendor".into(),
                acl: Acl::parse("Get=dms1+dms2&Replace=dms1").unwrap(),
            },
            ClientCommand::Delete {
                uri: "./Vendor/Apps".into(),
            },
        ];
        for c in cases {
            let record = Command::from(&c);
            assert!(
                record.syncml.contains("<CmdID>1</CmdID>"),
                "{}",
                record.syncml
            );
            assert_eq!(ClientCommand::try_from(&record).unwrap(), c);
        }
    }

    #[test]
    fn a_command_missing_its_payload_is_refused() {
        let mut record = Command::from(&ClientCommand::ReplaceAcl {
            uri: "./A".into(),
            acl: Acl::parse("Get=x").unwrap(),
        });
        record.acl = None;
        assert!(matches!(
            ClientCommand::try_from(&record),
            Err(DelegationError::InvalidArgument { ref field, .. }) if field == "command.acl"
        ));
    }

    #[test]
    fn rights_are_parsed_and_bad_ones_refused() {
        let t = DelegatedSubtree::try_from(Subtree {
            uri: "./A".into(),
            rights: "Replace+Get+Get".into(),
        })
        .unwrap();
        assert_eq!(Subtree::from(&t).rights, "Get+Replace");
        assert!(DelegatedSubtree::try_from(Subtree {
            uri: "./A".into(),
            rights: "Fly".into(),
        })
        .is_err());
    }
}
