//! Failures past the commit point of a Full delegation: DMS-1 has received CONFIRM and
//! attempted the deletion of its own account, which has no inverse. From there a failure
//! finishes the delegation (the device shows the account gone), rolls back only when the
//! device shows the account still there, and otherwise leaves the session to an operator;
//! it never tells DMS-2, which has completed, to roll back a delegation that may be in
//! force.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use common::{assert_same_tree, settle};
use dmdelegate::ops::status;
use dmdelegate::sim::{DeviceFault, SimHost, Testbed, TestbedOptions};
use dmdelegate::{
    AclCommand, ClientCommand, CommandOutput, DelegationOffer, DelegationType, DeviceError,
    DeviceInfo, DmAcc, Event, EventKind, Host, HostError, Method, PolicyDecision, ReasonCode,
    SessionInfo, State,
};

const ID: &str = "commit-point-1";

/// What DMS-1's host does to the deletion of DMS-1's own account.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lose {
    /// Nothing: the host reports what the device answered.
    Nothing,
    /// The device applies it, the host reports 500 (the answer was lost).
    Answer,
    /// As `Answer`, and the device is unreachable from then on.
    AnswerAndDevice,
}

/// DMS-1's host: the [`SimHost`], except for the deletion of `target` (DMS-1's account).
struct LossyHost {
    inner: Arc<SimHost>,
    target: Arc<Mutex<Option<(String, Lose)>>>,
    device: Arc<Mutex<Option<Arc<dmdelegate::sim::SimDevice>>>>,
}

#[async_trait]
impl Host for LossyHost {
    async fn accept_delegation(&self, offer: &DelegationOffer) -> PolicyDecision {
        self.inner.accept_delegation(offer).await
    }

    async fn execute(
        &self,
        device: &DeviceInfo,
        command: &ClientCommand,
    ) -> Result<CommandOutput, DeviceError> {
        let out = self.inner.execute(device, command).await;
        let target = self.target.lock().unwrap().clone();
        let hit = match (&target, command) {
            (Some((uri, lose)), ClientCommand::Delete { uri: u }) if u == uri => Some(*lose),
            _ => None,
        };
        match hit {
            Some(Lose::Answer) if out.is_ok() => {
                *self.target.lock().unwrap() = None;
                Err(DeviceError::new(
                    status::COMMAND_FAILED,
                    "the answer was lost (the device applied the command)",
                ))
            }
            Some(Lose::AnswerAndDevice) if out.is_ok() => {
                *self.target.lock().unwrap() = None;
                if let Some(d) = self.device.lock().unwrap().as_ref() {
                    d.set_reachable(false);
                }
                Err(DeviceError::new(
                    status::UNREACHABLE,
                    "the connection broke",
                ))
            }
            _ => out,
        }
    }

    async fn open_dm_session(&self, session: &SessionInfo) -> Result<(), HostError> {
        self.inner.open_dm_session(session).await
    }

    async fn dm_account(&self, device: &DeviceInfo) -> Result<DmAcc, HostError> {
        self.inner.dm_account(device).await
    }

    async fn bootstrap_server_url(&self, device: &DeviceInfo) -> Result<String, HostError> {
        self.inner.bootstrap_server_url(device).await
    }

    fn on_event(&self, event: &Event) {
        self.inner.on_event(event)
    }
}

/// A testbed whose DMS-1 host treats the deletion of DMS-1's account as `lose` says.
fn testbed(lose: Lose) -> Testbed {
    let target: Arc<Mutex<Option<(String, Lose)>>> = Arc::new(Mutex::new(None));
    let device = Arc::new(Mutex::new(None));
    let (t, d) = (target.clone(), device.clone());
    let tb = Testbed::with_options(TestbedOptions {
        host: Some(Box::new(move |id, sim| -> Arc<dyn Host> {
            if id == Testbed::DMS1 {
                Arc::new(LossyHost {
                    inner: sim,
                    target: t.clone(),
                    device: d.clone(),
                })
            } else {
                sim
            }
        })),
        ..Default::default()
    });
    let own = tb.device.accounts_of(Testbed::DMS1);
    assert_eq!(own.len(), 1, "DMS-1 starts with one account");
    *target.lock().unwrap() = Some((format!("./DMAcc/{}", own[0]), lose));
    *device.lock().unwrap() = Some(tb.device.clone());
    tb
}

