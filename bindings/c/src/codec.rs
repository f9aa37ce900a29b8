//! The message codec, for hosts that bring their own transport: validate, decode, read the
//! header, encode.

use std::ffi::c_char;

use dmdelegate::{Message, MessageKind};

use crate::guard::{arg_bytes, arg_ref, check_out, write_string, Failure};
use crate::result::dmd_result;

/// A decoded, valid delegation message. Opaque: create it with `dmd_message_decode`, read
/// it with the `dmd_message_*` accessors, free it with `dmd_message_free`.
///
/// A message is immutable: any number of threads may read one message at the same time.
pub struct dmd_message {
    inner: Message,
}

/// Bytes the library allocated (an encoded message). Opaque: read it with
/// `dmd_bytes_data` and `dmd_bytes_len`, free it with `dmd_bytes_free`. Immutable, so any
/// number of threads may read it at the same time.
pub struct dmd_bytes {
    /// The bytes followed by one NUL that `len` does not count.
    data: Vec<u8>,
}

impl dmd_bytes {
    fn new(mut data: Vec<u8>) -> Self {
        data.push(0);
        dmd_bytes { data }
    }
}

/// The message types of the protocol. The numbers are stable; 0 is never a message type.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum dmd_message_type {
    /// DELEGATION_NOTIF: the initiator proposes a delegation.
    DMD_MESSAGE_TYPE_NOTIF = 1,
    /// DELEGATION_RES: ack or nack of a DELEGATION_NOTIF.
    DMD_MESSAGE_TYPE_RES = 2,
    /// DELEGATION_START: DMS-2's DM account for the client.
    DMD_MESSAGE_TYPE_START = 3,
    /// DELEGATION_PREPARED: DMS-1 has prepared the client (Methods 1/2).
    DMD_MESSAGE_TYPE_PREPARED = 4,
    /// DELEGATION_CONFIRM: DMS-2 has its DM session with the client.
    DMD_MESSAGE_TYPE_CONFIRM = 5,
    /// DELEGATION_FAILURE: the delegation failed; carries a reason code.
    DMD_MESSAGE_TYPE_FAILURE = 6,
    /// BOOTSTRAP_URL_REQUEST: DMS-1 asks for DMS-2's Bootstrap Server URL (Methods 3/4).
    DMD_MESSAGE_TYPE_BOOTSTRAP_URL_REQUEST = 7,
    /// BOOTSTRAP_URL: DMS-2's Bootstrap Server URL (Methods 3/4).
    DMD_MESSAGE_TYPE_BOOTSTRAP_URL = 8,
}

impl From<MessageKind> for dmd_message_type {
    fn from(kind: MessageKind) -> Self {
        match kind {
            MessageKind::Notif => dmd_message_type::DMD_MESSAGE_TYPE_NOTIF,
            MessageKind::Res => dmd_message_type::DMD_MESSAGE_TYPE_RES,
            MessageKind::Start => dmd_message_type::DMD_MESSAGE_TYPE_START,
            MessageKind::Prepared => dmd_message_type::DMD_MESSAGE_TYPE_PREPARED,
            MessageKind::Confirm => dmd_message_type::DMD_MESSAGE_TYPE_CONFIRM,
            MessageKind::Failure => dmd_message_type::DMD_MESSAGE_TYPE_FAILURE,
            MessageKind::BootstrapUrlRequest => {
                dmd_message_type::DMD_MESSAGE_TYPE_BOOTSTRAP_URL_REQUEST
            }
            MessageKind::BootstrapUrl => dmd_message_type::DMD_MESSAGE_TYPE_BOOTSTRAP_URL,
        }
    }
}

/// Checks that `len` bytes at `xml` are one valid delegation message (well-formed XML in
/// the protocol's namespace and version, every field valid), without keeping it.
///
/// Returns `DMD_OK`, or `DMD_ERR_DECODE` with the last-error message naming the first bad
/// field (for example: field `Delegation/Header/Seq` is invalid: ...).
///
/// - Ownership: `xml` stays the caller's; it is not retained.
/// - NULL: `xml` NULL gives `DMD_ERR_NULL_ARGUMENT` (even with `len` 0).
/// - Threads: any thread, concurrently.
///
/// # Safety
///
/// `xml` is NULL or points to `len` readable bytes.
#[no_mangle]
pub unsafe extern "C" fn dmd_message_validate(xml: *const u8, len: usize) -> dmd_result {
    crate::ffi_guard!({
        // SAFETY: forwarded from the caller.
        let bytes = unsafe { arg_bytes(xml, len, "xml") }?;
        Message::from_xml(bytes)?;
        Ok(())
    })
}

