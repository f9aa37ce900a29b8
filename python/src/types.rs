//! Value types a Python host sees and gives: devices, subtrees, offers, sessions, events,
//! client commands and their results, rejections and DM accounts. All are immutable.

use dmdelegate::{
    AclCommand, ClientCommand, DelegatedSubtree, DelegationOffer, DelegationType, DeviceInfo,
    DmAcc, EventKind, Method, MgmtTree, Role, SessionInfo, State, Timestamp,
};
use pyo3::prelude::*;
use pyo3::types::PyString;

use crate::errors::invalid;

/// `"DMS-1"` or `"DMS-2"`.
pub fn role_name(role: Role) -> String {
    role.to_string()
}

/// `"Full"` or `"Partial"`.
pub fn type_name(t: DelegationType) -> String {
    t.as_str().to_string()
}

/// Reads a method number, 1 to 4.
pub fn parse_method(py: Python<'_>, method: i64) -> PyResult<Method> {
    u8::try_from(method)
        .ok()
        .and_then(Method::from_number)
        .ok_or_else(|| invalid(py, "method", format!("must be 1 to 4, not {method}")))
}

/// Reads `"full"` or `"partial"` (any case).
pub fn parse_type(py: Python<'_>, t: &str) -> PyResult<DelegationType> {
    match t.to_ascii_lowercase().as_str() {
        "full" => Ok(DelegationType::Full),
        "partial" => Ok(DelegationType::Partial),
        _ => Err(invalid(
            py,
            "delegation_type",
            format!("must be 'full' or 'partial', not {t:?}"),
        )),
    }
}

/// A timezone-aware UTC `datetime` for a timestamp.
pub fn datetime(py: Python<'_>, t: Timestamp) -> PyResult<Py<PyAny>> {
    let dt = py.import("datetime")?;
    let utc = dt.getattr("timezone")?.getattr("utc")?;
    let epoch = dt
        .getattr("datetime")?
        .call1((1970, 1, 1, 0, 0, 0, 0, utc))?;
    // timedelta(days, seconds, microseconds, milliseconds): exact, whatever the range.
    let delta = dt.getattr("timedelta")?.call1((0, 0, 0, t.unix_millis()))?;
    Ok(epoch.add(delta)?.unbind())
}

/// Reads a point in time: an aware `datetime`, or seconds since the Unix epoch.
pub fn parse_time(py: Python<'_>, field: &str, value: &Bound<'_, PyAny>) -> PyResult<Timestamp> {
    let seconds: f64 = if value.hasattr("utcoffset")? && value.hasattr("timestamp")? {
        if value.call_method0("utcoffset")?.is_none() {
            return Err(invalid(
                py,
                field,
                "a naive datetime is ambiguous: give it a timezone",
            ));
        }
        value.call_method0("timestamp")?.extract()?
    } else {
        value.extract().map_err(|_| {
            invalid(
                py,
                field,
                "must be a timezone-aware datetime or seconds since the Unix epoch",
            )
        })?
    };
    if !seconds.is_finite() {
        return Err(invalid(py, field, "must be finite"));
    }
    let t = Timestamp((seconds * 1000.0).floor() as i64);
    if !t.is_representable() {
        return Err(invalid(py, field, "must lie in years 0000 to 9999"));
    }
    Ok(t)
}

/// Reads a duration in seconds (finite, not negative).
pub fn parse_seconds(py: Python<'_>, field: &str, s: f64) -> PyResult<std::time::Duration> {
    std::time::Duration::try_from_secs_f64(s)
        .map_err(|_| invalid(py, field, format!("{s} is not a duration in seconds")))
}

fn opt_repr(v: &Option<String>) -> String {
    v.as_ref().map_or("None".into(), |s| format!("{s:?}"))
}

/// The managed device.
#[pyclass(frozen, eq, hash, from_py_object, module = "dmdelegate._native")]
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Device {
    /// Device identifier (`./DevInfo/DevId`), for example `IMEI:490154203237518`.
    #[pyo3(get)]
    pub device_id: String,
    /// Manufacturer (`./DevInfo/Man`).
    #[pyo3(get)]
    pub manufacturer: String,
    /// Model (`./DevInfo/Mod`).
    #[pyo3(get)]
    pub model: String,
}

