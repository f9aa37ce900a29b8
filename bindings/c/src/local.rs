//! `dmd_local_pair`: two DM Servers on loopback, HTTPS with mutual TLS under a fresh test
//! PKI, around the simulated device (on the network, in SyncML DM 1.2) and DMS-2's
//! Bootstrap Server: `dmdelegate_net::LocalPair` on a runtime the handle owns. For tests
//! and demos of the C ABI.

use std::sync::Mutex;
use std::time::Duration;

use dmdelegate::{DelegationType, Method, SessionInfo, State};
use dmdelegate_net::{LocalOptions, LocalPair};
use tokio::runtime::Runtime;

use crate::guard::{arg_ref, check_out, Failure};
use crate::result::dmd_result;

/// How long `dmd_local_pair_run` waits for each server to end the delegation. Generous:
/// under valgrind everything (TLS above all) runs tens of times slower.
const RUN_TIMEOUT: Duration = Duration::from_secs(120);
/// How long `dmd_local_pair_run` then waits for the device's DM sessions to close.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long `dmd_local_pair_free` waits for the runtime's tasks to stop.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(10);

/// Del_Type: how much authority passes. The numbers are stable; 0 is not a type.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum dmd_delegation_type {
    /// Full: DMS-2 takes over everything DMS-1 had; DMS-1's account is deleted.
    DMD_DELEGATION_TYPE_FULL = 1,
    /// Partial: only the listed subtrees, with the listed rights; DMS-1 stays.
    DMD_DELEGATION_TYPE_PARTIAL = 2,
}

/// How a `dmd_delegation_type` travels into the library: as its integer, so that a value
/// outside the enum is an invalid argument, never undefined behaviour. The header names the
/// parameter type `dmd_delegation_type` (cbindgen renames it).
pub type dmd_delegation_type_arg = u32;

pub(crate) fn delegation_type(raw: dmd_delegation_type_arg) -> Result<DelegationType, Failure> {
    match raw {
        x if x == dmd_delegation_type::DMD_DELEGATION_TYPE_FULL as u32 => Ok(DelegationType::Full),
        x if x == dmd_delegation_type::DMD_DELEGATION_TYPE_PARTIAL as u32 => {
            Ok(DelegationType::Partial)
        }
        other => Err(Failure::invalid(
            "type",
            format!("{other} is not a dmd_delegation_type (1 Full, 2 Partial)"),
        )),
    }
}

/// The state of one delegation session at one server (the state tables are in
/// `docs/protocol.md`). The numbers are stable.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum dmd_state {
    /// 0: the server has no session with this id (for example the peer never received the
    /// DELEGATION_NOTIF).
    DMD_STATE_NONE = 0,
    /// Initiator: DELEGATION_NOTIF sent, waiting for DELEGATION_RES.
    DMD_STATE_NOTIF_SENT = 1,
    /// DMS-1: ack exchanged, waiting for DELEGATION_START.
    DMD_STATE_AWAITING_START = 2,
    /// DMS-1, Methods 3/4: Bootstrap Server URL requested, waiting for the answer.
    DMD_STATE_AWAITING_BOOTSTRAP_URL = 3,
    /// DMS-1: applying the client-preparation plan.
    DMD_STATE_PREPARING = 4,
    /// DMS-1: client prepared, waiting for DELEGATION_CONFIRM.
    DMD_STATE_AWAITING_CONFIRM = 5,
    /// DMS-1: CONFIRM received, cleaning up (Full: deleting its own account).
    DMD_STATE_FINALIZING = 6,
    /// DMS-2, Methods 1/2: START sent, waiting for DELEGATION_PREPARED.
    DMD_STATE_AWAITING_PREPARED = 7,
    /// DMS-2, Methods 3/4: START sent, waiting for the Bootstrap Server URL request.
    DMD_STATE_AWAITING_BOOTSTRAP_REQUEST = 8,
    /// DMS-2, Methods 1/2: opening its DM session with the client.
    DMD_STATE_OPENING_SESSION = 9,
    /// DMS-2, Methods 3/4: URL given, waiting for the client's first session.
    DMD_STATE_AWAITING_CLIENT = 10,
    /// Undoing the client changes.
    DMD_STATE_ROLLING_BACK = 11,
    /// Terminal: the delegation is in force.
    DMD_STATE_COMPLETED = 12,
    /// Terminal: the peer (or this server's policy) refused; nothing was changed.
    DMD_STATE_REJECTED = 13,
    /// Terminal: failed and fully undone.
    DMD_STATE_ROLLED_BACK = 14,
    /// Terminal: failed, and some inverse operations failed too; the device needs
    /// attention.
    DMD_STATE_ROLLBACK_FAILED = 15,
    /// Terminal: a temporary delegation ended and was reverted.
    DMD_STATE_EXPIRED = 16,
}