/// Decodes and validates `len` bytes at `xml` into a new message, stored in `*out`.
///
/// Returns `DMD_OK`, or `DMD_ERR_DECODE` with the last-error message naming the first bad
/// field. Documents over 256 KiB or nesting deeper than 32 elements are refused; DTDs and
/// entities other than the five predefined ones are never processed.
///
/// - Ownership: `xml` stays the caller's. On success `*out` is a new message the caller
///   owns and frees with `dmd_message_free`; on failure `*out` is not written.
/// - NULL: `xml` or `out` NULL gives `DMD_ERR_NULL_ARGUMENT`.
/// - Threads: any thread, concurrently.
///
/// # Safety
///
/// `xml` is NULL or points to `len` readable bytes; `out` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn dmd_message_decode(
    xml: *const u8,
    len: usize,
    out: *mut *mut dmd_message,
) -> dmd_result {
    crate::ffi_guard!({
        // SAFETY: forwarded from the caller.
        let bytes = unsafe { arg_bytes(xml, len, "xml") }?;
        check_out(out, "out")?;
        let inner = Message::from_xml(bytes)?;
        let message = Box::into_raw(Box::new(dmd_message { inner }));
        // SAFETY: `out` is non-NULL and writable.
        unsafe { out.write(message) };
        Ok(())
    })
}

/// Frees a message from `dmd_message_decode`.
///
/// - Ownership: takes `message`; it must not be used afterwards.
/// - NULL: `message` NULL does nothing.
/// - Threads: any thread, once no other thread uses the message.
///
/// # Safety
///
/// `message` is NULL or a message from `dmd_message_decode` not yet freed.
#[no_mangle]
pub unsafe extern "C" fn dmd_message_free(message: *mut dmd_message) {
    crate::ffi_guard!((); {
        if !message.is_null() {
            // SAFETY: the caller gives back a pointer from `Box::into_raw`, once.
            drop(unsafe { Box::from_raw(message) });
        }
    })
}

/// Writes the message's type to `*out`.
///
/// - Ownership: `message` stays the caller's.
/// - NULL: `message` or `out` NULL gives `DMD_ERR_NULL_ARGUMENT`; `*out` is written only
///   on success.
/// - Threads: any thread, concurrently.
///
/// # Safety
///
/// `message` is NULL or a live message; `out` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn dmd_message_kind(
    message: *const dmd_message,
    out: *mut dmd_message_type,
) -> dmd_result {
    crate::ffi_guard!({
        // SAFETY: forwarded from the caller.
        let message = unsafe { arg_ref(message, "message") }?;
        check_out(out, "out")?;
        // SAFETY: `out` is non-NULL and writable.
        unsafe { out.write(message.inner.body.kind().into()) };
        Ok(())
    })
}

/// Writes the message's sequence number (from 1, per sender and session) to `*out`.
///
/// - Ownership: `message` stays the caller's.
/// - NULL: `message` or `out` NULL gives `DMD_ERR_NULL_ARGUMENT`; `*out` is written only
///   on success.
/// - Threads: any thread, concurrently.
///
/// # Safety
///
/// `message` is NULL or a live message; `out` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn dmd_message_seq(message: *const dmd_message, out: *mut u32) -> dmd_result {
    crate::ffi_guard!({
        // SAFETY: forwarded from the caller.
        let message = unsafe { arg_ref(message, "message") }?;
        check_out(out, "out")?;
        // SAFETY: `out` is non-NULL and writable.
        unsafe { out.write(message.inner.header.seq) };
        Ok(())
    })
}

/// Writes the message's delegation method (1-4) to `*out`.
///
/// - Ownership: `message` stays the caller's.
/// - NULL: `message` or `out` NULL gives `DMD_ERR_NULL_ARGUMENT`; `*out` is written only
///   on success.
/// - Threads: any thread, concurrently.
///
/// # Safety
///
/// `message` is NULL or a live message; `out` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn dmd_message_method(
    message: *const dmd_message,
    out: *mut u8,
) -> dmd_result {
    crate::ffi_guard!({
        // SAFETY: forwarded from the caller.
        let message = unsafe { arg_ref(message, "message") }?;
        check_out(out, "out")?;
        // SAFETY: `out` is non-NULL and writable.
        unsafe { out.write(message.inner.header.method.number()) };
        Ok(())
    })
}

/// One string accessor: the needed-length convention around `field`.
///
/// # Safety
///
/// As the exported accessors.
unsafe fn header_string(
    message: *const dmd_message,
    buf: *mut c_char,
    len: usize,
    needed: *mut usize,
    field: fn(&Message) -> &str,
) -> dmd_result {
    crate::ffi_guard!({
        // SAFETY: forwarded from the caller.
        let message = unsafe { arg_ref(message, "message") }?;
        // SAFETY: forwarded from the caller.
        unsafe { write_string(field(&message.inner), buf, len, needed) }
    })
}

