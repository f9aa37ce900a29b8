//! For tests and demos: a test PKI, the simulated device and Bootstrap Server.

use std::sync::Arc;

use dmdelegate::sim::provision_sample_tree;
use dmdelegate::{ClientCommand, DeviceInfo, DmAcc};

use crate::error::DelegationError;
use crate::server::DelegationServer;
use crate::types::{Command, Device};

/// A certificate valid as TLS server and client certificate, and its key (PEM).
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct Identity {
    /// Certificate chain, PEM.
    pub cert_pem: String,
    /// Private key, PEM.
    pub key_pem: String,
}

/// A test PKI: a fresh CA issuing server identities. Tests and demos only.
#[derive(uniffi::Object)]
pub struct TestPki {
    inner: dmdelegate_net::TestPki,
}

impl std::fmt::Debug for TestPki {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TestPki")
    }
}

#[uniffi::export]
impl TestPki {
    /// A new CA named `name`.
    #[uniffi::constructor]
    pub fn new(name: String) -> Result<Arc<Self>, DelegationError> {
        let inner =
            dmdelegate_net::TestPki::new(&name).map_err(|e| DelegationError::invalid("name", e))?;
        Ok(Arc::new(TestPki { inner }))
    }

    /// The CA certificate (PEM): what every server trusts.
    pub fn ca_pem(&self) -> String {
        self.inner.ca_pem().to_string()
    }

    /// Issues an identity for the ServerID `server_id` (its DNS name).
    pub fn issue(&self, server_id: String) -> Result<Identity, DelegationError> {
        let id = self
            .inner
            .issue(&server_id, &[])
            .map_err(|e| DelegationError::invalid("serverId", e))?;
        Ok(Identity {
            cert_pem: id.cert_chain_pem,
            key_pem: id.key_pem,
        })
    }
}

/// The TNDS document of a simple DM account: one DMAcc node for `server_id` at `url`
/// with client and server credentials (what `DelegationHost.dmAccount` returns).
#[uniffi::export]
pub fn simple_dmacc_tnds(
    server_id: String,
    url: String,
    client_secret: String,
    server_secret: String,
) -> Result<String, DelegationError> {
    let acc = DmAcc::simple(&server_id, &url, &client_secret, &server_secret);
    acc.validate()?;
    Ok(acc.to_tnds())
}

fn account_of(tnds: &str) -> Result<DmAcc, DelegationError> {
    Ok(DmAcc::from_tnds(tnds)?)
}

/// A simulated Bootstrap Server (DMS-2's, Methods 3/4).
#[derive(Debug, uniffi::Object)]
pub struct SimBootstrapServer {
    inner: Arc<dmdelegate::sim::SimBootstrapServer>,
}

#[uniffi::export]
impl SimBootstrapServer {
    /// An empty Bootstrap Server.
    #[uniffi::constructor]
    #[allow(clippy::new_without_default)]
    pub fn new() -> Arc<Self> {
        Arc::new(SimBootstrapServer {
            inner: Arc::new(dmdelegate::sim::SimBootstrapServer::new()),
        })
    }

    /// A device bootstrapping from `url` receives the account in `dmacc_tnds`.
    pub fn register(&self, url: String, dmacc_tnds: String) -> Result<(), DelegationError> {
        self.inner.register(&url, account_of(&dmacc_tnds)?);
        Ok(())
    }
}

/// A simulated DM Client: a DM Tree with accounts that enforces ACLs as DM TND requires.
/// Thread-safe.
#[derive(Debug, uniffi::Object)]
pub struct SimDevice {
    inner: Arc<dmdelegate::sim::SimDevice>,
}

#[uniffi::export]
impl SimDevice {
    /// A device with the sample tree (`./Vendor/Apps/...`, `./Network`, `./DMAcc`) owned
    /// by `owner_server_id`, whose account (URL and secrets) is installed.
    #[uniffi::constructor]
    pub fn new(
        device: Device,
        owner_server_id: String,
        owner_url: String,
        client_secret: String,
        server_secret: String,
    ) -> Result<Arc<Self>, DelegationError> {
        let acc = DmAcc::simple(&owner_server_id, &owner_url, &client_secret, &server_secret);
        acc.validate()?;
        let inner = dmdelegate::sim::SimDevice::new(DeviceInfo::from(device));
        provision_sample_tree(&inner, &acc);
        Ok(Arc::new(SimDevice {
            inner: Arc::new(inner),
        }))
    }

    /// The device's identity.
    pub fn device(&self) -> Device {
        self.inner.info().into()
    }

    /// Executes `command` as `server_id`, enforcing ACLs: what a host's `execute`
    /// forwards to. Throws `Device(status)` for a refusal (404, 425, ...).
    pub fn execute(
        &self,
        server_id: String,
        command: Command,
    ) -> Result<Option<String>, DelegationError> {
        let cmd = ClientCommand::try_from(&command)?;
        match self.inner.execute(&server_id, &cmd) {
            Ok(output) => Ok(output.to_reply()),
            Err(e) => Err(DelegationError::Device {
                status: e.status,
                message: e.message,
            }),
        }
    }

    /// Opens a DM session from `server_id` (which needs an account on the device): what
    /// DMS-2's `openDmSession` forwards to.
    pub fn open_session(&self, server_id: String) -> Result<(), DelegationError> {
        self.inner
            .open_session(&server_id)
            .map_err(|e| DelegationError::Device {
                status: e.status,
                message: e.message,
            })
    }

    /// A text dump of the whole tree (nodes, ACLs, values): compare two to see changes.
    pub fn dump(&self) -> String {
        self.inner.dump()
    }

    /// The DMAcc node names of the accounts of `server_id`.
    pub fn accounts_of(&self, server_id: String) -> Vec<String> {
        self.inner.accounts_of(&server_id)
    }

    /// The node's own ACL text, `null`/`nil` when the node does not exist.
    pub fn acl_of(&self, uri: String) -> Option<String> {
        self.inner.acl_of(&uri).map(|a| a.to_string())
    }

    /// Methods 3/4: behave like a real device: when a DMS-1 triggers the bootstrap,
    /// fetch the account from `bootstrap`, install it, open the first session with
    /// DMS-2 and tell `dms2`.
    pub fn route_bootstrap(&self, bootstrap: Arc<SimBootstrapServer>, dms2: Arc<DelegationServer>) {
        dmdelegate_net::route_bootstrap(&self.inner, bootstrap.inner.clone(), dms2.facade());
    }
}
