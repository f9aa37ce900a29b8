//! Result codes: `dmd_result`, its messages, and the one mapping from [`dmdelegate::Error`].

use std::ffi::{c_char, CStr};

use dmdelegate::Error;

use crate::guard::Failure;

/// The result of every `dmd_` function that can fail.
///
/// The numbers are stable: a code is never renumbered or reused, new codes are only added
/// at the end. `DMD_OK` is 0, so `if (rc != DMD_OK)` and `if (rc)` both test for failure.
/// When a function returns anything but `DMD_OK`, `dmd_last_error_message` gives the
/// detail for the calling thread.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum dmd_result {
    /// 0: success.
    DMD_OK = 0,
    /// 1: a pointer argument that must not be NULL was NULL.
    DMD_ERR_NULL_ARGUMENT = 1,
    /// 2: an argument is out of range or not valid (for example method 5); the last-error
    /// message names it.
    DMD_ERR_INVALID_ARGUMENT = 2,
    /// 3: a document (a delegation message) could not be decoded or is not valid; the
    /// last-error message names the field.
    DMD_ERR_DECODE = 3,
    /// 4: the operation does not fit the current state (of a session, or of the handle).
    DMD_ERR_INVALID_STATE = 4,
    /// 5: no delegation session with this id is known.
    DMD_ERR_UNKNOWN_SESSION = 5,
    /// 6: the sender is not who the transport authenticated, or not the session's peer.
    DMD_ERR_AUTHENTICATION = 6,
    /// 7: the device refused or failed a client operation.
    DMD_ERR_DEVICE = 7,
    /// 8: a host callback failed.
    DMD_ERR_HOST = 8,
    /// 9: sending to the peer failed, or the network endpoints could not be set up.
    DMD_ERR_TRANSPORT = 9,
    /// 10: the session store failed.
    DMD_ERR_STORE = 10,
    /// 11: the delegation failed (and was rolled back), or did not end in time.
    DMD_ERR_FAILED = 11,
    /// 12: the library panicked; the call had no effect on its outputs. The handles passed
    /// in may be left in an unspecified (but memory-safe) state.
    DMD_ERR_PANIC = 12,
    /// 13: the caller's buffer is too small; the needed size was written to the length
    /// output.
    DMD_ERR_BUFFER_TOO_SMALL = 13,
    /// 14: the message is addressed to another server.
    DMD_ERR_WRONG_RECIPIENT = 14,
    /// 15: the library's runtime (its threads) could not be started.
    DMD_ERR_RUNTIME = 15,
}

/// How a `dmd_result` travels *into* the library (`dmd_result_message`): as its integer,
/// so that a value outside the enum is an ordinary argument, never undefined behaviour.
/// The header names the parameter type `dmd_result` (cbindgen renames it).
pub type dmd_result_arg = u32;

impl dmd_result {
    /// Every code, in numeric order.
    pub(crate) const ALL: [dmd_result; 16] = [
        dmd_result::DMD_OK,
        dmd_result::DMD_ERR_NULL_ARGUMENT,
        dmd_result::DMD_ERR_INVALID_ARGUMENT,
        dmd_result::DMD_ERR_DECODE,
        dmd_result::DMD_ERR_INVALID_STATE,
        dmd_result::DMD_ERR_UNKNOWN_SESSION,
        dmd_result::DMD_ERR_AUTHENTICATION,
        dmd_result::DMD_ERR_DEVICE,
        dmd_result::DMD_ERR_HOST,
        dmd_result::DMD_ERR_TRANSPORT,
        dmd_result::DMD_ERR_STORE,
        dmd_result::DMD_ERR_FAILED,
        dmd_result::DMD_ERR_PANIC,
        dmd_result::DMD_ERR_BUFFER_TOO_SMALL,
        dmd_result::DMD_ERR_WRONG_RECIPIENT,
        dmd_result::DMD_ERR_RUNTIME,
    ];

    /// The code for a number, if it is one.
    pub fn from_raw(raw: u32) -> Option<dmd_result> {
        dmd_result::ALL.into_iter().find(|r| *r as u32 == raw)
    }

