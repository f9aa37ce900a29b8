//! The panic boundary ([`ffi_guard!`](crate::ffi_guard)), the thread's last-error message,
//! and the argument and output helpers every exported function uses.

use std::any::Any;
use std::cell::RefCell;
use std::ffi::c_char;
use std::panic::{catch_unwind, AssertUnwindSafe};

use crate::result::dmd_result;

/// Why a call failed: its code and the detail for `dmd_last_error_message`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// The code the function returns.
    pub code: dmd_result,
    /// The detail.
    pub message: String,
}

impl Failure {
    /// A failure with this code and detail.
    pub fn new(code: dmd_result, message: impl Into<String>) -> Self {
        Failure {
            code,
            message: message.into(),
        }
    }

    /// `name` was NULL.
    pub fn null(name: &str) -> Self {
        Failure::new(
            dmd_result::DMD_ERR_NULL_ARGUMENT,
            format!("argument `{name}` is NULL"),
        )
    }

    /// `name` is not valid, because `why`.
    pub fn invalid(name: &str, why: impl std::fmt::Display) -> Self {
        Failure::new(
            dmd_result::DMD_ERR_INVALID_ARGUMENT,
            format!("argument `{name}` is not valid: {why}"),
        )
    }
}

thread_local! {
    static LAST_ERROR: RefCell<String> = const { RefCell::new(String::new()) };
}

/// Sets the calling thread's last-error message (NUL bytes become U+FFFD, so the message
/// is always one C string).
pub fn set_last_error(message: &str) {
    let clean = message.replace('\0', "\u{FFFD}");
    // During thread teardown the slot may be gone; the message is then dropped.
    let _ = LAST_ERROR.try_with(|slot| *slot.borrow_mut() = clean);
}

/// Clears the calling thread's last-error message.
pub fn clear_last_error() {
    let _ = LAST_ERROR.try_with(|slot| slot.borrow_mut().clear());
}

/// The calling thread's last-error message.
pub fn last_error() -> String {
    LAST_ERROR
        .try_with(|slot| slot.borrow().clone())
        .unwrap_or_default()
}

fn panic_text(payload: &(dyn Any + Send)) -> String {
    let what = payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(no message)");
    format!("panic in dmdelegate: {what}")
}

/// Runs `body` behind the panic boundary: `DMD_OK` (last error cleared) on success, the
/// failure's code (last error set) on failure, `DMD_ERR_PANIC` if it panicked.
pub fn guard_result(body: impl FnOnce() -> Result<(), Failure>) -> dmd_result {
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(())) => {
            clear_last_error();
            dmd_result::DMD_OK
        }
        Ok(Err(failure)) => {
            set_last_error(&failure.message);
            failure.code
        }
        Err(payload) => {
            set_last_error(&panic_text(payload.as_ref()));
            drop_payload(payload);
            dmd_result::DMD_ERR_PANIC
        }
    }
}

/// Runs `body` behind the panic boundary for a function that returns a value rather than
/// a `dmd_result`: `fallback` if it panicked (and the last error says so); otherwise the
/// last error is left as it was.
pub fn guard_value<T>(fallback: T, body: impl FnOnce() -> T) -> T {
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(value) => value,
        Err(payload) => {
            set_last_error(&panic_text(payload.as_ref()));
            drop_payload(payload);
            fallback
        }
    }
}

/// Drops a panic payload; a payload whose destructor panics again must not unwind into C.
fn drop_payload(payload: Box<dyn Any + Send>) {
    if catch_unwind(AssertUnwindSafe(move || drop(payload))).is_err() {
        // The second payload is leaked on purpose: dropping it could panic once more.
    }
}

/// The panic boundary every exported function runs its body in.
///
/// - `ffi_guard!({ ...; Ok(()) })`: the body returns `Result<(), Failure>`; the macro
///   evaluates to a `dmd_result` (`DMD_ERR_PANIC` when the body panicked) and sets or
///   clears the thread's last-error message.
/// - `ffi_guard!(fallback; { ... })`: the body returns a value; the macro evaluates to it,
///   or to `fallback` when the body panicked.
#[macro_export]
#[doc(hidden)]
macro_rules! ffi_guard {
    ($body:block) => {
        $crate::guard::guard_result(
            move || -> ::std::result::Result<(), $crate::guard::Failure> { $body },
        )
    };
    ($fallback:expr; $body:block) => {
        $crate::guard::guard_value($fallback, move || $body)
    };
}

