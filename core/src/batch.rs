//! Batches: several messages in one document, so a binding can carry many sessions'
//! messages to one peer in one request (the HTTPS binding does when a peer's requests are
//! all in flight and messages queue up).
//!
//! A batch is an envelope of the binding, not a protocol message: its own namespace
//! ([`BATCH_NAMESPACE`]), version and media type ([`BATCH_MEDIA_TYPE`]), holding version
//! 1.0 `Delegation` documents unchanged, each with its own namespace declaration. The
//! receiver answers with one [`EntryStatus`] per entry, in order. Schema:
//! `schema/delegation-batch-1.0.xsd`; specification: `docs/protocol.md`, section 8.2.
//!
//! ```
//! use dmdelegate::batch::{self, BatchWriter, EntryStatus};
//! use dmdelegate::{Body, Message, Method, Timestamp};
//! # use dmdelegate::message::Header;
//! # let message = |seq| Message { header: Header { session_id: "s-1".into(), seq,
//! #     sender: "dms1".into(), recipient: "dms2".into(), method: Method::DelegatingInitiates,
//! #     timestamp: Timestamp(0) }, body: Body::BootstrapUrlRequest };
//! let mut writer = BatchWriter::new();
//! writer.push_document(message(1).to_xml().as_bytes());
//! writer.push_document(message(2).to_xml().as_bytes());
//! let document = writer.finish();
//!
//! let entries = batch::decode_batch(&document, &Default::default())?;
//! assert_eq!(entries.len(), 2);
//! assert_eq!(entries[1].as_ref().unwrap().header.seq, 2);
//!
//! let answer = batch::encode_batch_result(&[EntryStatus::accepted(), EntryStatus::accepted()]);
//! assert_eq!(batch::decode_batch_result(answer.as_bytes())?.len(), 2);
//! # Ok::<(), dmdelegate::DecodeError>(())
//! ```

use crate::error::DecodeError;
use crate::message::{message_from_element, Message};
use crate::xml::{self, Element, XmlLimits, XmlWriter};

/// The namespace of batch and batch-result documents.
pub const BATCH_NAMESPACE: &str = "urn:dmdelegate:params:xml:ns:delegation-batch-1";

/// The version of the batch envelope this crate writes and accepts.
pub const BATCH_VERSION: &str = "1.0";

/// The media type of batch and batch-result documents.
pub const BATCH_MEDIA_TYPE: &str = "application/vnd.dm.delegation-batch+xml";

/// Most entries accepted in one batch.
pub const MAX_BATCH_ENTRIES: usize = 256;

const XML_DECLARATION: &str = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n";
const BATCH_OPEN: &str =
    "<DelegationBatch xmlns=\"urn:dmdelegate:params:xml:ns:delegation-batch-1\" version=\"1.0\">";
const BATCH_CLOSE: &str = "</DelegationBatch>";

/// Bytes a batch adds around its entries: a batch of documents totalling `n` bytes is at
/// most `n + ENVELOPE_BYTES` long.
pub const ENVELOPE_BYTES: usize = XML_DECLARATION.len() + BATCH_OPEN.len() + BATCH_CLOSE.len();

/// Writes a batch document from encoded messages.
#[derive(Debug)]
pub struct BatchWriter {
    out: Vec<u8>,
    entries: usize,
}

impl Default for BatchWriter {
    fn default() -> Self {
        Self::new()
    }
}

impl BatchWriter {
    /// An empty batch.
    pub fn new() -> Self {
        Self::with_capacity(4096)
    }

    /// An empty batch whose output starts with room for `bytes`.
    pub fn with_capacity(bytes: usize) -> Self {
        let mut out = Vec::with_capacity(bytes.max(ENVELOPE_BYTES));
        out.extend_from_slice(XML_DECLARATION.as_bytes());
        out.extend_from_slice(BATCH_OPEN.as_bytes());
        Self { out, entries: 0 }
    }

    /// Appends one message's document as [`Message::to_xml`] wrote it. Its XML declaration,
    /// if any, is left out (a declaration may only start a document); the rest is copied
    /// as it is (the receiver decodes and validates each entry).
    pub fn push_document(&mut self, document: &[u8]) {
        self.out.extend_from_slice(without_declaration(document));
        self.entries += 1;
    }

    /// Entries so far.
    pub fn len(&self) -> usize {
        self.entries
    }

    /// True before the first entry.
    pub fn is_empty(&self) -> bool {
        self.entries == 0
    }

    /// The document's length so far, without the closing tag.
    pub fn bytes(&self) -> usize {
        self.out.len()
    }

    /// The finished document.
    pub fn finish(mut self) -> Vec<u8> {
        self.out.extend_from_slice(BATCH_CLOSE.as_bytes());
        self.out
    }
}

