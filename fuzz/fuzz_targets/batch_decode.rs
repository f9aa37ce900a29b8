//! Batches of the HTTPS binding and their answers: decoding never panics; the messages a
//! batch yields, batched again, decode to the same messages; an answer that decodes
//! re-encodes to one that decodes to the same statuses (the sender matches entries by
//! position, so nothing may be lost or reordered).
#![no_main]

use dmdelegate::batch::{self, BatchWriter};
use dmdelegate::XmlLimits;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(entries) = batch::decode_batch(data, &XmlLimits::default()) {
        assert!(!entries.is_empty() && entries.len() <= batch::MAX_BATCH_ENTRIES);
        let messages: Vec<_> = entries.into_iter().flatten().collect();
        if !messages.is_empty() {
            let mut writer = BatchWriter::new();
            for m in &messages {
                writer.push_document(m.to_xml().as_bytes());
            }
            let again: Vec<_> = batch::decode_batch(&writer.finish(), &XmlLimits::default())
                .expect("a written batch decodes")
                .into_iter()
                .map(|entry| entry.expect("a written entry decodes"))
                .collect();
            assert_eq!(again, messages, "batching again changed the messages");
        }
    }
    if let Ok(statuses) = batch::decode_batch_result(data) {
        let again = batch::decode_batch_result(batch::encode_batch_result(&statuses).as_bytes())
            .expect("an encoded answer decodes");
        assert_eq!(again, statuses, "the round trip changed the answer");
    }
});