/// Copies the message's session id, NUL-terminated, into `buf` (`len` bytes).
///
/// The needed-length convention (every string output works this way):
/// - `*needed` receives the size the value needs, terminating NUL included (its length
///   plus 1), both on `DMD_OK` and on `DMD_ERR_BUFFER_TOO_SMALL`;
/// - when `len` is smaller than that, nothing is written to `buf` and the result is
///   `DMD_ERR_BUFFER_TOO_SMALL`; call with `buf` NULL and `len` 0 to ask for the size;
/// - otherwise the whole value and its NUL are written and the result is `DMD_OK`.
///
/// Session ids are 1-64 characters of `A-Z a-z 0-9 . _ -`, so 65 bytes always suffice.
///
/// - Ownership: `message` and `buf` stay the caller's.
/// - NULL: `message` or `needed` NULL, or `buf` NULL with `len` > 0, gives
///   `DMD_ERR_NULL_ARGUMENT` and writes nothing.
/// - Threads: any thread, concurrently.
///
/// # Safety
///
/// `message` is NULL or a live message; `buf` is NULL or points to `len` writable bytes;
/// `needed` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn dmd_message_session_id(
    message: *const dmd_message,
    buf: *mut c_char,
    len: usize,
    needed: *mut usize,
) -> dmd_result {
    // SAFETY: forwarded from the caller.
    unsafe { header_string(message, buf, len, needed, |m| &m.header.session_id) }
}

/// Copies the sender's ServerID, NUL-terminated, into `buf` (`len` bytes), by the
/// needed-length convention of `dmd_message_session_id`.
///
/// - Ownership: `message` and `buf` stay the caller's.
/// - NULL: `message` or `needed` NULL, or `buf` NULL with `len` > 0, gives
///   `DMD_ERR_NULL_ARGUMENT` and writes nothing.
/// - Threads: any thread, concurrently.
///
/// # Safety
///
/// `message` is NULL or a live message; `buf` is NULL or points to `len` writable bytes;
/// `needed` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn dmd_message_sender(
    message: *const dmd_message,
    buf: *mut c_char,
    len: usize,
    needed: *mut usize,
) -> dmd_result {
    // SAFETY: forwarded from the caller.
    unsafe { header_string(message, buf, len, needed, |m| &m.header.sender) }
}

/// Copies the recipient's ServerID, NUL-terminated, into `buf` (`len` bytes), by the
/// needed-length convention of `dmd_message_session_id`.
///
/// - Ownership: `message` and `buf` stay the caller's.
/// - NULL: `message` or `needed` NULL, or `buf` NULL with `len` > 0, gives
///   `DMD_ERR_NULL_ARGUMENT` and writes nothing.
/// - Threads: any thread, concurrently.
///
/// # Safety
///
/// `message` is NULL or a live message; `buf` is NULL or points to `len` writable bytes;
/// `needed` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn dmd_message_recipient(
    message: *const dmd_message,
    buf: *mut c_char,
    len: usize,
    needed: *mut usize,
) -> dmd_result {
    // SAFETY: forwarded from the caller.
    unsafe { header_string(message, buf, len, needed, |m| &m.header.recipient) }
}

/// Encodes the message as its XML document (UTF-8, with an XML declaration) into a new
/// byte buffer, stored in `*out`. Decoding the result gives the same message.
///
/// - Ownership: `message` stays the caller's. On success `*out` is a new buffer the caller
///   owns and frees with `dmd_bytes_free`; on failure `*out` is not written.
/// - NULL: `message` or `out` NULL gives `DMD_ERR_NULL_ARGUMENT`.
/// - Threads: any thread, concurrently.
///
/// # Safety
///
/// `message` is NULL or a live message; `out` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn dmd_message_encode(
    message: *const dmd_message,
    out: *mut *mut dmd_bytes,
) -> dmd_result {
    crate::ffi_guard!({
        // SAFETY: forwarded from the caller.
        let message = unsafe { arg_ref(message, "message") }?;
        check_out(out, "out")?;
        message.inner.validate().map_err(|e| {
            Failure::invalid("message", format!("does not encode a valid message: {e}"))
        })?;
        let bytes = Box::into_raw(Box::new(dmd_bytes::new(
            message.inner.to_xml().into_bytes(),
        )));
        // SAFETY: `out` is non-NULL and writable.
        unsafe { out.write(bytes) };
        Ok(())
    })
}

