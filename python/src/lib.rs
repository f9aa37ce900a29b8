//! `dmdelegate._native`: the Python face of the dmdelegate core. The Python package
//! `dmdelegate` re-exports it; this bridging layer is not API.

use std::sync::Arc;
use std::time::Duration;

use dmdelegate::{DelegationType, Error, Message, Method, State};
use dmdelegate_net::{LocalOptions, LocalPair as NetLocalPair};
use pyo3::exceptions::PyKeyboardInterrupt;
use pyo3::prelude::*;
use pyo3::types::PyBytes;

mod errors;
mod host;
mod interpreter;
mod logging;
mod server;
mod sim;
mod types;

use errors::{invalid, to_py_err};

/// A decoded protocol message.
#[pyclass(frozen, module = "dmdelegate._native")]
struct DelegationMessage {
    inner: Message,
}

#[pymethods]
impl DelegationMessage {
    /// Decodes and validates a message document.
    #[staticmethod]
    fn decode(py: Python<'_>, data: &[u8]) -> PyResult<Self> {
        Message::from_xml(data)
            .map(|inner| Self { inner })
            .map_err(|e| to_py_err(py, Error::Decode(e)))
    }

    /// The document, encoded.
    fn encode<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        PyBytes::new(py, self.inner.to_xml().as_bytes())
    }

    /// The specification's name of the message type, e.g. `DELEGATION_NOTIF`.
    #[getter]
    fn kind(&self) -> &'static str {
        self.inner.body.kind().spec_name()
    }

    /// Delegation session id.
    #[getter]
    fn session_id(&self) -> &str {
        &self.inner.header.session_id
    }

    /// Sequence number.
    #[getter]
    fn seq(&self) -> u32 {
        self.inner.header.seq
    }

    /// Sender's ServerID.
    #[getter]
    fn sender(&self) -> &str {
        &self.inner.header.sender
    }

    /// Recipient's ServerID.
    #[getter]
    fn recipient(&self) -> &str {
        &self.inner.header.recipient
    }

    /// Method, 1–4.
    #[getter]
    fn method(&self) -> u8 {
        self.inner.header.method.number()
    }

    /// Milliseconds since the UNIX epoch.
    #[getter]
    fn timestamp_ms(&self) -> i64 {
        self.inner.header.timestamp.unix_millis()
    }

    /// The reason code of a DELEGATION_FAILURE or nack, else None.
    #[getter]
    fn reason_code(&self) -> Option<u16> {
        match &self.inner.body {
            dmdelegate::Body::Failure(r) | dmdelegate::Body::Nack(r) => Some(r.code),
            _ => None,
        }
    }

    fn __repr__(&self) -> String {
        format!(
            "DelegationMessage(kind={:?}, session_id={:?}, seq={}, sender={:?}, recipient={:?}, method={})",
            self.kind(),
            self.session_id(),
            self.seq(),
            self.sender(),
            self.recipient(),
            self.method()
        )
    }
}

/// How a delegation ended, seen from both servers.
#[pyclass(frozen, get_all, module = "dmdelegate._native")]
struct Outcome {
    /// DMS-1's final state, e.g. `Completed`, `RolledBack`.
    dms1_state: String,
    /// DMS-2's final state.
    dms2_state: String,
    /// The failure reason code, or None.
    reason_code: Option<u16>,
    /// The failure reason text, or None.
    reason: Option<String>,
    /// Messages exchanged over HTTPS, as `SENDER -> RECIPIENT KIND #seq`.
    messages: Vec<String>,
    /// Milliseconds from start to end.
    duration_ms: f64,
}

#[pymethods]
impl Outcome {
    /// True when both servers completed.
    #[getter]
    fn completed(&self) -> bool {
        self.dms1_state == "Completed" && self.dms2_state == "Completed"
    }

    fn __repr__(&self) -> String {
        format!(
            "Outcome(dms1_state={:?}, dms2_state={:?}, reason_code={:?})",
            self.dms1_state, self.dms2_state, self.reason_code
        )
    }
}

fn parse_run_args(
    py: Python<'_>,
    method: i64,
    delegation_type: &str,
) -> PyResult<(Method, DelegationType)> {
    Ok((
        types::parse_method(py, method)?,
        types::parse_type(py, delegation_type)?,
    ))
}

async fn run_pair(
    pair: Arc<NetLocalPair>,
    method: Method,
    dtype: DelegationType,
) -> Result<Outcome, Error> {
    let started = std::time::Instant::now();
    let (one, two) = pair.run(method, dtype).await?;
    let reason = one.reason.clone().or_else(|| two.reason.clone());
    let messages = pair
        .deliveries()
        .into_iter()
        .map(|d| {
            let d2 = d.delivery;
            format!("{} -> {} {} #{}", d.from, d2.recipient, d2.kind, d2.seq)
        })
        .collect();
    Ok(Outcome {
        dms1_state: one.state.to_string(),
        dms2_state: two.state.to_string(),
        reason_code: reason.as_ref().map(|r| r.code),
        reason: reason.map(|r| r.text),
        messages,
        duration_ms: started.elapsed().as_secs_f64() * 1e3,
    })
}

/// Runs `fut` on the shared runtime while the calling thread waits without the GIL,
/// waking every 100 ms to let Ctrl-C through (KeyboardInterrupt cancels the work).
pub(crate) fn block_on<T: Send + 'static>(
    py: Python<'_>,
    fut: impl std::future::Future<Output = T> + Send + 'static,
) -> PyResult<T> {
    let (tx, rx) = std::sync::mpsc::channel();
    let task = pyo3_async_runtimes::tokio::get_runtime().spawn(async move {
        let _ = tx.send(fut.await);
    });
    let mut rx = rx;
    loop {
        // The receiver travels into the GIL-free closure and back (it is Send, not Sync).
        let (received, back) = py.detach(move || {
            let r = rx.recv_timeout(Duration::from_millis(100));
            (r, rx)
        });
        rx = back;
        match received {
            Ok(v) => return Ok(v),
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                if let Err(e) = py.check_signals() {
                    task.abort();
                    return Err(e);
                }
            }
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                return Err(PyKeyboardInterrupt::new_err("the operation was cancelled"))
            }
        }
    }
}

