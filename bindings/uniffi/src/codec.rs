//! The message codec without a server, for hosts that inspect or route messages.

use dmdelegate::{Body, Message, ReasonCode};

use crate::error::DelegationError;

/// The header (and reason, for a failure) of a decoded message.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct MessageSummary {
    /// Message type, for example `DELEGATION_NOTIF`.
    pub kind: String,
    /// Session id.
    pub session_id: String,
    /// Sequence number.
    pub seq: u32,
    /// Sender ServerID.
    pub sender: String,
    /// Recipient ServerID.
    pub recipient: String,
    /// Method 1-4.
    pub method: u8,
    /// Timestamp, milliseconds since the Unix epoch.
    pub timestamp_ms: i64,
    /// The reason code of a FAILURE or a negative RES.
    pub reason_code: Option<u16>,
}

/// Decodes and validates a message (`application/vnd.dm.delegation+xml`).
#[uniffi::export]
pub fn decode_message(document: Vec<u8>) -> Result<MessageSummary, DelegationError> {
    let m = Message::from_xml(&document)?;
    Ok(MessageSummary {
        kind: m.body.kind().to_string(),
        session_id: m.header.session_id.clone(),
        seq: m.header.seq,
        sender: m.header.sender.clone(),
        recipient: m.header.recipient.clone(),
        method: m.header.method.number(),
        timestamp_ms: m.header.timestamp.0,
        reason_code: match &m.body {
            Body::Failure(r) | Body::Nack(r) => Some(r.code),
            _ => None,
        },
    })
}

/// Validates a message; throws `DelegationException.Decode` naming the bad field.
#[uniffi::export]
pub fn validate_message(document: Vec<u8>) -> Result<(), DelegationError> {
    Message::from_xml(&document)?;
    Ok(())
}

/// The published description of a reason code, `null`/`nil` for an unknown code.
#[uniffi::export]
pub fn reason_description(code: u16) -> Option<String> {
    ReasonCode::from_code(code).map(|c| c.description().to_string())
}

/// The library's version.
#[uniffi::export]
pub fn version() -> String {
    dmdelegate::VERSION.to_string()
}
