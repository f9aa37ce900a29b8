//! Golden wire-format vectors (`vectors/valid`) and rejection cases (`vectors/invalid`).
//!
//! Every valid vector must decode, re-encode and decode to the same message; every invalid
//! vector must be refused with exactly the error listed in [`INVALID`] (the same table as
//! `vectors/invalid/README.md`). The reason code table in the XSD's annotation must match
//! [`ReasonCode::ALL`]. The XSD side is checked by `scripts/validate-vectors.sh`.
//!
//! Set `DMDELEGATE_ENCODED_VECTORS_DIR` to a directory to also have the encoder's output for
//! every valid vector written there (same file names), for example to validate it with
//! `xmllint --schema schema/delegation-1.0.xsd`.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fs;
use std::path::{Path, PathBuf};

use dmdelegate::{Body, DecodeError, Message, MessageKind, Method, ReasonCode};

const VECTORS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../vectors");

/// The default decoding limits, as documented (256 KiB, depth 32).
const MAX_BYTES: usize = 256 * 1024;
const MAX_DEPTH: usize = 32;

/// The error an invalid vector must produce.
#[derive(Debug, Clone, Copy)]
enum Expect {
    Doctype,
    Entity(&'static str),
    WrongNamespace(&'static str),
    UnsupportedVersion(&'static str),
    UnknownMessageType(&'static str),
    MissingField(&'static str),
    InvalidField(&'static str),
    UnexpectedElement {
        parent: &'static str,
        element: &'static str,
    },
    TooDeep(usize),
}

impl Expect {
    fn matches(self, err: &DecodeError) -> bool {
        match (self, err) {
            (Expect::Doctype, DecodeError::Doctype) => true,
            (Expect::Entity(want), DecodeError::Entity { name }) => name == want,
            (Expect::WrongNamespace(want), DecodeError::WrongNamespace { found, .. }) => {
                found == want
            }
            (Expect::UnsupportedVersion(want), DecodeError::UnsupportedVersion { found }) => {
                found == want
            }
            (Expect::UnknownMessageType(want), DecodeError::UnknownMessageType { found }) => {
                found == want
            }
            (Expect::MissingField(want), DecodeError::MissingField { field }) => field == want,
            (Expect::InvalidField(want), DecodeError::InvalidField { field, .. }) => field == want,
            (
                Expect::UnexpectedElement {
                    parent: want_parent,
                    element: want_element,
                },
                DecodeError::UnexpectedElement { parent, element },
            ) => parent == want_parent && element == want_element,
            (Expect::TooDeep(want), DecodeError::TooDeep { limit }) => *limit == want,
            _ => false,
        }
    }
}

/// One entry per file in `vectors/invalid` (README.md aside), keyed by file name.
const INVALID: &[(&str, Expect)] = &[
    ("doctype-entity-expansion.xml", Expect::Doctype),
    ("undefined-entity.xml", Expect::Entity("nbsp")),
    (
        "wrong-namespace.xml",
        Expect::WrongNamespace("urn:dmdelegate:params:xml:ns:delegation-2"),
    ),
    ("unsupported-version.xml", Expect::UnsupportedVersion("2.0")),
    (
        "unknown-message-type.xml",
        Expect::UnknownMessageType("Revoke"),
    ),
    (
        "missing-session-id.xml",
        Expect::MissingField("Delegation/Header/SessionID"),
    ),
    (
        "malformed-seq.xml",
        Expect::InvalidField("Delegation/Header/Seq"),
    ),
    (
        "method-5.xml",
        Expect::InvalidField("Delegation/Header/Method"),
    ),
    (
        "timestamp-without-offset.xml",
        Expect::InvalidField("Delegation/Header/Timestamp"),
    ),
    (
        "dmserverid-not-sender.xml",
        Expect::InvalidField("Delegation/Notif/DMServerID"),
    ),
    (
        "rights-unknown-command.xml",
        Expect::InvalidField("Delegation/Notif/DelInfo/Subtree[1]/Rights"),
    ),
    (
        "rights-not-canonical.xml",
        Expect::InvalidField("Delegation/Notif/DelInfo/Subtree[1]/Rights"),
    ),
    (
        "subtree-list-empty.xml",
        Expect::MissingField("Delegation/Notif/DelInfo/Subtree"),
    ),
    (
        "notif-full-with-expires.xml",
        Expect::InvalidField("Delegation/Notif/Expires"),
    ),
    (
        "failure-code-42.xml",
        Expect::InvalidField("Delegation/Failure/Code"),
    ),
    (
        "bootstrap-url-http.xml",
        Expect::InvalidField("Delegation/BootstrapURL/URL"),
    ),
    (
        "start-appid-w8.xml",
        Expect::InvalidField("Delegation/Start/DMAcc/DMS2/AppID"),
    ),
    ("deep-nesting.xml", Expect::TooDeep(MAX_DEPTH)),
    (
        "header-unknown-child.xml",
        Expect::UnexpectedElement {
            parent: "Delegation/Header",
            element: "Priority",
        },
    ),
    (
        "two-bodies.xml",
        Expect::UnexpectedElement {
            parent: "Delegation",
            element: "Confirm",
        },
    ),
    (
        "session-id-twice.xml",
        Expect::InvalidField("Delegation/Header/SessionID"),
    ),
    (
        "header-after-body.xml",
        Expect::InvalidField("Delegation/Header"),
    ),
];

fn dir(name: &str) -> PathBuf {
    Path::new(VECTORS).join(name)
}

const SCHEMA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../schema/delegation-1.0.xsd");

/// `(file name, contents)` of every `*.xml` file in `vectors/<name>`, sorted by name.
fn xml_files(name: &str) -> Vec<(String, Vec<u8>)> {
    let dir = dir(name);
    let mut out: Vec<(String, Vec<u8>)> = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
        .map(|entry| entry.expect("directory entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "xml"))
        .map(|p| {
            let file = p.file_name().unwrap().to_string_lossy().into_owned();
            let bytes = fs::read(&p).unwrap_or_else(|e| panic!("cannot read {file}: {e}"));
            (file, bytes)
        })
        .collect();
    out.sort();
    out
}

#[test]
fn valid_vectors_decode_and_round_trip() {
    let files = xml_files("valid");
    assert!(
        files.len() >= 14,
        "expected at least 14 valid vectors, found {}",
        files.len()
    );
    let dump = std::env::var_os("DMDELEGATE_ENCODED_VECTORS_DIR").map(PathBuf::from);
    if let Some(d) = &dump {
        fs::create_dir_all(d).expect("create DMDELEGATE_ENCODED_VECTORS_DIR");
    }

    let mut kinds = HashSet::new();
    let mut notif_methods = HashSet::new();
    let (mut ack, mut nack) = (false, false);
    for (file, bytes) in &files {
        let msg = Message::from_xml(bytes)
            .unwrap_or_else(|e| panic!("{file}: valid vector does not decode: {e} ({e:?})"));
        let encoded = msg.to_xml();
        let again = Message::from_xml(encoded.as_bytes()).unwrap_or_else(|e| {
            panic!("{file}: encoder output does not decode: {e} ({e:?})\n{encoded}")
        });
        assert_eq!(again, msg, "{file}: decode(encode(m)) != m\n{encoded}");
        assert_eq!(again.to_xml(), encoded, "{file}: encoding is not stable");
        if let Some(d) = &dump {
            fs::write(d.join(file), &encoded).expect("write encoded vector");
        }

        kinds.insert(msg.body.kind());
        match &msg.body {
            Body::Notif(_) => {
                notif_methods.insert(msg.header.method);
            }
            Body::Ack => ack = true,
            Body::Nack(_) => nack = true,
            _ => {}
        }
    }

    let all_kinds = [
        MessageKind::Notif,
        MessageKind::Res,
        MessageKind::Start,
        MessageKind::Prepared,
        MessageKind::Confirm,
        MessageKind::Failure,
        MessageKind::BootstrapUrlRequest,
        MessageKind::BootstrapUrl,
    ];
    for k in all_kinds {
        assert!(kinds.contains(&k), "no valid vector is a {k}");
    }
    assert!(
        ack && nack,
        "DELEGATION_RES needs both an ack and a nack vector"
    );
    for m in Method::ALL {
        assert!(notif_methods.contains(&m), "no DELEGATION_NOTIF uses {m}");
    }
}

#[test]
fn invalid_vectors_are_rejected_with_the_listed_error() {
    let files = xml_files("invalid");
    let expected: BTreeMap<&str, Expect> = INVALID.iter().copied().collect();
    assert_eq!(expected.len(), INVALID.len(), "duplicate file in INVALID");

    let on_disk: BTreeSet<&str> = files.iter().map(|(f, _)| f.as_str()).collect();
    let listed: BTreeSet<&str> = expected.keys().copied().collect();
    let unlisted: Vec<_> = on_disk.difference(&listed).collect();
    let missing: Vec<_> = listed.difference(&on_disk).collect();
    assert!(
        unlisted.is_empty(),
        "files in vectors/invalid without an expectation: {unlisted:?}"
    );
    assert!(
        missing.is_empty(),
        "expectations without a file in vectors/invalid: {missing:?}"
    );

    let mut failures = Vec::new();
    for (file, bytes) in &files {
        let want = expected[file.as_str()];
        match Message::from_xml(bytes) {
            Ok(m) => failures.push(format!("{file}: decoded, expected {want:?}: {m:?}")),
            Err(e) if want.matches(&e) => {}
            Err(e) => failures.push(format!("{file}: got {e:?}, expected {want:?}")),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn invalid_readme_lists_every_case() {
    let readme = fs::read_to_string(dir("invalid").join("README.md")).expect("README.md");
    for (file, _) in INVALID {
        assert!(
            readme.contains(&format!("`{file}`")),
            "vectors/invalid/README.md does not list `{file}`"
        );
    }
}

#[test]
fn oversize_document_is_rejected() {
    let base = fs::read_to_string(dir("valid").join("failure.xml")).expect("failure.xml");
    // Padding in a trailing comment keeps the document well-formed and meaningful.
    let padded = |total: usize| {
        let pad = total - base.len() - "<!---->".len();
        format!("{base}<!--{}-->", "x".repeat(pad))
    };

    let at_limit = padded(MAX_BYTES);
    assert_eq!(at_limit.len(), MAX_BYTES);
    Message::from_xml(at_limit.as_bytes()).expect("a document of exactly 256 KiB is accepted");

    let over = padded(MAX_BYTES + 1);
    assert_eq!(
        Message::from_xml(over.as_bytes()),
        Err(DecodeError::TooLarge {
            size: MAX_BYTES + 1,
            limit: MAX_BYTES
        })
    );

    let huge = padded(4 * MAX_BYTES);
    assert!(matches!(
        Message::from_xml(huge.as_bytes()),
        Err(DecodeError::TooLarge {
            limit: MAX_BYTES,
            ..
        })
    ));
}

#[test]
fn schema_documents_every_reason_code() {
    let xsd = fs::read_to_string(SCHEMA).expect("schema/delegation-1.0.xsd");
    // Table rows in the ReasonCodeType annotation: `<code> <Name> <description>`.
    let rows: BTreeMap<u16, (String, String)> = xsd
        .lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            let code = words.next()?.parse::<u16>().ok()?;
            let name = words.next()?.to_string();
            Some((code, (name, words.collect::<Vec<_>>().join(" "))))
        })
        .collect();
    for r in ReasonCode::ALL {
        let want = (format!("{r:?}"), r.description().to_string());
        assert_eq!(
            rows.get(&r.code()),
            Some(&want),
            "the XSD's reason code table is out of date for {}",
            r.code()
        );
    }
    assert_eq!(
        rows.len(),
        ReasonCode::ALL.len(),
        "the XSD lists codes the crate does not know: {:?}",
        rows.keys()
            .filter(|c| ReasonCode::from_code(**c).is_none())
            .collect::<Vec<_>>()
    );
}