/// The first byte of the buffer. The `dmd_bytes_len` bytes there are followed by one NUL
/// byte that the length does not count, so an encoded message can also be read as a C
/// string.
///
/// - Ownership: the pointer is valid until `dmd_bytes_free(bytes)`; do not free it.
/// - NULL: `bytes` NULL returns NULL.
/// - Threads: any thread, concurrently. Does not change the last-error message.
///
/// # Safety
///
/// `bytes` is NULL or a live buffer.
#[no_mangle]
pub unsafe extern "C" fn dmd_bytes_data(bytes: *const dmd_bytes) -> *const u8 {
    crate::ffi_guard!(std::ptr::null(); {
        // SAFETY: forwarded from the caller.
        match unsafe { bytes.as_ref() } {
            Some(b) => b.data.as_ptr(),
            None => std::ptr::null(),
        }
    })
}

/// The number of bytes in the buffer (the trailing NUL not counted).
///
/// - Ownership: `bytes` stays the caller's.
/// - NULL: `bytes` NULL returns 0.
/// - Threads: any thread, concurrently. Does not change the last-error message.
///
/// # Safety
///
/// `bytes` is NULL or a live buffer.
#[no_mangle]
pub unsafe extern "C" fn dmd_bytes_len(bytes: *const dmd_bytes) -> usize {
    crate::ffi_guard!(0; {
        // SAFETY: forwarded from the caller.
        match unsafe { bytes.as_ref() } {
            Some(b) => b.data.len() - 1,
            None => 0,
        }
    })
}

/// Frees a buffer from `dmd_message_encode`.
///
/// - Ownership: takes `bytes`; it and its data pointer must not be used afterwards.
/// - NULL: `bytes` NULL does nothing.
/// - Threads: any thread, once no other thread uses the buffer.
///
/// # Safety
///
/// `bytes` is NULL or a buffer from this library not yet freed.
#[no_mangle]
pub unsafe extern "C" fn dmd_bytes_free(bytes: *mut dmd_bytes) {
    crate::ffi_guard!((); {
        if !bytes.is_null() {
            // SAFETY: the caller gives back a pointer from `Box::into_raw`, once.
            drop(unsafe { Box::from_raw(bytes) });
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ptr::{null, null_mut};

    const CONFIRM: &str = include_str!("../../../vectors/valid/confirm-method1.xml");

    #[test]
    fn decode_read_encode_free() {
        let mut msg: *mut dmd_message = null_mut();
        let rc = unsafe { dmd_message_decode(CONFIRM.as_ptr(), CONFIRM.len(), &mut msg) };
        assert_eq!(rc, dmd_result::DMD_OK);
        let mut kind = dmd_message_type::DMD_MESSAGE_TYPE_NOTIF;
        assert_eq!(
            unsafe { dmd_message_kind(msg, &mut kind) },
            dmd_result::DMD_OK
        );
        assert_eq!(kind, dmd_message_type::DMD_MESSAGE_TYPE_CONFIRM);
        let mut method = 0u8;
        assert_eq!(
            unsafe { dmd_message_method(msg, &mut method) },
            dmd_result::DMD_OK
        );
        assert_eq!(method, 1);
        let mut bytes: *mut dmd_bytes = null_mut();
        assert_eq!(
            unsafe { dmd_message_encode(msg, &mut bytes) },
            dmd_result::DMD_OK
        );
        let (data, len) = unsafe { (dmd_bytes_data(bytes), dmd_bytes_len(bytes)) };
        let encoded = unsafe { std::slice::from_raw_parts(data, len) };
        assert_eq!(unsafe { *data.add(len) }, 0);
        assert_eq!(
            Message::from_xml(encoded).unwrap(),
            Message::from_xml(CONFIRM.as_bytes()).unwrap()
        );
        unsafe {
            dmd_bytes_free(bytes);
            dmd_message_free(msg);
        }
    }

    #[test]
    fn null_arguments_and_failures_leave_outputs_alone() {
        let mut msg: *mut dmd_message = null_mut();
        let rc = unsafe { dmd_message_decode(null(), 0, &mut msg) };
        assert_eq!(rc, dmd_result::DMD_ERR_NULL_ARGUMENT);
        assert!(msg.is_null());
        let rc = unsafe { dmd_message_decode(b"<x/>".as_ptr(), 4, &mut msg) };
        assert_eq!(rc, dmd_result::DMD_ERR_DECODE);
        assert!(msg.is_null());
        assert!(crate::guard::last_error().contains("root element"));
        assert!(unsafe { dmd_bytes_data(null()) }.is_null());
        assert_eq!(unsafe { dmd_bytes_len(null()) }, 0);
        unsafe {
            dmd_message_free(null_mut());
            dmd_bytes_free(null_mut());
        }
    }
}
