//! DM Tree access control lists (OMA DM TND): parse, print, evaluate, edit.
//!
//! Grammar: `acl = [entry *("&" entry)]`, `entry = cmd "=" ("*" / id *("+" id))`,
//! `cmd = "Add" / "Delete" / "Exec" / "Get" / "Replace"`. An empty ACL means "inherit the
//! whole ACL of the nearest ancestor that has one"; see [`effective_acl`].

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::error::DecodeError;

/// A command an ACL grants (and a right delegated in Del_Info).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum AclCommand {
    /// Add a child node.
    Add,
    /// Delete the node.
    Delete,
    /// Execute the node.
    Exec,
    /// Read the node.
    Get,
    /// Replace the node's value or properties.
    Replace,
}

impl AclCommand {
    /// All commands, in canonical print order.
    pub const ALL: [AclCommand; 5] = [
        AclCommand::Add,
        AclCommand::Delete,
        AclCommand::Exec,
        AclCommand::Get,
        AclCommand::Replace,
    ];

    /// The command's name as it appears in an ACL.
    pub fn as_str(self) -> &'static str {
        match self {
            AclCommand::Add => "Add",
            AclCommand::Delete => "Delete",
            AclCommand::Exec => "Exec",
            AclCommand::Get => "Get",
            AclCommand::Replace => "Replace",
        }
    }
}

impl fmt::Display for AclCommand {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for AclCommand {
    type Err = DecodeError;
    fn from_str(s: &str) -> Result<Self, DecodeError> {
        AclCommand::ALL
            .into_iter()
            .find(|c| c.as_str() == s)
            .ok_or_else(|| DecodeError::InvalidField {
                field: "ACL".into(),
                reason: format!(
                    "unknown command `{s}` (expected Add, Delete, Exec, Get or Replace)"
                ),
            })
    }
}

impl AclCommand {
    /// Rights written as command names joined by `+` (`Add+Get+Replace`), parsed, sorted
    /// and without repeats: how a delegation request names the rights on a subtree.
    pub fn parse_list(text: &str) -> Result<Vec<AclCommand>, DecodeError> {
        let mut rights = text
            .split('+')
            .map(|r| r.trim().parse::<AclCommand>())
            .collect::<Result<Vec<_>, _>>()?;
        rights.sort();
        rights.dedup();
        Ok(rights)
    }
}

/// Who an ACL entry grants a command to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Grantees {
    /// `*`: every server.
    Any,
    /// The listed ServerIDs, in order, without duplicates.
    Servers(Vec<String>),
}

impl Grantees {
    /// True when `server_id` is listed by name (not through `*`).
    fn names(&self, server_id: &str) -> bool {
        matches!(self, Grantees::Servers(ids) if ids.iter().any(|i| i == server_id))
    }
}

/// A parsed ACL. Entries keep the canonical command order; an empty ACL inherits.
///
/// Copy-on-write: a clone shares the entries (every read of a device tree copies every
/// node's ACL, and most copies are never changed); [`Acl::grant`] and [`Acl::scrub`]
/// give a shared ACL its own entries first.
#[derive(Clone, Default, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub struct Acl {
    /// `None` when empty; never `Some` of an empty list, which keeps one empty form.
    entries: Option<Arc<Vec<(AclCommand, Grantees)>>>,
}

/// The empty ACL, for borrowing where a node has none.
pub(crate) static EMPTY_ACL: Acl = Acl { entries: None };

impl PartialEq for Acl {
    fn eq(&self, other: &Acl) -> bool {
        self.entries() == other.entries()
    }
}

impl Eq for Acl {}

impl fmt::Debug for Acl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Acl")
            .field("entries", &self.entries())
            .finish()
    }
}

impl Acl {
    /// The empty ACL (inherits from the nearest ancestor).
    pub fn empty() -> Self {
        Self::default()
    }

    /// True when the ACL has no entries and so inherits.
    pub fn is_empty(&self) -> bool {
        self.entries.is_none()
    }

    fn entries(&self) -> &[(AclCommand, Grantees)] {
        self.entries.as_deref().map_or(&[], Vec::as_slice)
    }

    /// The entries to change: this ACL's own (copied first if shared).
    fn entries_mut(&mut self) -> &mut Vec<(AclCommand, Grantees)> {
        Arc::make_mut(self.entries.get_or_insert_with(Default::default))
    }

