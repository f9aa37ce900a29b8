//! Delegation messages: decoding never panics, and whatever decodes re-encodes to a
//! document that decodes to the same message (the engine relies on both).
#![no_main]

use dmdelegate::Message;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(message) = Message::from_xml(data) {
        let again = Message::from_xml(message.to_xml().as_bytes())
            .expect("an encoded message decodes");
        assert_eq!(again, message, "the round trip changed the message");
    }
});
