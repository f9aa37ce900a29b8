//! For tests and demos: a test PKI, a simulated device a Python host can forward its
//! callbacks to, and a simulated Bootstrap Server (Methods 3/4).

use std::sync::Arc;

use dmdelegate::sim::{provision_sample_tree, DeviceFault, SimBootstrapServer as CoreBootstrap};
use dmdelegate::{AclCommand, CommandOutput, DeviceInfo, DmAcc};
use dmdelegate_net::TestPki as NetTestPki;
use pyo3::prelude::*;
use pyo3::types::PyString;

use crate::errors::invalid;
use crate::server::Server;
use crate::types::{Command, CommandResult, Device, DmAccount};

/// A certificate (valid as TLS server and client certificate) and its private key, PEM.
/// The key never appears in the `repr`.
#[pyclass(frozen, eq, hash, from_py_object, module = "dmdelegate._native")]
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Identity {
    /// The certificate chain, leaf first (PEM).
    #[pyo3(get)]
    pub cert_pem: String,
    /// The private key (PEM).
    #[pyo3(get)]
    pub key_pem: String,
}

#[pymethods]
impl Identity {
    #[new]
    fn new(cert_pem: String, key_pem: String) -> Self {
        Self { cert_pem, key_pem }
    }

    fn __repr__(&self) -> String {
        "Identity(cert_pem=..., key_pem=<hidden>)".into()
    }
}

/// A test PKI: one fresh CA that issues server identities. For tests and demos only.
#[pyclass(frozen, module = "dmdelegate._native")]
pub struct TestPki {
    pki: NetTestPki,
}

#[pymethods]
impl TestPki {
    /// Not a test class, despite its name (pytest collects classes named `Test*`).
    #[classattr]
    #[pyo3(name = "__test__")]
    fn not_a_test() -> bool {
        false
    }

    /// A fresh CA named `name` (key generation; the GIL is released meanwhile).
    #[new]
    #[pyo3(signature = (name = "dmdelegate test CA"))]
    fn new(py: Python<'_>, name: &str) -> PyResult<Self> {
        let name = name.to_string();
        py.detach(move || NetTestPki::new(&name))
            .map(|pki| Self { pki })
            .map_err(|e| invalid(py, "name", e))
    }

    /// The CA certificate (PEM): what servers trust (`ServerConfig.trust_pem`).
    #[getter]
    fn ca_pem(&self) -> &str {
        self.pki.ca_pem()
    }

    /// Issues an identity for `server_id` (a DNS name in the certificate, the name peers
    /// check), also valid for the names or IP addresses in `also`.
    #[pyo3(signature = (server_id, also = None))]
    fn issue(
        &self,
        py: Python<'_>,
        server_id: &str,
        also: Option<Vec<String>>,
    ) -> PyResult<Identity> {
        let also = also.unwrap_or_default();
        let also: Vec<&str> = also.iter().map(String::as_str).collect();
        let id = py
            .detach(|| self.pki.issue(server_id, &also))
            .map_err(|e| invalid(py, "server_id", e))?;
        Ok(Identity {
            cert_pem: id.cert_chain_pem,
            key_pem: id.key_pem,
        })
    }

    fn __repr__(&self) -> String {
        "TestPki()".into()
    }
}

/// A simulated Bootstrap Server: serves the account registered for a URL.
#[pyclass(frozen, module = "dmdelegate._native")]
pub struct SimBootstrapServer {
    pub inner: Arc<CoreBootstrap>,
}

#[pymethods]
impl SimBootstrapServer {
    #[new]
    fn new() -> Self {
        Self {
            inner: Arc::new(CoreBootstrap::new()),
        }
    }

    /// Serves `account` (a DMAcc TNDS document or a `DmAccount`) at `url`.
    fn register(&self, py: Python<'_>, url: &str, account: &Bound<'_, PyAny>) -> PyResult<()> {
        let acc = if let Ok(a) = account.extract::<DmAccount>() {
            a.inner
        } else if let Ok(s) = account.cast::<PyString>() {
            DmAccount::parse(s.to_str()?).map_err(|e| invalid(py, "account", e))?
        } else {
            return Err(invalid(
                py,
                "account",
                "must be a DMAcc TNDS document or a DmAccount",
            ));
        };
        self.inner.register(url, acc);
        Ok(())
    }

    /// `(url, device_id)` of every bootstrap served, in order.
    fn served(&self) -> Vec<(String, String)> {
        self.inner.served()
    }

    fn __repr__(&self) -> String {
        format!("SimBootstrapServer(served={})", self.inner.served().len())
    }
}

/// A simulated DM Client whose DM Tree enforces ACLs as DM TND requires, with the sample
/// tree (`./Vendor/Apps/{Mail,Browser}`, `./Vendor/Settings`, `./Network`, `./DMAcc`)
/// owned by `owner_server_id`, whose account is installed. Thread-safe.
#[pyclass(frozen, module = "dmdelegate._native")]
pub struct SimDevice {
    pub device: Arc<dmdelegate::sim::SimDevice>,
}

fn result_of(r: Result<CommandOutput, dmdelegate::DeviceError>) -> CommandResult {
    match r {
        Ok(output) => CommandResult {
            status: 200,
            text: output.to_reply(),
        },
        Err(e) => CommandResult {
            status: e.status,
            text: Some(e.message),
        },
    }
}

