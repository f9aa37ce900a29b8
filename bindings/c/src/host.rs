//! Host callbacks: `dmd_host_callbacks`, a C struct of function pointers with a
//! `void *userdata`, and the Rust [`Host`] adapter over it. Also the types the callbacks
//! see: `dmd_offer`, `dmd_command` (opaque, with accessors), `dmd_reply` (opaque
//! out-parameter) and `dmd_event`.

use std::ffi::{c_char, c_void, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};

use dmdelegate::{
    ClientCommand, CommandOutput, DelegationOffer, DeviceError, DeviceInfo, DmAcc, Event,
    EventKind, Host, HostError, MgmtTree, PolicyDecision, Reason, ReasonCode, Role, SessionInfo,
};

use crate::guard::{arg_ref, check_out, write_string};
use crate::local::{dmd_delegation_type, dmd_state};
use crate::result::dmd_result;

/// The SyncML status a callback returns for success.
pub const DMD_STATUS_OK: u16 = 200;

/// A server's role in one delegation. The numbers are stable.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum dmd_role {
    /// DMS-1, the Delegating DM Server: holds authority today.
    DMD_ROLE_DELEGATING = 1,
    /// DMS-2, the Delegated DM Server: receives authority.
    DMD_ROLE_DELEGATED = 2,
}

impl From<Role> for dmd_role {
    fn from(role: Role) -> Self {
        match role {
            Role::Delegating => dmd_role::DMD_ROLE_DELEGATING,
            Role::Delegated => dmd_role::DMD_ROLE_DELEGATED,
        }
    }
}

/// One delegated subtree: its root URI and the rights DMS-2 gets on it.
///
/// As an argument (`dmd_server_start_delegation`) both strings are the caller's and are
/// read during the call only; in a `dmd_offer` they are the library's and valid only
/// during the callback.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct dmd_subtree {
    /// Absolute URI of the subtree's root, `.` for the whole tree (NUL-terminated UTF-8).
    pub uri: *const c_char,
    /// The granted commands, ACL command names separated by `+`, for example
    /// `Add+Get+Replace` (NUL-terminated UTF-8).
    pub rights: *const c_char,
}

/// An incoming delegation request, given to the `accept` callback. Every pointer in it
/// (and in `subtrees`) belongs to the library and is valid only during the callback: copy
/// what you need.
#[repr(C)]
#[derive(Debug)]
pub struct dmd_offer {
    /// The session id the peer chose.
    pub session_id: *const c_char,
    /// The peer's ServerID (authenticated by mutual TLS).
    pub peer: *const c_char,
    /// The role this server would play.
    pub role: dmd_role,
    /// The method, 1 to 4.
    pub method: u8,
    /// Full or Partial.
    pub delegation_type: dmd_delegation_type,
    /// The device's id (for example `IMEI:...`).
    pub device_id: *const c_char,
    /// The device's manufacturer.
    pub manufacturer: *const c_char,
    /// The device's model.
    pub model: *const c_char,
    /// The delegated subtrees, `subtree_count` of them.
    pub subtrees: *const dmd_subtree,
    /// How many subtrees.
    pub subtree_count: usize,
    /// End of a temporary delegation in milliseconds since the Unix epoch, 0 when none.
    pub expires_ms: i64,
}

/// The kinds of client operation a `dmd_command` is. The numbers are stable.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum dmd_command_kind {
    /// Read the subtree at the URI with every node's ACL (`Get <uri>?list=TNDS+ACL`, plus
    /// `+Value` when `dmd_command_values` is 1). Reply: the TNDS document of the subtree.
    DMD_COMMAND_GET_TREE = 1,
    /// Read a node's own ACL (`Get <uri>?prop=ACL`). Reply: the ACL text (empty: inherits).
    DMD_COMMAND_GET_ACL = 2,
    /// Add a subtree (`Add` with a TNDS object) under `dmd_command_parent`. No reply.
    DMD_COMMAND_ADD = 3,
    /// Replace a node's whole ACL with `dmd_command_acl`. No reply.
    DMD_COMMAND_REPLACE_ACL = 4,
    /// Delete the node at the URI and everything below. No reply.
    DMD_COMMAND_DELETE = 5,
}

