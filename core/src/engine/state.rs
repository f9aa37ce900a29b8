//! Session states, the transition table, and the persisted session record.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::dmacc::DmAcc;
use crate::message::{
    DelegationInfo, DelegationType, MessageKind, Method, Reason, Role, Timestamp,
};
use crate::ops::ClientCommand;

/// The state of one delegation session at one server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum State {
    /// Initiator: DELEGATION_NOTIF sent, waiting for DELEGATION_RES.
    NotifSent,
    /// DMS-1: ack exchanged, waiting for DELEGATION_START.
    AwaitingStart,
    /// DMS-1, Methods 3/4: Bootstrap Server URL requested, waiting for the answer.
    AwaitingBootstrapUrl,
    /// DMS-1: applying the client-preparation plan.
    Preparing,
    /// DMS-1: client prepared, waiting for DELEGATION_CONFIRM.
    AwaitingConfirm,
    /// DMS-1: CONFIRM received, cleaning up (Full: deleting its own account).
    Finalizing,
    /// DMS-2, Methods 1/2: START sent, waiting for DELEGATION_PREPARED.
    AwaitingPrepared,
    /// DMS-2, Methods 3/4: START sent, waiting for the Bootstrap Server URL request.
    AwaitingBootstrapRequest,
    /// DMS-2, Methods 1/2: opening its DM session with the client.
    OpeningSession,
    /// DMS-2, Methods 3/4: URL given, waiting for the client's first session.
    AwaitingClient,
    /// Undoing the client changes.
    RollingBack,
    /// Done: the delegation is in force.
    Completed,
    /// The peer (or this server's policy) refused the delegation; nothing was changed.
    Rejected,
    /// Failed and fully undone.
    RolledBack,
    /// Failed, and some inverse operations failed too: the device needs attention. Also
    /// DMS-1 past the commit point of a Full delegation when the device, asked again and
    /// again, never told whether its own account is gone (no FAILURE is sent then).
    RollbackFailed,
    /// A temporary delegation ended and was reverted.
    Expired,
}

impl State {
    /// True for states no message moves the session out of (except FAILURE after Completed).
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            State::Completed
                | State::Rejected
                | State::RolledBack
                | State::RollbackFailed
                | State::Expired
        )
    }

    /// The message kinds the peer may send in this state, for this role and method.
    /// DELEGATION_FAILURE is accepted in every non-terminal state and is not listed.
    pub fn expected(self, role: Role, method: Method) -> &'static [MessageKind] {
        use MessageKind as K;
        match (role, self) {
            (_, State::NotifSent) => &[K::Res],
            (Role::Delegating, State::AwaitingStart) => &[K::Start],
            (Role::Delegating, State::AwaitingBootstrapUrl) => &[K::BootstrapUrl],
            (Role::Delegating, State::AwaitingConfirm) => &[K::Confirm],
            (Role::Delegated, State::AwaitingPrepared) if !method.uses_bootstrap() => {
                &[K::Prepared]
            }
            (Role::Delegated, State::AwaitingBootstrapRequest) if method.uses_bootstrap() => {
                &[K::BootstrapUrlRequest]
            }
            _ => &[],
        }
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// Deadlines per step. Each is measured from entering the waiting state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Timeouts {
    /// Waiting for the peer's next protocol message (RES, START, URL request or answer).
    pub response: Duration,
    /// DMS-2 waiting for DELEGATION_PREPARED while DMS-1 prepares the client.
    pub preparation: Duration,
    /// DMS-1 waiting for DELEGATION_CONFIRM in Methods 1/2.
    pub confirm: Duration,
    /// DMS-1 waiting for DELEGATION_CONFIRM in Methods 3/4 (the client may never return).
    pub bootstrap_confirm: Duration,
    /// DMS-2 waiting for the client's first session in Methods 3/4.
    pub client_session: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            response: Duration::from_secs(30),
            preparation: Duration::from_secs(120),
            confirm: Duration::from_secs(300),
            bootstrap_confirm: Duration::from_secs(900),
            client_session: Duration::from_secs(900),
        }
    }
}

/// The state of one applied (or about to be applied) client operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum JournalStatus {
    /// Journaled; the device may or may not have applied it (crash window).
    Pending,
    /// The device applied it.
    Applied,
    /// Its inverse was applied.
    Undone,
}

/// One client operation and its exact inverse, journaled before it is applied.
#[derive(Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JournalEntry {
    /// The operation. The commands are shared, not copied: the engine saves the record
    /// before every client operation, and an in-memory store keeps a copy each time
    /// (serialized, a shared command is the command itself).
    pub command: Arc<ClientCommand>,
    /// What undoes it; `None` only for the final, committing delete of DMS-1's account.
    pub inverse: Option<Arc<ClientCommand>>,
    /// Progress.
    pub status: JournalStatus,
    /// True for entries made while finalizing (dropped when a temporary delegation is kept).
    pub finalizing: bool,
}