impl From<State> for dmd_state {
    fn from(state: State) -> Self {
        match state {
            State::NotifSent => dmd_state::DMD_STATE_NOTIF_SENT,
            State::AwaitingStart => dmd_state::DMD_STATE_AWAITING_START,
            State::AwaitingBootstrapUrl => dmd_state::DMD_STATE_AWAITING_BOOTSTRAP_URL,
            State::Preparing => dmd_state::DMD_STATE_PREPARING,
            State::AwaitingConfirm => dmd_state::DMD_STATE_AWAITING_CONFIRM,
            State::Finalizing => dmd_state::DMD_STATE_FINALIZING,
            State::AwaitingPrepared => dmd_state::DMD_STATE_AWAITING_PREPARED,
            State::AwaitingBootstrapRequest => dmd_state::DMD_STATE_AWAITING_BOOTSTRAP_REQUEST,
            State::OpeningSession => dmd_state::DMD_STATE_OPENING_SESSION,
            State::AwaitingClient => dmd_state::DMD_STATE_AWAITING_CLIENT,
            State::RollingBack => dmd_state::DMD_STATE_ROLLING_BACK,
            State::Completed => dmd_state::DMD_STATE_COMPLETED,
            State::Rejected => dmd_state::DMD_STATE_REJECTED,
            State::RolledBack => dmd_state::DMD_STATE_ROLLED_BACK,
            State::RollbackFailed => dmd_state::DMD_STATE_ROLLBACK_FAILED,
            State::Expired => dmd_state::DMD_STATE_EXPIRED,
        }
    }
}

/// How one delegation ended, at both servers.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct dmd_outcome {
    /// DMS-1's (the Delegating DM Server's) final state.
    pub dms1_state: dmd_state,
    /// DMS-2's (the Delegated DM Server's) final state.
    pub dms2_state: dmd_state,
    /// The failure reason code (100-999, `docs/protocol.md`) DMS-1 recorded, else the one
    /// DMS-2 recorded; 0 when neither recorded one (a completed delegation).
    pub reason_code: u16,
}

/// Two DM Servers (DMS-1 `dms1.operator.example`, DMS-2 `dms2.enterprise.example`) serving
/// HTTPS with mutual TLS on loopback, a simulated device on the network managed by DMS-1,
/// and DMS-2's Bootstrap Server. Opaque: create it with `dmd_local_pair_new`, free it with
/// `dmd_local_pair_free`.
///
/// It runs on its own multi-thread runtime (two worker threads) that the handle owns;
/// no C code ever runs on those threads. One pair runs one delegation: afterwards the
/// device is delegated.
pub struct dmd_local_pair {
    pair: Option<LocalPair>,
    runtime: Option<Runtime>,
    used: Mutex<bool>,
}

impl Drop for dmd_local_pair {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            {
                // Some parts' destructors reach for the runtime (to abort their tasks).
                let _inside = runtime.enter();
                drop(self.pair.take());
            }
            runtime.shutdown_timeout(SHUTDOWN_TIMEOUT);
        }
    }
}

