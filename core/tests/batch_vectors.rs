//! The batch envelope's examples (`vectors/batch`): they decode, each entry is the golden
//! vector it was made from, and what the encoder writes for the same content decodes to
//! the same thing. `scripts/validate-vectors.sh` checks the same files against
//! `schema/delegation-batch-1.0.xsd`.

use std::fs;
use std::path::{Path, PathBuf};

use dmdelegate::batch::{self, BatchWriter, EntryStatus};
use dmdelegate::{Message, XmlLimits};

fn vectors() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../vectors")
}

fn read(path: &str) -> Vec<u8> {
    let path = vectors().join(path);
    fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The golden vectors `batch-dms1-to-dms2.xml` was made from, in its order.
const BATCHED: [&str; 3] = [
    "valid/notif-method1-partial.xml",
    "valid/bootstrap-url-request.xml",
    "valid/failure.xml",
];

fn golden_messages() -> Vec<Message> {
    BATCHED
        .iter()
        .map(|name| Message::from_xml(&read(name)).unwrap())
        .collect()
}

#[test]
fn each_entry_of_the_example_batch_is_its_golden_vector() {
    let entries = batch::decode_batch(&read("batch/batch-dms1-to-dms2.xml"), &XmlLimits::default())
        .expect("the example batch decodes");
    let entries: Vec<Message> = entries
        .into_iter()
        .map(|entry| entry.expect("every entry is a valid message"))
        .collect();
    assert_eq!(entries, golden_messages());
}

#[test]
fn a_batch_the_writer_makes_from_the_golden_vectors_decodes_to_them() {
    let mut writer = BatchWriter::new();
    for name in BATCHED {
        writer.push_document(&read(name));
    }
    assert_eq!(writer.len(), BATCHED.len());
    let written = writer.finish();
    let decoded: Vec<Message> = batch::decode_batch(&written, &XmlLimits::default())
        .unwrap()
        .into_iter()
        .map(Result::unwrap)
        .collect();
    assert_eq!(decoded, golden_messages());
}

#[test]
fn the_example_result_reads_as_one_status_per_entry() {
    let statuses = batch::decode_batch_result(&read("batch/batch-result.xml")).unwrap();
    assert_eq!(
        statuses,
        vec![
            EntryStatus::accepted(),
            EntryStatus::new(
                421,
                "Recipient `dms3.example` is not this server (dms2.enterprise.example)"
            ),
            EntryStatus::accepted(),
        ]
    );
    // What the encoder writes for the same statuses reads back the same.
    let again = batch::encode_batch_result(&statuses);
    assert_eq!(
        batch::decode_batch_result(again.as_bytes()).unwrap(),
        statuses
    );
}
