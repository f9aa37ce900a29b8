//! What the engine needs from its surroundings: the host DM Server ([`Host`]), a way to
//! reach the peer ([`Transport`]) and the time ([`Clock`]). Every binding exposes these
//! traits as callback interfaces.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::dmacc::DmAcc;
use crate::engine::{SessionInfo, State};
use crate::message::{
    DelegationInfo, DelegationType, DeviceInfo, Message, Method, Reason, Role, Timestamp,
};
use crate::ops::{ClientCommand, CommandOutput, DeviceError};
use crate::reason::ReasonCode;

/// An incoming delegation request, for the host's policy to accept or refuse.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DelegationOffer {
    /// Session id chosen by the peer.
    pub session_id: String,
    /// The peer's ServerID (authenticated by the transport when it can).
    pub peer: String,
    /// The role this server would play.
    pub role: Role,
    /// Method.
    pub method: Method,
    /// Full or Partial.
    pub delegation_type: DelegationType,
    /// Device and subtrees.
    pub info: DelegationInfo,
    /// End of a temporary delegation.
    pub expires: Option<Timestamp>,
}

/// The host's answer to a [`DelegationOffer`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum PolicyDecision {
    /// Send an ack and go on.
    Accept,
    /// Send a nack with this reason.
    Reject(Reason),
}

/// A host callback's failure.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{reason}: {message}")]
pub struct HostError {
    /// The reason code the delegation fails with.
    pub reason: ReasonCode,
    /// Detail.
    pub message: String,
}

impl HostError {
    /// A failure with `reason`.
    pub fn new(reason: ReasonCode, message: impl Into<String>) -> Self {
        Self {
            reason,
            message: message.into(),
        }
    }
}

/// What happened to a delegation, reported to [`Host::on_event`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// Session.
    pub session_id: String,
    /// This server's role in it.
    pub role: Role,
    /// The device.
    pub device_id: String,
    /// What happened.
    pub kind: EventKind,
}

/// The kinds of [`Event`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum EventKind {
    /// The session moved from one state to another.
    StateChanged {
        /// Previous state.
        from: State,
        /// New state.
        to: State,
    },
    /// The delegation completed.
    Completed,
    /// The delegation failed; a rollback follows.
    Failed {
        /// Why.
        reason: Reason,
    },
    /// Every change made to the device was undone and the session purged.
    RolledBack {
        /// Why the delegation failed.
        reason: Reason,
    },
    /// Some inverse operations failed: the device needs attention.
    RollbackIncomplete {
        /// Why the delegation failed.
        reason: Reason,
        /// The inverse operations that failed, rendered.
        failed: Vec<String>,
    },
    /// The peer refused the delegation (nack).
    Rejected {
        /// The peer's reason.
        reason: Reason,
    },
    /// A temporary delegation reached its end and was reverted.
    Expired,
}

/// The host DM Server: device access, policy, accounts, events.
///
/// Methods may be called from any task, concurrently for different sessions; calls for
/// one session never overlap.
#[async_trait]
pub trait Host: Send + Sync {
    /// Decides whether to take part in a delegation offered by a peer.
    async fn accept_delegation(&self, offer: &DelegationOffer) -> PolicyDecision;

    /// DMS-1: executes one command on the device, in the host's own DM session with it.
    async fn execute(
        &self,
        device: &DeviceInfo,
        command: &ClientCommand,
    ) -> Result<CommandOutput, DeviceError>;

    /// DMS-2 (Methods 1/2): opens a DM session with the device after DELEGATION_PREPARED.
    /// Returning `Ok` sends DELEGATION_CONFIRM.
    async fn open_dm_session(&self, session: &SessionInfo) -> Result<(), HostError>;

    /// DMS-2: the DM account the device should get for this server.
    async fn dm_account(&self, device: &DeviceInfo) -> Result<DmAcc, HostError>;

    /// DMS-2 (Methods 3/4): the Bootstrap Server URL the device should use.
    async fn bootstrap_server_url(&self, device: &DeviceInfo) -> Result<String, HostError>;

    /// Reports an event. Must not block; called with the session locked.
    fn on_event(&self, event: &Event);
}

/// A transport failure: the message may not have reached the peer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct TransportError {
    /// Detail.
    pub message: String,
}

/// Carries messages to the peer named in their header. Must deliver a session's messages
/// in the order `send` is called (the engine awaits each send before the next).
#[async_trait]
pub trait Transport: Send + Sync {
    /// Sends one message. `Ok` means the transport has taken it: either the peer accepted
    /// it for processing, or (a transport that delivers in the background, as the HTTPS
    /// binding does) it is queued, and a delivery that fails later is reported with
    /// [`crate::DelegationServer::peer_unreachable`]. An `Err` fails the session with
    /// reason 170 (PeerUnreachable) at once.
    async fn send(&self, message: &Message) -> Result<(), TransportError>;
}

/// The engine's source of wall-clock time (deadlines are absolute, so they survive restarts).
pub trait Clock: Send + Sync {
    /// Now.
    fn now(&self) -> Timestamp;
}

/// The system clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        Timestamp::now()
    }
}

/// A clock that moves only when told: for tests of deadlines.
#[derive(Debug, Clone)]
pub struct ManualClock(Arc<AtomicI64>);

impl ManualClock {
    /// A clock showing `start`.
    pub fn new(start: Timestamp) -> Self {
        Self(Arc::new(AtomicI64::new(start.0)))
    }

    /// Moves the clock forward.
    pub fn advance(&self, d: std::time::Duration) {
        self.0.fetch_add(d.as_millis() as i64, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        Timestamp(self.0.load(Ordering::SeqCst))
    }
}
