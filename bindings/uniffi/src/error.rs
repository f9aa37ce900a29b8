//! [`DelegationError`]: the one error type at this boundary.

use dmdelegate::{DecodeError, Error, ReasonCode};

/// Every failure, mapped from the core's error one variant at a time; in Kotlin a sealed
/// `DelegationException`, in Swift an `Error` enum. Host callbacks throw it too: `Host`
/// with a reason code fails the delegation with that reason, `Device` reports a device
/// refusal with its SyncML status; anything else a callback throws becomes `Host` with
/// reason 199 (internal error).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, uniffi::Error)]
pub enum DelegationError {
    /// A document (message, TNDS, ACL) could not be decoded.
    #[error("decode error at `{field}`: {message}")]
    Decode {
        /// Path of the offending field, empty when the document as a whole is at fault.
        field: String,
        /// What is wrong.
        message: String,
    },
    /// An argument is not valid.
    #[error("invalid argument `{field}`: {reason}")]
    InvalidArgument {
        /// Which argument.
        field: String,
        /// Why it is refused.
        reason: String,
    },
    /// No delegation session with this id is known.
    #[error("no delegation session `{session_id}`")]
    UnknownSession {
        /// The id asked for.
        session_id: String,
    },
    /// The call or message does not fit the session's state.
    #[error("invalid state: {message}")]
    InvalidState {
        /// Detail.
        message: String,
    },
    /// The sender is not who the transport authenticated, or the recipient is wrong.
    #[error("authentication failed: {message}")]
    Authentication {
        /// Detail.
        message: String,
    },
    /// The device refused or failed an operation.
    #[error("device status {status}: {message}")]
    Device {
        /// SyncML status (404 not found, 425 permission denied, ...).
        status: u16,
        /// Detail.
        message: String,
    },
    /// A host callback failed.
    #[error("host failure ({reason_code}): {message}")]
    Host {
        /// The reason code the delegation fails with (100-999).
        reason_code: u16,
        /// Detail.
        message: String,
    },
    /// A message could not be delivered to the peer.
    #[error("transport to `{peer}` failed: {message}")]
    Transport {
        /// The peer's ServerID (empty when not about one peer).
        peer: String,
        /// Detail.
        message: String,
    },
    /// The session store failed.
    #[error("session store failed: {message}")]
    Store {
        /// Detail.
        message: String,
    },
    /// The delegation failed and was rolled back.
    #[error("delegation failed ({reason_code}): {message}")]
    Failed {
        /// The failure's reason code.
        reason_code: u16,
        /// Detail.
        message: String,
    },
    /// A failure inside the library (a bug): please report it.
    #[error("internal error: {message}")]
    Internal {
        /// Detail.
        message: String,
    },
}

impl DelegationError {
    /// The protocol reason code this failure maps to.
    pub fn reason_code(&self) -> u16 {
        match self {
            DelegationError::Host { reason_code, .. }
            | DelegationError::Failed { reason_code, .. } => *reason_code,
            DelegationError::Decode { .. } | DelegationError::InvalidArgument { .. } => {
                ReasonCode::MalformedMessage.code()
            }
            DelegationError::UnknownSession { .. } => ReasonCode::UnknownSession.code(),
            DelegationError::InvalidState { .. } => ReasonCode::InvalidState.code(),
            DelegationError::Authentication { .. } => ReasonCode::AuthenticationFailed.code(),
            DelegationError::Device { .. } => ReasonCode::ClientOperationFailed.code(),
            DelegationError::Transport { .. } => ReasonCode::PeerUnreachable.code(),
            DelegationError::Store { .. } | DelegationError::Internal { .. } => {
                ReasonCode::InternalError.code()
            }
        }
    }

    pub(crate) fn invalid(field: &str, reason: impl std::fmt::Display) -> Self {
        DelegationError::InvalidArgument {
            field: field.to_string(),
            reason: reason.to_string(),
        }
    }
}

fn decode_field(e: &DecodeError) -> String {
    match e {
        DecodeError::MissingField { field } | DecodeError::InvalidField { field, .. } => {
            field.clone()
        }
        DecodeError::UnexpectedElement { parent, element } => format!("{parent}/{element}"),
        _ => String::new(),
    }
}

impl From<DecodeError> for DelegationError {
    fn from(e: DecodeError) -> Self {
        DelegationError::Decode {
            field: decode_field(&e),
            message: e.to_string(),
        }
    }
}

impl From<Error> for DelegationError {
    fn from(e: Error) -> Self {
        match e {
            Error::Decode(d) => d.into(),
            Error::InvalidArgument { field, reason } => {
                DelegationError::InvalidArgument { field, reason }
            }
            Error::UnknownSession(session_id) => DelegationError::UnknownSession { session_id },
            Error::InvalidState(message) => DelegationError::InvalidState { message },
            Error::Authentication(message) => DelegationError::Authentication { message },
            e @ Error::WrongRecipient { .. } => DelegationError::Authentication {
                message: e.to_string(),
            },
            Error::Device {
                status,
                command,
                message,
            } => DelegationError::Device {
                status,
                message: format!("{command}: {message}"),
            },
            Error::Host { reason, message } => DelegationError::Host {
                reason_code: reason.code(),
                message,
            },
            Error::Transport { peer, message } => DelegationError::Transport { peer, message },
            Error::Store(message) => DelegationError::Store { message },
            Error::Failed { reason, message } => DelegationError::Failed {
                reason_code: reason.code(),
                message,
            },
        }
    }
}

/// What a host callback throws that is not a `DelegationError` (a Kotlin
/// `RuntimeException`, a Swift error of another type): reason 199, never a panic.
impl From<uniffi::UnexpectedUniFFICallbackError> for DelegationError {
    fn from(e: uniffi::UnexpectedUniFFICallbackError) -> Self {
        // The first line only: a whole stack trace is no reason text.
        let first = e.reason.lines().next().unwrap_or_default();
        DelegationError::Host {
            reason_code: ReasonCode::InternalError.code(),
            message: format!("the host callback threw: {first}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_core_error_keeps_its_reason_code() {
        let cases = [
            Error::UnknownSession("s".into()),
            Error::InvalidState("x".into()),
            Error::Authentication("x".into()),
            Error::Transport {
                peer: "p".into(),
                message: "m".into(),
            },
            Error::Store("x".into()),
            Error::Failed {
                reason: ReasonCode::Timeout,
                message: "m".into(),
            },
            Error::Host {
                reason: ReasonCode::InvalidDmAccount,
                message: "m".into(),
            },
        ];
        for e in cases {
            let core = e.reason().code();
            let mapped = DelegationError::from(e.clone());
            let expected = if matches!(e, Error::Store(_)) {
                ReasonCode::InternalError.code()
            } else {
                core
            };
            assert_eq!(mapped.reason_code(), expected, "{e:?}");
        }
    }

    #[test]
    fn decode_errors_name_the_field() {
        let e: DelegationError = DecodeError::MissingField {
            field: "Header/SessionID".into(),
        }
        .into();
        assert!(
            matches!(e, DelegationError::Decode { ref field, .. } if field == "Header/SessionID")
        );
    }

    #[test]
    fn an_unexpected_callback_error_is_an_internal_host_failure() {
        let e: DelegationError =
            uniffi::UnexpectedUniFFICallbackError::new("java.lang.IllegalStateException").into();
        assert_eq!(e.reason_code(), 199);
        assert!(e.to_string().contains("IllegalStateException"));
    }
}
