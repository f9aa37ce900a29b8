//! Where runtime threads meet the interpreter.
//!
//! The engine runs on tokio threads that Python did not create. Such a thread must not
//! take the GIL once the interpreter has begun to shut down: CPython 3.11 has no safe way
//! to refuse it, and the process aborts (`PyGILState_Release ... finalizing`). So every
//! runtime-thread entry into Python goes through [`attach`], and an `atexit` hook
//! ([`stop`]) closes the door and waits for the threads already inside to leave, before
//! finalization starts.
//!
//! Results of `_async` calls reach asyncio through [`awaitable`], which resolves the
//! asyncio future through [`attach`] too (the generic bridge attaches unguarded).

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use dmdelegate::Error;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::PyCFunction;
use pyo3::{IntoPyObject, IntoPyObjectExt};

use crate::errors::to_py_err;

/// Set by [`stop`]: no runtime thread attaches any more.
static STOPPED: AtomicBool = AtomicBool::new(false);
/// Runtime threads between entering [`attach`] and leaving it.
static INSIDE: AtomicUsize = AtomicUsize::new(0);

/// How long [`stop`] waits for threads inside the interpreter (a host callback that never
/// returns must not hang the exit).
const DRAIN_LIMIT: Duration = Duration::from_secs(2);

/// Runs `f` attached to the interpreter, from any thread; `None` once the interpreter is
/// shutting down (or when it cannot be attached to).
pub fn attach<R>(f: impl for<'py> FnOnce(Python<'py>) -> R) -> Option<R> {
    // Counted before the check (both SeqCst): `stop` either sees this thread inside and
    // waits for it, or this thread sees STOPPED and stays out.
    INSIDE.fetch_add(1, Ordering::SeqCst);
    let _leave = Leave;
    if STOPPED.load(Ordering::SeqCst) {
        return None;
    }
    Python::try_attach(f)
}

/// True once [`stop`] ran.
pub fn stopped() -> bool {
    STOPPED.load(Ordering::SeqCst)
}

struct Leave;

impl Drop for Leave {
    fn drop(&mut self) {
        INSIDE.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Closes the interpreter to runtime threads and waits (GIL released) for those inside to
/// leave; registered with `atexit`, so it runs before finalization begins.
#[pyfunction]
pub fn stop(py: Python<'_>) {
    STOPPED.store(true, Ordering::SeqCst);
    py.detach(|| {
        let limit = Instant::now() + DRAIN_LIMIT;
        while INSIDE.load(Ordering::SeqCst) > 0 && Instant::now() < limit {
            std::thread::sleep(Duration::from_millis(1));
        }
    });
}

/// An asyncio future, on the running event loop, that `fut` resolves (its error as the
/// matching `dmdelegate` exception). `fut` runs on the shared runtime to its end even when
/// the awaiting task is cancelled (cancellation only stops the wait); once the interpreter
/// is shutting down its result is dropped unseen.
pub fn awaitable<'py, T, F>(py: Python<'py>, fut: F) -> PyResult<Bound<'py, PyAny>>
where
    F: Future<Output = Result<T, Error>> + Send + 'static,
    T: for<'a> IntoPyObject<'a> + Send + 'static,
{
    let event_loop = py.import("asyncio")?.call_method0("get_running_loop")?;
    let future = event_loop.call_method0("create_future")?;
    let (target, on_loop) = (future.clone().unbind(), event_loop.unbind());
    pyo3_async_runtimes::tokio::get_runtime().spawn(async move {
        let result = fut.await;
        attach(move |py| {
            let (ok, value) = match result.map_err(|e| to_py_err(py, e)) {
                Ok(v) => match v.into_py_any(py) {
                    Ok(v) => (true, v),
                    Err(e) => (false, e.into_value(py).into_any()),
                },
                Err(e) => (false, e.into_value(py).into_any()),
            };
            // Resolved on the loop's own thread: asyncio futures are not thread-safe.
            let scheduled = RESOLVE
                .get_or_try_init(py, || wrap_pyfunction!(resolve, py).map(Bound::unbind))
                .and_then(|resolve| {
                    on_loop.bind(py).call_method1(
                        "call_soon_threadsafe",
                        (resolve.bind(py), target, ok, value),
                    )
                });
            if let Err(e) = scheduled {
                // The loop is closed: nobody is waiting any more.
                tracing::debug!(error = %e, "an _async result found its event loop closed");
            }
        });
    });
    Ok(future)
}

/// [`resolve`] as a Python callable, made once.
static RESOLVE: PyOnceLock<Py<PyCFunction>> = PyOnceLock::new();

/// An asyncio future already resolved with `value` (for `__aenter__`/`__aexit__`, which
/// have nothing to wait for).
pub fn ready<'py>(py: Python<'py>, value: Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
    let future = py
        .import("asyncio")?
        .call_method0("get_running_loop")?
        .call_method0("create_future")?;
    future.call_method1("set_result", (value,))?;
    Ok(future)
}

/// Sets the future's result or exception, unless it is already done (cancelled).
#[pyfunction]
fn resolve(future: &Bound<'_, PyAny>, ok: bool, value: &Bound<'_, PyAny>) -> PyResult<()> {
    if future.call_method0("done")?.extract::<bool>()? {
        return Ok(());
    }
    let method = if ok { "set_result" } else { "set_exception" };
    future.call_method1(method, (value,))?;
    Ok(())
}