/// Two DM Servers on loopback over HTTPS with mutual TLS (fresh test PKI), a simulated
/// device on the network and DMS-2's Bootstrap Server. One delegation per pair.
#[pyclass(module = "dmdelegate._native")]
struct LocalPair {
    inner: Arc<NetLocalPair>,
}

#[pymethods]
impl LocalPair {
    /// Starts everything (blocking; the GIL is released meanwhile).
    #[new]
    fn new(py: Python<'_>) -> PyResult<Self> {
        let started = block_on(py, async {
            NetLocalPair::start(LocalOptions::default()).await
        })?;
        let pair = started.map_err(|e| {
            errors::new_err(
                py,
                errors::Kind::Transport,
                e.to_string(),
                dmdelegate::ReasonCode::PeerUnreachable.code(),
                None,
            )
        })?;
        Ok(Self {
            inner: Arc::new(pair),
        })
    }

    /// Runs one delegation to its end (blocking, GIL released, Ctrl-C interrupts).
    fn run(&self, py: Python<'_>, method: i64, delegation_type: &str) -> PyResult<Outcome> {
        let (m, t) = parse_run_args(py, method, delegation_type)?;
        let pair = self.inner.clone();
        block_on(py, run_pair(pair, m, t))?.map_err(|e| to_py_err(py, e))
    }

    /// Runs one delegation to its end; returns an awaitable for asyncio.
    fn run_async<'py>(
        &self,
        py: Python<'py>,
        method: i64,
        delegation_type: &str,
    ) -> PyResult<Bound<'py, PyAny>> {
        let (m, t) = parse_run_args(py, method, delegation_type)?;
        let pair = self.inner.clone();
        interpreter::awaitable(py, run_pair(pair, m, t))
    }

    /// The device's whole DM Tree as TNDS (ACLs, values and secrets included).
    fn device_tree(&self) -> String {
        self.inner.testbed.device.dump()
    }

    /// The ServerIDs that opened DM sessions with the device, in order.
    fn device_sessions(&self) -> Vec<String> {
        self.inner.testbed.device.sessions()
    }

    /// Whether `server_id` may run `command` (`Get`, `Replace`, …) on the node at `uri`.
    fn device_permits(
        &self,
        py: Python<'_>,
        server_id: &str,
        command: &str,
        uri: &str,
    ) -> PyResult<bool> {
        let cmd = command
            .parse::<dmdelegate::AclCommand>()
            .map_err(|e| invalid(py, "command", e))?;
        Ok(self.inner.testbed.device.permits(server_id, cmd, uri))
    }
}

/// Checks a message document; raises DecodeError naming the offending field.
#[pyfunction]
fn validate(py: Python<'_>, data: &[u8]) -> PyResult<()> {
    Message::from_xml(data)
        .map(|_| ())
        .map_err(|e| to_py_err(py, Error::Decode(e)))
}

/// The published description of a reason code, or None for an unknown code.
#[pyfunction]
fn reason_description(code: u16) -> Option<&'static str> {
    dmdelegate::ReasonCode::from_code(code).map(|r| r.description())
}

/// The library's version.
#[pyfunction]
fn version() -> &'static str {
    dmdelegate::VERSION
}

/// The final states a delegation can end in.
#[pyfunction]
fn terminal_states() -> Vec<String> {
    [
        State::Completed,
        State::Rejected,
        State::RolledBack,
        State::RollbackFailed,
        State::Expired,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    errors::register(m)?;
    m.add_class::<DelegationMessage>()?;
    m.add_class::<Outcome>()?;
    m.add_class::<LocalPair>()?;
    m.add_class::<types::Device>()?;
    m.add_class::<types::Subtree>()?;
    m.add_class::<types::Step>()?;
    m.add_class::<types::Session>()?;
    m.add_class::<types::Offer>()?;
    m.add_class::<types::Event>()?;
    m.add_class::<types::Command>()?;
    m.add_class::<types::CommandResult>()?;
    m.add_class::<types::Rejection>()?;
    m.add_class::<types::DmAccount>()?;
    m.add_class::<server::Timeouts>()?;
    m.add_class::<server::HttpsSettings>()?;
    m.add_class::<server::Peer>()?;
    m.add_class::<server::DeviceLink>()?;
    m.add_class::<server::DeviceHub>()?;
    m.add_class::<server::ServerConfig>()?;
    m.add_class::<server::Server>()?;
    m.add_class::<sim::Identity>()?;
    m.add_class::<sim::TestPki>()?;
    m.add_class::<sim::SimDevice>()?;
    m.add_class::<sim::SimBootstrapServer>()?;
    m.add_function(wrap_pyfunction!(validate, m)?)?;
    m.add_function(wrap_pyfunction!(reason_description, m)?)?;
    m.add_function(wrap_pyfunction!(version, m)?)?;
    m.add_function(wrap_pyfunction!(terminal_states, m)?)?;
    m.add_function(wrap_pyfunction!(types::simple_dmacc_tnds, m)?)?;
    logging::install();
    // Not added to the module: only `atexit` holds it.
    let stop = wrap_pyfunction!(interpreter::stop, m)?;
    m.py().import("atexit")?.call_method1("register", (stop,))?;
    Ok(())
}
