//! SyncML DM 1.2, the protocol of a DM session, as far as delegation needs it.
//!
//! - [`SyncMessage`]: one message (`SyncHdr`, `SyncBody`, `Final`) with the commands Add,
//!   Replace, Delete, Get, Exec, Alert, Status and Results, and its XML codec
//!   ([`SyncMessage::to_xml`], [`SyncMessage::from_xml`]);
//! - [`commands_for`], [`client_command_from`], [`command_output_from`], [`reply_for`]: the
//!   bridge between the engine's [`ClientCommand`](crate::ClientCommand)s and SyncML, on the
//!   server side and on the device side;
//! - [`Cred`], [`Chal`]: Basic and MD5 credentials and challenges;
//! - [`Notification`]: the Package 0 server-initiated session trigger.
//!
//! Decoding is as strict as the rest of the crate: the hardened reader's limits apply,
//! every element must be in [`NAMESPACE`] (the children of `Meta` in
//! [`METINF_NAMESPACE`]), elements the codec does not model are refused, scalars appear at
//! most once, numbers are plain decimal digits, and every error names the field as a path
//! such as `SyncML/SyncBody/Status[2]/Data` (the index counts elements of that name).
//! Scalar texts are trimmed; `Data` keeps its exact text. `Data` holding child elements
//! (embedded XML) is refused: embedded documents travel as escaped character data.

use std::collections::HashSet;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::DecodeError;
use crate::xml::{self, escape_into, is_xml_blank, join, Element, XmlLimits, XmlWriter};

mod auth;
mod bridge;
mod package0;

pub use auth::{AuthScheme, Chal, Cred};
pub use bridge::{client_command_from, command_output_from, commands_for, reply_for};
pub use package0::{Notification, NOTIFICATION_MEDIA_TYPE, NOTIFICATION_VERSION};

/// Namespace of a SyncML 1.2 document.
pub const NAMESPACE: &str = "SYNCML:SYNCML1.2";
/// Namespace of meta information (`Format`, `Type`, `MaxMsgSize`, `NextNonce`).
pub const METINF_NAMESPACE: &str = "syncml:metinf";
/// `SyncHdr/VerDTD`, fixed.
pub const VER_DTD: &str = "1.2";
/// `SyncHdr/VerProto`, fixed.
pub const VER_PROTO: &str = "DM/1.2";
/// Media type of a SyncML DM message in XML.
pub const MEDIA_TYPE: &str = "application/vnd.syncml.dm+xml";

/// Alert codes (`Alert/Data`).
pub mod alert {
    /// Server-initiated session.
    pub const SERVER_INITIATED: u16 = 1200;
    /// Client-initiated session.
    pub const CLIENT_INITIATED: u16 = 1201;
    /// Next message, please.
    pub const NEXT_MESSAGE: u16 = 1222;
    /// Session abort.
    pub const SESSION_ABORT: u16 = 1223;
    /// Generic alert.
    pub const GENERIC: u16 = 1226;
}

/// SyncML status codes beyond those in [`crate::ops::status`].
pub mod codes {
    /// Authentication accepted (status of `SyncHdr`).
    pub const AUTH_ACCEPTED: u16 = 212;
    /// Invalid credentials (with a [`Chal`](super::Chal)).
    pub const INVALID_CREDENTIALS: u16 = 401;
    /// Optional feature not supported.
    pub const OPTIONAL_FEATURE_NOT_SUPPORTED: u16 = 406;
    /// Missing credentials (with a [`Chal`](super::Chal)).
    pub const MISSING_CREDENTIALS: u16 = 407;
    /// Device full.
    pub const DEVICE_FULL: u16 = 420;
}

/// One SyncML DM message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncMessage {
    /// `SyncHdr`.
    pub header: SyncHeader,
    /// The commands of `SyncBody`, in order.
    pub body: Vec<SyncCommand>,
    /// Whether `SyncBody` ends with `<Final/>` (the last message of a package).
    pub final_: bool,
}

/// `SyncHdr`; `VerDTD` is always [`VER_DTD`] and `VerProto` [`VER_PROTO`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncHeader {
    /// `SessionID`.
    pub session_id: String,
    /// `MsgID`, from 1 within a session.
    pub msg_id: u32,
    /// `Target/LocURI`: the recipient (server URL or device id).
    pub target: String,
    /// `Source/LocURI`: the sender.
    pub source: String,
    /// `Source/LocName`: the sender's authentication name (needed to check MD5 [`Cred`]).
    pub source_name: Option<String>,
    /// `RespURI`: where the client sends its next message.
    pub resp_uri: Option<String>,
    /// `Cred`: the sender's credentials.
    pub cred: Option<Cred>,
    /// `Meta/MaxMsgSize`: the largest message the sender accepts.
    pub max_msg_size: Option<u32>,
}