    /// The code of a core error: the one place [`dmdelegate::Error`] is mapped.
    pub fn of_error(error: &Error) -> dmd_result {
        match error {
            Error::Decode(_) => dmd_result::DMD_ERR_DECODE,
            Error::InvalidArgument { .. } => dmd_result::DMD_ERR_INVALID_ARGUMENT,
            Error::UnknownSession(_) => dmd_result::DMD_ERR_UNKNOWN_SESSION,
            Error::InvalidState(_) => dmd_result::DMD_ERR_INVALID_STATE,
            Error::Authentication(_) => dmd_result::DMD_ERR_AUTHENTICATION,
            Error::WrongRecipient { .. } => dmd_result::DMD_ERR_WRONG_RECIPIENT,
            Error::Device { .. } => dmd_result::DMD_ERR_DEVICE,
            Error::Host { .. } => dmd_result::DMD_ERR_HOST,
            Error::Transport { .. } => dmd_result::DMD_ERR_TRANSPORT,
            Error::Store(_) => dmd_result::DMD_ERR_STORE,
            Error::Failed { .. } => dmd_result::DMD_ERR_FAILED,
        }
    }

    /// The static, NUL-terminated description of the code.
    pub fn message(self) -> &'static CStr {
        match self {
            dmd_result::DMD_OK => c"ok",
            dmd_result::DMD_ERR_NULL_ARGUMENT => c"a required pointer argument is NULL",
            dmd_result::DMD_ERR_INVALID_ARGUMENT => c"an argument is not valid",
            dmd_result::DMD_ERR_DECODE => c"the message could not be decoded or is not valid",
            dmd_result::DMD_ERR_INVALID_STATE => c"not possible in the current state",
            dmd_result::DMD_ERR_UNKNOWN_SESSION => c"no such delegation session",
            dmd_result::DMD_ERR_AUTHENTICATION => c"authentication failed",
            dmd_result::DMD_ERR_DEVICE => c"the device refused or failed a client operation",
            dmd_result::DMD_ERR_HOST => c"a host callback failed",
            dmd_result::DMD_ERR_TRANSPORT => c"transport to the peer failed",
            dmd_result::DMD_ERR_STORE => c"the session store failed",
            dmd_result::DMD_ERR_FAILED => c"the delegation failed",
            dmd_result::DMD_ERR_PANIC => c"internal error: the library panicked",
            dmd_result::DMD_ERR_BUFFER_TOO_SMALL => c"the buffer is too small",
            dmd_result::DMD_ERR_WRONG_RECIPIENT => c"the message is addressed to another server",
            dmd_result::DMD_ERR_RUNTIME => c"the library's runtime could not be started",
        }
    }
}

impl From<Error> for Failure {
    fn from(error: Error) -> Self {
        Failure::new(dmd_result::of_error(&error), error.to_string())
    }
}

impl From<dmdelegate::DecodeError> for Failure {
    fn from(error: dmdelegate::DecodeError) -> Self {
        Error::Decode(error).into()
    }
}

/// The static description of a result code, for example "the buffer is too small".
///
/// - Ownership: the string is static; never free it.
/// - Any value: a number that is not a `dmd_result` gives "unknown result code".
/// - Threads: any thread. Does not change the thread's last-error message.
#[no_mangle]
pub extern "C" fn dmd_result_message(result: dmd_result_arg) -> *const c_char {
    crate::ffi_guard!(c"unknown result code".as_ptr(); {
        match dmd_result::from_raw(result) {
            Some(r) => r.message().as_ptr(),
            None => c"unknown result code".as_ptr(),
        }
    })
}

