//! The exception hierarchy (defined in `errors.py`, compiled in) and the mapping of the
//! core's one error enum onto it.

use std::ffi::CString;

use dmdelegate::Error;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::PyType;

/// Every exception class, in the order `errors.py` defines them.
pub const NAMES: [&str; 11] = [
    "DelegationError",
    "DecodeError",
    "InvalidArgumentError",
    "InvalidStateError",
    "UnknownSessionError",
    "AuthenticationError",
    "DeviceError",
    "HostError",
    "TransportError",
    "StoreError",
    "FailedError",
];

/// The exception classes the library raises, by their index in [`NAMES`] (the base,
/// `DelegationError`, at 0, is never raised itself).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Decode = 1,
    InvalidArgument = 2,
    InvalidState = 3,
    UnknownSession = 4,
    Authentication = 5,
    Device = 6,
    Host = 7,
    Transport = 8,
    Store = 9,
    Failed = 10,
}

static CLASSES: PyOnceLock<Vec<Py<PyType>>> = PyOnceLock::new();

fn classes(py: Python<'_>) -> PyResult<&Vec<Py<PyType>>> {
    CLASSES.get_or_try_init(py, || {
        let code = CString::new(include_str!("errors.py"))
            .map_err(|e| pyo3::exceptions::PyRuntimeError::new_err(e.to_string()))?;
        let module =
            PyModule::from_code(py, &code, c"dmdelegate/_errors.py", c"dmdelegate._errors")?;
        NAMES
            .iter()
            .map(|n| Ok(module.getattr(*n)?.cast_into::<PyType>()?.unbind()))
            .collect()
    })
}

/// Adds every class to the module.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    for (name, class) in NAMES.iter().zip(classes(py)?) {
        m.add(*name, class.bind(py))?;
    }
    Ok(())
}

/// The class of `kind`.
pub fn class(py: Python<'_>, kind: Kind) -> PyResult<Bound<'_, PyType>> {
    Ok(classes(py)?[kind as usize].bind(py).clone())
}

/// A new exception of `kind` with `message`, `reason_code` and `field` set.
pub fn new_err(
    py: Python<'_>,
    kind: Kind,
    message: impl Into<String>,
    reason_code: u16,
    field: Option<String>,
) -> PyErr {
    let message = message.into();
    let made = (|| -> PyResult<PyErr> {
        let value = class(py, kind)?.call1((message.clone(),))?;
        value.setattr("reason_code", reason_code)?;
        value.setattr("field", field)?;
        Ok(PyErr::from_value(value))
    })();
    // Only a broken interpreter fails here; the message must still get through.
    made.unwrap_or_else(|e| e)
}

/// An [`InvalidArgumentError`](Kind::InvalidArgument) about `field` (reason 121, as the
/// core reports invalid arguments).
pub fn invalid(py: Python<'_>, field: &str, reason: impl std::fmt::Display) -> PyErr {
    to_py_err(
        py,
        Error::InvalidArgument {
            field: field.to_string(),
            reason: reason.to_string(),
        },
    )
}

/// An [`InvalidStateError`](Kind::InvalidState) with `message` (reason 120).
pub fn invalid_state(py: Python<'_>, message: impl Into<String>) -> PyErr {
    to_py_err(py, Error::InvalidState(message.into()))
}

/// Maps the core's one error enum to the exception hierarchy, with `reason_code` (and
/// `field` for decode and argument errors) set on the exception.
pub fn to_py_err(py: Python<'_>, e: Error) -> PyErr {
    let reason = e.reason().code();
    let message = e.to_string();
    let field = match &e {
        Error::Decode(
            dmdelegate::DecodeError::InvalidField { field, .. }
            | dmdelegate::DecodeError::MissingField { field },
        )
        | Error::InvalidArgument { field, .. } => Some(field.clone()),
        _ => None,
    };
    let kind = match e {
        Error::Decode(_) => Kind::Decode,
        Error::InvalidArgument { .. } => Kind::InvalidArgument,
        Error::UnknownSession(_) => Kind::UnknownSession,
        Error::InvalidState(_) => Kind::InvalidState,
        Error::Authentication(_) | Error::WrongRecipient { .. } => Kind::Authentication,
        Error::Device { .. } => Kind::Device,
        Error::Host { .. } => Kind::Host,
        Error::Transport { .. } => Kind::Transport,
        Error::Store(_) => Kind::Store,
        Error::Failed { .. } => Kind::Failed,
    };
    new_err(py, kind, message, reason, field)
}

/// Whether `err` is an instance of the exception class `kind`.
pub fn is(py: Python<'_>, err: &PyErr, kind: Kind) -> bool {
    class(py, kind).is_ok_and(|c| err.is_instance(py, &c))
}