async fn run(tb: &Testbed, method: Method) -> (SessionInfo, SessionInfo) {
    let mut req = tb.request(method, DelegationType::Full);
    req.session_id = Some(ID.into());
    tb.initiator(method).start_delegation(req).await.unwrap();
    settle(tb).await;
    (
        tb.dms1.session(ID).await.unwrap(),
        tb.dms2.session(ID).await.unwrap(),
    )
}

fn failures_sent(tb: &Testbed) -> usize {
    tb.network
        .trace()
        .iter()
        .filter(|l| l.contains("DELEGATION_FAILURE"))
        .count()
}

fn undo_events(tb: &Testbed) -> Vec<EventKind> {
    tb.host1
        .events()
        .into_iter()
        .map(|e| e.kind)
        .filter(|k| {
            matches!(
                k,
                EventKind::Failed { .. }
                    | EventKind::RolledBack { .. }
                    | EventKind::RollbackIncomplete { .. }
            )
        })
        .collect()
}

/// The delegation is in force on the device exactly as after a fault-free run.
fn assert_in_force(tb: &Testbed, reference: &str, label: &str) {
    assert!(
        tb.device.accounts_of(Testbed::DMS1).is_empty(),
        "{label}: DMS-1's account is gone"
    );
    assert_eq!(
        tb.device.accounts_of(Testbed::DMS2).len(),
        1,
        "{label}: DMS-2's account installed"
    );
    assert!(
        tb.device.permits(
            Testbed::DMS2,
            AclCommand::Replace,
            "./Vendor/Apps/Mail/Server"
        ),
        "{label}: DMS-2 holds the rights"
    );
    assert_same_tree(&tb.device.dump(), reference, label);
}

/// The node name of DMS-1's account on a fresh testbed device.
fn reference_own() -> String {
    let tb = Testbed::new();
    tb.device.accounts_of(Testbed::DMS1).remove(0)
}