/// `Meta` of a command or item: `Format` and `Type`, both in [`METINF_NAMESPACE`].
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Meta {
    /// `Format` (`chr`, `xml`, `b64`, ...; absent means `chr`).
    pub format: Option<String>,
    /// `Type`, a MIME type.
    pub type_: Option<String>,
}

impl Meta {
    /// `Format` and `Type` given.
    pub fn new(format: &str, type_: &str) -> Self {
        Self {
            format: Some(format.into()),
            type_: Some(type_.into()),
        }
    }
}

/// One `Item`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Item {
    /// `Target/LocURI` (commands sent to a device carry one).
    pub target: Option<String>,
    /// `Source/LocURI` (Results and Alert items carry one).
    pub source: Option<String>,
    /// `Meta` of this item; it overrides the command's.
    pub meta: Option<Meta>,
    /// `Data`, as character data, kept exactly.
    pub data: Option<String>,
}

impl Item {
    /// An item with a target and no data.
    pub fn target(uri: impl Into<String>) -> Self {
        Self {
            target: Some(uri.into()),
            ..Self::default()
        }
    }
}

/// Add, Replace, Delete, Get or Exec: `CmdID`, `Meta?`, `Item+`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ItemCommand {
    /// `CmdID`, unique within the message, from 1.
    pub cmd_id: u32,
    /// `Meta` applying to every item that has none of its own.
    pub meta: Option<Meta>,
    /// The items (at least one; exactly one for Exec).
    pub items: Vec<Item>,
}

/// `Alert`: `CmdID`, `Data` (the alert code, see [`alert`]), `Item*`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Alert {
    /// `CmdID`.
    pub cmd_id: u32,
    /// The alert code.
    pub data: u16,
    /// The items.
    pub items: Vec<Item>,
}

/// `Status`: the answer to one command (or, with `cmd_ref` 0, to the `SyncHdr`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    /// `CmdID`.
    pub cmd_id: u32,
    /// `MsgRef`: the message holding the command answered.
    pub msg_ref: u32,
    /// `CmdRef`: the command answered (0 for the `SyncHdr`).
    pub cmd_ref: u32,
    /// `Cmd`: its name (`SyncHdr`, `Add`, `Get`, ...).
    pub cmd: String,
    /// `TargetRef`: the target answered.
    pub target_ref: Option<String>,
    /// `SourceRef`: the source answered.
    pub source_ref: Option<String>,
    /// `Chal`: a challenge, with 401 and 407 (or a next nonce with 212).
    pub chal: Option<Chal>,
    /// `Data`: the status code.
    pub data: u16,
    /// Items; this codec puts a device's error message in the first item's `Data`.
    pub items: Vec<Item>,
}

/// `Results`: what a Get returned.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Results {
    /// `CmdID`.
    pub cmd_id: u32,
    /// `MsgRef`: the message holding the Get.
    pub msg_ref: Option<u32>,
    /// `CmdRef`: the Get's `CmdID`.
    pub cmd_ref: u32,
    /// `Meta` applying to every item that has none of its own.
    pub meta: Option<Meta>,
    /// The items (at least one).
    pub items: Vec<Item>,
}

/// One command of a `SyncBody`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum SyncCommand {
    /// `Add`.
    Add(ItemCommand),
    /// `Replace`.
    Replace(ItemCommand),
    /// `Delete`.
    Delete(ItemCommand),
    /// `Get`.
    Get(ItemCommand),
    /// `Exec`.
    Exec(ItemCommand),
    /// `Alert`.
    Alert(Alert),
    /// `Status`.
    Status(Status),
    /// `Results`.
    Results(Results),
}

impl SyncCommand {
    /// The element name (`Add`, `Status`, ...), which is also what `Status/Cmd` names.
    pub fn name(&self) -> &'static str {
        match self {
            SyncCommand::Add(_) => "Add",
            SyncCommand::Replace(_) => "Replace",
            SyncCommand::Delete(_) => "Delete",
            SyncCommand::Get(_) => "Get",
            SyncCommand::Exec(_) => "Exec",
            SyncCommand::Alert(_) => "Alert",
            SyncCommand::Status(_) => "Status",
            SyncCommand::Results(_) => "Results",
        }
    }

    /// `CmdID`.
    pub fn cmd_id(&self) -> u32 {
        match self {
            SyncCommand::Add(c)
            | SyncCommand::Replace(c)
            | SyncCommand::Delete(c)
            | SyncCommand::Get(c)
            | SyncCommand::Exec(c) => c.cmd_id,
            SyncCommand::Alert(a) => a.cmd_id,
            SyncCommand::Status(s) => s.cmd_id,
            SyncCommand::Results(r) => r.cmd_id,
        }
    }

    /// The items.
    pub fn items(&self) -> &[Item] {
        match self {
            SyncCommand::Add(c)
            | SyncCommand::Replace(c)
            | SyncCommand::Delete(c)
            | SyncCommand::Get(c)
            | SyncCommand::Exec(c) => &c.items,
            SyncCommand::Alert(a) => &a.items,
            SyncCommand::Status(s) => &s.items,
            SyncCommand::Results(r) => &r.items,
        }
    }

    /// Renders this command alone as one XML element (no namespace declaration), as it
    /// appears inside `SyncBody`. For the engine's operations this is byte for byte what
    /// [`ClientCommand::to_syncml`](crate::ClientCommand::to_syncml) produces.
    pub fn to_xml(&self) -> String {
        let mut w = XmlWriter::new();
        write_command(&mut w, self);
        w.finish()
    }
}

