//! The Rust [`Host`] over a Python host object (see `dmdelegate.host.Host`).
//!
//! Each callback runs on a thread of the server's runtime's blocking pool with the GIL
//! held only for the call itself. A callback defined with `async def` returns a coroutine;
//! it is run on the event loop the server captured (the one running where it was created,
//! or the `loop` it was given) and awaited without blocking any thread. Whatever a
//! callback does — raise, return the wrong type, be missing — becomes a typed failure of
//! the delegation, never a panic.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use dmdelegate::{
    ClientCommand, CommandOutput, DelegationOffer, DeviceError, DeviceInfo, DmAcc, Host, HostError,
    PolicyDecision, Reason, ReasonCode, SessionInfo,
};
use pyo3::prelude::*;
use pyo3::types::{PyString, PyTuple};

use crate::errors::{self, Kind};
use crate::interpreter;
use crate::types::{Command, CommandResult, Device, DmAccount, Event, Offer, Rejection, Session};

/// The logger a callback's traceback goes to.
const LOGGER: &str = "dmdelegate.host";

type Pending = Pin<Box<dyn Future<Output = PyResult<Py<PyAny>>> + Send>>;

/// What calling a host method gave before any awaiting.
enum Called {
    /// A plain value.
    Ready(Py<PyAny>),
    /// A coroutine, scheduled on the captured event loop.
    Awaiting(Pending),
}

/// Why a host method gave no value.
enum CallError {
    /// The host object has no such method.
    Missing,
    /// It raised.
    Raised(PyErr),
    /// It could not be called or awaited (interpreter shutting down, no event loop, ...).
    Unavailable(String),
}

/// A Python host object as the engine's [`Host`].
pub struct PyHost {
    host: Arc<Py<PyAny>>,
    event_loop: Option<Arc<Py<PyAny>>>,
}

impl PyHost {
    /// `event_loop`: where `async def` callbacks run; None refuses them.
    pub fn new(host: Py<PyAny>, event_loop: Option<Py<PyAny>>) -> Self {
        Self {
            host: Arc::new(host),
            event_loop: event_loop.map(Arc::new),
        }
    }
}

fn type_name(obj: &Bound<'_, PyAny>) -> String {
    obj.get_type()
        .qualname()
        .map(|q| q.to_string())
        .unwrap_or_else(|_| "object".into())
}

/// `Type: message` of an exception.
fn describe(py: Python<'_>, err: &PyErr) -> String {
    let name = err
        .get_type(py)
        .qualname()
        .map(|q| q.to_string())
        .unwrap_or_else(|_| "Exception".into());
    let text = err
        .value(py)
        .str()
        .map(|s| s.to_string())
        .unwrap_or_default();
    if text.is_empty() {
        name
    } else {
        format!("{name}: {text}")
    }
}

/// Logs `err` with its traceback at ERROR under `dmdelegate.host`.
fn log_exception(py: Python<'_>, err: &PyErr, what: &str) {
    let logged = (|| -> PyResult<()> {
        let logger = py.import("logging")?.call_method1("getLogger", (LOGGER,))?;
        let exc_info = PyTuple::new(
            py,
            [
                err.get_type(py).into_any(),
                err.value(py).clone().into_any(),
                err.traceback(py)
                    .map_or_else(|| py.None().into_bound(py), |t| t.into_any()),
            ],
        )?;
        let kwargs = pyo3::types::PyDict::new(py);
        kwargs.set_item("exc_info", exc_info)?;
        logger.call_method("error", ("%s", what), Some(&kwargs))?;
        Ok(())
    })();
    if let Err(e) = logged {
        tracing::error!(error = %e, "{what}");
    }
}

/// Logs a warning under `dmdelegate.host`.
fn log_warning(py: Python<'_>, what: &str) {
    let _ = py
        .import("logging")
        .and_then(|l| l.call_method1("getLogger", (LOGGER,)))
        .and_then(|l| l.call_method1("warning", ("%s", what)));
}