/// Generates a test PKI, binds loopback ports and starts both servers, the device and the
/// Bootstrap Server; stores the new pair in `*out`. Takes a few hundred milliseconds.
///
/// Returns `DMD_OK`, `DMD_ERR_RUNTIME` when the runtime's threads cannot be started, or
/// `DMD_ERR_TRANSPORT` when the PKI, the sockets or TLS cannot be set up.
///
/// - Ownership: on success `*out` is a new pair the caller owns and frees with
///   `dmd_local_pair_free`; on failure `*out` is not written.
/// - NULL: `out` NULL gives `DMD_ERR_NULL_ARGUMENT`.
/// - Threads: any thread, concurrently.
///
/// # Safety
///
/// `out` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn dmd_local_pair_new(out: *mut *mut dmd_local_pair) -> dmd_result {
    crate::ffi_guard!({
        check_out(out, "out")?;
        crate::guard::not_on_library_thread("dmd_local_pair_new")?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("dmdelegate")
            .enable_all()
            .build()
            .map_err(|e| Failure::new(dmd_result::DMD_ERR_RUNTIME, format!("runtime: {e}")))?;
        // Built first, so that a failure below shuts the runtime down through `Drop`.
        let mut handle = dmd_local_pair {
            pair: None,
            runtime: Some(runtime),
            used: Mutex::new(false),
        };
        let started = match &handle.runtime {
            Some(runtime) => runtime.block_on(LocalPair::start(LocalOptions::default())),
            None => unreachable!("set above"),
        };
        let pair = started.map_err(|e| {
            Failure::new(
                dmd_result::DMD_ERR_TRANSPORT,
                format!("starting the servers: {e}"),
            )
        })?;
        handle.pair = Some(pair);
        // SAFETY: `out` is non-NULL and writable.
        unsafe { out.write(Box::into_raw(Box::new(handle))) };
        Ok(())
    })
}

