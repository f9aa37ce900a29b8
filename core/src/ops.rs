//! Client operations: what a server asks of the device, and their SyncML DM 1.2 rendering.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::acl::Acl;
use crate::tree::Node;

/// One operation on the device's DM Tree, executed by the host in its DM session.
// A handful of commands exist per delegation; boxing the tree would only burden bindings.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ClientCommand {
    /// Read the structure of the subtree at `uri` with every node's ACL
    /// (`Get <uri>?list=TNDS+ACL`, plus `+Value` when `values`). Secrets never come back.
    GetTree {
        /// Subtree root.
        uri: String,
        /// Whether leaf values are wanted.
        values: bool,
    },
    /// Read a node's own ACL (`Get <uri>?prop=ACL`); empty means it inherits.
    GetAcl {
        /// Node.
        uri: String,
    },
    /// Add `node` (with its subtree) under `parent` (`Add` with a TNDS object).
    Add {
        /// Parent URI, which must exist.
        parent: String,
        /// The new subtree.
        node: Node,
    },
    /// Replace a node's whole ACL (`Replace <uri>?prop=ACL`); empty makes it inherit.
    ReplaceAcl {
        /// Node.
        uri: String,
        /// The new ACL.
        acl: Acl,
    },
    /// Delete the node at `uri` and everything below it.
    Delete {
        /// Node.
        uri: String,
    },
}

impl ClientCommand {
    /// The URI the command targets.
    pub fn uri(&self) -> String {
        match self {
            ClientCommand::GetTree { uri, .. }
            | ClientCommand::GetAcl { uri }
            | ClientCommand::ReplaceAcl { uri, .. }
            | ClientCommand::Delete { uri } => uri.clone(),
            ClientCommand::Add { parent, node } => format!("{parent}/{}", node.name),
        }
    }

    /// True for commands that change the tree.
    pub fn is_write(&self) -> bool {
        !matches!(
            self,
            ClientCommand::GetTree { .. } | ClientCommand::GetAcl { .. }
        )
    }

    /// Renders the command as one SyncML DM 1.2 command element with `cmd_id`, ready for
    /// a host whose SyncML engine sends commands as they are.
    pub fn to_syncml(&self, cmd_id: u32) -> String {
        crate::syncml::commands_for(std::slice::from_ref(self), cmd_id)
            .into_iter()
            .map(|c| c.to_xml())
            .collect()
    }
}

impl fmt::Display for ClientCommand {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientCommand::GetTree { uri, values: false } => write!(f, "Get {uri}?list=TNDS+ACL"),
            ClientCommand::GetTree { uri, values: true } => {
                write!(f, "Get {uri}?list=TNDS+ACL+Value")
            }
            ClientCommand::GetAcl { uri } => write!(f, "Get {uri}?prop=ACL"),
            ClientCommand::Add { parent, node } => write!(f, "Add {parent}/{}", node.name),
            ClientCommand::ReplaceAcl { uri, acl } => {
                write!(f, "Replace {uri}?prop=ACL = \"{acl}\"")
            }
            ClientCommand::Delete { uri } => write!(f, "Delete {uri}"),
        }
    }
}

/// What a successful command returns.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CommandOutput {
    /// A write succeeded.
    Done,
    /// The result of [`ClientCommand::GetAcl`].
    Acl(Acl),
    /// The result of [`ClientCommand::GetTree`].
    Tree(Node),
}

impl CommandOutput {
    /// The text a host replies with for this output: the ACL text, the subtree's TNDS,
    /// nothing for a write. The inverse of [`CommandOutput::from_reply`].
    pub fn to_reply(&self) -> Option<String> {
        match self {
            CommandOutput::Done => None,
            CommandOutput::Acl(acl) => Some(acl.to_string()),
            CommandOutput::Tree(node) => {
                Some(crate::tree::MgmtTree::new(vec![node.clone()]).to_xml())
            }
        }
    }

    /// The output of `command` from the text a host replied with after status 200: the
    /// subtree's TNDS for [`ClientCommand::GetTree`], the ACL text for
    /// [`ClientCommand::GetAcl`], nothing for writes. A missing or invalid reply is a
    /// device failure (status 500) naming `who` (the callback that replied).
    pub fn from_reply(
        command: &ClientCommand,
        reply: Option<&str>,
        who: &str,
    ) -> Result<CommandOutput, DeviceError> {
        let missing = |what: &str| {
            DeviceError::new(
                500,
                format!("{who} returned 200 for {command} without {what} in the reply"),
            )
        };
        match command {
            ClientCommand::GetTree { .. } => {
                let text = reply.ok_or_else(|| missing("the TNDS document"))?;
                crate::tree::MgmtTree::single_node_from_xml(text.as_bytes())
                    .map(CommandOutput::Tree)
                    .map_err(|e| DeviceError::new(500, format!("{who}'s TNDS is not valid: {e}")))
            }
            ClientCommand::GetAcl { .. } => {
                let text = reply.ok_or_else(|| missing("the ACL text"))?;
                Acl::parse(text)
                    .map(CommandOutput::Acl)
                    .map_err(|e| DeviceError::new(500, format!("{who}'s ACL is not valid: {e}")))
            }
            _ => Ok(CommandOutput::Done),
        }
    }
}

/// A device's refusal: a SyncML status code and detail.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("status {status}: {message}")]
pub struct DeviceError {
    /// SyncML status, for example 404 not found, 418 already exists, 425 permission denied.
    pub status: u16,
    /// Detail.
    pub message: String,
}

impl DeviceError {
    /// A refusal with `status`.
    pub fn new(status: u16, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }
}

/// SyncML status codes the engine and the simulated device use.
pub mod status {
    /// Success.
    pub const OK: u16 = 200;
    /// Target not found.
    pub const NOT_FOUND: u16 = 404;
    /// Command not allowed.
    pub const NOT_ALLOWED: u16 = 405;
    /// Target already exists.
    pub const ALREADY_EXISTS: u16 = 418;
    /// Permission denied by ACL.
    pub const PERMISSION_DENIED: u16 = 425;
    /// Command failed.
    pub const COMMAND_FAILED: u16 = 500;
    /// Device unreachable (not a SyncML status: the session could not be opened).
    pub const UNREACHABLE: u16 = 503;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_syncml_commands() {
        let add = ClientCommand::Add {
            parent: "./DMAcc".into(),
            node: Node::leaf("X", "v"),
        };
        let s = add.to_syncml(3);
        assert!(s.starts_with("<Add><CmdID>3</CmdID>"));
        assert!(s.contains("<LocURI>./DMAcc</LocURI>"));
        assert!(s.contains("&lt;MgmtTree xmlns=&quot;syncml:dmddf1.2&quot;&gt;"));
        let r = ClientCommand::ReplaceAcl {
            uri: "./A".into(),
            acl: Acl::parse("Get=*").unwrap(),
        };
        assert_eq!(
            r.to_syncml(4),
            "<Replace><CmdID>4</CmdID><Item><Target><LocURI>./A?prop=ACL</LocURI></Target><Data>Get=*</Data></Item></Replace>"
        );
    }
}
