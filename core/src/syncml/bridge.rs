//! The bridge between the engine's [`ClientCommand`]s and SyncML DM commands.
//!
//! | operation | SyncML |
//! |---|---|
//! | [`ClientCommand::GetTree`] | `Get <uri>?list=TNDS+ACL` (`+Value` when values are wanted) |
//! | [`ClientCommand::GetAcl`] | `Get <uri>?prop=ACL` |
//! | [`ClientCommand::Add`] | `Add <parent>`, Meta Format `xml`, Type [`TNDS_MEDIA_TYPE`], the TNDS object (its node's `Path` is the parent) as escaped character data in `Data` |
//! | [`ClientCommand::ReplaceAcl`] | `Replace <uri>?prop=ACL`, the ACL text in `Data` |
//! | [`ClientCommand::Delete`] | `Delete <uri>` |
//!
//! Each command renders exactly as [`ClientCommand::to_syncml`] does. A device answers each
//! command with a `Status` (200 or the [`DeviceError`]'s code, its message in the item's
//! `Data`) and, for a Get, a `Results` whose item carries the ACL text (Format `chr`, Type
//! `text/plain`) or a TNDS object holding the subtree (Format `xml`, Type
//! [`TNDS_MEDIA_TYPE`]).

use super::{invalid, Item, ItemCommand, Meta, Results, Status, SyncCommand, R};
use crate::acl::Acl;
use crate::error::DecodeError;
use crate::ops::{status, ClientCommand, CommandOutput, DeviceError};
use crate::tree::{uri_segments, write_mgmt_tree, MgmtTree, Node, TNDS_MEDIA_TYPE};
use crate::xml::{join, XmlWriter};

const PROP_ACL: &str = "prop=ACL";
const LIST_TREE: &str = "list=TNDS+ACL";
const LIST_TREE_VALUES: &str = "list=TNDS+ACL+Value";

/// A TNDS object holding `node`, without XML declaration.
fn tnds(node: Node) -> String {
    let mut w = XmlWriter::new();
    write_mgmt_tree(&mut w, &MgmtTree::new(vec![node]));
    w.finish()
}

/// The SyncML commands carrying `ops`, numbered from `first_cmd_id` (saturating at
/// `u32::MAX`, which validation then refuses as a repeated `CmdID`).
pub fn commands_for(ops: &[ClientCommand], first_cmd_id: u32) -> Vec<SyncCommand> {
    ops.iter()
        .enumerate()
        .map(|(i, op)| {
            let cmd_id = first_cmd_id.saturating_add(u32::try_from(i).unwrap_or(u32::MAX));
            let one = |target: String, meta: Option<Meta>, data: Option<String>| ItemCommand {
                cmd_id,
                meta,
                items: vec![Item {
                    data,
                    ..Item::target(target)
                }],
            };
            match op {
                ClientCommand::GetTree { uri, values } => {
                    let list = if *values { LIST_TREE_VALUES } else { LIST_TREE };
                    SyncCommand::Get(one(format!("{uri}?{list}"), None, None))
                }
                ClientCommand::GetAcl { uri } => {
                    SyncCommand::Get(one(format!("{uri}?{PROP_ACL}"), None, None))
                }
                ClientCommand::Add { parent, node } => {
                    let mut top = node.clone();
                    top.path = Some(parent.clone());
                    let meta = Meta::new("xml", TNDS_MEDIA_TYPE);
                    SyncCommand::Add(one(parent.clone(), Some(meta), Some(tnds(top))))
                }
                ClientCommand::ReplaceAcl { uri, acl } => SyncCommand::Replace(one(
                    format!("{uri}?{PROP_ACL}"),
                    None,
                    Some(acl.to_string()),
                )),
                ClientCommand::Delete { uri } => SyncCommand::Delete(one(uri.clone(), None, None)),
            }
        })
        .collect()
}

/// A single TNDS node from `data`; errors are prefixed with `field`.
fn tnds_node(data: &str, field: &str) -> R<Node> {
    let tree = MgmtTree::from_xml(data.as_bytes()).map_err(|e| e.under(field))?;
    let [node] = <[Node; 1]>::try_from(tree.nodes).map_err(|_| {
        invalid(
            join(field, "MgmtTree"),
            "must hold exactly one top-level node",
        )
    })?;
    Ok(node)
}