impl Clone for JournalEntry {
    fn clone(&self) -> Self {
        JournalEntry {
            command: self.command.clone(),
            inverse: self.inverse.clone(),
            status: self.status,
            finalizing: self.finalizing,
        }
    }

    /// Leaves the shared commands alone when they are already the same: a store copies
    /// the whole journal at every save, and touching each command's reference count
    /// every time makes the two worker threads fight over those counters.
    fn clone_from(&mut self, source: &Self) {
        share(&mut self.command, &source.command);
        share_optional(&mut self.inverse, &source.inverse);
        self.status = source.status;
        self.finalizing = source.finalizing;
    }
}

/// Makes `mine` point where `theirs` does, touching the counts only when it does not.
fn share<T>(mine: &mut Arc<T>, theirs: &Arc<T>) {
    if !Arc::ptr_eq(mine, theirs) {
        *mine = theirs.clone();
    }
}

/// [`share`] for an optional pointer.
fn share_optional<T>(mine: &mut Option<Arc<T>>, theirs: &Option<Arc<T>>) {
    match (mine, theirs) {
        (Some(mine), Some(theirs)) => share(mine, theirs),
        (mine, theirs) => mine.clone_from(theirs),
    }
}

impl JournalEntry {
    /// True for a committing operation (finalizing, with no inverse: DMS-1 deleting its own
    /// account) that was attempted and not found unapplied.
    pub fn commits(&self) -> bool {
        self.finalizing && self.inverse.is_none() && self.status != JournalStatus::Undone
    }
}

/// One step of a session's history: the state entered and when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Step {
    /// State entered.
    pub state: State,
    /// When.
    pub at: Timestamp,
}

/// Everything a server keeps about one delegation; what a [`crate::SessionStore`] persists.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionRecord {
    /// Session id.
    pub session_id: String,
    /// This server's role.
    pub role: Role,
    /// Method.
    pub method: Method,
    /// Full or Partial.
    pub delegation_type: DelegationType,
    /// The peer's ServerID.
    pub peer: String,
    /// Device and subtrees.
    pub info: DelegationInfo,
    /// End of a temporary delegation.
    pub expires: Option<Timestamp>,
    /// Current state.
    pub state: State,
    /// Sequence number of this server's next message.
    pub next_seq: u32,
    /// Highest sequence number received from the peer.
    pub last_peer_seq: u32,
    /// When the current wait ends.
    pub deadline: Option<Timestamp>,
    /// DMS-2's account (DMS-1: from START; DMS-2: its own). Dropped when purged.
    pub account: Option<Arc<DmAcc>>,
    /// Methods 3/4: DMS-2's Bootstrap Server URL.
    pub bootstrap_url: Option<String>,
    /// DMS-1: node name DMS-2's account got (Methods 1/2), when DMS-1 installed it.
    pub installed_account: Option<String>,
    /// DMS-1: URI of its own account (Full).
    pub own_account_uri: Option<String>,
    /// DMS-1, Methods 3/4: URIs of accounts for DMS-2 that existed before preparation.
    pub preexisting_peer_accounts: Option<Vec<String>>,
    /// DMS-1: URIs of nodes to delete when finalizing (marker and trigger nodes).
    pub cleanup: Vec<String>,
    /// DMS-1: the rollback journal.
    pub journal: Vec<JournalEntry>,
    /// Why the session failed or was refused.
    pub reason: Option<Reason>,
    /// States entered, with times.
    pub history: Vec<Step>,
    /// Created.
    pub created: Timestamp,
    /// Last changed.
    pub updated: Timestamp,
}

impl SessionRecord {
    /// Makes this record equal to `source` field by field, reusing its buffers (`Clone` is derived,
    /// so `clone_from` would clone and then assign): an in-memory store overwrites
    /// its copy of a record at every save, and most fields have not changed since the last.
    pub(crate) fn overwrite_with(&mut self, source: &Self) {
        // Exhaustive, so a new field cannot be forgotten here.
        let SessionRecord {
            session_id,
            role,
            method,
            delegation_type,
            peer,
            info,
            expires,
            state,
            next_seq,
            last_peer_seq,
            deadline,
            account,
            bootstrap_url,
            installed_account,
            own_account_uri,
            preexisting_peer_accounts,
            cleanup,
            journal,
            reason,
            history,
            created,
            updated,
        } = source;
        self.session_id.clone_from(session_id);
        self.role = *role;
        self.method = *method;
        self.delegation_type = *delegation_type;
        self.peer.clone_from(peer);
        // Set when the session starts and never changed: compared, not copied.
        if self.info != *info {
            self.info.clone_from(info);
        }
        self.expires = *expires;
        self.state = *state;
        self.next_seq = *next_seq;
        self.last_peer_seq = *last_peer_seq;
        self.deadline = *deadline;
        share_optional(&mut self.account, account);
        self.bootstrap_url.clone_from(bootstrap_url);
        self.installed_account.clone_from(installed_account);
        self.own_account_uri.clone_from(own_account_uri);
        self.preexisting_peer_accounts
            .clone_from(preexisting_peer_accounts);
        self.cleanup.clone_from(cleanup);
        self.journal.clone_from(journal);
        self.reason.clone_from(reason);
        self.history.clone_from(history);
        self.created = *created;
        self.updated = *updated;
    }