/// Whether `err` is an `asyncio.CancelledError` (the loop stopped under a coroutine).
fn is_cancelled(py: Python<'_>, err: &PyErr) -> bool {
    py.import("asyncio")
        .and_then(|a| a.getattr("CancelledError"))
        .is_ok_and(|c| err.get_type(py).is_subclass(&c).unwrap_or(false))
}

fn is_awaitable(py: Python<'_>, obj: &Bound<'_, PyAny>) -> PyResult<bool> {
    py.import("inspect")?
        .call_method1("isawaitable", (obj,))?
        .extract()
}

/// Closes a coroutine that will never run (no "never awaited" warning).
fn discard(obj: &Bound<'_, PyAny>) {
    if let Ok(Some(close)) = obj.getattr_opt("close") {
        let _ = close.call0();
    }
}

const NO_LOOP: &str = "is a coroutine function, but the server has no event loop to run it on: \
create the Server inside a running event loop (or pass loop=...), or make the callback a \
plain function";

impl PyHost {
    /// Calls `host.<name>(*args)` on a blocking-pool thread; awaits a coroutine result on
    /// the captured loop.
    async fn call<A>(&self, name: &'static str, args: A) -> Result<Py<PyAny>, CallError>
    where
        A: for<'py> FnOnce(Python<'py>) -> PyResult<Bound<'py, PyTuple>> + Send + 'static,
    {
        let host = self.host.clone();
        let event_loop = self.event_loop.clone();
        let called = tokio::task::spawn_blocking(move || {
            interpreter::attach(|py| -> Result<Called, CallError> {
                let method = match host.bind(py).getattr_opt(name) {
                    Ok(Some(m)) if m.is_callable() => m,
                    Ok(_) => return Err(CallError::Missing),
                    Err(e) => return Err(CallError::Raised(e)),
                };
                let args = args(py).map_err(CallError::Raised)?;
                let result = method.call1(args).map_err(CallError::Raised)?;
                if !is_awaitable(py, &result).map_err(CallError::Raised)? {
                    return Ok(Called::Ready(result.unbind()));
                }
                let Some(lp) = event_loop else {
                    discard(&result);
                    return Err(CallError::Unavailable(format!("`{name}` {NO_LOOP}")));
                };
                let locals = pyo3_async_runtimes::TaskLocals::new(lp.bind(py).clone());
                match pyo3_async_runtimes::into_future_with_locals(&locals, result.clone()) {
                    Ok(f) => Ok(Called::Awaiting(Box::pin(f))),
                    Err(e) => {
                        discard(&result);
                        Err(CallError::Unavailable(format!(
                            "`{name}` could not be scheduled on the event loop: {}",
                            describe(py, &e)
                        )))
                    }
                }
            })
            .unwrap_or_else(|| {
                Err(CallError::Unavailable(
                    "the Python interpreter is shutting down".into(),
                ))
            })
        })
        .await
        .unwrap_or_else(|e| {
            Err(CallError::Unavailable(format!(
                "the `{name}` callback glue failed: {e}"
            )))
        })?;
        match called {
            Called::Ready(v) => Ok(v),
            Called::Awaiting(fut) => self.await_on_loop(name, fut).await,
        }
    }

    /// Awaits a coroutine scheduled on the loop, giving up if the loop closes under it.
    async fn await_on_loop(
        &self,
        name: &'static str,
        fut: Pending,
    ) -> Result<Py<PyAny>, CallError> {
        let closed = async {
            loop {
                tokio::time::sleep(Duration::from_millis(250)).await;
                let gone = self.event_loop.as_ref().is_none_or(|lp| {
                    interpreter::attach(|py| {
                        lp.bind(py)
                            .call_method0("is_closed")
                            .and_then(|v| v.extract::<bool>())
                            .unwrap_or(true)
                    })
                    .unwrap_or(true)
                });
                if gone {
                    break;
                }
            }
        };
        tokio::select! {
            r = fut => r.map_err(|e| {
                if interpreter::attach(|py| is_cancelled(py, &e)).unwrap_or(true) {
                    CallError::Unavailable(format!(
                        "the `{name}` coroutine was cancelled (did its event loop stop?)"
                    ))
                } else {
                    CallError::Raised(e)
                }
            }),
            () = closed => Err(CallError::Unavailable(format!(
                "the event loop running the `{name}` coroutine was closed"
            ))),
        }
    }