/// Waits for session `id` to end at `server`; `None` when the server never had it.
async fn final_info(
    server: &dmdelegate::DelegationServer,
    id: &str,
) -> Result<Option<SessionInfo>, Failure> {
    // A transport that delivers in the background may not have brought the session yet.
    for _ in 0..50 {
        match server.wait_until_terminal(id, RUN_TIMEOUT).await {
            Ok(info) => return Ok(Some(info)),
            Err(dmdelegate::Error::UnknownSession(_)) => {
                tokio::time::sleep(Duration::from_millis(20)).await
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(None)
}

/// Runs one delegation between the pair's servers, by `method` (1-4) and `type`, and
/// blocks the calling thread until both servers have ended it (at most about two minutes
/// each) and the device's DM sessions have closed; stores how it ended in `*out`.
///
/// Methods 1 and 3 are initiated by DMS-1, 2 and 4 by DMS-2. Partial delegates
/// `./Vendor/Apps` (Add Get Replace); Full the whole tree.
///
/// Returns `DMD_OK` when both servers reached a terminal state, whichever it is (check
/// `out->dms1_state` and `out->dms2_state` for `DMD_STATE_COMPLETED`);
/// `DMD_ERR_INVALID_ARGUMENT` for a method outside 1-4 or an unknown type;
/// `DMD_ERR_INVALID_STATE` when this pair has already run a delegation (or is running
/// one); `DMD_ERR_FAILED` when a server did not end in time; the initiator's error when it
/// could not start the delegation.
///
/// - Ownership: `pair` stays the caller's; `*out` is written only on success.
/// - NULL: `pair` or `out` NULL gives `DMD_ERR_NULL_ARGUMENT`.
/// - Threads: any thread except the library's own (no C code runs on those). Calls on the
///   same pair from several threads are safe: one runs, the others get
///   `DMD_ERR_INVALID_STATE`.
///
/// # Safety
///
/// `pair` is NULL or a live pair; `out` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn dmd_local_pair_run(
    pair: *mut dmd_local_pair,
    method: u8,
    r#type: dmd_delegation_type_arg,
    out: *mut dmd_outcome,
) -> dmd_result {
    crate::ffi_guard!({
        // SAFETY: forwarded from the caller; only shared access is needed.
        let handle = unsafe { arg_ref(pair.cast_const(), "pair") }?;
        check_out(out, "out")?;
        let method = Method::from_number(method).ok_or_else(|| {
            Failure::invalid("method", format!("{method} is not a method (1 to 4)"))
        })?;
        let dtype = delegation_type(r#type)?;
        let (Some(lp), Some(runtime)) = (&handle.pair, &handle.runtime) else {
            return Err(Failure::new(
                dmd_result::DMD_ERR_INVALID_STATE,
                "the pair is not running",
            ));
        };
        {
            let mut used = handle.used.lock().unwrap_or_else(|p| p.into_inner());
            if *used {
                return Err(Failure::new(
                    dmd_result::DMD_ERR_INVALID_STATE,
                    "this pair has already run a delegation: create a new pair",
                ));
            }
            *used = true;
        }
        crate::guard::not_on_library_thread("dmd_local_pair_run")?;
        let outcome = runtime.block_on(async {
            let tb = &lp.testbed;
            let id = tb
                .initiator(method)
                .start_delegation(tb.request(method, dtype))
                .await?;
            // The initiator knows the session first.
            let (first, second) = (tb.initiator(method), tb.responder(method));
            let a = final_info(first, &id).await?;
            let b = final_info(second, &id).await?;
            let (one, two) = if std::ptr::eq(first, &tb.dms1) {
                (a, b)
            } else {
                (b, a)
            };
            // Let the last DM sessions with the device finish.
            lp.settle(SETTLE_TIMEOUT).await;
            let state = |i: &Option<SessionInfo>| {
                i.as_ref()
                    .map_or(dmd_state::DMD_STATE_NONE, |i| i.state.into())
            };
            let reason = [&one, &two]
                .into_iter()
                .flatten()
                .find_map(|i| i.reason.as_ref().map(|r| r.code))
                .unwrap_or(0);
            Ok::<_, Failure>(dmd_outcome {
                dms1_state: state(&one),
                dms2_state: state(&two),
                reason_code: reason,
            })
        })?;
        // SAFETY: `out` is non-NULL and writable.
        unsafe { out.write(outcome) };
        Ok(())
    })
}

/// Stops both servers, the device and the Bootstrap Server, and frees the pair. Blocks
/// until the runtime's threads have stopped (at most about ten seconds).
///
/// - Ownership: takes `pair`; it must not be used afterwards.
/// - NULL: `pair` NULL does nothing.
/// - Threads: any thread except the library's own, once no other thread uses the pair.
///
/// # Safety
///
/// `pair` is NULL or a pair from `dmd_local_pair_new` not yet freed.
#[no_mangle]
pub unsafe extern "C" fn dmd_local_pair_free(pair: *mut dmd_local_pair) {
    crate::ffi_guard!((); {
        if !pair.is_null() {
            // SAFETY: the caller gives back a pointer from `Box::into_raw`, once.
            drop(unsafe { Box::from_raw(pair) });
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ptr::null_mut;

    #[test]
    fn every_state_maps_to_its_own_number() {
        let states = [
            State::NotifSent,
            State::AwaitingStart,
            State::AwaitingBootstrapUrl,
            State::Preparing,
            State::AwaitingConfirm,
            State::Finalizing,
            State::AwaitingPrepared,
            State::AwaitingBootstrapRequest,
            State::OpeningSession,
            State::AwaitingClient,
            State::RollingBack,
            State::Completed,
            State::Rejected,
            State::RolledBack,
            State::RollbackFailed,
            State::Expired,
        ];
        for (i, s) in states.into_iter().enumerate() {
            assert_eq!(dmd_state::from(s) as u32, i as u32 + 1, "{s:?}");
        }
    }

    #[test]
    fn a_pair_runs_one_delegation() {
        let mut pair = null_mut();
        assert_eq!(unsafe { dmd_local_pair_new(&mut pair) }, dmd_result::DMD_OK);
        let mut out = dmd_outcome {
            dms1_state: dmd_state::DMD_STATE_NONE,
            dms2_state: dmd_state::DMD_STATE_NONE,
            reason_code: 7,
        };
        let partial = dmd_delegation_type::DMD_DELEGATION_TYPE_PARTIAL as u32;
        assert_eq!(
            unsafe { dmd_local_pair_run(pair, 5, partial, &mut out) },
            dmd_result::DMD_ERR_INVALID_ARGUMENT
        );
        assert_eq!(
            unsafe { dmd_local_pair_run(pair, 1, 0, &mut out) },
            dmd_result::DMD_ERR_INVALID_ARGUMENT
        );
        assert_eq!(out.reason_code, 7, "not written on failure");
        assert_eq!(
            unsafe { dmd_local_pair_run(pair, 1, partial, &mut out) },
            dmd_result::DMD_OK,
            "{}",
            crate::guard::last_error()
        );
        assert_eq!(
            out,
            dmd_outcome {
                dms1_state: dmd_state::DMD_STATE_COMPLETED,
                dms2_state: dmd_state::DMD_STATE_COMPLETED,
                reason_code: 0,
            }
        );
        assert_eq!(
            unsafe { dmd_local_pair_run(pair, 1, partial, &mut out) },
            dmd_result::DMD_ERR_INVALID_STATE
        );
        unsafe { dmd_local_pair_free(pair) };
    }
}
