//! A simulated Bootstrap Server: answers a device's bootstrap request with the account of
//! the server registered for the URL, as TNDS.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::dmacc::DmAcc;
use crate::ops::{status, DeviceError};
use crate::tree::MgmtTree;
use crate::Acl;

/// An in-process Bootstrap Server. Thread-safe.
#[derive(Debug, Default)]
pub struct SimBootstrapServer {
    accounts: Mutex<HashMap<String, DmAcc>>,
    served: Mutex<Vec<(String, String)>>,
}

impl SimBootstrapServer {
    /// An empty server.
    pub fn new() -> Self {
        Self::default()
    }

    /// Serves `account` at `url`.
    pub fn register(&self, url: &str, account: DmAcc) {
        self.accounts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(url.to_string(), account);
    }

    /// `(url, device id)` of every bootstrap served.
    pub fn served(&self) -> Vec<(String, String)> {
        self.served
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The bootstrap message for `device_id` fetched from `url`: the account under
    /// `./DMAcc`, whose node grants its own server every right on it.
    pub fn bootstrap(&self, url: &str, device_id: &str) -> Result<MgmtTree, DeviceError> {
        let acc = self
            .accounts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(url)
            .cloned()
            .ok_or_else(|| DeviceError::new(status::NOT_FOUND, format!("no bootstrap at {url}")))?;
        let s = &acc.server_id;
        let acl = Acl::parse(&format!("Add={s}&Delete={s}&Get={s}&Replace={s}"))
            .map_err(|e| DeviceError::new(status::COMMAND_FAILED, e.to_string()))?;
        let mut node = acc.to_node().with_acl(acl);
        node.path = Some("./DMAcc".into());
        self.served
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((url.to_string(), device_id.to_string()));
        Ok(MgmtTree::new(vec![node]))
    }
}
