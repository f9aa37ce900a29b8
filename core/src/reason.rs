//! Failure reason codes carried by DELEGATION_FAILURE and by a nack DELEGATION_RES.
//!
//! The seeds leave these "TBD"; this table is ours, published in `docs/protocol.md` and in
//! the XSD, and stable: codes are never renumbered, new ones only added. A receiver maps a
//! code it does not know to [`ReasonCode::Unspecified`] semantics but keeps the number.

use std::fmt;

macro_rules! reason_codes {
    ($( $(#[$doc:meta])* $name:ident = $code:literal, $text:literal; )*) => {
        /// A published, stable failure reason code.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[derive(serde::Serialize, serde::Deserialize)]
        #[serde(into = "u16", try_from = "u16")]
        #[non_exhaustive]
        pub enum ReasonCode {
            $( $(#[$doc])* $name = $code, )*
        }

        impl ReasonCode {
            /// Every code, in table order.
            pub const ALL: &'static [ReasonCode] = &[$(ReasonCode::$name,)*];

            /// The numeric code sent on the wire.
            pub fn code(self) -> u16 { self as u16 }

            /// The short description from the published table.
            pub fn description(self) -> &'static str {
                match self { $(ReasonCode::$name => $text,)* }
            }

            /// The code for a number, if it is in the table.
            pub fn from_code(code: u16) -> Option<Self> {
                match code { $($code => Some(ReasonCode::$name),)* _ => None }
            }
        }
    };
}

reason_codes! {
    /// No more specific code applies.
    Unspecified = 100, "unspecified failure";
    /// The receiver's policy refused the delegation (nack).
    RejectedByPolicy = 101, "rejected by policy";
    /// The receiver does not know or manage the device named in Del_Info.
    UnknownDevice = 102, "unknown device";
    /// The method or delegation type is not supported by the receiver.
    Unsupported = 103, "unsupported method or delegation type";
    /// A delegated subtree is not managed by the delegating server, or is invalid.
    InvalidSubtree = 104, "invalid or unmanaged subtree";
    /// Another delegation of the same device is in progress at the receiver.
    DeviceBusy = 105, "another delegation of the device is in progress";
    /// The sender is not the authenticated peer, or the peer is not trusted.
    AuthenticationFailed = 110, "authentication failed";
    /// The message does not fit the session's state (unexpected or out of order).
    InvalidState = 120, "invalid state";
    /// The message could not be decoded or a field is invalid.
    MalformedMessage = 121, "malformed message";
    /// The protocol version is not supported.
    UnsupportedVersion = 122, "unsupported protocol version";
    /// The session id is unknown to the receiver.
    UnknownSession = 123, "unknown session";
    /// The device refused or failed a client operation (for example status 425).
    ClientOperationFailed = 130, "client operation failed";
    /// The device could not be reached.
    DeviceUnreachable = 131, "device unreachable";
    /// DMS-2 could not establish its DM session with the device.
    DmSessionFailed = 132, "DM session with the client failed";
    /// A protocol step did not complete before its deadline.
    Timeout = 140, "step timed out";
    /// DMS-1 waited for DELEGATION_CONFIRM past its deadline.
    ConfirmTimeout = 141, "confirmation timed out";
    /// An operator cancelled the delegation.
    Cancelled = 150, "cancelled by operator";
    /// DMS-2 could not provide its Bootstrap Server URL.
    BootstrapUrlUnavailable = 160, "bootstrap server URL unavailable";
    /// DMS-2's DM account is missing or invalid.
    InvalidDmAccount = 161, "DM account missing or invalid";
    /// The peer could not be reached.
    PeerUnreachable = 170, "peer unreachable";
    /// An internal error (store failure, bug) at the sender.
    InternalError = 199, "internal error";
}

impl From<ReasonCode> for u16 {
    fn from(r: ReasonCode) -> u16 {
        r.code()
    }
}

impl TryFrom<u16> for ReasonCode {
    type Error = String;
    fn try_from(code: u16) -> Result<Self, String> {
        ReasonCode::from_code(code).ok_or_else(|| format!("unknown reason code {code}"))
    }
}

impl fmt::Display for ReasonCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.code(), self.description())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_unique_and_round_trip() {
        let mut seen = std::collections::HashSet::new();
        for r in ReasonCode::ALL {
            assert!(seen.insert(r.code()), "duplicate code {}", r.code());
            assert_eq!(ReasonCode::from_code(r.code()), Some(*r));
        }
        assert_eq!(ReasonCode::from_code(999), None);
    }
}
