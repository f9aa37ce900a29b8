//! The delegation protocol's messages and their XML wire format.
//!
//! Every message is one `<Delegation>` document in [`NAMESPACE`], protocol [`PROTOCOL_VERSION`],
//! media type [`MEDIA_TYPE`]: a `<Header>` and exactly one body element. The schema is
//! `schema/delegation-1.0.xsd`; the prose is `docs/protocol.md`.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::acl::{validate_server_id, AclCommand};
use crate::dmacc::DmAcc;
use crate::error::DecodeError;
use crate::reason::ReasonCode;
use crate::tree::{mgmt_tree_from_element, uri_segments, write_mgmt_tree, MgmtTree, Node};
use crate::xml::{self, join, Element, Path, XmlLimits, XmlWriter};

/// XML namespace of the delegation envelope.
pub const NAMESPACE: &str = "urn:dmdelegate:params:xml:ns:delegation-1";
/// Protocol version carried in the `version` attribute.
pub const PROTOCOL_VERSION: &str = "1.0";
/// IANA-registered media type of a delegation message.
pub const MEDIA_TYPE: &str = "application/vnd.dm.delegation+xml";

/// Which server plays which part in a delegation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Role {
    /// DMS-1, the Delegating DM Server: holds authority today.
    Delegating,
    /// DMS-2, the Delegated DM Server: receives authority.
    Delegated,
}

impl Role {
    /// The other role.
    pub fn peer(self) -> Role {
        match self {
            Role::Delegating => Role::Delegated,
            Role::Delegated => Role::Delegating,
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Role::Delegating => "DMS-1",
            Role::Delegated => "DMS-2",
        })
    }
}

/// The four delegation methods of the specification.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Method {
    /// Method 1: DMS-1 initiates; DMS-1 installs DMS-2's account on the client.
    DelegatingInitiates = 1,
    /// Method 2: DMS-2 initiates; otherwise as Method 1.
    DelegatedInitiates = 2,
    /// Method 3: DMS-1 initiates; the client bootstraps from DMS-2's Bootstrap Server.
    DelegatingInitiatesBootstrap = 3,
    /// Method 4: DMS-2 initiates; otherwise as Method 3.
    DelegatedInitiatesBootstrap = 4,
}

impl Method {
    /// All methods, in order.
    pub const ALL: [Method; 4] = [
        Method::DelegatingInitiates,
        Method::DelegatedInitiates,
        Method::DelegatingInitiatesBootstrap,
        Method::DelegatedInitiatesBootstrap,
    ];

    /// The method's number (1–4).
    pub fn number(self) -> u8 {
        self as u8
    }

    /// The method with this number.
    pub fn from_number(n: u8) -> Option<Method> {
        Method::ALL.into_iter().find(|m| m.number() == n)
    }

    /// The role that sends DELEGATION_NOTIF.
    pub fn initiator(self) -> Role {
        match self {
            Method::DelegatingInitiates | Method::DelegatingInitiatesBootstrap => Role::Delegating,
            Method::DelegatedInitiates | Method::DelegatedInitiatesBootstrap => Role::Delegated,
        }
    }

    /// The messages of a successful delegation by this method, in the order they are sent.
    pub fn message_flow(self) -> &'static [MessageKind] {
        use MessageKind::*;
        if self.uses_bootstrap() {
            &[
                Notif,
                Res,
                Start,
                BootstrapUrlRequest,
                BootstrapUrl,
                Confirm,
            ]
        } else {
            &[Notif, Res, Start, Prepared, Confirm]
        }
    }

    /// True for Methods 3 and 4 (the client bootstraps from DMS-2's Bootstrap Server).
    pub fn uses_bootstrap(self) -> bool {
        matches!(
            self,
            Method::DelegatingInitiatesBootstrap | Method::DelegatedInitiatesBootstrap
        )
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Method {}", self.number())
    }
}

/// Del_Type: how much authority passes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum DelegationType {
    /// DMS-2 takes over everything DMS-1 had; DMS-1's account is deleted at the end.
    Full,
    /// Only the listed subtrees, with the listed rights; DMS-1 stays.
    Partial,
}

impl DelegationType {
    /// The wire value.
    pub fn as_str(self) -> &'static str {
        match self {
            DelegationType::Full => "Full",
            DelegationType::Partial => "Partial",
        }
    }
}