#[pymethods]
impl Device {
    #[new]
    fn new(device_id: String, manufacturer: String, model: String) -> Self {
        Self {
            device_id,
            manufacturer,
            model,
        }
    }

    fn __repr__(&self) -> String {
        format!(
            "Device(device_id={:?}, manufacturer={:?}, model={:?})",
            self.device_id, self.manufacturer, self.model
        )
    }
}

impl From<&DeviceInfo> for Device {
    fn from(d: &DeviceInfo) -> Self {
        Self {
            device_id: d.device_id.clone(),
            manufacturer: d.manufacturer.clone(),
            model: d.model.clone(),
        }
    }
}

impl From<&Device> for DeviceInfo {
    fn from(d: &Device) -> Self {
        DeviceInfo {
            device_id: d.device_id.clone(),
            manufacturer: d.manufacturer.clone(),
            model: d.model.clone(),
        }
    }
}

/// Reads rights: `"Add+Get+Replace"` (also separated by spaces or commas) or a sequence of
/// command names. Sorted, without duplicates, at least one.
fn parse_rights(py: Python<'_>, rights: &Bound<'_, PyAny>) -> PyResult<Vec<AclCommand>> {
    let names: Vec<String> = if let Ok(s) = rights.cast::<PyString>() {
        s.to_str()?
            .split(['+', ' ', ','])
            .filter(|n| !n.is_empty())
            .map(str::to_string)
            .collect()
    } else {
        rights.extract().map_err(|_| {
            invalid(
                py,
                "rights",
                "must be a string such as \"Add+Get+Replace\" or a sequence of command names",
            )
        })?
    };
    let mut out = Vec::new();
    for n in &names {
        let c = n.parse::<AclCommand>().map_err(|_| {
            invalid(
                py,
                "rights",
                format!("`{n}` is not a command (Add, Delete, Exec, Get or Replace)"),
            )
        })?;
        out.push(c);
    }
    out.sort();
    out.dedup();
    if out.is_empty() {
        return Err(invalid(py, "rights", "grants no command"));
    }
    Ok(out)
}

fn rights_text(rights: &[AclCommand]) -> String {
    rights
        .iter()
        .map(|r| r.as_str())
        .collect::<Vec<_>>()
        .join("+")
}

/// One delegated part of the DM Tree and the rights DMS-2 gets on it.
#[pyclass(frozen, eq, hash, from_py_object, module = "dmdelegate._native")]
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Subtree {
    /// Absolute URI of the subtree's root, `.` for the whole tree.
    #[pyo3(get)]
    pub uri: String,
    pub rights: Vec<AclCommand>,
}

#[pymethods]
impl Subtree {
    /// `rights`: `"Add+Get+Replace"` or a sequence of command names.
    #[new]
    fn new(py: Python<'_>, uri: String, rights: &Bound<'_, PyAny>) -> PyResult<Self> {
        Ok(Self {
            uri,
            rights: parse_rights(py, rights)?,
        })
    }

    /// The granted commands, sorted, joined by `+`: `"Add+Get+Replace"`.
    #[getter]
    fn rights(&self) -> String {
        rights_text(&self.rights)
    }

    fn __repr__(&self) -> String {
        format!(
            "Subtree(uri={:?}, rights={:?})",
            self.uri,
            rights_text(&self.rights)
        )
    }
}

impl From<&DelegatedSubtree> for Subtree {
    fn from(s: &DelegatedSubtree) -> Self {
        Self {
            uri: s.uri.clone(),
            rights: s.rights.clone(),
        }
    }
}

impl From<&Subtree> for DelegatedSubtree {
    fn from(s: &Subtree) -> Self {
        DelegatedSubtree {
            uri: s.uri.clone(),
            rights: s.rights.clone(),
        }
    }
}

/// A state a session entered, and when.
#[pyclass(frozen, eq, module = "dmdelegate._native")]
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Step {
    /// The state, e.g. `"AwaitingConfirm"`.
    #[pyo3(get)]
    pub state: String,
    at: Timestamp,
}

#[pymethods]
impl Step {
    /// When it was entered (UTC).
    #[getter]
    fn at(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        datetime(py, self.at)
    }

    fn __repr__(&self) -> String {
        format!(
            "Step(state={:?}, at={:?})",
            self.state,
            self.at.to_rfc3339()
        )
    }
}