/// One operation on the device's DM Tree that DMS-1's host executes in its DM session
/// with the device (the `execute` callback). Opaque: read it with the `dmd_command_*`
/// accessors, or forward it to `dmd_sim_device_execute`.
///
/// Lifetime: owned by the library, valid only during the callback that received it.
/// Immutable: any thread may read it during that time.
pub struct dmd_command {
    pub(crate) inner: ClientCommand,
    uri: CString,
    parent: CString,
    text: CString,
}

impl dmd_command {
    pub(crate) fn new(inner: ClientCommand) -> Self {
        let c = |s: String| CString::new(s.replace('\0', "\u{FFFD}")).unwrap_or_default();
        let (parent, text) = match &inner {
            ClientCommand::Add { parent, node } => {
                (parent.clone(), MgmtTree::new(vec![node.clone()]).to_xml())
            }
            ClientCommand::ReplaceAcl { acl, .. } => (String::new(), acl.to_string()),
            _ => (String::new(), String::new()),
        };
        dmd_command {
            uri: c(inner.uri()),
            parent: c(parent),
            text: c(text),
            inner,
        }
    }
}

/// What a callback hands back (an ACL, a TNDS document, a URL, a detail message).
/// Opaque: the library creates it, the callback fills it with `dmd_reply_set_text`; it is
/// valid only during the callback.
#[derive(Debug, Default)]
pub struct dmd_reply {
    pub(crate) text: Option<String>,
}

/// The kinds of `dmd_event`. The numbers are stable.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum dmd_event_kind {
    /// The session moved from `from` to `to`.
    DMD_EVENT_STATE_CHANGED = 1,
    /// The delegation completed.
    DMD_EVENT_COMPLETED = 2,
    /// The delegation failed (`reason_code`, `reason`); a rollback follows.
    DMD_EVENT_FAILED = 3,
    /// Every change made to the device was undone.
    DMD_EVENT_ROLLED_BACK = 4,
    /// Some inverse operations failed: the device needs attention.
    DMD_EVENT_ROLLBACK_INCOMPLETE = 5,
    /// The peer refused the delegation.
    DMD_EVENT_REJECTED = 6,
    /// A temporary delegation ended and was reverted.
    DMD_EVENT_EXPIRED = 7,
}

/// What happened to a delegation, given to the `on_event` callback. Every pointer belongs
/// to the library and is valid only during the callback.
#[repr(C)]
#[derive(Debug)]
pub struct dmd_event {
    /// What happened.
    pub kind: dmd_event_kind,
    /// The session.
    pub session_id: *const c_char,
    /// This server's role in it.
    pub role: dmd_role,
    /// The device.
    pub device_id: *const c_char,
    /// `DMD_EVENT_STATE_CHANGED`: the previous state; otherwise `DMD_STATE_NONE`.
    pub from: dmd_state,
    /// `DMD_EVENT_STATE_CHANGED`: the new state; otherwise `DMD_STATE_NONE`.
    pub to: dmd_state,
    /// The reason code (100-999) of a failure, rejection or rollback; 0 otherwise.
    pub reason_code: u16,
    /// The reason's text; the empty string when there is none. Never NULL.
    pub reason: *const c_char,
}