    /// The [`HostError`] of a failed call; `default` when the host named no reason.
    fn host_error(name: &str, default: ReasonCode, err: CallError) -> HostError {
        match err {
            CallError::Missing => {
                HostError::new(default, format!("the host has no `{name}` method"))
            }
            CallError::Unavailable(m) => HostError::new(ReasonCode::InternalError, m),
            CallError::Raised(e) => interpreter::attach(|py| match explicit_reason(py, &e) {
                Some(Ok(code)) => match ReasonCode::from_code(code) {
                    Some(r) => HostError::new(r, message_of(py, &e)),
                    None => HostError::new(
                        default,
                        format!(
                            "{} (reason code {code} is not a published code)",
                            message_of(py, &e)
                        ),
                    ),
                },
                Some(Err(())) => HostError::new(default, message_of(py, &e)),
                None => {
                    let what = format!("the host's `{name}` raised {}", describe(py, &e));
                    log_exception(py, &e, &what);
                    HostError::new(ReasonCode::InternalError, what)
                }
            })
            .unwrap_or_else(|| {
                HostError::new(
                    ReasonCode::InternalError,
                    "the interpreter is shutting down",
                )
            }),
        }
    }

    /// Calls a `(device) -> str`-like capability.
    async fn call_device(
        &self,
        name: &'static str,
        default: ReasonCode,
        device: &DeviceInfo,
    ) -> Result<Py<PyAny>, HostError> {
        let d = Device::from(device);
        self.call(name, move |py| PyTuple::new(py, [Bound::new(py, d)?]))
            .await
            .map_err(|e| Self::host_error(name, default, e))
    }
}

/// For a `dmdelegate.HostError`: `Some(Ok(code))` when the host gave a reason code,
/// `Some(Err(()))` when it gave none; None for any other exception.
fn explicit_reason(py: Python<'_>, err: &PyErr) -> Option<Result<u16, ()>> {
    if !errors::is(py, err, Kind::Host) {
        return None;
    }
    let value = err.value(py);
    let given = value
        .getattr("__dict__")
        .and_then(|d| d.contains("reason_code"))
        .unwrap_or(false);
    if !given {
        return Some(Err(()));
    }
    Some(
        value
            .getattr("reason_code")
            .and_then(|c| c.extract::<u16>())
            .map_err(|_| ()),
    )
}

/// The text of an exception (its `str`), or its type's name when empty.
fn message_of(py: Python<'_>, err: &PyErr) -> String {
    let s = err
        .value(py)
        .str()
        .map(|s| s.to_string())
        .unwrap_or_default();
    if s.is_empty() {
        describe(py, err)
    } else {
        s
    }
}

fn internal(what: String) -> HostError {
    HostError::new(ReasonCode::InternalError, what)
}