/// The operation a server sent, for a device to execute: the inverse of
/// [`commands_for`]. Only the forms [`commands_for`] produces are accepted; errors name
/// the field from the command's element (`Add/Item[1]/Data/MgmtTree/...`). The added
/// node comes back with `path: None` (its TNDS `Path` must be the target, if given).
pub fn client_command_from(cmd: &SyncCommand) -> R<ClientCommand> {
    let name = cmd.name();
    let c = match cmd {
        SyncCommand::Add(c)
        | SyncCommand::Replace(c)
        | SyncCommand::Delete(c)
        | SyncCommand::Get(c) => c,
        _ => return Err(invalid(name, "is not a DM Tree operation")),
    };
    let item = match c.items.as_slice() {
        [item] => item,
        _ => return Err(invalid(join(name, "Item"), "must hold exactly one item")),
    };
    let ip = format!("{name}/Item[1]");
    let tp = format!("{ip}/Target/LocURI");
    let target = item
        .target
        .as_deref()
        .ok_or_else(|| DecodeError::MissingField { field: tp.clone() })?;
    let (uri, query) = match target.split_once('?') {
        Some((u, q)) => (u, Some(q)),
        None => (target, None),
    };
    uri_segments(uri).map_err(|r| invalid(&tp, r))?;
    let data = || {
        item.data
            .as_deref()
            .ok_or_else(|| DecodeError::MissingField {
                field: join(&ip, "Data"),
            })
    };
    let uri = uri.to_string();
    Ok(match (cmd, query) {
        (SyncCommand::Get(_), Some(PROP_ACL)) => ClientCommand::GetAcl { uri },
        (SyncCommand::Get(_), Some(LIST_TREE)) => ClientCommand::GetTree { uri, values: false },
        (SyncCommand::Get(_), Some(LIST_TREE_VALUES)) => {
            ClientCommand::GetTree { uri, values: true }
        }
        (SyncCommand::Replace(_), Some(PROP_ACL)) => ClientCommand::ReplaceAcl {
            uri,
            acl: Acl::parse(data()?).map_err(|e| match e {
                DecodeError::InvalidField { reason, .. } => invalid(join(&ip, "Data"), reason),
                other => other,
            })?,
        },
        (SyncCommand::Delete(_), None) => ClientCommand::Delete { uri },
        (SyncCommand::Add(_), None) => {
            let meta = item.meta.as_ref().or(c.meta.as_ref());
            let meta_path = join(
                if item.meta.is_some() {
                    ip.as_str()
                } else {
                    name
                },
                "Meta",
            );
            let meta = meta.ok_or_else(|| DecodeError::MissingField {
                field: meta_path.clone(),
            })?;
            if meta.format.as_deref() != Some("xml") {
                return Err(invalid(join(&meta_path, "Format"), "must be xml"));
            }
            if meta.type_.as_deref() != Some(TNDS_MEDIA_TYPE) {
                return Err(invalid(
                    join(&meta_path, "Type"),
                    format!("must be {TNDS_MEDIA_TYPE}"),
                ));
            }
            let mut node = tnds_node(data()?, &join(&ip, "Data"))?;
            if node.path.as_deref().is_some_and(|p| p != uri) {
                return Err(invalid(
                    format!("{ip}/Data/MgmtTree/Node[1]/Path"),
                    "differs from the Add's target",
                ));
            }
            node.path = None;
            ClientCommand::Add { parent: uri, node }
        }
        _ => return Err(invalid(tp, format!("`{target}` is not a supported {name}"))),
    })
}

/// What a device's answer to one operation means for the server: `status` is the
/// `Status` answering it, `results` the `Results` that came with it (for a Get). A
/// non-2xx status is the device's refusal; an answer that does not fit (not a Status,
/// Results for another command, unreadable ACL or TNDS) is reported as status 500.
/// A Results item typed [`TNDS_MEDIA_TYPE`] is a subtree, any other an ACL.
pub fn command_output_from(
    status: &SyncCommand,
    results: Option<&SyncCommand>,
) -> Result<CommandOutput, DeviceError> {
    let bad = |m: String| DeviceError::new(status::COMMAND_FAILED, format!("malformed reply: {m}"));
    let SyncCommand::Status(s) = status else {
        return Err(bad(format!("{} instead of Status", status.name())));
    };
    if !(200..300).contains(&s.data) {
        let message = s.items.first().and_then(|i| i.data.clone());
        return Err(DeviceError::new(s.data, message.unwrap_or_default()));
    }
    let r = match results {
        None => return Ok(CommandOutput::Done),
        Some(SyncCommand::Results(r)) if r.cmd_ref == s.cmd_ref => r,
        Some(other) => {
            return Err(bad(format!(
                "{} {} does not answer command {}",
                other.name(),
                other.cmd_id(),
                s.cmd_ref
            )))
        }
    };
    let [item] = r.items.as_slice() else {
        return Err(bad("Results must hold exactly one item".into()));
    };
    let data = item.data.as_deref().unwrap_or_default();
    let meta = item.meta.as_ref().or(r.meta.as_ref());
    if meta.and_then(|m| m.type_.as_deref()) == Some(TNDS_MEDIA_TYPE) {
        tnds_node(data, "Results/Item[1]/Data")
            .map(CommandOutput::Tree)
            .map_err(|e| bad(e.to_string()))
    } else {
        Acl::parse(data)
            .map(CommandOutput::Acl)
            .map_err(|e| bad(e.to_string()))
    }
}