/// `document` without a leading `<?xml ...?>` declaration and the white space after it.
fn without_declaration(document: &[u8]) -> &[u8] {
    if let Some(rest) = document.strip_prefix(XML_DECLARATION.as_bytes()) {
        return rest;
    }
    match document.strip_prefix(b"<?xml") {
        Some(rest) => rest
            .windows(2)
            .position(|w| w == b"?>")
            .map_or(document, |end| rest[end + 2..].trim_ascii_start()),
        None => document,
    }
}

/// Decodes a batch. `limits` apply to the whole document, except that the entries nest
/// one level deeper than a message on its own may.
///
/// The outer error refuses the batch as a whole: not well-formed, not a version 1.0
/// `DelegationBatch`, no entries or more than [`MAX_BATCH_ENTRIES`]. Otherwise there is one
/// result per entry, in order: the message, decoded and validated as
/// [`Message::from_xml`] would, or why that entry was refused.
pub fn decode_batch(
    input: &[u8],
    limits: &XmlLimits,
) -> Result<Vec<Result<Message, DecodeError>>, DecodeError> {
    let limits = XmlLimits {
        max_depth: limits.max_depth.saturating_add(1),
        ..*limits
    };
    let doc = xml::parse(input, &limits)?;
    let root = doc.root();
    check_envelope(&root, "DelegationBatch")?;
    let count = root.child_count();
    if count == 0 {
        return Err(DecodeError::MissingField {
            field: "DelegationBatch/Delegation".into(),
        });
    }
    if count > MAX_BATCH_ENTRIES {
        return Err(DecodeError::InvalidField {
            field: "DelegationBatch".into(),
            reason: format!("{count} entries, more than {MAX_BATCH_ENTRIES}"),
        });
    }
    Ok(root
        .children()
        .map(|entry| {
            let message = message_from_element(&entry)?;
            message.validate()?;
            Ok(message)
        })
        .collect())
}

/// What the receiver did with one entry of a batch: the HTTP status a request carrying
/// that message alone would have been answered with, and the text it would have carried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryStatus {
    /// An HTTP status code, 100 to 599 (the HTTPS binding's table, section 8.1).
    pub status: u16,
    /// Why, for a refusal; empty when accepted.
    pub detail: String,
}

impl EntryStatus {
    /// 202: accepted for processing.
    pub fn accepted() -> Self {
        Self {
            status: 202,
            detail: String::new(),
        }
    }

    /// `status` with `detail`.
    pub fn new(status: u16, detail: impl Into<String>) -> Self {
        Self {
            status,
            detail: detail.into(),
        }
    }
}

/// Encodes the answer to a batch: one `Entry` per entry of the batch, in order.
pub fn encode_batch_result(entries: &[EntryStatus]) -> String {
    let mut w = XmlWriter::with_capacity(160 + 24 * entries.len());
    w.declaration();
    w.open_attrs(
        "DelegationBatchResult",
        &[("xmlns", BATCH_NAMESPACE), ("version", BATCH_VERSION)],
    );
    for entry in entries {
        w.open_attrs("Entry", &[("status", &entry.status.to_string())]);
        w.text(&entry.detail);
        w.close();
    }
    w.close();
    w.finish()
}

/// Decodes the answer to a batch under the default limits.
pub fn decode_batch_result(input: &[u8]) -> Result<Vec<EntryStatus>, DecodeError> {
    let doc = xml::parse(input, &XmlLimits::default())?;
    let root = doc.root();
    check_envelope(&root, "DelegationBatchResult")?;
    root.children()
        .map(|entry| {
            if entry.name() != "Entry" || !entry.in_namespace_of(&root) {
                return Err(DecodeError::UnexpectedElement {
                    parent: "DelegationBatchResult".into(),
                    element: entry.name().to_string(),
                });
            }
            entry.no_children(&"DelegationBatchResult/Entry")?;
            let mut status = None;
            for (name, value) in entry.attrs() {
                match name {
                    "status" => status = Some(value),
                    other => {
                        return Err(DecodeError::UnexpectedElement {
                            parent: "DelegationBatchResult/Entry".into(),
                            element: format!("@{other}"),
                        })
                    }
                }
            }
            let status = status.ok_or_else(|| DecodeError::MissingField {
                field: "DelegationBatchResult/Entry/@status".into(),
            })?;
            let status = status
                .parse::<u16>()
                .ok()
                .filter(|s| (100..=599).contains(s) && status.len() == 3)
                .ok_or_else(|| DecodeError::InvalidField {
                    field: "DelegationBatchResult/Entry/@status".into(),
                    reason: format!("`{status}` is not an HTTP status code"),
                })?;
            Ok(EntryStatus::new(status, entry.text().trim()))
        })
        .collect()
}