/// `p` as a reference, or `DMD_ERR_NULL_ARGUMENT` naming `name`.
///
/// # Safety
///
/// `p` is NULL or points to a valid `T` that outlives `'a`.
pub unsafe fn arg_ref<'a, T>(p: *const T, name: &str) -> Result<&'a T, Failure> {
    // SAFETY: the caller guarantees a non-NULL `p` is valid for `'a`.
    unsafe { p.as_ref() }.ok_or_else(|| Failure::null(name))
}

/// A NUL-terminated UTF-8 string argument: `DMD_ERR_NULL_ARGUMENT` when NULL,
/// `DMD_ERR_INVALID_ARGUMENT` when not UTF-8.
///
/// # Safety
///
/// `p` is NULL or a NUL-terminated string that outlives `'a`.
pub unsafe fn arg_str<'a>(p: *const c_char, name: &str) -> Result<&'a str, Failure> {
    if p.is_null() {
        return Err(Failure::null(name));
    }
    // SAFETY: non-NULL and NUL-terminated by the caller's guarantee.
    unsafe { std::ffi::CStr::from_ptr(p) }
        .to_str()
        .map_err(|e| Failure::invalid(name, e))
}

/// A string argument that may be NULL (`None`).
///
/// # Safety
///
/// As [`arg_str`].
pub unsafe fn opt_str<'a>(p: *const c_char, name: &str) -> Result<Option<&'a str>, Failure> {
    if p.is_null() {
        Ok(None)
    } else {
        // SAFETY: forwarded.
        unsafe { arg_str(p, name) }.map(Some)
    }
}

/// `DMD_ERR_NULL_ARGUMENT` naming `name` if the output pointer `p` is NULL.
pub fn check_out<T>(p: *mut T, name: &str) -> Result<(), Failure> {
    if p.is_null() {
        Err(Failure::null(name))
    } else {
        Ok(())
    }
}

/// `len` bytes at `p`, or `DMD_ERR_NULL_ARGUMENT` when `p` is NULL (whatever `len` is).
///
/// # Safety
///
/// `p` is NULL or points to `len` readable bytes that outlive `'a`.
pub unsafe fn arg_bytes<'a>(p: *const u8, len: usize, name: &str) -> Result<&'a [u8], Failure> {
    if p.is_null() {
        return Err(Failure::null(name));
    }
    if len > isize::MAX as usize {
        return Err(Failure::invalid(name, "length over PTRDIFF_MAX"));
    }
    // SAFETY: non-NULL, and the caller guarantees `len` readable bytes.
    Ok(unsafe { std::slice::from_raw_parts(p, len) })
}

/// Writes `value` and a NUL into `buf` (`len` bytes), with the needed size (`value`'s
/// length + 1) in `*needed`: the needed-length convention of every string output.
///
/// - `needed` NULL, or `buf` NULL with `len` > 0: `DMD_ERR_NULL_ARGUMENT`, nothing written;
/// - `len` < needed (including `buf` NULL with `len` 0, the size query):
///   `DMD_ERR_BUFFER_TOO_SMALL`, only `*needed` written;
/// - otherwise the whole value and its NUL are written, and `*needed`.
///
/// # Safety
///
/// `buf` is NULL or points to `len` writable bytes; `needed` is NULL or writable.
pub unsafe fn write_string(
    value: &str,
    buf: *mut c_char,
    len: usize,
    needed: *mut usize,
) -> Result<(), Failure> {
    check_out(needed, "needed")?;
    if buf.is_null() && len > 0 {
        return Err(Failure::null("buf"));
    }
    let size = value.len() + 1;
    // SAFETY: `needed` is non-NULL and the caller guarantees it is writable.
    unsafe { needed.write(size) };
    if len < size {
        return Err(Failure::new(
            dmd_result::DMD_ERR_BUFFER_TOO_SMALL,
            format!("the value needs {size} bytes (NUL included), the buffer has {len}"),
        ));
    }
    // SAFETY: `buf` is non-NULL (len >= size > 0) with `len` >= `size` writable bytes.
    unsafe {
        std::ptr::copy_nonoverlapping(value.as_ptr(), buf.cast::<u8>(), value.len());
        buf.add(value.len()).write(0);
    }
    Ok(())
}