/// The host DM Server, as C callbacks. The library copies the struct in
/// `dmd_server_new`; `userdata` is passed back, untouched, as every callback's first
/// argument.
///
/// Threads: callbacks run on the library's runtime threads, never on the caller's. For
/// one delegation session they never overlap; for different sessions they may run at the
/// same time on different threads, so the callbacks and `userdata` must be thread-safe.
/// A callback must not call `dmd_server_*` functions (they return
/// `DMD_ERR_INVALID_STATE` there) and should return promptly: it holds up its session.
///
/// Lifetime: `userdata` and the functions must stay valid until `dmd_server_free` has
/// returned; after that no callback runs.
///
/// Statuses: the `uint16_t` callbacks return a SyncML-style status. 200 is success;
/// anything else fails the operation with that status (a device refusal) or with the
/// reason code of the capability (a host failure), and the reply's text, when set, is the
/// detail. A NULL function means the host lacks that capability: the delegation that
/// needs it fails with a reason naming the callback. A callback must not unwind (C++
/// exceptions, longjmp) through the library.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct dmd_host_callbacks {
    /// Passed back to every callback. May be NULL.
    pub userdata: *mut c_void,
    /// Decides whether to take part in a delegation a peer offers. Return non-zero to
    /// accept; 0 to refuse, with the reason code (100-999) in `*reject_code`, preset to
    /// 101 (rejected by policy). NULL: every offer is refused (101, "no accept callback").
    pub accept: Option<
        unsafe extern "C" fn(
            userdata: *mut c_void,
            offer: *const dmd_offer,
            reject_code: *mut u16,
        ) -> i32,
    >,
    /// DMS-1: executes `command` on the device `device_id` in the host's own DM session.
    /// For `DMD_COMMAND_GET_TREE` set the reply to the TNDS document of the subtree, for
    /// `DMD_COMMAND_GET_ACL` to the ACL text; writes need no reply. Return 200, or the
    /// device's status (404, 425, ...). NULL: every delegation as DMS-1 fails, unless the
    /// server has a device hub (`dmd_server_config.device_hub`), which then runs the
    /// commands and this callback is never called.
    pub execute: Option<
        unsafe extern "C" fn(
            userdata: *mut c_void,
            device_id: *const c_char,
            command: *const dmd_command,
            reply: *mut dmd_reply,
        ) -> u16,
    >,
    /// DMS-2, Methods 1/2: opens a DM session with the device once DMS-1 has prepared it.
    /// Return 200 when the session is established (DELEGATION_CONFIRM follows). Never
    /// called on a server with a device hub, which opens the session itself.
    pub open_dm_session:
        Option<unsafe extern "C" fn(userdata: *mut c_void, device_id: *const c_char) -> u16>,
    /// DMS-2: the DM account the device gets for this server. Set the reply to a TNDS
    /// document holding one DMAcc node (`dmd_dmacc_simple_tnds` builds one) and return 200.
    pub dm_account: Option<
        unsafe extern "C" fn(
            userdata: *mut c_void,
            device_id: *const c_char,
            reply: *mut dmd_reply,
        ) -> u16,
    >,
    /// DMS-2, Methods 3/4: the Bootstrap Server URL the device should use. Set the reply
    /// to the URL and return 200.
    pub bootstrap_url: Option<
        unsafe extern "C" fn(
            userdata: *mut c_void,
            device_id: *const c_char,
            reply: *mut dmd_reply,
        ) -> u16,
    >,
    /// Reports an event. Must not block (the session is locked meanwhile). May be NULL.
    pub on_event: Option<unsafe extern "C" fn(userdata: *mut c_void, event: *const dmd_event)>,
}

/// The adapter: a Rust [`Host`] over the C callbacks.
pub(crate) struct CHost {
    pub(crate) callbacks: dmd_host_callbacks,
}

// SAFETY: the documentation of `dmd_host_callbacks` requires the functions and `userdata`
// to be usable from any thread, concurrently; the adapter only copies the pointers.
unsafe impl Send for CHost {}
// SAFETY: as above.
unsafe impl Sync for CHost {}

fn cstring(s: &str) -> CString {
    CString::new(s.replace('\0', "\u{FFFD}")).unwrap_or_default()
}