/// One delegation as this server sees it.
#[pyclass(frozen, eq, module = "dmdelegate._native")]
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Session {
    pub inner: SessionInfo,
}

#[pymethods]
impl Session {
    /// Session id.
    #[getter]
    fn session_id(&self) -> &str {
        &self.inner.session_id
    }

    /// This server's role: `"DMS-1"` (delegating) or `"DMS-2"` (delegated).
    #[getter]
    fn role(&self) -> String {
        role_name(self.inner.role)
    }

    /// Method, 1 to 4.
    #[getter]
    fn method(&self) -> u8 {
        self.inner.method.number()
    }

    /// `"Full"` or `"Partial"`.
    #[getter]
    fn delegation_type(&self) -> String {
        type_name(self.inner.delegation_type)
    }

    /// The peer's ServerID.
    #[getter]
    fn peer(&self) -> &str {
        &self.inner.peer
    }

    /// The device.
    #[getter]
    fn device(&self) -> Device {
        Device::from(&self.inner.info.device)
    }

    /// The delegated subtrees.
    #[getter]
    fn subtrees(&self) -> Vec<Subtree> {
        self.inner.info.subtrees.iter().map(Subtree::from).collect()
    }

    /// The current state, e.g. `"Completed"`, `"RolledBack"`.
    #[getter]
    fn state(&self) -> String {
        self.inner.state.to_string()
    }

    /// Whether the state is final (see `terminal_states()`).
    #[getter]
    fn finished(&self) -> bool {
        self.inner.state.is_terminal()
    }

    /// The failure's reason code, or None.
    #[getter]
    fn reason_code(&self) -> Option<u16> {
        self.inner.reason.as_ref().map(|r| r.code)
    }

    /// The failure's reason text, or None.
    #[getter]
    fn reason_text(&self) -> Option<String> {
        self.inner.reason.as_ref().map(|r| r.text.clone())
    }

    /// End of a temporary delegation (UTC), or None.
    #[getter]
    fn expires(&self, py: Python<'_>) -> PyResult<Option<Py<PyAny>>> {
        self.inner.expires.map(|t| datetime(py, t)).transpose()
    }

    /// When the current wait ends (UTC), or None.
    #[getter]
    fn deadline(&self, py: Python<'_>) -> PyResult<Option<Py<PyAny>>> {
        self.inner.deadline.map(|t| datetime(py, t)).transpose()
    }

    /// DMS-1: journaled client operations not yet undone.
    #[getter]
    fn pending_operations(&self) -> usize {
        self.inner.pending_operations
    }

    /// The states entered, in order, with times.
    #[getter]
    fn history(&self) -> Vec<Step> {
        self.inner
            .history
            .iter()
            .map(|s| Step {
                state: s.state.to_string(),
                at: s.at,
            })
            .collect()
    }

    /// When the session was created (UTC).
    #[getter]
    fn created(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        datetime(py, self.inner.created)
    }

    /// When the session last changed (UTC).
    #[getter]
    fn updated(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        datetime(py, self.inner.updated)
    }

    fn __repr__(&self) -> String {
        let reason = self
            .inner
            .reason
            .as_ref()
            .map_or("None".to_string(), |r| r.code.to_string());
        format!(
            "Session(session_id={:?}, role={:?}, method={}, delegation_type={:?}, peer={:?}, state={:?}, reason_code={reason})",
            self.inner.session_id,
            role_name(self.inner.role),
            self.inner.method.number(),
            type_name(self.inner.delegation_type),
            self.inner.peer,
            self.inner.state.to_string(),
        )
    }
}

/// A delegation a peer offers, for the host's `accept_delegation` to judge.
#[pyclass(frozen, eq, module = "dmdelegate._native")]
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Offer {
    pub inner: DelegationOffer,
}

#[pymethods]
impl Offer {
    /// The session id the peer chose.
    #[getter]
    fn session_id(&self) -> &str {
        &self.inner.session_id
    }

    /// The peer's ServerID (authenticated by mutual TLS).
    #[getter]
    fn peer(&self) -> &str {
        &self.inner.peer
    }

    /// The role this server would play: `"DMS-1"` or `"DMS-2"`.
    #[getter]
    fn role(&self) -> String {
        role_name(self.inner.role)
    }