#[pymethods]
impl SimDevice {
    #[new]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        device_id: String,
        manufacturer: String,
        model: String,
        owner_server_id: &str,
        owner_url: &str,
        client_secret: &str,
        server_secret: &str,
    ) -> PyResult<Self> {
        let owner = DmAcc::simple(owner_server_id, owner_url, client_secret, server_secret);
        owner
            .validate()
            .map_err(|e| invalid(py, "owner_server_id", e))?;
        let device = dmdelegate::sim::SimDevice::new(DeviceInfo {
            device_id,
            manufacturer,
            model,
        });
        provision_sample_tree(&device, &owner);
        Ok(Self {
            device: Arc::new(device),
        })
    }

    /// The device's identity, as delegations name it.
    #[getter]
    fn device(&self) -> Device {
        Device::from(&self.device.info())
    }

    /// Executes `command` as `server_id`, enforcing ACLs: what a host's `execute`
    /// forwards to. The TNDS for a `"GetTree"`, the ACL for a `"GetAcl"`, the detail of a
    /// refusal are in `text`.
    fn execute(
        &self,
        py: Python<'_>,
        server_id: &str,
        command: PyRef<'_, Command>,
    ) -> CommandResult {
        let cmd = command.inner.clone();
        let d = &self.device;
        result_of(py.detach(|| d.execute(server_id, &cmd)))
    }

    /// A DM session from `server_id`, which must have an account (else status 401): what
    /// DMS-2's `open_dm_session` forwards to.
    fn open_session(&self, py: Python<'_>, server_id: &str) -> CommandResult {
        let d = &self.device;
        match py.detach(|| d.open_session(server_id)) {
            Ok(()) => CommandResult {
                status: 200,
                text: None,
            },
            Err(e) => CommandResult {
                status: e.status,
                text: Some(e.message),
            },
        }
    }

    /// The whole DM Tree as TNDS, ACLs, values and secrets included: compare two dumps to
    /// see whether anything changed.
    fn dump(&self, py: Python<'_>) -> String {
        let d = &self.device;
        py.detach(|| d.dump())
    }

    /// The node's own ACL (empty: it inherits), or None when there is no such node.
    fn acl_of(&self, py: Python<'_>, uri: &str) -> Option<String> {
        let d = &self.device;
        py.detach(|| d.acl_of(uri)).map(|a| a.to_string())
    }

    /// The names of the accounts under `./DMAcc` whose ServerID is `server_id`.
    fn accounts_of(&self, py: Python<'_>, server_id: &str) -> Vec<String> {
        let d = &self.device;
        py.detach(|| d.accounts_of(server_id))
    }

    /// A leaf's value, or None.
    fn value(&self, py: Python<'_>, uri: &str) -> Option<String> {
        let d = &self.device;
        py.detach(|| d.value(uri))
    }

    /// Whether `server_id` may run `command` (`"Get"`, `"Replace"`, ...) on the node at
    /// `uri`, by its effective ACL.
    fn permits(&self, py: Python<'_>, server_id: &str, command: &str, uri: &str) -> PyResult<bool> {
        let cmd = command
            .parse::<AclCommand>()
            .map_err(|e| invalid(py, "command", e))?;
        let d = &self.device;
        Ok(py.detach(|| d.permits(server_id, cmd, uri)))
    }

    /// The ServerIDs that opened DM sessions, in order.
    fn sessions(&self, py: Python<'_>) -> Vec<String> {
        let d = &self.device;
        py.detach(|| d.sessions())
    }

    /// Every command executed so far, as `server: command -> status`.
    fn log(&self, py: Python<'_>) -> Vec<String> {
        let d = &self.device;
        py.detach(|| d.log())
    }

    /// Makes the device reachable or not (unreachable: every command fails with 503).
    fn set_reachable(&self, py: Python<'_>, reachable: bool) {
        let d = &self.device;
        py.detach(|| d.set_reachable(reachable));
    }

    /// Fails a later write with `status`: the first whose rendering contains `matching`
    /// (empty: any write), after skipping `skip` of them.
    #[pyo3(signature = (status = 500, matching = "", skip = 0))]
    fn inject_fault(&self, py: Python<'_>, status: u16, matching: &str, skip: usize) {
        let d = &self.device;
        py.detach(|| {
            d.inject_fault(DeviceFault {
                matching: matching.to_string(),
                skip,
                status,
            })
        });
    }

    /// Methods 3/4 as a real device behaves: when a DMS-1 leaves the bootstrap trigger,
    /// the device fetches its bootstrap from `bootstrap`, installs it, opens its first DM
    /// session with DMS-2, and `dms2` is told so (its `client_connected`).
    fn route_bootstrap(
        &self,
        py: Python<'_>,
        bootstrap: PyRef<'_, SimBootstrapServer>,
        dms2: PyRef<'_, Server>,
    ) -> PyResult<()> {
        let server = dms2.net(py)?;
        let bs = bootstrap.inner.clone();
        let d = &self.device;
        py.detach(|| dmdelegate_net::route_bootstrap(d, bs, &server));
        Ok(())
    }

    fn __repr__(&self) -> String {
        format!("SimDevice(device_id={:?})", self.device.info().device_id)
    }
}