/// Copies as much of `value` as fits into `buf` (`len` bytes), cut at a UTF-8 character
/// boundary and NUL-terminated; nothing when `buf` is NULL or `len` is 0. Returns the size
/// the whole value needs (its length + 1).
///
/// # Safety
///
/// `buf` is NULL or points to `len` writable bytes.
pub unsafe fn copy_truncated(value: &str, buf: *mut c_char, len: usize) -> usize {
    if !buf.is_null() && len > 0 {
        let mut n = value.len().min(len - 1);
        while !value.is_char_boundary(n) {
            n -= 1;
        }
        // SAFETY: `n` + 1 <= `len` writable bytes at `buf`.
        unsafe {
            std::ptr::copy_nonoverlapping(value.as_ptr(), buf.cast::<u8>(), n);
            buf.add(n).write(0);
        }
    }
    value.len() + 1
}

/// Refuses a blocking call from one of the library's own runtime threads (a callback):
/// blocking there would stall, or panic inside, the runtime that serves the call.
pub fn not_on_library_thread(function: &str) -> Result<(), Failure> {
    if tokio::runtime::Handle::try_current().is_ok() {
        return Err(Failure::new(
            crate::result::dmd_result::DMD_ERR_INVALID_STATE,
            format!("{function} cannot be called from a library callback"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_becomes_dmd_err_panic_with_a_message() {
        let rc = crate::ffi_guard!({
            if last_error().is_empty() {
                panic!("boom");
            }
            Ok(())
        });
        assert_eq!(rc, dmd_result::DMD_ERR_PANIC);
        assert_eq!(last_error(), "panic in dmdelegate: boom");
        let v = crate::ffi_guard!(7; { panic!("again {}", 1) });
        assert_eq!(v, 7);
        assert_eq!(last_error(), "panic in dmdelegate: again 1");
    }

    #[test]
    fn success_clears_and_failure_sets_the_last_error() {
        set_last_error("old");
        assert_eq!(crate::ffi_guard!({ Ok(()) }), dmd_result::DMD_OK);
        assert_eq!(last_error(), "");
        let rc = crate::ffi_guard!({ Err(Failure::null("x")) });
        assert_eq!(rc, dmd_result::DMD_ERR_NULL_ARGUMENT);
        assert_eq!(last_error(), "argument `x` is NULL");
        set_last_error("a\0b");
        assert_eq!(last_error(), "a\u{FFFD}b");
    }

    #[test]
    fn write_string_follows_the_needed_length_convention() {
        let mut needed = 0usize;
        let mut buf = [0x55 as c_char; 4];
        let r = unsafe { write_string("abcd", buf.as_mut_ptr(), buf.len(), &mut needed) };
        assert_eq!(r.unwrap_err().code, dmd_result::DMD_ERR_BUFFER_TOO_SMALL);
        assert_eq!(needed, 5);
        assert_eq!(buf, [0x55; 4], "nothing written on failure");
        let r = unsafe { write_string("abc", buf.as_mut_ptr(), buf.len(), &mut needed) };
        assert!(r.is_ok());
        assert_eq!(needed, 4);
        assert_eq!(&buf, &[b'a' as c_char, b'b' as c_char, b'c' as c_char, 0]);
        let r = unsafe { write_string("abc", std::ptr::null_mut(), 0, &mut needed) };
        assert_eq!(r.unwrap_err().code, dmd_result::DMD_ERR_BUFFER_TOO_SMALL);
        let r = unsafe { write_string("abc", std::ptr::null_mut(), 3, &mut needed) };
        assert_eq!(r.unwrap_err().code, dmd_result::DMD_ERR_NULL_ARGUMENT);
        let r = unsafe { write_string("abc", buf.as_mut_ptr(), 4, std::ptr::null_mut()) };
        assert_eq!(r.unwrap_err().code, dmd_result::DMD_ERR_NULL_ARGUMENT);
    }

    #[test]
    fn copy_truncated_cuts_at_a_character_boundary() {
        let mut buf = [0x55 as c_char; 4];
        // "aé" is 3 bytes; with 3 bytes of room only "a" fits before the NUL.
        let n = unsafe { copy_truncated("aéz", buf.as_mut_ptr(), 3) };
        assert_eq!(n, 5);
        assert_eq!(&buf[..2], &[b'a' as c_char, 0]);
        assert_eq!(unsafe { copy_truncated("xyz", std::ptr::null_mut(), 9) }, 4);
        assert_eq!(unsafe { copy_truncated("", buf.as_mut_ptr(), 1) }, 1);
        assert_eq!(buf[0], 0);
    }
}