    /// Method, 1 to 4.
    #[getter]
    fn method(&self) -> u8 {
        self.inner.method.number()
    }

    /// `"Full"` or `"Partial"`.
    #[getter]
    fn delegation_type(&self) -> String {
        type_name(self.inner.delegation_type)
    }

    /// The device.
    #[getter]
    fn device(&self) -> Device {
        Device::from(&self.inner.info.device)
    }

    /// The delegated subtrees.
    #[getter]
    fn subtrees(&self) -> Vec<Subtree> {
        self.inner.info.subtrees.iter().map(Subtree::from).collect()
    }

    /// End of a temporary delegation (UTC), or None.
    #[getter]
    fn expires(&self, py: Python<'_>) -> PyResult<Option<Py<PyAny>>> {
        self.inner.expires.map(|t| datetime(py, t)).transpose()
    }

    fn __repr__(&self) -> String {
        format!(
            "Offer(session_id={:?}, peer={:?}, role={:?}, method={}, delegation_type={:?}, device_id={:?})",
            self.inner.session_id,
            self.inner.peer,
            role_name(self.inner.role),
            self.inner.method.number(),
            type_name(self.inner.delegation_type),
            self.inner.info.device.device_id,
        )
    }
}

/// What happened to a delegation, given to the host's `on_event`.
#[pyclass(frozen, eq, module = "dmdelegate._native")]
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    pub inner: dmdelegate::Event,
}

impl Event {
    fn states(&self) -> Option<(State, State)> {
        match self.inner.kind {
            EventKind::StateChanged { from, to } => Some((from, to)),
            _ => None,
        }
    }

    fn reason(&self) -> Option<&dmdelegate::Reason> {
        match &self.inner.kind {
            EventKind::Failed { reason }
            | EventKind::RolledBack { reason }
            | EventKind::RollbackIncomplete { reason, .. }
            | EventKind::Rejected { reason } => Some(reason),
            _ => None,
        }
    }
}

#[pymethods]
impl Event {
    /// The session.
    #[getter]
    fn session_id(&self) -> &str {
        &self.inner.session_id
    }

    /// This server's role in it: `"DMS-1"` or `"DMS-2"`.
    #[getter]
    fn role(&self) -> String {
        role_name(self.inner.role)
    }

    /// The device.
    #[getter]
    fn device_id(&self) -> &str {
        &self.inner.device_id
    }

    /// `"StateChanged"`, `"Completed"`, `"Failed"`, `"RolledBack"`,
    /// `"RollbackIncomplete"`, `"Rejected"` or `"Expired"`.
    #[getter]
    fn kind(&self) -> &'static str {
        match self.inner.kind {
            EventKind::StateChanged { .. } => "StateChanged",
            EventKind::Completed => "Completed",
            EventKind::Failed { .. } => "Failed",
            EventKind::RolledBack { .. } => "RolledBack",
            EventKind::RollbackIncomplete { .. } => "RollbackIncomplete",
            EventKind::Rejected { .. } => "Rejected",
            EventKind::Expired => "Expired",
        }
    }

    /// `"StateChanged"`: the previous state; otherwise None.
    #[getter(from_state)]
    fn previous_state(&self) -> Option<String> {
        self.states().map(|(f, _)| f.to_string())
    }

    /// `"StateChanged"`: the new state; otherwise None.
    #[getter]
    fn to_state(&self) -> Option<String> {
        self.states().map(|(_, t)| t.to_string())
    }

    /// The reason code of a failure, rollback or rejection; otherwise None.
    #[getter]
    fn reason_code(&self) -> Option<u16> {
        self.reason().map(|r| r.code)
    }

    /// The reason's text; otherwise None.
    #[getter]
    fn reason_text(&self) -> Option<String> {
        self.reason().map(|r| r.text.clone())
    }

    /// `"RollbackIncomplete"`: the inverse operations that failed; otherwise empty.
    #[getter]
    fn failed_operations(&self) -> Vec<String> {
        match &self.inner.kind {
            EventKind::RollbackIncomplete { failed, .. } => failed.clone(),
            _ => Vec::new(),
        }
    }

    fn __repr__(&self) -> String {
        let detail = match (self.states(), self.reason()) {
            (Some((f, t)), _) => format!(
                ", from_state={:?}, to_state={:?}",
                f.to_string(),
                t.to_string()
            ),
            (None, Some(r)) => format!(", reason_code={}", r.code),
            _ => String::new(),
        };
        format!(
            "Event(kind={:?}, session_id={:?}, role={:?}, device_id={:?}{detail})",
            self.kind(),
            self.inner.session_id,
            role_name(self.inner.role),
            self.inner.device_id,
        )
    }
}