/// Runs a callback invocation behind a panic boundary (the Rust glue around it can
/// panic; the C function itself must not unwind).
fn shielded<T>(what: &str, f: impl FnOnce() -> Result<T, String>) -> Result<T, String> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(_) => Err(format!("the `{what}` callback glue panicked")),
    }
}

impl CHost {
    fn accept_sync(&self, offer: &DelegationOffer) -> PolicyDecision {
        let Some(accept) = self.callbacks.accept else {
            return PolicyDecision::Reject(Reason::new(
                ReasonCode::RejectedByPolicy,
                "the host has no accept callback",
            ));
        };
        let r = shielded("accept", || {
            let s = |v: &str| cstring(v);
            let (sid, peer) = (s(&offer.session_id), s(&offer.peer));
            let dev = &offer.info.device;
            let (id, man, model) = (s(&dev.device_id), s(&dev.manufacturer), s(&dev.model));
            let strings: Vec<(CString, CString)> = offer
                .info
                .subtrees
                .iter()
                .map(|t| {
                    let rights: Vec<String> = t.rights.iter().map(|r| r.to_string()).collect();
                    (s(&t.uri), s(&rights.join("+")))
                })
                .collect();
            let subtrees: Vec<dmd_subtree> = strings
                .iter()
                .map(|(u, r)| dmd_subtree {
                    uri: u.as_ptr(),
                    rights: r.as_ptr(),
                })
                .collect();
            let c_offer = dmd_offer {
                session_id: sid.as_ptr(),
                peer: peer.as_ptr(),
                role: offer.role.into(),
                method: offer.method.number(),
                delegation_type: match offer.delegation_type {
                    dmdelegate::DelegationType::Full => {
                        dmd_delegation_type::DMD_DELEGATION_TYPE_FULL
                    }
                    dmdelegate::DelegationType::Partial => {
                        dmd_delegation_type::DMD_DELEGATION_TYPE_PARTIAL
                    }
                },
                device_id: id.as_ptr(),
                manufacturer: man.as_ptr(),
                model: model.as_ptr(),
                subtrees: subtrees.as_ptr(),
                subtree_count: subtrees.len(),
                expires_ms: offer.expires.map_or(0, |t| t.0),
            };
            let mut code = ReasonCode::RejectedByPolicy.code();
            // SAFETY: the pointers are valid for the call; the host guarantees the function.
            let yes = unsafe { accept(self.callbacks.userdata, &c_offer, &mut code) };
            Ok((yes, code))
        });
        match r {
            Ok((yes, _)) if yes != 0 => PolicyDecision::Accept,
            Ok((_, code)) => {
                let code = if (100..=999).contains(&code) {
                    code
                } else {
                    ReasonCode::RejectedByPolicy.code()
                };
                PolicyDecision::Reject(Reason {
                    code,
                    text: "refused by the host's accept callback".into(),
                })
            }
            Err(e) => PolicyDecision::Reject(Reason::new(ReasonCode::InternalError, e)),
        }
    }

    fn execute_sync(
        &self,
        device: &DeviceInfo,
        command: &ClientCommand,
    ) -> Result<CommandOutput, DeviceError> {
        let Some(execute) = self.callbacks.execute else {
            return Err(DeviceError::new(
                500,
                "the host has no execute callback: it cannot act as DMS-1",
            ));
        };
        let r = shielded("execute", || {
            let id = cstring(&device.device_id);
            let cmd = dmd_command::new(command.clone());
            let mut reply = dmd_reply::default();
            // SAFETY: the pointers are valid for the call; the host guarantees the function.
            let status = unsafe { execute(self.callbacks.userdata, id.as_ptr(), &cmd, &mut reply) };
            Ok((status, reply.text))
        });
        let (status, text) = r.map_err(|e| DeviceError::new(500, e))?;
        if status != DMD_STATUS_OK {
            let message = text.unwrap_or_else(|| format!("the execute callback returned {status}"));
            // A "success" outside 2xx semantics or 0 is garbage: report it as a failure.
            let status = if status == 0 { 500 } else { status };
            return Err(DeviceError::new(status, message));
        }
        CommandOutput::from_reply(command, text.as_deref(), "the execute callback")
    }