type R<T> = Result<T, DecodeError>;

fn invalid(field: impl Into<String>, reason: impl Into<String>) -> DecodeError {
    DecodeError::InvalidField {
        field: field.into(),
        reason: reason.into(),
    }
}

/// Checks a text field: only characters XML carries; for scalars (`trimmed`), no white
/// space around it and not empty, so that what validates is exactly what decodes.
fn check_text(field: &str, value: &str, trimmed: bool) -> R<()> {
    xml::check_xml_text(value).map_err(|r| invalid(field, r))?;
    if trimmed && (value.is_empty() || value.trim() != value) {
        return Err(invalid(field, "is empty or has white space around it"));
    }
    Ok(())
}

fn check_opt(field: &str, value: Option<&str>) -> R<()> {
    value.map_or(Ok(()), |v| check_text(field, v, true))
}

/// Counts elements per name to build `Name[i]` paths.
#[derive(Default)]
struct Indexer(Vec<(&'static str, usize)>);

impl Indexer {
    fn next(&mut self, parent: &str, name: &'static str) -> String {
        let i = match self.0.iter_mut().find(|(n, _)| *n == name) {
            Some((_, i)) => {
                *i += 1;
                *i
            }
            None => {
                self.0.push((name, 1));
                1
            }
        };
        format!("{parent}/{name}[{i}]")
    }
}

impl SyncMessage {
    /// Checks every field; the error names the first bad one. Decoding always validates;
    /// encoding does not, so call this first for a message built by hand.
    pub fn validate(&self) -> R<()> {
        let h = &self.header;
        let hp = "SyncML/SyncHdr";
        check_text(&join(hp, "SessionID"), &h.session_id, true)?;
        if h.msg_id == 0 {
            return Err(invalid(join(hp, "MsgID"), "starts at 1"));
        }
        check_text(&format!("{hp}/Target/LocURI"), &h.target, true)?;
        check_text(&format!("{hp}/Source/LocURI"), &h.source, true)?;
        check_opt(&format!("{hp}/Source/LocName"), h.source_name.as_deref())?;
        check_opt(&join(hp, "RespURI"), h.resp_uri.as_deref())?;
        if let Some(c) = &h.cred {
            check_text(&format!("{hp}/Cred/Data"), &c.data, true)?;
        }
        let mut ids = HashSet::new();
        let mut index = Indexer::default();
        for cmd in &self.body {
            let here = index.next("SyncML/SyncBody", cmd.name());
            let id = cmd.cmd_id();
            if id == 0 || !ids.insert(id) {
                return Err(invalid(
                    join(&here, "CmdID"),
                    format!("{id} is 0 or used twice in the message"),
                ));
            }
            validate_command(cmd, &here)?;
        }
        Ok(())
    }

    /// Encodes the message as its XML document.
    pub fn to_xml(&self) -> String {
        let mut w = XmlWriter::new();
        w.declaration();
        w.open_attrs("SyncML", &[("xmlns", NAMESPACE)]);
        write_header(&mut w, &self.header);
        w.open("SyncBody");
        for c in &self.body {
            write_command(&mut w, c);
        }
        if self.final_ {
            w.empty("Final");
        }
        w.close();
        w.close();
        w.finish()
    }

    /// Decodes and validates a message under the default limits (256 KiB, depth 32).
    pub fn from_xml(input: &[u8]) -> R<SyncMessage> {
        Self::from_xml_with_limits(input, &XmlLimits::default())
    }

    /// Decodes and validates a message under `limits`.
    pub fn from_xml_with_limits(input: &[u8], limits: &XmlLimits) -> R<SyncMessage> {
        let root = xml::parse(input, limits)?;
        let msg = message_from(&root.root())?;
        msg.validate()?;
        Ok(msg)
    }
}

fn validate_command(cmd: &SyncCommand, here: &str) -> R<()> {
    // `required`: at least one item; `single`: at most one.
    let items = |items: &[Item], required: bool, single: bool| -> R<()> {
        if required && items.is_empty() {
            return Err(DecodeError::MissingField {
                field: join(here, "Item"),
            });
        }
        if single && items.len() > 1 {
            return Err(invalid(join(here, "Item"), "must hold exactly one item"));
        }
        let mut index = Indexer::default();
        items
            .iter()
            .try_for_each(|i| validate_item(i, &index.next(here, "Item")))
    };
    match cmd {
        SyncCommand::Exec(c) => {
            validate_meta(c.meta.as_ref(), here)?;
            items(&c.items, true, true)
        }
        SyncCommand::Add(c)
        | SyncCommand::Replace(c)
        | SyncCommand::Delete(c)
        | SyncCommand::Get(c) => {
            validate_meta(c.meta.as_ref(), here)?;
            items(&c.items, true, false)
        }
        SyncCommand::Alert(a) => items(&a.items, false, false),
        SyncCommand::Status(s) => {
            check_text(&join(here, "Cmd"), &s.cmd, true)?;
            check_opt(&join(here, "TargetRef"), s.target_ref.as_deref())?;
            check_opt(&join(here, "SourceRef"), s.source_ref.as_deref())?;
            if !(100..=599).contains(&s.data) {
                return Err(invalid(join(here, "Data"), "status must be 100 to 599"));
            }
            items(&s.items, false, false)
        }
        SyncCommand::Results(r) => {
            validate_meta(r.meta.as_ref(), here)?;
            items(&r.items, true, false)
        }
    }
}

fn validate_meta(meta: Option<&Meta>, parent: &str) -> R<()> {
    if let Some(m) = meta {
        let here = join(parent, "Meta");
        check_opt(&join(&here, "Format"), m.format.as_deref())?;
        check_opt(&join(&here, "Type"), m.type_.as_deref())?;
    }
    Ok(())
}

fn validate_item(item: &Item, here: &str) -> R<()> {
    check_opt(&format!("{here}/Target/LocURI"), item.target.as_deref())?;
    check_opt(&format!("{here}/Source/LocURI"), item.source.as_deref())?;
    validate_meta(item.meta.as_ref(), here)?;
    if let Some(d) = &item.data {
        check_text(&join(here, "Data"), d, false)?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Encoding

/// `<name xmlns="syncml:metinf">text</name>`.
fn write_metinf(w: &mut XmlWriter, name: &'static str, text: &str) {
    w.open_attrs(name, &[("xmlns", METINF_NAMESPACE)]);
    escape_into(&mut w.out, text);
    w.close();
}

fn write_loc(w: &mut XmlWriter, name: &'static str, uri: &str, loc_name: Option<&str>) {
    w.open(name);
    w.leaf("LocURI", uri);
    if let Some(n) = loc_name {
        w.leaf("LocName", n);
    }
    w.close();
}

fn write_header(w: &mut XmlWriter, h: &SyncHeader) {
    w.open("SyncHdr");
    w.leaf("VerDTD", VER_DTD);
    w.leaf("VerProto", VER_PROTO);
    w.leaf("SessionID", &h.session_id);
    w.leaf("MsgID", &h.msg_id.to_string());
    write_loc(w, "Target", &h.target, None);
    write_loc(w, "Source", &h.source, h.source_name.as_deref());
    if let Some(r) = &h.resp_uri {
        w.leaf("RespURI", r);
    }
    if let Some(c) = &h.cred {
        auth::write_cred(w, c);
    }
    if let Some(m) = h.max_msg_size {
        w.open("Meta");
        write_metinf(w, "MaxMsgSize", &m.to_string());
        w.close();
    }
    w.close();
}

fn write_meta(w: &mut XmlWriter, meta: &Meta) {
    w.open("Meta");
    if let Some(f) = &meta.format {
        write_metinf(w, "Format", f);
    }
    if let Some(t) = &meta.type_ {
        write_metinf(w, "Type", t);
    }
    w.close();
}

fn write_item(w: &mut XmlWriter, item: &Item) {
    w.open("Item");
    if let Some(t) = &item.target {
        write_loc(w, "Target", t, None);
    }
    if let Some(s) = &item.source {
        write_loc(w, "Source", s, None);
    }
    if let Some(m) = &item.meta {
        write_meta(w, m);
    }
    if let Some(d) = &item.data {
        w.leaf("Data", d);
    }
    w.close();
}

fn write_command(w: &mut XmlWriter, cmd: &SyncCommand) {
    let name = cmd.name();
    w.open(name);
    w.leaf("CmdID", &cmd.cmd_id().to_string());
    match cmd {
        SyncCommand::Add(c)
        | SyncCommand::Replace(c)
        | SyncCommand::Delete(c)
        | SyncCommand::Get(c)
        | SyncCommand::Exec(c) => {
            if let Some(m) = &c.meta {
                write_meta(w, m);
            }
        }
        SyncCommand::Alert(a) => w.leaf("Data", &a.data.to_string()),
        SyncCommand::Status(s) => {
            w.leaf("MsgRef", &s.msg_ref.to_string());
            w.leaf("CmdRef", &s.cmd_ref.to_string());
            w.leaf("Cmd", &s.cmd);
            if let Some(t) = &s.target_ref {
                w.leaf("TargetRef", t);
            }
            if let Some(t) = &s.source_ref {
                w.leaf("SourceRef", t);
            }
            if let Some(c) = &s.chal {
                auth::write_chal(w, c);
            }
            w.leaf("Data", &s.data.to_string());
        }
        SyncCommand::Results(r) => {
            if let Some(m) = r.msg_ref {
                w.leaf("MsgRef", &m.to_string());
            }
            w.leaf("CmdRef", &r.cmd_ref.to_string());
            if let Some(m) = &r.meta {
                write_meta(w, m);
            }
        }
    }
    for item in cmd.items() {
        write_item(w, item);
    }
    w.close();
}

// ---------------------------------------------------------------------------------------
// Decoding

const COMMANDS: &[&str] = &[
    "Add", "Replace", "Delete", "Get", "Exec", "Alert", "Status", "Results",
];

/// Checks a container's children: names in `allowed`, namespaces (children of `Meta` in
/// [`METINF_NAMESPACE`], `Meta` itself in either, the rest in [`NAMESPACE`]), only names
/// in `repeatable` repeat, and no text beside the elements.
fn check(el: &Element, here: &str, allowed: &[&str], repeatable: &[&str]) -> R<()> {
    for (i, c) in el.children().enumerate() {
        if !allowed.contains(&c.name()) {
            return Err(DecodeError::UnexpectedElement {
                parent: here.to_string(),
                element: c.name().to_string(),
            });
        }
        let ns = c.ns().unwrap_or("");
        let ok = if el.name() == "Meta" {
            ns == METINF_NAMESPACE
        } else {
            ns == NAMESPACE || (c.name() == "Meta" && ns == METINF_NAMESPACE)
        };
        if !ok {
            return Err(invalid(
                join(here, c.name()),
                format!("element in namespace `{ns}`"),
            ));
        }
        if !repeatable.contains(&c.name()) && el.children().take(i).any(|p| p.name() == c.name()) {
            return Err(invalid(join(here, c.name()), "appears more than once"));
        }
    }
    if !is_xml_blank(el.text()) {
        return Err(invalid(here, "holds text where only elements belong"));
    }
    Ok(())
}

/// The exact text of the leaf child `name`, refusing child elements inside it.
fn raw_text<'a>(el: &'a Element, name: &str, here: &str) -> R<Option<&'a str>> {
    match el.child(name) {
        None => Ok(None),
        Some(c) => match c.first_child() {
            Some(g) => Err(DecodeError::UnexpectedElement {
                parent: join(here, name),
                element: g.name().to_string(),
            }),
            None => Ok(Some(c.text())),
        },
    }
}

/// The trimmed text of the optional leaf child `name`.
fn text<'a>(el: &'a Element, name: &str, here: &str) -> R<Option<&'a str>> {
    Ok(raw_text(el, name, here)?.map(str::trim))
}