    fn from_entries(entries: Vec<(AclCommand, Grantees)>) -> Acl {
        Acl {
            entries: (!entries.is_empty()).then(|| Arc::new(entries)),
        }
    }

    /// Parses the textual form; `""` is the empty ACL.
    pub fn parse(text: &str) -> Result<Self, DecodeError> {
        let text = text.trim();
        if text.is_empty() {
            return Ok(Acl::empty());
        }
        let mut entries: Vec<(AclCommand, Grantees)> = Vec::new();
        for entry in text.split('&') {
            let (cmd, ids) = entry
                .split_once('=')
                .ok_or_else(|| DecodeError::InvalidField {
                    field: "ACL".into(),
                    reason: format!("entry `{entry}` has no `=`"),
                })?;
            let cmd: AclCommand = cmd.parse()?;
            if entries.iter().any(|(c, _)| *c == cmd) {
                return Err(DecodeError::InvalidField {
                    field: "ACL".into(),
                    reason: format!("command `{cmd}` appears twice"),
                });
            }
            let grantees = if ids == "*" {
                Grantees::Any
            } else {
                let mut list: Vec<String> = Vec::new();
                for id in ids.split('+') {
                    validate_server_id(id).map_err(|reason| DecodeError::InvalidField {
                        field: "ACL".into(),
                        reason: format!("in `{cmd}`: {reason}"),
                    })?;
                    if !list.iter().any(|x| x == id) {
                        list.push(id.to_string());
                    }
                }
                Grantees::Servers(list)
            };
            entries.push((cmd, grantees));
        }
        entries.sort_by_key(|(c, _)| *c);
        Ok(Acl::from_entries(entries))
    }

    /// The grantees of `cmd`, if the ACL has an entry for it.
    pub fn grantees(&self, cmd: AclCommand) -> Option<&Grantees> {
        self.entries()
            .iter()
            .find(|(c, _)| *c == cmd)
            .map(|(_, g)| g)
    }

    /// Whether this (non-empty, effective) ACL lets `server_id` perform `cmd`.
    pub fn permits(&self, cmd: AclCommand, server_id: &str) -> bool {
        match self.grantees(cmd) {
            Some(Grantees::Any) => true,
            Some(Grantees::Servers(ids)) => ids.iter().any(|i| i == server_id),
            None => false,
        }
    }

    /// The commands `server_id` is explicitly named for (not counting `*`).
    pub fn commands_naming(&self, server_id: &str) -> Vec<AclCommand> {
        self.entries()
            .iter()
            .filter(|(_, g)| g.names(server_id))
            .map(|(c, _)| *c)
            .collect()
    }

    /// Grants `cmd` to `server_id` (no change when already granted, including via `*`).
    pub fn grant(&mut self, cmd: AclCommand, server_id: &str) {
        if self.permits(cmd, server_id) {
            // Nothing changes: a shared ACL stays shared.
            return;
        }
        let entries = self.entries_mut();
        match entries.iter_mut().find(|(c, _)| *c == cmd) {
            Some((_, Grantees::Any)) => {}
            Some((_, Grantees::Servers(ids))) => ids.push(server_id.to_string()),
            None => {
                entries.push((cmd, Grantees::Servers(vec![server_id.to_string()])));
                entries.sort_by_key(|(c, _)| *c);
            }
        }
    }

    /// Removes `server_id` from every entry; an entry left with nobody is dropped.
    pub fn scrub(&mut self, server_id: &str) {
        if !self.entries().iter().any(|(_, g)| g.names(server_id)) {
            // Nothing changes: a shared ACL stays shared.
            return;
        }
        let entries = self.entries_mut();
        for (_, g) in entries.iter_mut() {
            if let Grantees::Servers(ids) = g {
                ids.retain(|i| i != server_id);
            }
        }
        entries.retain(|(_, g)| !matches!(g, Grantees::Servers(ids) if ids.is_empty()));
        if entries.is_empty() {
            self.entries = None;
        }
    }
}

/// Checks a ServerID as it may appear in an ACL.
pub fn validate_server_id(id: &str) -> Result<(), String> {
    if id.is_empty() {
        return Err("empty ServerID".into());
    }
    if id == "*" {
        return Err("`*` is not a ServerID".into());
    }
    if let Some(c) = id
        .chars()
        .find(|c| matches!(c, '&' | '=' | '+' | '*') || c.is_whitespace() || c.is_control())
    {
        return Err(format!("ServerID `{id}` contains `{}`", c.escape_default()));
    }
    Ok(())
}