impl FromStr for DelegationType {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "Full" => Ok(DelegationType::Full),
            "Partial" => Ok(DelegationType::Partial),
            other => Err(format!("`{other}` is not Full or Partial")),
        }
    }
}

impl fmt::Display for DelegationType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A point in time, UTC, with millisecond precision; RFC 3339 on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Timestamp(pub i64);

impl Timestamp {
    /// Milliseconds since the UNIX epoch.
    pub fn unix_millis(self) -> i64 {
        self.0
    }

    /// The current wall-clock time.
    pub fn now() -> Timestamp {
        let d = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        Timestamp(d.as_millis() as i64)
    }

    /// This time plus `d`.
    pub fn plus(self, d: std::time::Duration) -> Timestamp {
        Timestamp(self.0.saturating_add(d.as_millis() as i64))
    }

    /// RFC 3339 text, `Z` zone, milliseconds only when non-zero.
    pub fn to_rfc3339(self) -> String {
        let nanos = i128::from(self.0) * 1_000_000;
        let t = time::OffsetDateTime::from_unix_timestamp_nanos(nanos)
            .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
        // Written digit by digit: this runs for every message encoded.
        fn digits(out: &mut String, v: u32, width: u32) {
            let width = width.max(v.checked_ilog10().unwrap_or(0) + 1);
            for place in (0..width).rev() {
                out.push(char::from(b'0' + (v / 10u32.pow(place) % 10) as u8));
            }
        }
        let mut out = String::with_capacity(24);
        match u32::try_from(t.year()) {
            Ok(year) => digits(&mut out, year, 4),
            // Before year 0 (not representable; validation refuses it): `-001`, as
            // `{:04}` writes a negative year.
            Err(_) => {
                out.push('-');
                digits(&mut out, t.year().unsigned_abs(), 3);
            }
        }
        for (sep, v) in [
            ('-', u32::from(u8::from(t.month()))),
            ('-', u32::from(t.day())),
            ('T', u32::from(t.hour())),
            (':', u32::from(t.minute())),
            (':', u32::from(t.second())),
        ] {
            out.push(sep);
            digits(&mut out, v, 2);
        }
        if t.millisecond() != 0 {
            out.push('.');
            digits(&mut out, u32::from(t.millisecond()), 3);
        }
        out.push('Z');
        out
    }

    /// The earliest time the wire format carries: 0000-01-01T00:00:00Z.
    pub const MIN: Timestamp = Timestamp(-62_167_219_200_000);
    /// The latest time the wire format carries: 9999-12-31T23:59:59.999Z.
    pub const MAX: Timestamp = Timestamp(253_402_300_799_999);

    /// True when the time lies in years 0000–9999, which RFC 3339 can write.
    pub fn is_representable(self) -> bool {
        (Self::MIN..=Self::MAX).contains(&self)
    }

    /// Parses RFC 3339 text (any offset), rounding down to milliseconds.
    pub fn parse_rfc3339(text: &str) -> Result<Timestamp, String> {
        let t = time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
            .map_err(|e| format!("`{text}` is not an RFC 3339 date-time: {e}"))?;
        Ok(Timestamp(
            t.unix_timestamp_nanos().div_euclid(1_000_000) as i64
        ))
    }
}

/// The managed device (DM Client) being delegated.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct DeviceInfo {
    /// Device identifier (`./DevInfo/DevId`), for example `IMEI:490154203237518`.
    pub device_id: String,
    /// Manufacturer (`./DevInfo/Man`).
    pub manufacturer: String,
    /// Model (`./DevInfo/Mod`).
    pub model: String,
}

/// One delegated part of the DM Tree and the rights DMS-2 gets on it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DelegatedSubtree {
    /// Absolute URI of the subtree's root, `.` for the whole tree.
    pub uri: String,
    /// Commands granted to DMS-2 on the subtree (sorted, no duplicates, at least one).
    pub rights: Vec<AclCommand>,
}

/// Del_Info: the device and the delegated subtrees.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DelegationInfo {
    /// The device.
    pub device: DeviceInfo,
    /// Delegated subtrees, at least one, none repeated.
    pub subtrees: Vec<DelegatedSubtree>,
}