/// Checks the root of a batch or batch-result document: name, namespace, version, no
/// other attributes, no text beside the entries.
fn check_envelope(root: &Element, name: &str) -> Result<(), DecodeError> {
    if root.name() != name {
        return Err(DecodeError::WrongRoot {
            expected: name.into(),
            found: root.name().to_string(),
        });
    }
    if root.ns() != Some(BATCH_NAMESPACE) {
        return Err(DecodeError::WrongNamespace {
            expected: BATCH_NAMESPACE.into(),
            found: root.ns().unwrap_or_default().to_string(),
        });
    }
    for (attr, value) in root.attrs() {
        match attr {
            "version" if value == BATCH_VERSION => {}
            "version" => {
                return Err(DecodeError::UnsupportedVersion {
                    found: value.to_string(),
                })
            }
            other => {
                return Err(DecodeError::UnexpectedElement {
                    parent: name.into(),
                    element: format!("@{other}"),
                })
            }
        }
    }
    if root.attr("version").is_none() {
        return Err(DecodeError::MissingField {
            field: format!("{name}/@version"),
        });
    }
    if !root.text().trim().is_empty() {
        return Err(DecodeError::InvalidField {
            field: name.into(),
            reason: "text beside the entries".into(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::Header;
    use crate::{Body, Method, Reason, ReasonCode, Timestamp};

    fn message(session: &str, seq: u32, body: Body) -> Message {
        Message {
            header: Header {
                session_id: session.into(),
                seq,
                sender: "dms1".into(),
                recipient: "dms2".into(),
                method: Method::DelegatingInitiates,
                timestamp: Timestamp(1_700_000_000_000),
            },
            body,
        }
    }

    fn batch_of(documents: &[String]) -> String {
        let mut w = BatchWriter::new();
        for d in documents {
            w.push_document(d.as_bytes());
        }
        String::from_utf8(w.finish()).unwrap()
    }

    #[test]
    fn a_batch_carries_each_message_unchanged_in_order() {
        let messages = [
            message("s-1", 1, Body::BootstrapUrlRequest),
            message(
                "s-2",
                3,
                Body::Failure(Reason::new(ReasonCode::Timeout, "a <late> & slow peer")),
            ),
            message("s-1", 2, Body::BootstrapUrl("https://bs.example/b".into())),
        ];
        let docs: Vec<String> = messages.iter().map(Message::to_xml).collect();
        let document = batch_of(&docs);
        assert!(document.len() <= docs.iter().map(String::len).sum::<usize>() + ENVELOPE_BYTES);
        let decoded = decode_batch(document.as_bytes(), &XmlLimits::default()).unwrap();
        let decoded: Vec<Message> = decoded.into_iter().map(Result::unwrap).collect();
        assert_eq!(decoded, messages);
    }

    #[test]
    fn a_bad_entry_is_refused_alone() {
        let good = message("s-1", 1, Body::BootstrapUrlRequest).to_xml();
        let wrong_version = good.replace("version=\"1.0\"", "version=\"9.9\"");
        let bad_url = message("s-2", 1, Body::BootstrapUrl("http://plain".into())).to_xml();
        let document = batch_of(&[good, wrong_version, bad_url]);
        let decoded = decode_batch(document.as_bytes(), &XmlLimits::default()).unwrap();
        assert!(decoded[0].is_ok());
        assert!(matches!(
            decoded[1],
            Err(DecodeError::UnsupportedVersion { .. })
        ));
        assert!(matches!(decoded[2], Err(DecodeError::InvalidField { .. })));
    }

    #[test]
    fn an_entry_in_another_namespace_or_element_is_refused_alone() {
        let good = message("s-1", 1, Body::BootstrapUrlRequest).to_xml();
        let document = batch_of(&[good, "<Delegation version=\"1.0\"/>".into(), "<X/>".into()]);
        let decoded = decode_batch(document.as_bytes(), &XmlLimits::default()).unwrap();
        assert!(decoded[0].is_ok());
        assert!(matches!(
            decoded[1],
            Err(DecodeError::WrongNamespace { .. })
        ));
        assert!(matches!(decoded[2], Err(DecodeError::WrongRoot { .. })));
    }

    #[test]
    fn the_envelope_is_checked_as_a_whole() {
        let good = message("s-1", 1, Body::BootstrapUrlRequest).to_xml();
        let limits = XmlLimits::default();
        let empty = BatchWriter::new().finish();
        assert!(matches!(
            decode_batch(&empty, &limits),
            Err(DecodeError::MissingField { .. })
        ));
        let versioned = batch_of(std::slice::from_ref(&good)).replacen(
            "version=\"1.0\">",
            "version=\"2.0\">",
            1,
        );
        assert!(matches!(
            decode_batch(versioned.as_bytes(), &limits),
            Err(DecodeError::UnsupportedVersion { .. })
        ));
        let renamed = batch_of(std::slice::from_ref(&good)).replace("DelegationBatch", "Batch");
        assert!(matches!(
            decode_batch(renamed.as_bytes(), &limits),
            Err(DecodeError::WrongRoot { .. })
        ));
        let other_ns = batch_of(std::slice::from_ref(&good)).replace("delegation-batch-1", "x");
        assert!(matches!(
            decode_batch(other_ns.as_bytes(), &limits),
            Err(DecodeError::WrongNamespace { .. })
        ));
        let extra = batch_of(std::slice::from_ref(&good)).replacen(
            "version=\"1.0\">",
            "version=\"1.0\" id=\"7\">",
            1,
        );
        assert!(matches!(
            decode_batch(extra.as_bytes(), &limits),
            Err(DecodeError::UnexpectedElement { .. })
        ));
        let texty =
            batch_of(std::slice::from_ref(&good)).replace(BATCH_CLOSE, "hi</DelegationBatch>");
        assert!(matches!(
            decode_batch(texty.as_bytes(), &limits),
            Err(DecodeError::InvalidField { .. })
        ));
        let crowded = batch_of(&vec![good.clone(); MAX_BATCH_ENTRIES + 1]);
        let roomy = XmlLimits {
            max_bytes: usize::MAX,
            ..limits
        };
        assert!(matches!(
            decode_batch(crowded.as_bytes(), &roomy),
            Err(DecodeError::InvalidField { .. })
        ));
        let unclosed = batch_of(&[good]).replace(BATCH_CLOSE, "");
        assert!(matches!(
            decode_batch(unclosed.as_bytes(), &limits),
            Err(DecodeError::Malformed { .. })
        ));
    }

    #[test]
    fn the_limits_apply_to_the_whole_batch() {
        let good = message("s-1", 1, Body::BootstrapUrlRequest).to_xml();
        let document = batch_of(&[good.clone(), good]);
        let tight = XmlLimits {
            max_bytes: document.len() - 1,
            ..XmlLimits::default()
        };
        assert!(matches!(
            decode_batch(document.as_bytes(), &tight),
            Err(DecodeError::TooLarge { .. })
        ));
    }

    #[test]
    fn a_declaration_is_dropped_only_at_the_start() {
        assert_eq!(
            without_declaration(b"<?xml version='1.0'?>\n <a/>"),
            b"<a/>"
        );
        let ours = format!("{XML_DECLARATION}<a/>");
        assert_eq!(without_declaration(ours.as_bytes()), b"<a/>");
        assert_eq!(without_declaration(b"<a/>"), b"<a/>");
        assert_eq!(
            without_declaration(b"<?xml unterminated"),
            b"<?xml unterminated"
        );
    }

    #[test]
    fn results_round_trip_and_are_checked() {
        let entries = [
            EntryStatus::accepted(),
            EntryStatus::new(400, "field `Seq` is invalid: <not> a number & more"),
            EntryStatus::new(421, "Recipient is `x`"),
        ];
        let document = encode_batch_result(&entries);
        assert_eq!(decode_batch_result(document.as_bytes()).unwrap(), entries);
        assert_eq!(
            decode_batch_result(encode_batch_result(&[]).as_bytes()).unwrap(),
            []
        );
        for bad in ["99", "600", "2020", "abc", "+20"] {
            let doc = document.replacen("status=\"202\"", &format!("status=\"{bad}\""), 1);
            assert!(
                matches!(
                    decode_batch_result(doc.as_bytes()),
                    Err(DecodeError::InvalidField { .. })
                ),
                "{bad}"
            );
        }
        let no_status = document.replacen(" status=\"202\"", "", 1);
        assert!(matches!(
            decode_batch_result(no_status.as_bytes()),
            Err(DecodeError::MissingField { .. })
        ));
        let other = document.replacen("<Entry status=\"202\">", "<Other status=\"202\">", 1);
        let other = other.replacen("</Entry>", "</Other>", 1);
        assert!(matches!(
            decode_batch_result(other.as_bytes()),
            Err(DecodeError::UnexpectedElement { .. })
        ));
        let wrong_root = document.replace("DelegationBatchResult", "DelegationBatch");
        assert!(matches!(
            decode_batch_result(wrong_root.as_bytes()),
            Err(DecodeError::WrongRoot { .. })
        ));
    }
}
