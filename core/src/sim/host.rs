//! A ready-made [`Host`] backed by simulated devices, with switches for every failure a
//! host callback can report.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;

use crate::dmacc::DmAcc;
use crate::engine::SessionInfo;
use crate::host::{DelegationOffer, Event, Host, HostError, PolicyDecision};
use crate::message::DeviceInfo;
use crate::ops::{status, ClientCommand, CommandOutput, DeviceError};
use crate::reason::ReasonCode;

use super::device::SimDevice;

/// Failures a [`SimHost`] reports on purpose.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostFaults {
    /// `open_dm_session` fails.
    pub open_session: bool,
    /// `dm_account` fails.
    pub dm_account: bool,
    /// `bootstrap_server_url` fails.
    pub bootstrap_url: bool,
}

/// A host DM Server that manages simulated devices.
pub struct SimHost {
    server_id: String,
    devices: Mutex<HashMap<String, Arc<SimDevice>>>,
    account: Mutex<Option<DmAcc>>,
    bootstrap_url: Mutex<Option<String>>,
    policy: Mutex<PolicyDecision>,
    faults: Mutex<HostFaults>,
    events: Mutex<Vec<Event>>,
}

impl std::fmt::Debug for SimHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimHost")
            .field("server_id", &self.server_id)
            .finish_non_exhaustive()
    }
}

fn guard<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl SimHost {
    /// A host for the server `server_id` that accepts every delegation.
    pub fn new(server_id: &str) -> Self {
        Self {
            server_id: server_id.to_string(),
            devices: Mutex::new(HashMap::new()),
            account: Mutex::new(None),
            bootstrap_url: Mutex::new(None),
            policy: Mutex::new(PolicyDecision::Accept),
            faults: Mutex::new(HostFaults::default()),
            events: Mutex::new(Vec::new()),
        }
    }

    /// Manages `device` from now on.
    pub fn add_device(&self, device: Arc<SimDevice>) {
        guard(&self.devices).insert(device.info().device_id, device);
    }

    /// The account offered to devices when this server is DMS-2.
    pub fn set_account(&self, account: DmAcc) {
        *guard(&self.account) = Some(account);
    }

    /// The Bootstrap Server URL offered when this server is DMS-2 (Methods 3/4).
    pub fn set_bootstrap_url(&self, url: &str) {
        *guard(&self.bootstrap_url) = Some(url.to_string());
    }

    /// What to answer to every offer.
    pub fn set_policy(&self, decision: PolicyDecision) {
        *guard(&self.policy) = decision;
    }

    /// Failures to report.
    pub fn set_faults(&self, faults: HostFaults) {
        *guard(&self.faults) = faults;
    }

    /// Every event received, in order.
    pub fn events(&self) -> Vec<Event> {
        guard(&self.events).clone()
    }

    fn device(&self, id: &str) -> Option<Arc<SimDevice>> {
        guard(&self.devices).get(id).cloned()
    }
}

#[async_trait]
impl Host for SimHost {
    async fn accept_delegation(&self, _offer: &DelegationOffer) -> PolicyDecision {
        guard(&self.policy).clone()
    }

    async fn execute(
        &self,
        device: &DeviceInfo,
        command: &ClientCommand,
    ) -> Result<CommandOutput, DeviceError> {
        let d = self.device(&device.device_id).ok_or_else(|| {
            DeviceError::new(
                status::UNREACHABLE,
                format!("device `{}` is not managed here", device.device_id),
            )
        })?;
        d.execute(&self.server_id, command)
    }

    async fn open_dm_session(&self, session: &SessionInfo) -> Result<(), HostError> {
        if guard(&self.faults).open_session {
            return Err(HostError::new(
                ReasonCode::DmSessionFailed,
                "injected: session refused",
            ));
        }
        let d = self.device(&session.info.device.device_id).ok_or_else(|| {
            HostError::new(ReasonCode::DeviceUnreachable, "device not managed here")
        })?;
        d.open_session(&self.server_id)
            .map_err(|e| HostError::new(ReasonCode::DmSessionFailed, e.to_string()))
    }

    async fn dm_account(&self, device: &DeviceInfo) -> Result<DmAcc, HostError> {
        if guard(&self.faults).dm_account {
            return Err(HostError::new(
                ReasonCode::InvalidDmAccount,
                "injected: no account",
            ));
        }
        if self.device(&device.device_id).is_none() {
            // DMS-2 may not know the device yet; it still offers its account.
            tracing::debug!(device = %device.device_id, "account for a new device");
        }
        guard(&self.account)
            .clone()
            .ok_or_else(|| HostError::new(ReasonCode::InvalidDmAccount, "no account configured"))
    }

    async fn bootstrap_server_url(&self, _device: &DeviceInfo) -> Result<String, HostError> {
        if guard(&self.faults).bootstrap_url {
            return Err(HostError::new(
                ReasonCode::BootstrapUrlUnavailable,
                "injected: no URL",
            ));
        }
        guard(&self.bootstrap_url).clone().ok_or_else(|| {
            HostError::new(
                ReasonCode::BootstrapUrlUnavailable,
                "no Bootstrap Server URL configured",
            )
        })
    }

    fn on_event(&self, event: &Event) {
        guard(&self.events).push(event.clone());
    }
}