#[async_trait::async_trait]
impl Host for PyHost {
    async fn accept_delegation(&self, offer: &DelegationOffer) -> PolicyDecision {
        let o = Offer {
            inner: offer.clone(),
        };
        let called = self
            .call("accept_delegation", move |py| {
                PyTuple::new(py, [Bound::new(py, o)?])
            })
            .await;
        let reject = |code: u16, text: String| PolicyDecision::Reject(Reason { code, text });
        let value = match called {
            Ok(v) => v,
            Err(CallError::Raised(e)) => {
                // A HostError names any code 100-999 for the nack, as a Rejection does.
                return interpreter::attach(|py| match explicit_reason(py, &e) {
                    Some(Ok(code)) if (100..=999).contains(&code) => {
                        reject(code, message_of(py, &e))
                    }
                    Some(_) => reject(ReasonCode::RejectedByPolicy.code(), message_of(py, &e)),
                    None => {
                        let what =
                            format!("the host's `accept_delegation` raised {}", describe(py, &e));
                        log_exception(py, &e, &what);
                        reject(ReasonCode::InternalError.code(), what)
                    }
                })
                .unwrap_or_else(|| {
                    reject(
                        ReasonCode::InternalError.code(),
                        "the interpreter is shutting down".into(),
                    )
                });
            }
            Err(e) => {
                let h = Self::host_error("accept_delegation", ReasonCode::RejectedByPolicy, e);
                return reject(h.reason.code(), h.message);
            }
        };
        interpreter::attach(|py| {
            let v = value.bind(py);
            if let Ok(b) = v.cast::<pyo3::types::PyBool>() {
                return if b.is_true() {
                    PolicyDecision::Accept
                } else {
                    reject(
                        ReasonCode::RejectedByPolicy.code(),
                        "refused by the host's policy".into(),
                    )
                };
            }
            match v.extract::<Rejection>() {
                Ok(r) => reject(r.reason_code, r.text),
                Err(_) => {
                    let what = format!(
                        "the host's `accept_delegation` returned {}, not a bool or a Rejection",
                        type_name(v)
                    );
                    log_warning(py, &what);
                    reject(ReasonCode::InternalError.code(), what)
                }
            }
        })
        .unwrap_or_else(|| {
            reject(
                ReasonCode::InternalError.code(),
                "the interpreter is shutting down".into(),
            )
        })
    }

    async fn execute(
        &self,
        device: &DeviceInfo,
        command: &ClientCommand,
    ) -> Result<CommandOutput, DeviceError> {
        let (d, c) = (
            Device::from(device),
            Command {
                inner: command.clone(),
            },
        );
        let value = self
            .call("execute", move |py| {
                PyTuple::new(
                    py,
                    [Bound::new(py, d)?.into_any(), Bound::new(py, c)?.into_any()],
                )
            })
            .await
            .map_err(|e| match e {
                CallError::Missing => DeviceError::new(
                    500,
                    "the host has no `execute` method: it cannot act as DMS-1",
                ),
                CallError::Unavailable(m) => DeviceError::new(500, m),
                CallError::Raised(e) => interpreter::attach(|py| {
                    let what = format!("the host's `execute` raised {}", describe(py, &e));
                    if explicit_reason(py, &e).is_none() {
                        log_exception(py, &e, &what);
                    }
                    DeviceError::new(500, what)
                })
                .unwrap_or_else(|| DeviceError::new(500, "the interpreter is shutting down")),
            })?;
        let result = interpreter::attach(|py| {
            let v = value.bind(py);
            v.extract::<CommandResult>().map_err(|_| {
                let what = format!(
                    "the host's `execute` returned {}, not a CommandResult",
                    type_name(v)
                );
                log_warning(py, &what);
                DeviceError::new(500, what)
            })
        })
        .unwrap_or_else(|| Err(DeviceError::new(500, "the interpreter is shutting down")))?;
        output_of(command, result)
    }

    async fn open_dm_session(&self, session: &SessionInfo) -> Result<(), HostError> {
        let s = Session {
            inner: session.clone(),
        };
        self.call("open_dm_session", move |py| {
            PyTuple::new(py, [Bound::new(py, s)?])
        })
        .await
        .map(|_| ())
        .map_err(|e| Self::host_error("open_dm_session", ReasonCode::DmSessionFailed, e))
    }