/// One operation on the device's DM Tree that DMS-1's host executes in its DM session
/// with the device (the host's `execute`).
#[pyclass(frozen, eq, module = "dmdelegate._native")]
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Command {
    pub inner: ClientCommand,
}

#[pymethods]
impl Command {
    /// `"GetTree"`, `"GetAcl"`, `"Add"`, `"ReplaceAcl"` or `"Delete"`.
    #[getter]
    fn kind(&self) -> &'static str {
        match self.inner {
            ClientCommand::GetTree { .. } => "GetTree",
            ClientCommand::GetAcl { .. } => "GetAcl",
            ClientCommand::Add { .. } => "Add",
            ClientCommand::ReplaceAcl { .. } => "ReplaceAcl",
            ClientCommand::Delete { .. } => "Delete",
        }
    }

    /// The URI the command targets (for `"Add"`, the new node's URI).
    #[getter]
    fn uri(&self) -> String {
        self.inner.uri()
    }

    /// `"Add"`: the URI of the parent the node is added under; otherwise None.
    #[getter]
    fn parent(&self) -> Option<String> {
        match &self.inner {
            ClientCommand::Add { parent, .. } => Some(parent.clone()),
            _ => None,
        }
    }

    /// `"GetTree"`: whether leaf values are wanted (`?list=TNDS+ACL+Value`).
    #[getter]
    fn values(&self) -> bool {
        matches!(self.inner, ClientCommand::GetTree { values: true, .. })
    }

    /// `"Add"`: the TNDS document of the subtree to add; otherwise None.
    #[getter]
    fn tnds(&self) -> Option<String> {
        match &self.inner {
            ClientCommand::Add { node, .. } => Some(MgmtTree::new(vec![node.clone()]).to_xml()),
            _ => None,
        }
    }

    /// `"ReplaceAcl"`: the new ACL text (empty: the node inherits); otherwise None.
    #[getter]
    fn acl(&self) -> Option<String> {
        match &self.inner {
            ClientCommand::ReplaceAcl { acl, .. } => Some(acl.to_string()),
            _ => None,
        }
    }

    /// Whether the command changes the tree.
    #[getter]
    fn is_write(&self) -> bool {
        self.inner.is_write()
    }

    /// The command as one SyncML DM 1.2 command element with `<CmdID>` `cmd_id`.
    #[pyo3(signature = (cmd_id = 1))]
    fn to_syncml(&self, cmd_id: u32) -> String {
        self.inner.to_syncml(cmd_id)
    }

    fn __str__(&self) -> String {
        self.inner.to_string()
    }

    fn __repr__(&self) -> String {
        format!("Command({:?})", self.inner.to_string())
    }
}

/// What a device answered to a command: the SyncML status (200 success; 404 not found,
/// 418 already exists, 425 permission denied, 500 failed, 503 unreachable, ...) and a
/// text: the subtree's TNDS document for a `"GetTree"`, the ACL for a `"GetAcl"`, the
/// detail of a refusal.
#[pyclass(frozen, eq, hash, from_py_object, module = "dmdelegate._native")]
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct CommandResult {
    /// SyncML status.
    #[pyo3(get)]
    pub status: u16,
    /// TNDS, ACL or detail; None when there is nothing to say.
    #[pyo3(get)]
    pub text: Option<String>,
}

#[pymethods]
impl CommandResult {
    #[new]
    #[pyo3(signature = (status = 200, text = None))]
    fn new(py: Python<'_>, status: i64, text: Option<String>) -> PyResult<Self> {
        let status = u16::try_from(status)
            .ok()
            .filter(|s| (100..=999).contains(s))
            .ok_or_else(|| {
                invalid(
                    py,
                    "status",
                    format!("{status} is not a status code (100-999)"),
                )
            })?;
        Ok(Self { status, text })
    }