/// DELEGATION_NOTIF.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Notif {
    /// DMServerID: the sender's ServerID.
    pub dm_server_id: String,
    /// Del_Type.
    pub delegation_type: DelegationType,
    /// Del_Info.
    pub info: DelegationInfo,
    /// For a temporary delegation, when it ends; `None` for a permanent one.
    pub expires: Option<Timestamp>,
}

/// A reason: a code from the published table (or a newer one) and text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reason {
    /// Numeric code, see [`ReasonCode`].
    pub code: u16,
    /// Human-readable detail.
    pub text: String,
}

impl Reason {
    /// A reason from a published code.
    pub fn new(code: ReasonCode, text: impl Into<String>) -> Self {
        Reason {
            code: code.code(),
            text: text.into(),
        }
    }

    /// The largest reason text the wire format carries, in bytes.
    pub const MAX_TEXT_BYTES: usize = 1024;

    /// The reason as a message can carry it, whatever a host put in it: characters XML
    /// cannot carry replaced by U+FFFD, surrounding white space trimmed, cut at a
    /// character boundary to [`Reason::MAX_TEXT_BYTES`] (a stack trace as text must not
    /// make the FAILURE itself undeliverable), and an unpublishable code made 199.
    pub fn for_wire(&self) -> Reason {
        let cleaned: String = self
            .text
            .chars()
            .map(|c| {
                if crate::xml::is_xml_char(c) {
                    c
                } else {
                    '\u{FFFD}'
                }
            })
            .collect();
        let mut text = cleaned.trim();
        if text.len() > Self::MAX_TEXT_BYTES {
            let mut end = Self::MAX_TEXT_BYTES;
            while !text.is_char_boundary(end) {
                end -= 1;
            }
            text = text[..end].trim_end();
        }
        let code = if (100..=999).contains(&self.code) {
            self.code
        } else {
            ReasonCode::InternalError.code()
        };
        Reason {
            code,
            text: text.to_string(),
        }
    }

    /// The published code, when this implementation knows the number.
    pub fn known(&self) -> Option<ReasonCode> {
        ReasonCode::from_code(self.code)
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.known() {
            Some(k) => write!(f, "{k}: {}", self.text),
            None => write!(f, "{}: {}", self.code, self.text),
        }
    }
}

/// The body of a message: one per message type.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Body {
    /// DELEGATION_NOTIF.
    Notif(Notif),
    /// DELEGATION_RES with ack.
    Ack,
    /// DELEGATION_RES with nack and why.
    Nack(Reason),
    /// DELEGATION_START with DMS-2's DM account.
    Start(DmAcc),
    /// DELEGATION_PREPARED.
    Prepared,
    /// DELEGATION_CONFIRM.
    Confirm,
    /// DELEGATION_FAILURE.
    Failure(Reason),
    /// Methods 3/4: DMS-1 asks DMS-2 for its Bootstrap Server URL.
    BootstrapUrlRequest,
    /// Methods 3/4: DMS-2's Bootstrap Server URL.
    BootstrapUrl(String),
}

/// The message types, as named by the specification.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum MessageKind {
    /// DELEGATION_NOTIF.
    Notif,
    /// DELEGATION_RES.
    Res,
    /// DELEGATION_START.
    Start,
    /// DELEGATION_PREPARED.
    Prepared,
    /// DELEGATION_CONFIRM.
    Confirm,
    /// DELEGATION_FAILURE.
    Failure,
    /// BOOTSTRAP_URL_REQUEST.
    BootstrapUrlRequest,
    /// BOOTSTRAP_URL.
    BootstrapUrl,
}

impl MessageKind {
    /// The specification's name, for example `DELEGATION_NOTIF`.
    pub fn spec_name(self) -> &'static str {
        match self {
            MessageKind::Notif => "DELEGATION_NOTIF",
            MessageKind::Res => "DELEGATION_RES",
            MessageKind::Start => "DELEGATION_START",
            MessageKind::Prepared => "DELEGATION_PREPARED",
            MessageKind::Confirm => "DELEGATION_CONFIRM",
            MessageKind::Failure => "DELEGATION_FAILURE",
            MessageKind::BootstrapUrlRequest => "BOOTSTRAP_URL_REQUEST",
            MessageKind::BootstrapUrl => "BOOTSTRAP_URL",
        }
    }
}

impl fmt::Display for MessageKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.spec_name())
    }
}