    /// True while the engine still has work for the session: it is running, or it is a
    /// completed temporary delegation that will be reverted at its end.
    pub fn is_active(&self) -> bool {
        !self.state.is_terminal() || (self.state == State::Completed && self.expires.is_some())
    }

    /// True when the session is running and its current wait ended before `now`.
    pub fn is_overdue(&self, now: Timestamp) -> bool {
        !self.state.is_terminal() && self.deadline.is_some_and(|d| d <= now)
    }

    /// True when the session is a completed temporary delegation whose end has come.
    pub fn is_expired(&self, now: Timestamp) -> bool {
        self.state == State::Completed && self.expires.is_some_and(|e| e <= now)
    }

    /// True when the deadline watcher has work for it at `now`: overdue or expired.
    pub fn is_due(&self, now: Timestamp) -> bool {
        self.is_overdue(now) || self.is_expired(now)
    }

    /// True when DMS-1 has attempted (or applied) a committing operation of this session:
    /// past this point a failure or a restart finishes the delegation (or, if the device
    /// cannot tell, leaves it for an operator) and never rolls it back or tells the peer
    /// to roll back, unless the device shows the operation did not happen.
    pub fn past_commit_point(&self) -> bool {
        self.role == Role::Delegating && self.journal.iter().any(JournalEntry::commits)
    }

    /// True when the session ended in failure (rolled back, or not completely) at or
    /// after `since`: its FAILURE may still have to reach the peer after a restart.
    pub fn failed_since(&self, since: Timestamp) -> bool {
        matches!(self.state, State::RolledBack | State::RollbackFailed)
            && self.updated >= since
            && self.reason.is_some()
    }

    /// A fresh record in `NotifSent`, with nothing sent or received yet.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        session_id: String,
        role: Role,
        method: Method,
        delegation_type: DelegationType,
        peer: String,
        info: DelegationInfo,
        expires: Option<Timestamp>,
        now: Timestamp,
    ) -> Self {
        SessionRecord {
            session_id,
            role,
            method,
            delegation_type,
            peer,
            info,
            expires,
            state: State::NotifSent,
            next_seq: 1,
            last_peer_seq: 0,
            deadline: None,
            account: None,
            bootstrap_url: None,
            installed_account: None,
            own_account_uri: None,
            preexisting_peer_accounts: None,
            cleanup: Vec::new(),
            journal: Vec::new(),
            reason: None,
            history: Vec::new(),
            created: now,
            updated: now,
        }
    }
}

/// The public view of a session (no journal, no secrets).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionInfo {
    /// Session id.
    pub session_id: String,
    /// This server's role.
    pub role: Role,
    /// Method.
    pub method: Method,
    /// Full or Partial.
    pub delegation_type: DelegationType,
    /// The peer's ServerID.
    pub peer: String,
    /// Device and subtrees.
    pub info: DelegationInfo,
    /// End of a temporary delegation.
    pub expires: Option<Timestamp>,
    /// Current state.
    pub state: State,
    /// When the current wait ends.
    pub deadline: Option<Timestamp>,
    /// Why it failed, if it did.
    pub reason: Option<Reason>,
    /// Journaled client operations not yet undone (DMS-1).
    pub pending_operations: usize,
    /// States entered, with times.
    pub history: Vec<Step>,
    /// Created.
    pub created: Timestamp,
    /// Last changed.
    pub updated: Timestamp,
}

impl From<&SessionRecord> for SessionInfo {
    fn from(r: &SessionRecord) -> Self {
        SessionInfo {
            session_id: r.session_id.clone(),
            role: r.role,
            method: r.method,
            delegation_type: r.delegation_type,
            peer: r.peer.clone(),
            info: r.info.clone(),
            expires: r.expires,
            state: r.state,
            deadline: r.deadline,
            reason: r.reason.clone(),
            pending_operations: r
                .journal
                .iter()
                .filter(|j| j.status != JournalStatus::Undone)
                .count(),
            history: r.history.clone(),
            created: r.created,
            updated: r.updated,
        }
    }
}