/// A device's answer to `cmd` (received in message `msg_ref`) given the `outcome` of
/// executing it: a `Status` numbered `first_cmd_id` and, for an ACL or subtree, a
/// `Results` numbered `first_cmd_id + 1` whose item's `Source` is the command's target.
/// A status outside 100–599 is sent as 500.
pub fn reply_for(
    msg_ref: u32,
    cmd: &SyncCommand,
    first_cmd_id: u32,
    outcome: &Result<CommandOutput, DeviceError>,
) -> Vec<SyncCommand> {
    let target = cmd.items().first().and_then(|i| i.target.clone());
    let (code, items) = match outcome {
        Ok(_) => (status::OK, Vec::new()),
        Err(e) => {
            let code = if (100..=599).contains(&e.status) {
                e.status
            } else {
                status::COMMAND_FAILED
            };
            let items = if e.message.is_empty() {
                Vec::new()
            } else {
                vec![Item {
                    data: Some(e.message.clone()),
                    ..Item::default()
                }]
            };
            (code, items)
        }
    };
    let mut out = vec![SyncCommand::Status(Status {
        cmd_id: first_cmd_id,
        msg_ref,
        cmd_ref: cmd.cmd_id(),
        cmd: cmd.name().into(),
        target_ref: target.clone(),
        source_ref: None,
        chal: None,
        data: code,
        items,
    })];
    let result = match outcome {
        Ok(CommandOutput::Acl(acl)) => Some((Meta::new("chr", "text/plain"), acl.to_string())),
        Ok(CommandOutput::Tree(node)) => {
            Some((Meta::new("xml", TNDS_MEDIA_TYPE), tnds(node.clone())))
        }
        _ => None,
    };
    if let Some((meta, data)) = result {
        out.push(SyncCommand::Results(Results {
            cmd_id: first_cmd_id.saturating_add(1),
            msg_ref: Some(msg_ref),
            cmd_ref: cmd.cmd_id(),
            meta: None,
            items: vec![Item {
                target: None,
                source: target,
                meta: Some(meta),
                data: Some(data),
            }],
        }));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ops() -> Vec<ClientCommand> {
        vec![
            ClientCommand::GetTree {
                uri: "./DMAcc".into(),
                values: false,
            },
            ClientCommand::GetTree {
                uri: "./DMAcc".into(),
                values: true,
            },
            ClientCommand::GetAcl { uri: "./A".into() },
            ClientCommand::Add {
                parent: "./DMAcc".into(),
                node: Node::interior("X", vec![Node::leaf("AppID", "w7 & <x>")]),
            },
            ClientCommand::ReplaceAcl {
                uri: "./A".into(),
                acl: Acl::parse("Get=*&Replace=S1+S2").unwrap(),
            },
            ClientCommand::ReplaceAcl {
                uri: "./A/B".into(),
                acl: Acl::empty(),
            },
            ClientCommand::Delete {
                uri: "./DMAcc/X".into(),
            },
        ]
    }

    #[test]
    fn renders_exactly_as_ops_to_syncml() {
        for (op, cmd) in ops().iter().zip(commands_for(&ops(), 7)) {
            let id = cmd.cmd_id();
            assert_eq!(cmd.to_xml(), op.to_syncml(id), "{op}");
            assert_eq!(&client_command_from(&cmd).unwrap(), op);
        }
    }

    #[test]
    fn refuses_other_forms() {
        let get = |t: &str| {
            SyncCommand::Get(ItemCommand {
                cmd_id: 1,
                meta: None,
                items: vec![Item::target(t)],
            })
        };
        for t in ["./A", "./A?list=Struct", "A?prop=ACL", "./A/../B?prop=ACL"] {
            assert!(client_command_from(&get(t)).is_err(), "{t}");
        }
        let mut add = commands_for(&ops()[3..4], 1).remove(0);
        if let SyncCommand::Add(c) = &mut add {
            c.meta = Some(Meta::new("chr", "text/plain"));
        }
        assert_eq!(
            client_command_from(&add),
            Err(invalid("Add/Meta/Format", "must be xml"))
        );
    }

    #[test]
    fn device_replies_map_back() {
        let cmds = commands_for(&ops(), 1);
        let outcomes = [
            Ok(CommandOutput::Tree(Node::interior(
                "DMAcc",
                vec![Node::leaf("A", "v")],
            ))),
            Ok(CommandOutput::Acl(Acl::parse("Get=*").unwrap())),
            Ok(CommandOutput::Acl(Acl::empty())),
            Ok(CommandOutput::Done),
            Err(DeviceError::new(status::PERMISSION_DENIED, "no & <way>")),
            Err(DeviceError::new(status::NOT_FOUND, "")),
        ];
        for (cmd, outcome) in cmds.iter().zip(&outcomes) {
            let reply = reply_for(3, cmd, 10, outcome);
            assert_eq!(
                reply.len(),
                if matches!(outcome, Ok(CommandOutput::Done) | Err(_)) {
                    1
                } else {
                    2
                }
            );
            assert_eq!(&command_output_from(&reply[0], reply.get(1)), outcome);
        }
        let status = &reply_for(3, &cmds[0], 10, &outcomes[0])[0];
        let stray = reply_for(3, &cmds[1], 12, &outcomes[1]);
        let e = command_output_from(status, stray.get(1)).unwrap_err();
        assert_eq!(e.status, status::COMMAND_FAILED);
    }
}
