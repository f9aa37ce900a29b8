//! The crate's errors: [`Error`] is the one enum every public API returns; the bindings map
//! it to their own error types one variant at a time.

use crate::reason::ReasonCode;

/// Why a document (message, TNDS, ACL, DMAcc) could not be decoded. Every variant that is
/// about one field names it as a slash-separated path from the document's root element.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The document is larger than the configured cap.
    #[error("document is {size} bytes, over the {limit}-byte limit")]
    TooLarge {
        /// Size of the document.
        size: usize,
        /// The cap it exceeded.
        limit: usize,
    },
    /// Elements nest deeper than the configured cap.
    #[error("document nests deeper than {limit} elements")]
    TooDeep {
        /// The cap it exceeded.
        limit: usize,
    },
    /// A `<!DOCTYPE>` declaration was present; DTDs are never processed.
    #[error("DOCTYPE declarations are not allowed")]
    Doctype,
    /// An entity reference other than the five predefined XML entities.
    #[error("entity reference `&{name};` is not allowed")]
    Entity {
        /// The entity's name.
        name: String,
    },
    /// The bytes are not well-formed XML (or not UTF-8).
    #[error("not well-formed XML: {reason}")]
    Malformed {
        /// What the parser found wrong.
        reason: String,
    },
    /// The root element is in another namespace (or in none).
    #[error("wrong namespace `{found}`, expected `{expected}`")]
    WrongNamespace {
        /// The namespace required.
        expected: String,
        /// The namespace found (empty when none).
        found: String,
    },
    /// The root element is not the one this codec reads.
    #[error("wrong root element `{found}`, expected `{expected}`")]
    WrongRoot {
        /// The root required.
        expected: String,
        /// The root found.
        found: String,
    },
    /// The protocol version is not one this implementation speaks.
    #[error("unsupported protocol version `{found}`")]
    UnsupportedVersion {
        /// The version found.
        found: String,
    },
    /// The message body is not one of the defined message types.
    #[error("unknown message type `{found}`")]
    UnknownMessageType {
        /// The element name found.
        found: String,
    },
    /// A required field is absent.
    #[error("missing required field `{field}`")]
    MissingField {
        /// Path of the field.
        field: String,
    },
    /// A field is present but its value is not valid.
    #[error("field `{field}` is invalid: {reason}")]
    InvalidField {
        /// Path of the field.
        field: String,
        /// Why the value is refused.
        reason: String,
    },
    /// An element appears where the schema has no place for it.
    #[error("unexpected element `{element}` in `{parent}`")]
    UnexpectedElement {
        /// Path of the parent element.
        parent: String,
        /// Name of the unexpected element.
        element: String,
    },
}

impl DecodeError {
    /// The same error with `path` put in front of the field (or parent) it names: for a
    /// document decoded inside another.
    pub fn under(self, path: &str) -> DecodeError {
        let join = crate::xml::join;
        match self {
            DecodeError::InvalidField { field, reason } => DecodeError::InvalidField {
                field: join(path, &field),
                reason,
            },
            DecodeError::MissingField { field } => DecodeError::MissingField {
                field: join(path, &field),
            },
            DecodeError::UnexpectedElement { parent, element } => DecodeError::UnexpectedElement {
                parent: join(path, &parent),
                element,
            },
            other => other,
        }
    }
}

/// The single error type of the public facade.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// A document could not be decoded.
    #[error("decode error: {0}")]
    Decode(#[from] DecodeError),
    /// A value given by the caller is not valid (the message says which and why).
    #[error("invalid argument `{field}`: {reason}")]
    InvalidArgument {
        /// Which argument or field.
        field: String,
        /// Why it is refused.
        reason: String,
    },
    /// No delegation session with this id is known.
    #[error("no delegation session `{0}`")]
    UnknownSession(String),
    /// The message does not fit the session's state (unexpected, out of order, wrong role).
    #[error("invalid state: {0}")]
    InvalidState(String),
    /// The sender is not who the transport authenticated, or not the session's peer.
    #[error("authentication failed: {0}")]
    Authentication(String),
    /// The message is addressed to another server.
    #[error("message addressed to `{found}`, this server is `{expected}`")]
    WrongRecipient {
        /// This server's ServerID.
        expected: String,
        /// The recipient named in the message.
        found: String,
    },
    /// The device refused or failed a client operation.
    #[error("device returned status {status} for {command}: {message}")]
    Device {
        /// SyncML status code (for example 425 permission denied).
        status: u16,
        /// The command that failed, rendered briefly.
        command: String,
        /// Details.
        message: String,
    },
    /// A host callback failed.
    #[error("host callback failed ({reason}): {message}")]
    Host {
        /// Reason code the failure maps to.
        reason: ReasonCode,
        /// Details.
        message: String,
    },
    /// Sending a message to the peer failed.
    #[error("transport to `{peer}` failed: {message}")]
    Transport {
        /// The peer's ServerID.
        peer: String,
        /// Details.
        message: String,
    },
    /// The session store failed.
    #[error("session store failed: {0}")]
    Store(String),
    /// The delegation ended in failure; it was rolled back.
    #[error("delegation failed ({reason}): {message}")]
    Failed {
        /// Why.
        reason: ReasonCode,
        /// Details.
        message: String,
    },
}

impl Error {
    /// The reason code a FAILURE message carries for this error.
    pub fn reason(&self) -> ReasonCode {
        match self {
            Error::Decode(DecodeError::UnsupportedVersion { .. }) => ReasonCode::UnsupportedVersion,
            Error::Decode(_) => ReasonCode::MalformedMessage,
            Error::InvalidArgument { .. } => ReasonCode::MalformedMessage,
            Error::UnknownSession(_) => ReasonCode::UnknownSession,
            Error::InvalidState(_) => ReasonCode::InvalidState,
            Error::Authentication(_) => ReasonCode::AuthenticationFailed,
            Error::WrongRecipient { .. } => ReasonCode::AuthenticationFailed,
            Error::Device {
                status: crate::ops::status::UNREACHABLE,
                ..
            } => ReasonCode::DeviceUnreachable,
            Error::Device { .. } => ReasonCode::ClientOperationFailed,
            Error::Host { reason, .. } | Error::Failed { reason, .. } => *reason,
            Error::Transport { .. } => ReasonCode::PeerUnreachable,
            Error::Store(_) => ReasonCode::InternalError,
        }
    }
}

impl From<crate::host::HostError> for Error {
    fn from(e: crate::host::HostError) -> Self {
        Error::Host {
            reason: e.reason,
            message: e.message,
        }
    }
}

/// Result alias for the facade.
pub type Result<T, E = Error> = std::result::Result<T, E>;