impl Body {
    /// The message type.
    pub fn kind(&self) -> MessageKind {
        match self {
            Body::Notif(_) => MessageKind::Notif,
            Body::Ack | Body::Nack(_) => MessageKind::Res,
            Body::Start(_) => MessageKind::Start,
            Body::Prepared => MessageKind::Prepared,
            Body::Confirm => MessageKind::Confirm,
            Body::Failure(_) => MessageKind::Failure,
            Body::BootstrapUrlRequest => MessageKind::BootstrapUrlRequest,
            Body::BootstrapUrl(_) => MessageKind::BootstrapUrl,
        }
    }
}

/// The header every message carries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    /// Delegation session id, chosen by the initiator.
    pub session_id: String,
    /// Sequence number of this message among the sender's messages in the session, from 1.
    pub seq: u32,
    /// Sender's ServerID.
    pub sender: String,
    /// Recipient's ServerID.
    pub recipient: String,
    /// Delegation method.
    pub method: Method,
    /// When the message was sent.
    pub timestamp: Timestamp,
}

/// A complete protocol message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    /// Header.
    pub header: Header,
    /// Body.
    pub body: Body,
}

fn invalid(field: String, reason: impl Into<String>) -> DecodeError {
    DecodeError::InvalidField {
        field,
        reason: reason.into(),
    }
}

/// Checks a text field: only characters XML carries, and (for fields decoding trims) no
/// white space around it, so that what validates is exactly what arrives.
/// `field` is formatted only when the check fails.
fn check_text<P: fmt::Display + ?Sized>(
    field: &P,
    value: &str,
    trimmed: bool,
) -> Result<(), DecodeError> {
    crate::xml::check_xml_text(value).map_err(|r| invalid(field.to_string(), r))?;
    if trimmed && value.trim() != value {
        return Err(invalid(
            field.to_string(),
            "has white space around it (decoding trims it)",
        ));
    }
    Ok(())
}

fn check_time(field: &str, t: Timestamp) -> Result<(), DecodeError> {
    if t.is_representable() {
        Ok(())
    } else {
        Err(invalid(field.to_string(), "outside years 0000–9999"))
    }
}

/// Checks a session id: 1–64 characters of `A-Z a-z 0-9 . _ -`.
pub fn validate_session_id(id: &str) -> Result<(), String> {
    if id.is_empty() || id.len() > 64 {
        return Err("must be 1 to 64 characters".into());
    }
    if let Some(c) = id
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(format!("character `{}` is not allowed", c.escape_default()));
    }
    Ok(())
}

impl Message {
    /// Checks every field; the error names the first bad one. Decoding always validates.
    pub fn validate(&self) -> Result<(), DecodeError> {
        let h = &self.header;
        validate_session_id(&h.session_id)
            .map_err(|r| invalid("Delegation/Header/SessionID".into(), r))?;
        if h.seq == 0 {
            return Err(invalid("Delegation/Header/Seq".into(), "starts at 1"));
        }
        validate_server_id(&h.sender).map_err(|r| invalid("Delegation/Header/Sender".into(), r))?;
        validate_server_id(&h.recipient)
            .map_err(|r| invalid("Delegation/Header/Recipient".into(), r))?;
        check_time("Delegation/Header/Timestamp", h.timestamp)?;
        if h.sender == h.recipient {
            return Err(invalid(
                "Delegation/Header/Recipient".into(),
                "sender and recipient are the same server",
            ));
        }
        match &self.body {
            Body::Notif(n) => validate_notif(n, h),
            Body::Nack(r) | Body::Failure(r) => {
                let name = if matches!(self.body, Body::Nack(_)) {
                    "Delegation/Res/Nack"
                } else {
                    "Delegation/Failure"
                };
                check_text(&Path::Child(&Path::Text(name), "Text"), &r.text, true)?;
                if r.text.len() > Reason::MAX_TEXT_BYTES {
                    return Err(invalid(join(name, "Text"), "longer than 1024 bytes"));
                }
                if !(100..=999).contains(&r.code) {
                    return Err(invalid(join(name, "Code"), "must be 100 to 999"));
                }
                Ok(())
            }
            Body::Start(acc) => acc.validate().map_err(|e| e.under("Delegation/Start")),
            Body::BootstrapUrl(url) => validate_https_url(url)
                .map_err(|r| invalid("Delegation/BootstrapURL/URL".into(), r)),
            Body::Ack | Body::Prepared | Body::Confirm | Body::BootstrapUrlRequest => Ok(()),
        }
    }