fn req_text<'a>(el: &'a Element, name: &str, here: &str) -> R<&'a str> {
    text(el, name, here)?.ok_or_else(|| DecodeError::MissingField {
        field: join(here, name),
    })
}

fn opt_string(el: &Element, name: &str, here: &str) -> R<Option<String>> {
    Ok(text(el, name, here)?.map(str::to_string))
}

/// A number written as plain decimal digits.
fn digits<T: FromStr>(text: &str, field: &str) -> R<T> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(invalid(field, format!("`{text}` is not a decimal number")));
    }
    text.parse()
        .map_err(|_| invalid(field, format!("`{text}` is out of range")))
}

fn number<T: FromStr>(el: &Element, name: &str, here: &str) -> R<Option<T>> {
    text(el, name, here)?
        .map(|t| digits(t, &join(here, name)))
        .transpose()
}

fn req_number<T: FromStr>(el: &Element, name: &str, here: &str) -> R<T> {
    digits(req_text(el, name, here)?, &join(here, name))
}

/// `Target` or `Source`: `(LocURI, LocName?)`; `LocName` only where `with_name`.
fn loc_from(el: &Element, here: &str, with_name: bool) -> R<(String, Option<String>)> {
    let allowed: &[&str] = if with_name {
        &["LocURI", "LocName"]
    } else {
        &["LocURI"]
    };
    check(el, here, allowed, &[])?;
    Ok((
        req_text(el, "LocURI", here)?.to_string(),
        opt_string(el, "LocName", here)?,
    ))
}