    /// Whether the status is 200.
    #[getter]
    fn ok(&self) -> bool {
        self.status == 200
    }

    fn __repr__(&self) -> String {
        format!(
            "CommandResult(status={}, text={})",
            self.status,
            opt_repr(&self.text)
        )
    }
}

/// A refusal of an offered delegation, with the reason code the nack carries (101
/// rejected by policy, 102 unknown device, 103 unsupported, ...).
#[pyclass(frozen, eq, hash, from_py_object, module = "dmdelegate._native")]
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Rejection {
    /// The reason code, 100 to 999.
    #[pyo3(get)]
    pub reason_code: u16,
    /// Why, for the peer's operator.
    #[pyo3(get)]
    pub text: String,
}

#[pymethods]
impl Rejection {
    #[new]
    #[pyo3(signature = (reason_code = 101, text = "rejected by policy"))]
    fn new(py: Python<'_>, reason_code: i64, text: &str) -> PyResult<Self> {
        let text = text.to_string();
        let reason_code = u16::try_from(reason_code)
            .ok()
            .filter(|s| (100..=999).contains(s))
            .ok_or_else(|| {
                invalid(
                    py,
                    "reason_code",
                    format!("{reason_code} is not a reason code (100-999)"),
                )
            })?;
        Ok(Self { reason_code, text })
    }

    fn __repr__(&self) -> String {
        format!(
            "Rejection(reason_code={}, text={:?})",
            self.reason_code, self.text
        )
    }
}

/// A DM account (the DMAcc MO): what DMS-2's host gives from `dm_account`.
#[pyclass(frozen, eq, from_py_object, module = "dmdelegate._native")]
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DmAccount {
    pub inner: DmAcc,
}

impl DmAccount {
    /// Reads the TNDS document of one account node.
    pub fn parse(tnds: &str) -> Result<DmAcc, String> {
        DmAcc::from_tnds(tnds).map_err(|e| e.to_string())
    }
}

#[pymethods]
impl DmAccount {
    /// An account for `server_id` reachable at `url`, with Basic client and server
    /// credentials.
    #[staticmethod]
    fn simple(
        py: Python<'_>,
        server_id: &str,
        url: &str,
        client_secret: &str,
        server_secret: &str,
    ) -> PyResult<Self> {
        let inner = DmAcc::simple(server_id, url, client_secret, server_secret);
        inner.validate().map_err(|e| invalid(py, "account", e))?;
        Ok(Self { inner })
    }

    /// Reads the TNDS document of one DMAcc node.
    #[staticmethod]
    fn from_tnds(py: Python<'_>, tnds: &str) -> PyResult<Self> {
        DmAccount::parse(tnds)
            .map(|inner| Self { inner })
            .map_err(|e| invalid(py, "tnds", e))
    }

    /// The account as the TNDS document of one DMAcc node.
    fn tnds(&self) -> String {
        MgmtTree::new(vec![self.inner.to_node()]).to_xml()
    }

    /// The server's ServerID.
    #[getter]
    fn server_id(&self) -> &str {
        &self.inner.server_id
    }

    /// The node name under `./DMAcc`.
    #[getter]
    fn node_name(&self) -> &str {
        &self.inner.node_name
    }

    /// The server's addresses (`AppAddr/*/Addr`).
    #[getter]
    fn addresses(&self) -> Vec<String> {
        self.inner
            .addresses
            .iter()
            .map(|a| a.addr.clone())
            .collect()
    }

    fn __repr__(&self) -> String {
        format!(
            "DmAccount(server_id={:?}, node_name={:?}, addresses={:?})",
            self.inner.server_id,
            self.inner.node_name,
            self.addresses()
        )
    }
}

/// The TNDS document of a simple DM account (what a `dm_account` callback may return).
#[pyfunction]
pub fn simple_dmacc_tnds(
    py: Python<'_>,
    server_id: &str,
    url: &str,
    client_secret: &str,
    server_secret: &str,
) -> PyResult<String> {
    Ok(DmAccount::simple(py, server_id, url, client_secret, server_secret)?.tnds())
}

/// Reads a tuple of subtrees for a request.
pub fn subtrees_of(list: &[Subtree]) -> Vec<DelegatedSubtree> {
    list.iter().map(DelegatedSubtree::from).collect()
}