impl fmt::Display for Acl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (cmd, g)) in self.entries().iter().enumerate() {
            if i > 0 {
                f.write_str("&")?;
            }
            write!(f, "{cmd}=")?;
            match g {
                Grantees::Any => f.write_str("*")?,
                Grantees::Servers(ids) => f.write_str(&ids.join("+"))?,
            }
        }
        Ok(())
    }
}

impl FromStr for Acl {
    type Err = DecodeError;
    fn from_str(s: &str) -> Result<Self, DecodeError> {
        Acl::parse(s)
    }
}

impl From<Acl> for String {
    fn from(a: Acl) -> String {
        a.to_string()
    }
}

impl TryFrom<String> for Acl {
    type Error = DecodeError;
    fn try_from(s: String) -> Result<Self, DecodeError> {
        Acl::parse(&s)
    }
}

/// The ACL in force at a node: its own when non-empty, else the nearest ancestor's.
/// `chain` lists the ACLs from the node up to the root (node first).
pub fn effective_acl<'a>(chain: impl IntoIterator<Item = &'a Acl>) -> Option<&'a Acl> {
    chain.into_iter().find(|a| !a.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_prints_and_evaluates() {
        let acl = Acl::parse("Replace=ServerA&Add=ServerA+ServerB&Get=*").unwrap();
        assert_eq!(acl.to_string(), "Add=ServerA+ServerB&Get=*&Replace=ServerA");
        assert!(acl.permits(AclCommand::Add, "ServerB"));
        assert!(acl.permits(AclCommand::Get, "anyone"));
        assert!(!acl.permits(AclCommand::Replace, "ServerB"));
        assert!(!acl.permits(AclCommand::Delete, "ServerA"));
        assert_eq!(
            acl.commands_naming("ServerA"),
            vec![AclCommand::Add, AclCommand::Replace]
        );
    }

    #[test]
    fn grant_and_scrub() {
        let mut acl = Acl::parse("Get=*&Replace=A").unwrap();
        acl.grant(AclCommand::Replace, "B");
        acl.grant(AclCommand::Get, "B");
        acl.grant(AclCommand::Delete, "B");
        assert_eq!(acl.to_string(), "Delete=B&Get=*&Replace=A+B");
        acl.scrub("B");
        assert_eq!(acl.to_string(), "Get=*&Replace=A");
    }

    #[test]
    fn rejects_bad_text() {
        for bad in ["Get", "Fly=A", "Get=A&Get=B", "Get=", "Get=A+", "Get=A B"] {
            assert!(Acl::parse(bad).is_err(), "{bad} should fail");
        }
    }

    #[test]
    fn inherits_from_nearest_non_empty_ancestor() {
        let leaf = Acl::empty();
        let mid = Acl::parse("Get=A").unwrap();
        let root = Acl::parse("Add=*&Get=*").unwrap();
        assert_eq!(effective_acl([&leaf, &mid, &root]), Some(&mid));
    }

    #[test]
    fn a_changed_copy_leaves_the_original_alone() {
        let original = Acl::parse("Get=*&Replace=dms1").unwrap();
        let mut copy = original.clone();
        copy.grant(AclCommand::Replace, "dms2");
        copy.grant(AclCommand::Add, "dms2");
        assert_eq!(copy.to_string(), "Add=dms2&Get=*&Replace=dms1+dms2");
        assert_eq!(original.to_string(), "Get=*&Replace=dms1");
        let mut scrubbed = copy.clone();
        scrubbed.scrub("dms2");
        assert_eq!(scrubbed, original);
        assert_eq!(copy.to_string(), "Add=dms2&Get=*&Replace=dms1+dms2");
    }

    #[test]
    fn an_acl_scrubbed_of_everyone_is_the_empty_acl() {
        let mut acl = Acl::parse("Add=dms1&Get=dms1").unwrap();
        acl.scrub("dms1");
        assert!(acl.is_empty());
        assert_eq!(acl, Acl::empty());
        assert_eq!(acl.to_string(), "");
        // Granting what is already granted changes nothing.
        let mut any = Acl::parse("Get=*").unwrap();
        any.grant(AclCommand::Get, "dms2");
        assert_eq!(any.to_string(), "Get=*");
    }
}