fn opt_loc(el: &Element, name: &str, here: &str) -> R<Option<String>> {
    el.child(name)
        .map(|c| loc_from(&c, &join(here, name), false).map(|(uri, _)| uri))
        .transpose()
}

/// The meta information fields any `Meta` may hold; `allowed` says which this one may.
#[derive(Default)]
struct RawMeta {
    format: Option<String>,
    type_: Option<String>,
    max_msg_size: Option<u32>,
    next_nonce: Option<String>,
}

fn raw_meta(el: &Element, here: &str, allowed: &[&str]) -> R<RawMeta> {
    check(el, here, allowed, &[])?;
    Ok(RawMeta {
        format: opt_string(el, "Format", here)?,
        type_: opt_string(el, "Type", here)?,
        max_msg_size: number(el, "MaxMsgSize", here)?,
        next_nonce: opt_string(el, "NextNonce", here)?,
    })
}

fn meta_from(parent: &Element, here: &str) -> R<Option<Meta>> {
    parent
        .child("Meta")
        .map(|m| {
            raw_meta(&m, &join(here, "Meta"), &["Format", "Type"]).map(|r| Meta {
                format: r.format,
                type_: r.type_,
            })
        })
        .transpose()
}

fn message_from(root: &Element) -> R<SyncMessage> {
    if root.name() != "SyncML" {
        return Err(DecodeError::WrongRoot {
            expected: "SyncML".into(),
            found: root.name().to_string(),
        });
    }
    if root.ns() != Some(NAMESPACE) {
        return Err(DecodeError::WrongNamespace {
            expected: NAMESPACE.into(),
            found: root.ns().unwrap_or_default().to_string(),
        });
    }
    let here = "SyncML";
    check(root, here, &["SyncHdr", "SyncBody"], &[])?;
    let header = header_from(&root.required_child("SyncHdr", here)?)?;
    let body_el = root.required_child("SyncBody", here)?;
    let bp = "SyncML/SyncBody";
    let mut allowed = COMMANDS.to_vec();
    allowed.push("Final");
    check(&body_el, bp, &allowed, COMMANDS)?;
    let mut body = Vec::new();
    let mut final_ = false;
    let mut index = Indexer::default();
    for (i, c) in body_el.children().enumerate() {
        if c.name() == "Final" {
            check(&c, &join(bp, "Final"), &[], &[])?;
            if i + 1 != body_el.child_count() {
                return Err(invalid(join(bp, "Final"), "must be the last element"));
            }
            final_ = true;
            continue;
        }
        let name = COMMANDS
            .iter()
            .copied()
            .find(|n| *n == c.name())
            .unwrap_or("Add");
        body.push(command_from(&c, &index.next(bp, name))?);
    }
    Ok(SyncMessage {
        header,
        body,
        final_,
    })
}

