//! [`DelegationHost`]: the host DM Server's callbacks, implemented in Kotlin or Swift,
//! and the adapter that makes it the core's `Host`.

use std::sync::Arc;

use async_trait::async_trait;
use dmdelegate::{
    ClientCommand, CommandOutput, DelegationOffer, DeviceError, DeviceInfo, DmAcc, Event, Host,
    HostError, PolicyDecision, Reason, ReasonCode, SessionInfo,
};

use crate::error::DelegationError;
use crate::types::{Command, DelegationEvent, Device, Offer, Session};

/// The host's answer to an [`Offer`].
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Enum)]
pub enum PolicyAnswer {
    /// Take part.
    Accept,
    /// Refuse, with a reason code (100-999; 101 is "rejected by policy") and a text.
    Reject {
        /// Reason code.
        reason_code: u16,
        /// Reason text.
        reason_text: String,
    },
}

/// The host DM Server: policy, device access, accounts, events. Implemented by the
/// application (a Kotlin class, a Swift class); the library calls it.
///
/// Threads: the blocking methods run on a pool of library threads (never on the
/// caller's), possibly at the same time for different sessions: implementations must be
/// thread-safe. For one session the calls never overlap. `onEvent` must return at once.
///
/// Failures: throw `DelegationException.Host(reasonCode, …)` to fail the delegation with
/// that reason, `DelegationException.Device(status, …)` from `execute` for a device
/// refusal. Anything else thrown: from `execute`, a failed device operation (status 500,
/// reason 130); from the other callbacks, reason 199 (internal error); from `onEvent`,
/// logged and ignored. A delegation that fails rolls back.
#[uniffi::export(foreign)]
pub trait DelegationHost: Send + Sync {
    /// Decides whether to take part in a delegation a peer offers.
    fn accept_delegation(&self, offer: Offer) -> Result<PolicyAnswer, DelegationError>;

    /// DMS-1: executes `command` on `device` in the host's own DM session with it. Returns
    /// the reply for `GetTree` (TNDS) and `GetAcl` (ACL text), `null`/`nil` otherwise.
    fn execute(&self, device: Device, command: Command) -> Result<Option<String>, DelegationError>;

    /// DMS-2, Methods 1/2: opens a DM session with the device once DMS-1 prepared it;
    /// returning normally sends DELEGATION_CONFIRM.
    fn open_dm_session(&self, session: Session) -> Result<(), DelegationError>;

    /// DMS-2: the DM account the device gets for this server, as a TNDS document with one
    /// DMAcc node (`simpleDmaccTnds` builds one).
    fn dm_account(&self, device: Device) -> Result<String, DelegationError>;

    /// DMS-2, Methods 3/4: the Bootstrap Server URL the device should use.
    fn bootstrap_server_url(&self, device: Device) -> Result<String, DelegationError>;

    /// Reports what happened to a delegation. Must not block.
    fn on_event(&self, event: DelegationEvent);
}

/// The core's `Host` over a foreign [`DelegationHost`]: each blocking callback runs on
/// tokio's blocking pool so a slow host never stalls the protocol's worker threads.
pub(crate) struct ForeignHost(pub(crate) Arc<dyn DelegationHost>);

impl ForeignHost {
    async fn call<T: Send + 'static>(
        &self,
        what: &'static str,
        f: impl FnOnce(&dyn DelegationHost) -> Result<T, DelegationError> + Send + 'static,
    ) -> Result<T, DelegationError> {
        let host = self.0.clone();
        tokio::task::spawn_blocking(move || f(host.as_ref()))
            .await
            .unwrap_or_else(|e| {
                Err(DelegationError::Internal {
                    message: format!("the {what} callback panicked: {e}"),
                })
            })
    }
}

fn host_error(e: DelegationError, fallback: ReasonCode) -> HostError {
    match e {
        DelegationError::Host {
            reason_code,
            message,
        } => HostError::new(
            ReasonCode::from_code(reason_code).unwrap_or(fallback),
            message,
        ),
        other => HostError::new(fallback, other.to_string()),
    }
}

#[async_trait]
impl Host for ForeignHost {
    async fn accept_delegation(&self, offer: &DelegationOffer) -> PolicyDecision {
        let offer = Offer::from(offer);
        match self
            .call("acceptDelegation", move |h| h.accept_delegation(offer))
            .await
        {
            Ok(PolicyAnswer::Accept) => PolicyDecision::Accept,
            Ok(PolicyAnswer::Reject {
                reason_code,
                reason_text,
            }) => {
                let code = if (100..=999).contains(&reason_code) {
                    reason_code
                } else {
                    ReasonCode::RejectedByPolicy.code()
                };
                PolicyDecision::Reject(Reason {
                    code,
                    text: reason_text,
                })
            }
            Err(DelegationError::Host {
                reason_code,
                message,
            }) if (100..=999).contains(&reason_code) => PolicyDecision::Reject(Reason {
                code: reason_code,
                text: message,
            }),
            Err(e) => PolicyDecision::Reject(Reason::new(ReasonCode::InternalError, e.to_string())),
        }
    }

    async fn execute(
        &self,
        device: &DeviceInfo,
        command: &ClientCommand,
    ) -> Result<CommandOutput, DeviceError> {
        let record = Command::from(command);
        let device = Device::from(device.clone());
        let reply = self
            .call("execute", move |h| h.execute(device, record))
            .await
            .map_err(|e| match e {
                DelegationError::Device { status, message } if status != 200 => {
                    DeviceError::new(status, message)
                }
                other => DeviceError::new(500, other.to_string()),
            })?;
        CommandOutput::from_reply(command, reply.as_deref(), "execute")
    }

    async fn open_dm_session(&self, session: &SessionInfo) -> Result<(), HostError> {
        let session = Session::from(session.clone());
        self.call("openDmSession", move |h| h.open_dm_session(session))
            .await
            .map_err(|e| host_error(e, ReasonCode::DmSessionFailed))
    }

    async fn dm_account(&self, device: &DeviceInfo) -> Result<DmAcc, HostError> {
        let device = Device::from(device.clone());
        let tnds = self
            .call("dmAccount", move |h| h.dm_account(device))
            .await
            .map_err(|e| host_error(e, ReasonCode::InvalidDmAccount))?;
        DmAcc::from_tnds(&tnds).map_err(|e| {
            HostError::new(
                ReasonCode::InvalidDmAccount,
                format!("dmAccount returned an invalid DMAcc TNDS: {e}"),
            )
        })
    }

    async fn bootstrap_server_url(&self, device: &DeviceInfo) -> Result<String, HostError> {
        let device = Device::from(device.clone());
        self.call("bootstrapServerUrl", move |h| {
            h.bootstrap_server_url(device)
        })
        .await
        .map_err(|e| host_error(e, ReasonCode::BootstrapUrlUnavailable))
    }

    fn on_event(&self, event: &Event) {
        let event = DelegationEvent::from(event);
        // uniffi turns an exception thrown by the foreign `onEvent` into a panic; an event
        // report must never take the session (locked meanwhile) down with it.
        let host = std::panic::AssertUnwindSafe(&self.0);
        if std::panic::catch_unwind(move || host.on_event(event)).is_err() {
            tracing::warn!("the host's onEvent threw; the event is dropped");
        }
    }
}