    async fn dm_account(&self, device: &DeviceInfo) -> Result<DmAcc, HostError> {
        let reason = ReasonCode::InvalidDmAccount;
        let value = self.call_device("dm_account", reason, device).await?;
        interpreter::attach(|py| {
            let v = value.bind(py);
            if let Ok(a) = v.extract::<DmAccount>() {
                return Ok(a.inner);
            }
            match v.cast::<PyString>() {
                Ok(s) => {
                    let text = s
                        .to_str()
                        .map_err(|e| HostError::new(reason, e.to_string()))?;
                    DmAccount::parse(text).map_err(|e| {
                        HostError::new(reason, format!("the host's DMAcc TNDS is not valid: {e}"))
                    })
                }
                Err(_) => Err(HostError::new(
                    reason,
                    format!(
                        "the host's `dm_account` returned {}, not a TNDS str or a DmAccount",
                        type_name(v)
                    ),
                )),
            }
        })
        .unwrap_or_else(|| Err(internal("the interpreter is shutting down".into())))
    }

    async fn bootstrap_server_url(&self, device: &DeviceInfo) -> Result<String, HostError> {
        let reason = ReasonCode::BootstrapUrlUnavailable;
        let value = self
            .call_device("bootstrap_server_url", reason, device)
            .await?;
        interpreter::attach(|py| {
            let v = value.bind(py);
            v.extract::<String>().map_err(|_| {
                HostError::new(
                    reason,
                    format!(
                        "the host's `bootstrap_server_url` returned {}, not a str",
                        type_name(v)
                    ),
                )
            })
        })
        .unwrap_or_else(|| Err(internal("the interpreter is shutting down".into())))
    }

    fn on_event(&self, event: &dmdelegate::Event) {
        let e = Event {
            inner: event.clone(),
        };
        let scheduled = interpreter::attach(|py| -> Option<Pending> {
            let method = match self.host.bind(py).getattr_opt("on_event") {
                Ok(Some(m)) if m.is_callable() => m,
                _ => return None,
            };
            let result = Bound::new(py, e).and_then(|e| method.call1((e,)));
            let result = match result {
                Ok(r) => r,
                Err(err) => {
                    let what = format!("the host's `on_event` raised {}", describe(py, &err));
                    log_exception(py, &err, &what);
                    return None;
                }
            };
            if !is_awaitable(py, &result).unwrap_or(false) {
                return None;
            }
            let Some(lp) = &self.event_loop else {
                discard(&result);
                log_warning(py, &format!("`on_event` {NO_LOOP}"));
                return None;
            };
            let locals = pyo3_async_runtimes::TaskLocals::new(lp.bind(py).clone());
            match pyo3_async_runtimes::into_future_with_locals(&locals, result.clone()) {
                Ok(f) => Some(Box::pin(f) as Pending),
                Err(err) => {
                    discard(&result);
                    log_exception(py, &err, "`on_event` could not be scheduled");
                    None
                }
            }
        })
        .flatten();
        // An `async def on_event` runs on the loop; its failure is only logged.
        if let (Some(fut), Ok(rt)) = (scheduled, tokio::runtime::Handle::try_current()) {
            rt.spawn(async move {
                if let Err(err) = fut.await {
                    interpreter::attach(|py| {
                        if is_cancelled(py, &err) {
                            tracing::debug!("an `on_event` coroutine was cancelled");
                        } else {
                            let what =
                                format!("the host's `on_event` raised {}", describe(py, &err));
                            log_exception(py, &err, &what);
                        }
                    });
                }
            });
        }
    }
}

/// The engine's view of a command's result.
fn output_of(command: &ClientCommand, r: CommandResult) -> Result<CommandOutput, DeviceError> {
    if r.status != 200 {
        let message = r
            .text
            .unwrap_or_else(|| format!("the host's `execute` returned status {}", r.status));
        return Err(DeviceError::new(r.status, message));
    }
    CommandOutput::from_reply(command, r.text.as_deref(), "the host's `execute`")
}