fn header_from(el: &Element) -> R<SyncHeader> {
    let here = "SyncML/SyncHdr";
    check(
        el,
        here,
        &[
            "VerDTD",
            "VerProto",
            "SessionID",
            "MsgID",
            "Target",
            "Source",
            "RespURI",
            "Cred",
            "Meta",
        ],
        &[],
    )?;
    for (name, want) in [("VerDTD", VER_DTD), ("VerProto", VER_PROTO)] {
        let found = req_text(el, name, here)?;
        if found != want {
            return Err(DecodeError::UnsupportedVersion {
                found: found.to_string(),
            });
        }
    }
    let (target, _) = loc_from(
        &el.required_child("Target", here)?,
        &join(here, "Target"),
        false,
    )?;
    let (source, source_name) = loc_from(
        &el.required_child("Source", here)?,
        &join(here, "Source"),
        true,
    )?;
    let max_msg_size = match el.child("Meta") {
        Some(m) => raw_meta(&m, &join(here, "Meta"), &["MaxMsgSize"])?.max_msg_size,
        None => None,
    };
    Ok(SyncHeader {
        session_id: req_text(el, "SessionID", here)?.to_string(),
        msg_id: req_number(el, "MsgID", here)?,
        target,
        source,
        source_name,
        resp_uri: opt_string(el, "RespURI", here)?,
        cred: el
            .child("Cred")
            .map(|c| auth::cred_from(&c, &join(here, "Cred")))
            .transpose()?,
        max_msg_size,
    })
}