    /// Encodes the message as its XML document. Call [`Message::validate`] first for a
    /// message built by hand: encoding does not check values.
    pub fn to_xml(&self) -> String {
        // START carries an account (about 4 KB); the other messages fit in 1 KB.
        let bytes = if matches!(self.body, Body::Start(_)) {
            6144
        } else {
            1024
        };
        let mut w = XmlWriter::with_capacity(bytes);
        w.declaration();
        w.open_attrs(
            "Delegation",
            &[("xmlns", NAMESPACE), ("version", PROTOCOL_VERSION)],
        );
        let h = &self.header;
        w.open("Header");
        w.leaf("SessionID", &h.session_id);
        w.leaf("Seq", &h.seq.to_string());
        w.leaf("Sender", &h.sender);
        w.leaf("Recipient", &h.recipient);
        w.leaf("Method", &h.method.number().to_string());
        w.leaf("Timestamp", &h.timestamp.to_rfc3339());
        w.close();
        match &self.body {
            Body::Notif(n) => {
                w.open("Notif");
                w.leaf("DMServerID", &n.dm_server_id);
                w.leaf("DelType", n.delegation_type.as_str());
                w.open("DelInfo");
                w.open("Device");
                w.leaf("DevID", &n.info.device.device_id);
                w.leaf("Man", &n.info.device.manufacturer);
                w.leaf("Mod", &n.info.device.model);
                w.close();
                for s in &n.info.subtrees {
                    w.open("Subtree");
                    w.leaf("URI", &s.uri);
                    let rights: Vec<&str> = s.rights.iter().map(|r| r.as_str()).collect();
                    w.leaf("Rights", &rights.join(" "));
                    w.close();
                }
                w.close();
                if let Some(e) = n.expires {
                    w.leaf("Expires", &e.to_rfc3339());
                }
                w.close();
            }
            Body::Ack => {
                w.open("Res");
                w.empty("Ack");
                w.close();
            }
            Body::Nack(r) => {
                w.open("Res");
                w.open("Nack");
                write_reason(&mut w, r);
                w.close();
                w.close();
            }
            Body::Start(acc) => {
                w.open("Start");
                w.open("DMAcc");
                let mut node = acc.to_node();
                node.path = Some("./DMAcc".into());
                write_mgmt_tree(&mut w, &MgmtTree::new(vec![node]));
                w.close();
                w.close();
            }
            Body::Prepared => w.empty("Prepared"),
            Body::Confirm => w.empty("Confirm"),
            Body::Failure(r) => {
                w.open("Failure");
                write_reason(&mut w, r);
                w.close();
            }
            Body::BootstrapUrlRequest => w.empty("BootstrapURLRequest"),
            Body::BootstrapUrl(url) => {
                w.open("BootstrapURL");
                w.leaf("URL", url);
                w.close();
            }
        }
        w.close();
        w.finish()
    }

    /// Decodes and validates a message under the default limits (256 KiB, depth 32).
    pub fn from_xml(input: &[u8]) -> Result<Message, DecodeError> {
        Self::from_xml_with_limits(input, &XmlLimits::default())
    }

    /// Decodes and validates a message under `limits`.
    pub fn from_xml_with_limits(input: &[u8], limits: &XmlLimits) -> Result<Message, DecodeError> {
        let doc = xml::parse(input, limits)?;
        let msg = message_from_element(&doc.root())?;
        msg.validate()?;
        Ok(msg)
    }
}

/// Checks a Bootstrap Server URL: absolute `https://` with a host.
pub fn validate_https_url(url: &str) -> Result<(), String> {
    let rest = url
        .strip_prefix("https://")
        .ok_or_else(|| format!("`{url}` is not an https:// URL"))?;
    let host = rest.split(['/', '?', '#']).next().unwrap_or("");
    if host.is_empty() || url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!("`{url}` has no host or contains white space"));
    }
    Ok(())
}