    /// Calls a `(userdata, device_id[, reply]) -> status` capability.
    fn call_text(
        &self,
        name: &str,
        reason: ReasonCode,
        device_id: &str,
        f: Option<unsafe extern "C" fn(*mut c_void, *const c_char, *mut dmd_reply) -> u16>,
    ) -> Result<String, HostError> {
        let f =
            f.ok_or_else(|| HostError::new(reason, format!("the host has no `{name}` callback")))?;
        let (status, text) = shielded(name, || {
            let id = cstring(device_id);
            let mut reply = dmd_reply::default();
            // SAFETY: the pointers are valid for the call; the host guarantees the function.
            let status = unsafe { f(self.callbacks.userdata, id.as_ptr(), &mut reply) };
            Ok((status, reply.text))
        })
        .map_err(|e| HostError::new(ReasonCode::InternalError, e))?;
        if status != DMD_STATUS_OK {
            let detail = text.unwrap_or_default();
            return Err(HostError::new(
                reason,
                format!("the `{name}` callback returned {status} {detail}")
                    .trim_end()
                    .to_string(),
            ));
        }
        text.ok_or_else(|| {
            HostError::new(
                reason,
                format!("the `{name}` callback returned 200 without setting the reply"),
            )
        })
    }

    fn open_sync(&self, session: &SessionInfo) -> Result<(), HostError> {
        let reason = ReasonCode::DmSessionFailed;
        let f = self
            .callbacks
            .open_dm_session
            .ok_or_else(|| HostError::new(reason, "the host has no `open_dm_session` callback"))?;
        let status = shielded("open_dm_session", || {
            let id = cstring(&session.info.device.device_id);
            // SAFETY: the pointer is valid for the call; the host guarantees the function.
            Ok(unsafe { f(self.callbacks.userdata, id.as_ptr()) })
        })
        .map_err(|e| HostError::new(ReasonCode::InternalError, e))?;
        if status == DMD_STATUS_OK {
            Ok(())
        } else {
            Err(HostError::new(
                reason,
                format!("the `open_dm_session` callback returned {status}"),
            ))
        }
    }

    fn account_sync(&self, device: &DeviceInfo) -> Result<DmAcc, HostError> {
        let reason = ReasonCode::InvalidDmAccount;
        let text = self.call_text(
            "dm_account",
            reason,
            &device.device_id,
            self.callbacks.dm_account,
        )?;
        DmAcc::from_tnds(&text)
            .map_err(|e| HostError::new(reason, format!("the DMAcc TNDS is not valid: {e}")))
    }

    fn event_sync(&self, event: &Event) {
        let Some(f) = self.callbacks.on_event else {
            return;
        };
        let _ = shielded("on_event", || {
            let none = dmd_state::DMD_STATE_NONE;
            let (kind, from, to, reason) = match &event.kind {
                EventKind::StateChanged { from, to } => (
                    dmd_event_kind::DMD_EVENT_STATE_CHANGED,
                    (*from).into(),
                    (*to).into(),
                    None,
                ),
                EventKind::Completed => (dmd_event_kind::DMD_EVENT_COMPLETED, none, none, None),
                EventKind::Failed { reason } => {
                    (dmd_event_kind::DMD_EVENT_FAILED, none, none, Some(reason))
                }
                EventKind::RolledBack { reason } => (
                    dmd_event_kind::DMD_EVENT_ROLLED_BACK,
                    none,
                    none,
                    Some(reason),
                ),
                EventKind::RollbackIncomplete { reason, .. } => (
                    dmd_event_kind::DMD_EVENT_ROLLBACK_INCOMPLETE,
                    none,
                    none,
                    Some(reason),
                ),
                EventKind::Rejected { reason } => {
                    (dmd_event_kind::DMD_EVENT_REJECTED, none, none, Some(reason))
                }
                EventKind::Expired => (dmd_event_kind::DMD_EVENT_EXPIRED, none, none, None),
            };
            let sid = cstring(&event.session_id);
            let dev = cstring(&event.device_id);
            let text = cstring(reason.map_or("", |r| r.text.as_str()));
            let c_event = dmd_event {
                kind,
                session_id: sid.as_ptr(),
                role: event.role.into(),
                device_id: dev.as_ptr(),
                from,
                to,
                reason_code: reason.map_or(0, |r| r.code),
                reason: text.as_ptr(),
            };
            // SAFETY: the pointers are valid for the call; the host guarantees the function.
            unsafe { f(self.callbacks.userdata, &c_event) };
            Ok(())
        });
    }
}

