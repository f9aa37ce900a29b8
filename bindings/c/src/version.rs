//! The library's version.

use std::ffi::{c_char, CStr};

/// The version, NUL-terminated (the workspace version: the same as the `dmdelegate` crate
/// this library wraps).
const VERSION: &CStr =
    match CStr::from_bytes_with_nul(concat!(env!("CARGO_PKG_VERSION"), "\0").as_bytes()) {
        Ok(v) => v,
        Err(_) => panic!("the version contains a NUL"),
    };

/// The library's version, for example "0.1.0" (semantic versioning).
///
/// - Ownership: the string is static; never free it.
/// - Threads: any thread. Does not change the last-error message.
#[no_mangle]
pub extern "C" fn dmd_version() -> *const c_char {
    crate::ffi_guard!(VERSION.as_ptr(); { VERSION.as_ptr() })
}

#[cfg(test)]
mod tests {
    #[test]
    fn version_is_the_core_version() {
        let v = unsafe { std::ffi::CStr::from_ptr(super::dmd_version()) };
        assert_eq!(v.to_str().unwrap(), dmdelegate::VERSION);
    }
}