fn item_from(el: &Element, here: &str) -> R<Item> {
    check(el, here, &["Target", "Source", "Meta", "Data"], &[])?;
    Ok(Item {
        target: opt_loc(el, "Target", here)?,
        source: opt_loc(el, "Source", here)?,
        meta: meta_from(el, here)?,
        data: raw_text(el, "Data", here)?.map(str::to_string),
    })
}

fn items_from(el: &Element, here: &str) -> R<Vec<Item>> {
    let mut index = Indexer::default();
    el.children_named("Item")
        .map(|i| item_from(&i, &index.next(here, "Item")))
        .collect()
}

fn command_from(el: &Element, here: &str) -> R<SyncCommand> {
    let cmd_id = req_number(el, "CmdID", here)?;
    let cmd = match el.name() {
        "Alert" => {
            check(el, here, &["CmdID", "Data", "Item"], &["Item"])?;
            SyncCommand::Alert(Alert {
                cmd_id,
                data: req_number(el, "Data", here)?,
                items: items_from(el, here)?,
            })
        }
        "Status" => {
            check(
                el,
                here,
                &[
                    "CmdID",
                    "MsgRef",
                    "CmdRef",
                    "Cmd",
                    "TargetRef",
                    "SourceRef",
                    "Chal",
                    "Data",
                    "Item",
                ],
                &["Item"],
            )?;
            SyncCommand::Status(Status {
                cmd_id,
                msg_ref: req_number(el, "MsgRef", here)?,
                cmd_ref: req_number(el, "CmdRef", here)?,
                cmd: req_text(el, "Cmd", here)?.to_string(),
                target_ref: opt_string(el, "TargetRef", here)?,
                source_ref: opt_string(el, "SourceRef", here)?,
                chal: el
                    .child("Chal")
                    .map(|c| auth::chal_from(&c, &join(here, "Chal")))
                    .transpose()?,
                data: req_number(el, "Data", here)?,
                items: items_from(el, here)?,
            })
        }
        "Results" => {
            check(
                el,
                here,
                &["CmdID", "MsgRef", "CmdRef", "Meta", "Item"],
                &["Item"],
            )?;
            SyncCommand::Results(Results {
                cmd_id,
                msg_ref: number(el, "MsgRef", here)?,
                cmd_ref: req_number(el, "CmdRef", here)?,
                meta: meta_from(el, here)?,
                items: items_from(el, here)?,
            })
        }
        name => {
            check(el, here, &["CmdID", "Meta", "Item"], &["Item"])?;
            let c = ItemCommand {
                cmd_id,
                meta: meta_from(el, here)?,
                items: items_from(el, here)?,
            };
            match name {
                "Add" => SyncCommand::Add(c),
                "Replace" => SyncCommand::Replace(c),
                "Delete" => SyncCommand::Delete(c),
                "Get" => SyncCommand::Get(c),
                _ => SyncCommand::Exec(c),
            }
        }
    };
    Ok(cmd)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> SyncHeader {
        SyncHeader {
            session_id: "1".into(),
            msg_id: 1,
            target: "IMEI:001".into(),
            source: "https://dms.example/dm".into(),
            source_name: None,
            resp_uri: None,
            cred: None,
            max_msg_size: Some(10_000),
        }
    }

    fn doc(body: &str) -> String {
        format!(
            "<SyncML xmlns=\"SYNCML:SYNCML1.2\"><SyncHdr><VerDTD>1.2</VerDTD>\
             <VerProto>DM/1.2</VerProto><SessionID>1</SessionID><MsgID>1</MsgID>\
             <Target><LocURI>IMEI:001</LocURI></Target><Source><LocURI>s</LocURI></Source>\
             </SyncHdr><SyncBody>{body}<Final/></SyncBody></SyncML>"
        )
    }

    fn err(xml: &str) -> DecodeError {
        SyncMessage::from_xml(xml.as_bytes()).unwrap_err()
    }

    #[test]
    fn round_trips_every_command_kind() {
        let items = vec![Item {
            target: Some("./A".into()),
            source: Some("./B".into()),
            meta: Some(Meta::new("chr", "text/plain")),
            data: Some(" a<b&c \r\n ".into()),
        }];
        let ic = |id| ItemCommand {
            cmd_id: id,
            meta: Some(Meta::new("xml", "x/y")),
            items: items.clone(),
        };
        let msg = SyncMessage {
            header: header(),
            body: vec![
                SyncCommand::Add(ic(1)),
                SyncCommand::Replace(ic(2)),
                SyncCommand::Delete(ic(3)),
                SyncCommand::Get(ic(4)),
                SyncCommand::Exec(ic(5)),
                SyncCommand::Alert(Alert {
                    cmd_id: 6,
                    data: alert::GENERIC,
                    items: items.clone(),
                }),
                SyncCommand::Status(Status {
                    cmd_id: 7,
                    msg_ref: 1,
                    cmd_ref: 0,
                    cmd: "SyncHdr".into(),
                    target_ref: Some("IMEI:001".into()),
                    source_ref: Some("s".into()),
                    chal: Some(Chal::md5(b"nonce".to_vec())),
                    data: codes::INVALID_CREDENTIALS,
                    items: vec![],
                }),
                SyncCommand::Results(Results {
                    cmd_id: 8,
                    msg_ref: Some(1),
                    cmd_ref: 4,
                    meta: None,
                    items,
                }),
            ],
            final_: false,
        };
        let xml = msg.to_xml();
        assert_eq!(SyncMessage::from_xml(xml.as_bytes()).unwrap(), msg);
    }

    #[test]
    fn names_the_bad_field() {
        let status = "<Status><CmdID>1</CmdID><MsgRef>1</MsgRef><CmdRef>0</CmdRef>\
                      <Cmd>SyncHdr</Cmd><Data>200</Data></Status>";
        let bad = "<Status><CmdID>2</CmdID><MsgRef>1</MsgRef><CmdRef>0</CmdRef>\
                   <Cmd>SyncHdr</Cmd><Data>+200</Data></Status>";
        match err(&doc(&format!("{status}{bad}"))) {
            DecodeError::InvalidField { field, .. } => {
                assert_eq!(field, "SyncML/SyncBody/Status[2]/Data")
            }
            other => panic!("{other:?}"),
        }
        let dup = "<Get><CmdID>1</CmdID><Item><Target><LocURI>./A</LocURI></Target></Item></Get>";
        match err(&doc(&format!("{status}{dup}"))) {
            DecodeError::InvalidField { field, .. } => {
                assert_eq!(field, "SyncML/SyncBody/Get[1]/CmdID")
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            err(&doc("<Get><CmdID>1</CmdID></Get>")),
            DecodeError::MissingField {
                field: "SyncML/SyncBody/Get[1]/Item".into()
            }
        );
    }

    #[test]
    fn reads_indented_documents_and_meta_in_the_metinf_namespace() {
        let body = "\n  <Add>\n    <CmdID>1</CmdID>\n    <Meta xmlns=\"syncml:metinf\">\
                    <Format>xml</Format><Type>t/x</Type></Meta>\n    <Item><Target>\
                    <LocURI> ./A </LocURI></Target><Data> v </Data></Item>\n  </Add>\n";
        let msg = SyncMessage::from_xml(doc(body).as_bytes()).unwrap();
        let SyncCommand::Add(add) = &msg.body[0] else {
            panic!("{:?}", msg.body)
        };
        assert_eq!(add.meta, Some(Meta::new("xml", "t/x")));
        assert_eq!(add.items[0].target.as_deref(), Some("./A"));
        assert_eq!(add.items[0].data.as_deref(), Some(" v "));
        assert!(msg.final_);
    }

    #[test]
    fn refuses_what_it_does_not_model() {
        let x = doc("").replace("<MsgID>", "<NoResp/><MsgID>");
        assert_eq!(
            err(&x),
            DecodeError::UnexpectedElement {
                parent: "SyncML/SyncHdr".into(),
                element: "NoResp".into()
            }
        );
        assert!(matches!(
            err(&doc("").replace("DM/1.2", "DM/1.1")),
            DecodeError::UnsupportedVersion { .. }
        ));
        assert!(matches!(
            err(&doc("<Copy><CmdID>1</CmdID></Copy>")),
            DecodeError::UnexpectedElement { .. }
        ));
        let nested = "<Add><CmdID>1</CmdID><Item><Target><LocURI>./A</LocURI></Target>\
                      <Data><x/></Data></Item></Add>";
        assert!(matches!(
            err(&doc(nested)),
            DecodeError::UnexpectedElement { parent, .. } if parent == "SyncML/SyncBody/Add[1]/Item[1]/Data"
        ));
        let wrong_ns = "<Add><CmdID>1</CmdID><Meta><Format>xml</Format></Meta>\
                        <Item><Target><LocURI>./A</LocURI></Target></Item></Add>";
        assert!(matches!(
            err(&doc(wrong_ns)),
            DecodeError::InvalidField { field, .. } if field == "SyncML/SyncBody/Add[1]/Meta/Format"
        ));
        let late_final = doc("").replace("<Final/>", "<Final/><Get/>");
        assert!(matches!(err(&late_final), DecodeError::InvalidField { .. }));
        assert!(matches!(
            err("<SyncML xmlns=\"SYNCML:SYNCML1.1\"/>"),
            DecodeError::WrongNamespace { .. }
        ));
    }
}