// The callbacks are synchronous; each async method just calls its blocking counterpart.
#[async_trait::async_trait]
impl Host for CHost {
    async fn accept_delegation(&self, offer: &DelegationOffer) -> PolicyDecision {
        self.accept_sync(offer)
    }

    async fn execute(
        &self,
        device: &DeviceInfo,
        command: &ClientCommand,
    ) -> Result<CommandOutput, DeviceError> {
        self.execute_sync(device, command)
    }

    async fn open_dm_session(&self, session: &SessionInfo) -> Result<(), HostError> {
        self.open_sync(session)
    }

    async fn dm_account(&self, device: &DeviceInfo) -> Result<DmAcc, HostError> {
        self.account_sync(device)
    }

    async fn bootstrap_server_url(&self, device: &DeviceInfo) -> Result<String, HostError> {
        self.call_text(
            "bootstrap_url",
            ReasonCode::BootstrapUrlUnavailable,
            &device.device_id,
            self.callbacks.bootstrap_url,
        )
    }

    fn on_event(&self, event: &Event) {
        self.event_sync(event)
    }
}

/// The command's kind.
///
/// - NULL: `command` NULL gives 0 (no kind).
/// - Threads: any thread, while the command is valid (during the callback).
///
/// # Safety
///
/// `command` is NULL or the command a callback received, during that callback.
#[no_mangle]
pub unsafe extern "C" fn dmd_command_get_kind(command: *const dmd_command) -> u32 {
    crate::ffi_guard!(0; {
        // SAFETY: forwarded from the caller.
        match unsafe { command.as_ref() } {
            None => 0,
            Some(c) => (match c.inner {
                ClientCommand::GetTree { .. } => dmd_command_kind::DMD_COMMAND_GET_TREE,
                ClientCommand::GetAcl { .. } => dmd_command_kind::DMD_COMMAND_GET_ACL,
                ClientCommand::Add { .. } => dmd_command_kind::DMD_COMMAND_ADD,
                ClientCommand::ReplaceAcl { .. } => dmd_command_kind::DMD_COMMAND_REPLACE_ACL,
                ClientCommand::Delete { .. } => dmd_command_kind::DMD_COMMAND_DELETE,
            }) as u32,
        }
    })
}

/// The URI the command targets (for `DMD_COMMAND_ADD`, the new node's URI).
///
/// - Ownership: the string belongs to the command: valid while the command is (during the
///   callback); never free it.
/// - NULL: `command` NULL gives NULL.
/// - Threads: any thread, while the command is valid.
///
/// # Safety
///
/// `command` is NULL or the command a callback received, during that callback.
#[no_mangle]
pub unsafe extern "C" fn dmd_command_uri(command: *const dmd_command) -> *const c_char {
    crate::ffi_guard!(std::ptr::null(); {
        // SAFETY: forwarded from the caller.
        unsafe { command.as_ref() }.map_or(std::ptr::null(), |c| c.uri.as_ptr())
    })
}