fn validate_notif(n: &Notif, h: &Header) -> Result<(), DecodeError> {
    let here = "Delegation/Notif";
    if n.dm_server_id != h.sender {
        return Err(invalid(
            join(here, "DMServerID"),
            format!("`{}` is not the sender `{}`", n.dm_server_id, h.sender),
        ));
    }
    if let Some(e) = n.expires {
        check_time(&join(here, "Expires"), e)?;
    }
    if n.expires.is_some() && n.delegation_type == DelegationType::Full {
        return Err(invalid(
            join(here, "Expires"),
            "a Full delegation cannot be temporary: DMS-1 deletes its own account",
        ));
    }
    let dev = &n.info.device;
    for (name, v) in [
        ("DevID", &dev.device_id),
        ("Man", &dev.manufacturer),
        ("Mod", &dev.model),
    ] {
        let field = Path::Child(&Path::Text("Delegation/Notif/DelInfo/Device"), name);
        if v.trim().is_empty() || v.len() > 256 {
            return Err(invalid(field.to_string(), "must be 1 to 256 bytes"));
        }
        check_text(&field, v, true)?;
    }
    if n.info.subtrees.is_empty() {
        return Err(DecodeError::MissingField {
            field: format!("{here}/DelInfo/Subtree"),
        });
    }
    for (i, s) in n.info.subtrees.iter().enumerate() {
        let base = Path::Nth(&Path::Text("Delegation/Notif/DelInfo"), "Subtree", i + 1);
        uri_segments(&s.uri).map_err(|r| invalid(join(&base, "URI"), r))?;
        check_text(&base.child("URI"), &s.uri, true)?;
        if s.rights.is_empty() {
            return Err(invalid(join(&base, "Rights"), "grants no command"));
        }
        if s.rights.windows(2).any(|w| w[0] >= w[1]) {
            return Err(invalid(
                join(&base, "Rights"),
                "must be sorted (Add Delete Exec Get Replace) without repeats",
            ));
        }
        if n.info.subtrees[..i].iter().any(|o| o.uri == s.uri) {
            return Err(invalid(join(&base, "URI"), "delegated twice"));
        }
    }
    Ok(())
}

fn write_reason(w: &mut XmlWriter, r: &Reason) {
    w.leaf("Code", &r.code.to_string());
    w.leaf("Text", &r.text);
}