/// Copies the calling thread's last-error message into `buf` (`len` bytes) and returns
/// the size the whole message needs, terminating NUL included (1 when there is none).
///
/// Every function that returns a `dmd_result` sets the message of the thread that called
/// it: to the detail of the failure when it returns anything but `DMD_OK` (for a decode
/// error it names the field, for example: field `Delegation/Header/Seq` is invalid), to
/// the empty string when it returns `DMD_OK`. Functions that return no `dmd_result` leave
/// it alone, and so does this one: it can be read several times.
///
/// Truncation: when `buf` is not NULL and `len` > 0, at most `len` - 1 bytes of the
/// message are written, cut at a UTF-8 character boundary, followed by a NUL; the copy was
/// truncated exactly when the return value is greater than `len`. With `buf` NULL or `len`
/// 0 nothing is written (the size query).
///
/// - Ownership: `buf` stays the caller's.
/// - NULL: `buf` NULL only returns the size.
/// - Threads: any thread; each thread has its own message.
///
/// # Safety
///
/// `buf` is NULL or points to `len` writable bytes.
#[no_mangle]
pub unsafe extern "C" fn dmd_last_error_message(buf: *mut c_char, len: usize) -> usize {
    crate::ffi_guard!(0; {
        // SAFETY: forwarded from the caller.
        unsafe { crate::guard::copy_truncated(&crate::guard::last_error(), buf, len) }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_dense_and_stable() {
        for (i, r) in dmd_result::ALL.iter().enumerate() {
            assert_eq!(*r as u32, i as u32);
            assert_eq!(dmd_result::from_raw(i as u32), Some(*r));
            assert!(!r.message().to_bytes().is_empty());
        }
        assert_eq!(dmd_result::from_raw(dmd_result::ALL.len() as u32), None);
        assert_eq!(dmd_result::DMD_ERR_PANIC as u32, 12);
        assert_eq!(dmd_result::DMD_ERR_BUFFER_TOO_SMALL as u32, 13);
    }

    #[test]
    fn every_error_variant_has_its_code() {
        use dmdelegate::{DecodeError, ReasonCode};
        let cases = [
            (
                Error::Decode(DecodeError::Doctype),
                dmd_result::DMD_ERR_DECODE,
            ),
            (
                Error::InvalidArgument {
                    field: "f".into(),
                    reason: "r".into(),
                },
                dmd_result::DMD_ERR_INVALID_ARGUMENT,
            ),
            (
                Error::UnknownSession("s".into()),
                dmd_result::DMD_ERR_UNKNOWN_SESSION,
            ),
            (
                Error::InvalidState("s".into()),
                dmd_result::DMD_ERR_INVALID_STATE,
            ),
            (
                Error::Authentication("a".into()),
                dmd_result::DMD_ERR_AUTHENTICATION,
            ),
            (
                Error::WrongRecipient {
                    expected: "a".into(),
                    found: "b".into(),
                },
                dmd_result::DMD_ERR_WRONG_RECIPIENT,
            ),
            (
                Error::Device {
                    status: 425,
                    command: "Add".into(),
                    message: "m".into(),
                },
                dmd_result::DMD_ERR_DEVICE,
            ),
            (
                Error::Host {
                    reason: ReasonCode::Unspecified,
                    message: "m".into(),
                },
                dmd_result::DMD_ERR_HOST,
            ),
            (
                Error::Transport {
                    peer: "p".into(),
                    message: "m".into(),
                },
                dmd_result::DMD_ERR_TRANSPORT,
            ),
            (Error::Store("s".into()), dmd_result::DMD_ERR_STORE),
            (
                Error::Failed {
                    reason: ReasonCode::Timeout,
                    message: "m".into(),
                },
                dmd_result::DMD_ERR_FAILED,
            ),
        ];
        for (error, code) in cases {
            let text = error.to_string();
            let failure = Failure::from(error);
            assert_eq!(failure.code, code);
            assert_eq!(failure.message, text);
        }
    }

    #[test]
    fn result_message_accepts_any_number() {
        let text = |raw| unsafe { CStr::from_ptr(dmd_result_message(raw)) };
        assert_eq!(text(0).to_str().unwrap(), "ok");
        assert_eq!(text(13).to_str().unwrap(), "the buffer is too small");
        assert_eq!(text(9999).to_str().unwrap(), "unknown result code");
    }

    #[test]
    fn last_error_message_is_sized_truncated_and_kept() {
        crate::guard::set_last_error("abcdef");
        assert_eq!(
            unsafe { dmd_last_error_message(std::ptr::null_mut(), 0) },
            7
        );
        let mut buf = [0x55 as c_char; 4];
        assert_eq!(unsafe { dmd_last_error_message(buf.as_mut_ptr(), 4) }, 7);
        assert_eq!(
            unsafe { std::ffi::CStr::from_ptr(buf.as_ptr()) }.to_bytes(),
            b"abc"
        );
        let mut big = [0 as c_char; 16];
        assert_eq!(unsafe { dmd_last_error_message(big.as_mut_ptr(), 16) }, 7);
        assert_eq!(
            unsafe { std::ffi::CStr::from_ptr(big.as_ptr()) }.to_bytes(),
            b"abcdef"
        );
    }
}