/// `DMD_COMMAND_ADD`: the parent's URI, under which the node is added; the empty string
/// for other kinds. Ownership, NULL and threads as `dmd_command_uri`.
///
/// # Safety
///
/// `command` is NULL or the command a callback received, during that callback.
#[no_mangle]
pub unsafe extern "C" fn dmd_command_parent(command: *const dmd_command) -> *const c_char {
    crate::ffi_guard!(std::ptr::null(); {
        // SAFETY: forwarded from the caller.
        unsafe { command.as_ref() }.map_or(std::ptr::null(), |c| c.parent.as_ptr())
    })
}

/// The command's payload: `DMD_COMMAND_ADD`, the TNDS document of the added subtree;
/// `DMD_COMMAND_REPLACE_ACL`, the new ACL text (empty: inherit); the empty string for
/// other kinds. Ownership, NULL and threads as `dmd_command_uri`.
///
/// # Safety
///
/// `command` is NULL or the command a callback received, during that callback.
#[no_mangle]
pub unsafe extern "C" fn dmd_command_text(command: *const dmd_command) -> *const c_char {
    crate::ffi_guard!(std::ptr::null(); {
        // SAFETY: forwarded from the caller.
        unsafe { command.as_ref() }.map_or(std::ptr::null(), |c| c.text.as_ptr())
    })
}

/// `DMD_COMMAND_GET_TREE`: 1 when leaf values are wanted, else 0 (also for other kinds
/// and for NULL). Threads as `dmd_command_uri`.
///
/// # Safety
///
/// `command` is NULL or the command a callback received, during that callback.
#[no_mangle]
pub unsafe extern "C" fn dmd_command_values(command: *const dmd_command) -> i32 {
    crate::ffi_guard!(0; {
        // SAFETY: forwarded from the caller.
        match unsafe { command.as_ref() } {
            Some(dmd_command { inner: ClientCommand::GetTree { values: true, .. }, .. }) => 1,
            _ => 0,
        }
    })
}

/// Renders the command as one SyncML DM 1.2 command element with `<CmdID>` `cmd_id`
/// (for a host whose SyncML engine sends commands as they are), following the
/// needed-length convention (see `dmd_message_session_id`).
///
/// - Ownership: `buf` stays the caller's.
/// - NULL: `command` or `needed` NULL gives `DMD_ERR_NULL_ARGUMENT`.
/// - Threads: any thread, while the command is valid (during the callback).
///
/// # Safety
///
/// `command` is NULL or a valid command; `buf` NULL or `len` writable bytes; `needed`
/// NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn dmd_command_syncml(
    command: *const dmd_command,
    cmd_id: u32,
    buf: *mut c_char,
    len: usize,
    needed: *mut usize,
) -> dmd_result {
    crate::ffi_guard!({
        // SAFETY: forwarded from the caller.
        let c = unsafe { arg_ref(command, "command") }?;
        // SAFETY: forwarded from the caller.
        unsafe { write_string(&c.inner.to_syncml(cmd_id), buf, len, needed) }
    })
}

/// Sets the reply's text (replacing any earlier one): the TNDS document, ACL text, URL
/// or, with a failure status, the detail, depending on the callback.
///
/// Returns `DMD_OK`, or `DMD_ERR_INVALID_ARGUMENT` when `text` is not UTF-8.
///
/// - Ownership: the text is copied; `text` stays the caller's.
/// - NULL: `reply` or `text` NULL gives `DMD_ERR_NULL_ARGUMENT`.
/// - Threads: the thread running the callback that received `reply`.
///
/// # Safety
///
/// `reply` is NULL or the reply a callback received, during that callback; `text` is NULL
/// or a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn dmd_reply_set_text(
    reply: *mut dmd_reply,
    text: *const c_char,
) -> dmd_result {
    crate::ffi_guard!({
        check_out(reply, "reply")?;
        let text = unsafe { crate::guard::arg_str(text, "text") }?;
        // SAFETY: non-NULL and, by the caller's guarantee, a live reply used by one thread.
        unsafe { (*reply).text = Some(text.to_string()) };
        Ok(())
    })
}
