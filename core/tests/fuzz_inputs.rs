//! The fuzz targets' properties (fuzz/fuzz_targets/) over every committed input: the seeds
//! and every input a fuzzer ever crashed on (fuzz/regressions/<target>/), so a fixed crash
//! stays fixed in the ordinary test run, on the stable toolchain.

use std::path::{Path, PathBuf};

use dmdelegate::batch::{self, BatchWriter};
use dmdelegate::syncml::SyncMessage;
use dmdelegate::{Acl, Message, MgmtTree, XmlLimits};

fn inputs(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
    let mut files = Vec::new();
    for dir in ["seeds", "regressions"] {
        let Ok(entries) = std::fs::read_dir(root.join(dir).join(target)) else {
            continue;
        };
        for e in entries.flatten() {
            let path = e.path();
            if path.is_file() && path.file_name().is_some_and(|n| n != "README.md") {
                let bytes = std::fs::read(&path).expect("readable input");
                files.push((path, bytes));
            }
        }
    }
    files.sort();
    files
}

#[test]
fn message_inputs_decode_or_fail_cleanly_and_round_trip() {
    let vectors = Path::new(env!("CARGO_MANIFEST_DIR")).join("../vectors/valid");
    let mut all = inputs("message_decode");
    for e in std::fs::read_dir(vectors).expect("vectors").flatten() {
        all.push((e.path(), std::fs::read(e.path()).expect("vector")));
    }
    assert!(!all.is_empty());
    for (path, data) in all {
        if let Ok(m) = Message::from_xml(&data) {
            let again = Message::from_xml(m.to_xml().as_bytes())
                .unwrap_or_else(|e| panic!("{}: re-encoded message fails: {e}", path.display()));
            assert_eq!(again, m, "{}", path.display());
        }
    }
}

#[test]
fn tnds_inputs_decode_or_fail_cleanly_and_round_trip() {
    let all = inputs("tnds_decode");
    assert!(!all.is_empty(), "the seeds are committed");
    for (path, data) in all {
        if let Ok(tree) = MgmtTree::from_xml(&data) {
            let again = MgmtTree::from_xml(tree.to_xml().as_bytes())
                .unwrap_or_else(|e| panic!("{}: re-encoded tree fails: {e}", path.display()));
            assert_eq!(again, tree, "{}", path.display());
            for node in &tree.nodes {
                let _ = dmdelegate::DmAcc::from_node(node);
            }
        }
    }
}

#[test]
fn acl_inputs_parse_or_fail_cleanly_and_round_trip() {
    let all = inputs("acl_parse");
    assert!(!all.is_empty(), "the seeds are committed");
    for (path, data) in all {
        if let Ok(acl) = Acl::parse(&String::from_utf8_lossy(&data)) {
            let again = Acl::parse(&acl.to_string())
                .unwrap_or_else(|e| panic!("{}: printed ACL fails: {e}", path.display()));
            assert_eq!(again, acl, "{}", path.display());
        }
    }
}

#[test]
fn syncml_inputs_decode_or_fail_cleanly_and_round_trip() {
    let all = inputs("syncml_decode");
    assert!(!all.is_empty(), "the seeds are committed");
    for (path, data) in all {
        if let Ok(m) = SyncMessage::from_xml(&data) {
            let again = SyncMessage::from_xml(m.to_xml().as_bytes())
                .unwrap_or_else(|e| panic!("{}: re-encoded message fails: {e}", path.display()));
            assert_eq!(again, m, "{}", path.display());
        }
    }
}

#[test]
fn batch_inputs_decode_or_fail_cleanly_and_round_trip() {
    let all = inputs("batch_decode");
    assert!(!all.is_empty(), "the seeds are committed");
    let mut batches = 0;
    let mut results = 0;
    for (path, data) in all {
        if let Ok(entries) = batch::decode_batch(&data, &XmlLimits::default()) {
            batches += 1;
            let messages: Vec<Message> = entries.into_iter().flatten().collect();
            if !messages.is_empty() {
                let mut writer = BatchWriter::new();
                for m in &messages {
                    writer.push_document(m.to_xml().as_bytes());
                }
                let again: Vec<Message> =
                    batch::decode_batch(&writer.finish(), &XmlLimits::default())
                        .unwrap_or_else(|e| panic!("{}: written batch fails: {e}", path.display()))
                        .into_iter()
                        .map(|entry| entry.expect("a written entry decodes"))
                        .collect();
                assert_eq!(again, messages, "{}", path.display());
            }
        }
        if let Ok(statuses) = batch::decode_batch_result(&data) {
            results += 1;
            let again =
                batch::decode_batch_result(batch::encode_batch_result(&statuses).as_bytes())
                    .unwrap_or_else(|e| panic!("{}: encoded answer fails: {e}", path.display()));
            assert_eq!(again, statuses, "{}", path.display());
        }
    }
    // The seeds hold both kinds of document, so both properties are exercised.
    assert!(
        batches >= 2 && results >= 2,
        "{batches} batches, {results} answers"
    );
}
