//! SyncML DM 1.2 messages from devices: decoding never panics, and what decodes
//! re-encodes to a document that decodes to the same message.
#![no_main]

use dmdelegate::syncml::SyncMessage;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(message) = SyncMessage::from_xml(data) {
        let again =
            SyncMessage::from_xml(message.to_xml().as_bytes()).expect("an encoded message decodes");
        assert_eq!(again, message, "the round trip changed the message");
    }
});