pub(crate) fn message_from_element(root: &Element) -> Result<Message, DecodeError> {
    if root.name() != "Delegation" {
        return Err(DecodeError::WrongRoot {
            expected: "Delegation".into(),
            found: root.name().to_string(),
        });
    }
    if root.ns() != Some(NAMESPACE) {
        return Err(DecodeError::WrongNamespace {
            expected: NAMESPACE.into(),
            found: root.ns().unwrap_or_default().to_string(),
        });
    }
    match root.attr("version") {
        Some(PROTOCOL_VERSION) => {}
        Some(other) => {
            return Err(DecodeError::UnsupportedVersion {
                found: other.to_string(),
            })
        }
        None => {
            return Err(DecodeError::MissingField {
                field: "Delegation/@version".into(),
            })
        }
    }
    if let Some((name, _)) = root.attrs().find(|(k, _)| *k != "version") {
        return Err(DecodeError::UnexpectedElement {
            parent: "Delegation".into(),
            element: format!("@{name}"),
        });
    }
    if !crate::xml::is_xml_blank(root.text()) {
        return Err(invalid(
            "Delegation".into(),
            "text mixed with child elements",
        ));
    }
    same_namespace(root, &Path::Text("Delegation"))?;
    let mut children = root.children();
    let header_el = match children.next() {
        Some(h) if h.name() == "Header" => h,
        _ => {
            return Err(invalid(
                "Delegation/Header".into(),
                "must be the first element",
            ))
        }
    };
    let header = header_from_element(&header_el)?;
    let mut bodies = children.filter(|c| c.name() != "Header");
    if root.children_named("Header").count() != 1 {
        return Err(invalid(
            "Delegation/Header".into(),
            "must appear exactly once",
        ));
    }
    let body_el = match (bodies.next(), bodies.next()) {
        (Some(one), None) => one,
        (None, _) => {
            return Err(DecodeError::MissingField {
                field: "Delegation/<body>".into(),
            })
        }
        (Some(_), Some(second)) => {
            return Err(DecodeError::UnexpectedElement {
                parent: "Delegation".into(),
                element: second.name().to_string(),
            })
        }
    };
    let top = Path::Text("Delegation");
    let here = top.child(body_el.name());
    let body = match body_el.name() {
        "Notif" => Body::Notif(notif_from_element(&body_el, &here)?),
        "Res" => {
            let [ack, nack] = body_el.fields(["Ack", "Nack"], &here)?;
            match (ack.element(), nack.element()) {
                (Some(ack), None) => empty_body(&ack, &here.child("Ack"), Body::Ack)?,
                (None, Some(n)) => Body::Nack(reason_from_element(&n, &here.child("Nack"))?),
                _ => {
                    return Err(invalid(
                        here.to_string(),
                        "must hold exactly one of Ack or Nack",
                    ))
                }
            }
        }
        "Start" => {
            let [acc] = body_el.fields(["DMAcc"], &here)?;
            let acc_path = here.child("DMAcc");
            let [tree] = acc.required(&here)?.fields(["MgmtTree"], &acc_path)?;
            let tree = mgmt_tree_from_element(&tree.required(&acc_path)?, &acc_path)?;
            let node: Node = match <[Node; 1]>::try_from(tree.nodes) {
                Ok([one]) => one,
                Err(_) => {
                    return Err(invalid(
                        join(&acc_path, "MgmtTree"),
                        "must hold exactly one account node",
                    ))
                }
            };
            if node.path.as_deref().is_some_and(|p| p != "./DMAcc") {
                return Err(invalid(
                    format!("{acc_path}/MgmtTree/Node[1]/Path"),
                    "an account lives under ./DMAcc",
                ));
            }
            // Checked once, with the whole message, by `Message::validate`.
            Body::Start(DmAcc::from_node_unchecked(node).map_err(|e| e.under(&here.to_string()))?)
        }
        "Prepared" => empty_body(&body_el, &here, Body::Prepared)?,
        "Confirm" => empty_body(&body_el, &here, Body::Confirm)?,
        "Failure" => Body::Failure(reason_from_element(&body_el, &here)?),
        "BootstrapURLRequest" => empty_body(&body_el, &here, Body::BootstrapUrlRequest)?,
        "BootstrapURL" => {
            let [url] = body_el.fields(["URL"], &here)?;
            Body::BootstrapUrl(url.required_text(&here)?.to_string())
        }
        other => {
            return Err(DecodeError::UnknownMessageType {
                found: other.to_string(),
            })
        }
    };
    Ok(Message { header, body })
}

/// Every element of the envelope (the TNDS inside START aside) is in [`NAMESPACE`], the
/// namespace of the root (checked before).
fn same_namespace(el: &Element, path: &Path) -> Result<(), DecodeError> {
    for c in el.children() {
        if c.name() == "MgmtTree" {
            continue;
        }
        let here = path.child(c.name());
        // The document interns namespaces: comparing with the parent's is one integer
        // comparison instead of a string comparison per element.
        if !c.in_namespace_of(el) {
            return Err(DecodeError::WrongNamespace {
                expected: NAMESPACE.into(),
                found: format!("{} (at {here})", c.ns().unwrap_or_default()),
            });
        }
        if c.has_children() {
            same_namespace(&c, &here)?;
        }
    }
    Ok(())
}

fn empty_body(el: &Element, here: &Path, body: Body) -> Result<Body, DecodeError> {
    el.no_children(here)?;
    if !el.text().trim().is_empty() {
        return Err(invalid(here.to_string(), "must be empty"));
    }
    Ok(body)
}

fn header_from_element(el: &Element) -> Result<Header, DecodeError> {
    let here = "Delegation/Header";
    let [session_id, seq, sender, recipient, method, timestamp] = el.fields(
        [
            "SessionID",
            "Seq",
            "Sender",
            "Recipient",
            "Method",
            "Timestamp",
        ],
        here,
    )?;
    let seq_text = seq.required_text(here)?;
    let seq = seq_text
        .parse::<u32>()
        .map_err(|e| invalid(join(here, "Seq"), format!("`{seq_text}`: {e}")))?;
    let method_text = method.required_text(here)?;
    let method = method_text
        .parse::<u8>()
        .ok()
        .and_then(Method::from_number)
        .ok_or_else(|| {
            invalid(
                join(here, "Method"),
                format!("`{method_text}` is not 1 to 4"),
            )
        })?;
    let timestamp = Timestamp::parse_rfc3339(timestamp.required_text(here)?)
        .map_err(|r| invalid(join(here, "Timestamp"), r))?;
    Ok(Header {
        session_id: session_id.required_text(here)?.to_string(),
        seq,
        sender: sender.required_text(here)?.to_string(),
        recipient: recipient.required_text(here)?.to_string(),
        method,
        timestamp,
    })
}