/// The device after a fault-free Full delegation with `method`.
async fn reference(method: Method) -> String {
    let tb = testbed(Lose::Nothing);
    let (one, two) = run(&tb, method).await;
    assert_eq!((one.state, two.state), (State::Completed, State::Completed));
    tb.device.dump()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_host_applying_the_commit_but_reporting_500_completes_the_delegation() {
    for method in Method::ALL {
        let label = format!("{method} Full, commit applied, 500 reported");
        let reference = reference(method).await;
        let tb = testbed(Lose::Answer);
        let (one, two) = run(&tb, method).await;
        assert_eq!(
            (one.state, two.state),
            (State::Completed, State::Completed),
            "{label}: DMS-1 {:?} ({:?}) via {:?}",
            one.state,
            one.reason,
            one.history
        );
        assert_eq!(one.reason, None, "{label}");
        assert_eq!(one.pending_operations, 0, "{label}: journal discarded");
        let path: Vec<State> = one.history.iter().map(|s| s.state).collect();
        assert_eq!(
            &path[path.len() - 2..],
            &[State::Finalizing, State::Completed],
            "{label}: finished, not rolled back: {path:?}"
        );
        assert_eq!(failures_sent(&tb), 0, "{label}: DMS-2 was told nothing");
        assert_eq!(undo_events(&tb), Vec::new(), "{label}: nothing undone");
        assert!(
            tb.host1
                .events()
                .iter()
                .any(|e| e.kind == EventKind::Completed),
            "{label}: the host learns it completed"
        );
        // The 500 was followed by a read of the account node (404), and nothing was sent
        // to the device again.
        let log = tb.device.log();
        let own = format!(": Delete ./DMAcc/{} ->", reference_own());
        let own_deletes = log.iter().filter(|l| l.contains(&own)).count();
        assert_eq!(own_deletes, 1, "{label}: {log:#?}");
        assert!(
            log.last().is_some_and(|l| l.contains(": Get ./DMAcc/")
                && l.contains("?prop=ACL")
                && l.ends_with("404")),
            "{label}: the commit was checked: {log:#?}"
        );
        assert_in_force(&tb, &reference, &label);
        // A later deadline check finds nothing to do.
        tb.clock.advance(Duration::from_secs(24 * 3600));
        assert_eq!(tb.dms1.expire_due().await.unwrap(), 0, "{label}");
        assert_eq!(tb.dms2.expire_due().await.unwrap(), 0, "{label}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_commit_refused_with_500_and_not_applied_still_rolls_back() {
    // The device did not apply the deletion (its account still there): nothing was
    // committed, so the delegation rolls back and DMS-2 is told, as before the commit point.
    let tb = testbed(Lose::Nothing);
    let before = tb.device.dump();
    let own = tb.device.accounts_of(Testbed::DMS1)[0].clone();
    tb.device.inject_fault(DeviceFault {
        matching: format!("Delete ./DMAcc/{own}"),
        skip: 0,
        status: 500,
    });
    let (one, two) = run(&tb, Method::DelegatingInitiates).await;
    assert_eq!(
        (one.state, two.state),
        (State::RolledBack, State::RolledBack)
    );
    assert_eq!(
        one.reason.as_ref().map(|r| r.code),
        Some(ReasonCode::ClientOperationFailed.code())
    );
    assert_eq!(one.pending_operations, 0);
    assert_eq!(failures_sent(&tb), 1, "DMS-2 was told to roll back");
    assert_same_tree(&tb.device.dump(), &before, "rolled back");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_the_device_cannot_confirm_is_left_to_an_operator_never_rolled_back() {
    let reference = reference(Method::DelegatingInitiates).await;
    let tb = testbed(Lose::AnswerAndDevice);
    let (one, two) = run(&tb, Method::DelegatingInitiates).await;
    // The device cannot be asked: DMS-1 waits to ask again, DMS-2 has completed.
    assert_eq!(
        (one.state, two.state),
        (State::Finalizing, State::Completed)
    );
    assert!(one.deadline.is_some(), "asked again at a deadline");
    assert!(one.pending_operations > 0, "the journal is kept");

    // Two more checks at the deadlines, then the session is left for an operator.
    tb.clock.advance(Duration::from_secs(31));
    assert_eq!(tb.dms1.expire_due().await.unwrap(), 1);
    assert_eq!(
        tb.dms1.session(ID).await.unwrap().state,
        State::Finalizing,
        "second check"
    );
    tb.clock.advance(Duration::from_secs(31));
    assert_eq!(tb.dms1.expire_due().await.unwrap(), 1);
    settle(&tb).await;
    let one = tb.dms1.session(ID).await.unwrap();
    assert_eq!(
        one.state,
        State::RollbackFailed,
        "the device needs attention"
    );
    let reason = one.reason.clone().expect("a reason");
    assert_eq!(reason.code, ReasonCode::ClientOperationFailed.code());
    assert!(reason.text.contains("commit point"), "{reason:?}");
    assert!(
        one.pending_operations > 0,
        "the journal is kept for the operator"
    );
    let gets = tb
        .device
        .log()
        .iter()
        .filter(|l| l.contains(": Get ./DMAcc/") && l.ends_with("503"))
        .count();
    assert_eq!(gets, 3, "three checks: {:#?}", tb.device.log());
    // Nothing was undone and DMS-2 was told nothing: the delegation is in force.
    assert!(undo_events(&tb)
        .iter()
        .all(|k| matches!(k, EventKind::RollbackIncomplete { .. })));
    assert_eq!(failures_sent(&tb), 0);
    assert_eq!(tb.dms2.session(ID).await.unwrap().state, State::Completed);
    // A restarted server does not send a FAILURE for it either.
    let since = dmdelegate::Timestamp(0);
    assert_eq!(tb.dms1.resend_failures(since).await.unwrap(), 0);
    assert_eq!(failures_sent(&tb), 0);
    // The journal keeps it from being purged.
    let later = dmdelegate::Clock::now(&tb.clock).plus(Duration::from_secs(3600));
    assert_eq!(tb.dms1.purge_finished(later).await.unwrap(), 0);

    // Once the device answers again, the operator's retry finds the commit done.
    tb.device.set_reachable(true);
    let one = tb.dms1.retry_rollback(ID).await.unwrap();
    assert_eq!(one.state, State::Completed);
    assert_eq!(one.reason, None);
    assert_eq!(one.pending_operations, 0);
    settle(&tb).await;
    assert_eq!(failures_sent(&tb), 0);
    assert_eq!(tb.dms2.session(ID).await.unwrap().state, State::Completed);
    assert_in_force(&tb, &reference, "after the operator's retry");
}