fn notif_from_element(el: &Element, here: &Path) -> Result<Notif, DecodeError> {
    let [dm_server_id, del_type, info, expires] =
        el.fields(["DMServerID", "DelType", "DelInfo", "Expires"], here)?;
    let dt = del_type.required_text(here)?;
    let delegation_type = dt
        .parse::<DelegationType>()
        .map_err(|r| invalid(join(here, "DelType"), r))?;
    let info_path = here.child("DelInfo");
    let info_el = info.required(here)?;
    // The subtrees are listed by `children_named` below; their slot is not read.
    let [device, _] = info_el.fields(["Device", "Subtree"], &info_path)?;
    let dev_path = info_path.child("Device");
    let [device_id, manufacturer, model] = device
        .required(&info_path)?
        .fields(["DevID", "Man", "Mod"], &dev_path)?;
    let device = DeviceInfo {
        device_id: device_id.required_text(&dev_path)?.to_string(),
        manufacturer: manufacturer.required_text(&dev_path)?.to_string(),
        model: model.required_text(&dev_path)?.to_string(),
    };
    let mut subtrees = Vec::new();
    for (i, s) in info_el.children_named("Subtree").enumerate() {
        let base = info_path.nth("Subtree", i + 1);
        let [uri, rights] = s.fields(["URI", "Rights"], &base)?;
        let rights = rights
            .required_text(&base)?
            .split([' ', '\t', '\n', '\r'])
            .filter(|r| !r.is_empty())
            .map(|r| {
                r.parse::<AclCommand>()
                    .map_err(|_| invalid(join(&base, "Rights"), format!("`{r}` is not a command")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        subtrees.push(DelegatedSubtree {
            uri: uri.required_text(&base)?.to_string(),
            rights,
        });
    }
    let expires = match expires.text() {
        Some(t) => {
            Some(Timestamp::parse_rfc3339(t).map_err(|r| invalid(join(here, "Expires"), r))?)
        }
        None => None,
    };
    Ok(Notif {
        dm_server_id: dm_server_id.required_text(here)?.to_string(),
        delegation_type,
        info: DelegationInfo { device, subtrees },
        expires,
    })
}

fn reason_from_element(el: &Element, here: &Path) -> Result<Reason, DecodeError> {
    let [code, text] = el.fields(["Code", "Text"], here)?;
    let code_text = code.required_text(here)?;
    let code = code_text
        .parse::<u16>()
        .map_err(|e| invalid(join(here, "Code"), format!("`{code_text}`: {e}")))?;
    Ok(Reason {
        code,
        text: text.required_text(here)?.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamp_round_trip() {
        let t = Timestamp(1_763_700_000_123);
        assert_eq!(Timestamp::parse_rfc3339(&t.to_rfc3339()).unwrap(), t);
        assert_eq!(Timestamp(0).to_rfc3339(), "1970-01-01T00:00:00Z");
        assert_eq!(Timestamp::MIN.to_rfc3339(), "0000-01-01T00:00:00Z");
        assert_eq!(Timestamp::MAX.to_rfc3339(), "9999-12-31T23:59:59.999Z");
        assert_eq!(Timestamp(1_005).to_rfc3339(), "1970-01-01T00:00:01.005Z");
        // Outside what RFC 3339 carries (validation refuses these), as before.
        assert_eq!(
            Timestamp(Timestamp::MAX.0 + 1).to_rfc3339(),
            "1970-01-01T00:00:00Z"
        );
        assert_eq!(
            Timestamp(Timestamp::MIN.0 - 86_400_000).to_rfc3339(),
            "-001-12-31T00:00:00Z"
        );
        assert_eq!(
            Timestamp::parse_rfc3339("2026-11-21T12:00:00+01:00").unwrap(),
            Timestamp::parse_rfc3339("2026-11-21T11:00:00Z").unwrap()
        );
    }
}
