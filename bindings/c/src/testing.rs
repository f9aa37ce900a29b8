//! For tests and demos: a test PKI (`dmd_test_pki`, `dmd_identity`), a simulated device
//! (`dmd_sim_device`) that C host callbacks can forward to, a simulated Bootstrap Server
//! (`dmd_sim_bootstrap_server`) for Methods 3/4, and `dmd_dmacc_simple_tnds`.

use std::ffi::{c_char, CString};
use std::sync::Arc;

use dmdelegate::sim::{provision_sample_tree, SimBootstrapServer, SimDevice};
use dmdelegate::{DeviceInfo, DmAcc};
use dmdelegate_net::TestPki;

use crate::guard::{arg_ref, arg_str, check_out, write_string, Failure};
use crate::host::{dmd_command, dmd_reply, DMD_STATUS_OK};
use crate::result::dmd_result;

/// A test PKI: one fresh CA that issues server identities. For tests and demos only.
/// Opaque: `dmd_test_pki_new`, `dmd_test_pki_free`. Any number of threads may use one.
pub struct dmd_test_pki {
    pki: TestPki,
    ca_pem: CString,
}

/// A certificate (valid as TLS server and client certificate) and its private key, PEM.
/// Opaque: from `dmd_test_pki_issue`, freed with `dmd_identity_free`. Immutable.
pub struct dmd_identity {
    cert_pem: CString,
    key_pem: CString,
}

fn pem(s: String) -> Result<CString, Failure> {
    CString::new(s).map_err(|e| Failure::new(dmd_result::DMD_ERR_TRANSPORT, e.to_string()))
}

/// Generates a CA named `name` and stores the new PKI in `*out`.
///
/// Returns `DMD_OK`, or `DMD_ERR_TRANSPORT` when key generation fails.
///
/// - Ownership: `*out` is the caller's, freed with `dmd_test_pki_free`.
/// - NULL: `name` or `out` NULL gives `DMD_ERR_NULL_ARGUMENT`.
/// - Threads: any thread.
///
/// # Safety
///
/// `name` is NULL or a string; `out` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn dmd_test_pki_new(
    name: *const c_char,
    out: *mut *mut dmd_test_pki,
) -> dmd_result {
    crate::ffi_guard!({
        // SAFETY: forwarded from the caller.
        let name = unsafe { arg_str(name, "name") }?;
        check_out(out, "out")?;
        let pki = TestPki::new(name)
            .map_err(|e| Failure::new(dmd_result::DMD_ERR_TRANSPORT, e.to_string()))?;
        let ca_pem = pem(pki.ca_pem().to_string())?;
        // SAFETY: non-NULL and writable.
        unsafe { out.write(Box::into_raw(Box::new(dmd_test_pki { pki, ca_pem }))) };
        Ok(())
    })
}

/// The CA certificate (PEM): what servers trust (`dmd_server_config.trust_pem`).
///
/// - Ownership: belongs to `pki`, valid until `dmd_test_pki_free`; never free it.
/// - NULL: `pki` NULL gives NULL.
/// - Threads: any thread.
///
/// # Safety
///
/// `pki` is NULL or live.
#[no_mangle]
pub unsafe extern "C" fn dmd_test_pki_ca_pem(pki: *const dmd_test_pki) -> *const c_char {
    crate::ffi_guard!(std::ptr::null(); {
        // SAFETY: forwarded from the caller.
        unsafe { pki.as_ref() }.map_or(std::ptr::null(), |p| p.ca_pem.as_ptr())
    })
}

/// Issues an identity for `server_id` (its certificate carries it as a DNS name, the name
/// peers check) and stores it in `*out`.
///
/// Returns `DMD_OK`, `DMD_ERR_INVALID_ARGUMENT` / `DMD_ERR_TRANSPORT` when the name is
/// not usable or generation fails.
///
/// - Ownership: `*out` is the caller's, freed with `dmd_identity_free`.
/// - NULL: `pki`, `server_id` or `out` NULL gives `DMD_ERR_NULL_ARGUMENT`.
/// - Threads: any thread.
///
/// # Safety
///
/// `pki` is NULL or live; `server_id` NULL or a string; `out` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn dmd_test_pki_issue(
    pki: *const dmd_test_pki,
    server_id: *const c_char,
    out: *mut *mut dmd_identity,
) -> dmd_result {
    crate::ffi_guard!({
        // SAFETY: forwarded from the caller.
        let p = unsafe { arg_ref(pki, "pki") }?;
        // SAFETY: forwarded from the caller.
        let id = unsafe { arg_str(server_id, "server_id") }?;
        check_out(out, "out")?;
        let identity = p
            .pki
            .issue(id, &[])
            .map_err(|e| Failure::new(dmd_result::DMD_ERR_TRANSPORT, e.to_string()))?;
        let issued = dmd_identity {
            cert_pem: pem(identity.cert_chain_pem)?,
            key_pem: pem(identity.key_pem)?,
        };
        // SAFETY: non-NULL and writable.
        unsafe { out.write(Box::into_raw(Box::new(issued))) };
        Ok(())
    })
}

/// Frees a PKI. NULL does nothing. Any thread, once no other thread uses it.
///
/// # Safety
///
/// `pki` is NULL or from `dmd_test_pki_new`, not yet freed.
#[no_mangle]
pub unsafe extern "C" fn dmd_test_pki_free(pki: *mut dmd_test_pki) {
    crate::ffi_guard!((); {
        if !pki.is_null() {
            // SAFETY: from `Box::into_raw`, given back once.
            drop(unsafe { Box::from_raw(pki) });
        }
    })
}

/// The identity's certificate (PEM). Belongs to `identity` (valid until
/// `dmd_identity_free`); NULL for NULL. Any thread.
///
/// # Safety
///
/// `identity` is NULL or live.
#[no_mangle]
pub unsafe extern "C" fn dmd_identity_cert_pem(identity: *const dmd_identity) -> *const c_char {
    crate::ffi_guard!(std::ptr::null(); {
        // SAFETY: forwarded from the caller.
        unsafe { identity.as_ref() }.map_or(std::ptr::null(), |i| i.cert_pem.as_ptr())
    })
}

/// The identity's private key (PEM). Belongs to `identity` (valid until
/// `dmd_identity_free`); NULL for NULL. Any thread.
///
/// # Safety
///
/// `identity` is NULL or live.
#[no_mangle]
pub unsafe extern "C" fn dmd_identity_key_pem(identity: *const dmd_identity) -> *const c_char {
    crate::ffi_guard!(std::ptr::null(); {
        // SAFETY: forwarded from the caller.
        unsafe { identity.as_ref() }.map_or(std::ptr::null(), |i| i.key_pem.as_ptr())
    })
}

/// Frees an identity. NULL does nothing. Any thread, once no other thread uses it.
///
/// # Safety
///
/// `identity` is NULL or from `dmd_test_pki_issue`, not yet freed.
#[no_mangle]
pub unsafe extern "C" fn dmd_identity_free(identity: *mut dmd_identity) {
    crate::ffi_guard!((); {
        if !identity.is_null() {
            // SAFETY: from `Box::into_raw`, given back once.
            drop(unsafe { Box::from_raw(identity) });
        }
    })
}

/// A simulated DM Client: a DM Tree with accounts that enforces ACLs as DM TND requires.
/// Opaque: `dmd_sim_device_new`, `dmd_sim_device_free`. Thread-safe: any number of
/// threads (host callbacks included) may use one at the same time.
pub struct dmd_sim_device {
    device: Arc<SimDevice>,
}

/// Creates a device with the sample tree (`./Vendor/Apps/...`, `./Network`, `./DMAcc`)
/// owned by `owner_server_id`, whose account (server URL `owner_url`, the two secrets) is
/// installed; stores it in `*out`.
///
/// Returns `DMD_OK` or `DMD_ERR_INVALID_ARGUMENT` for a string that is not UTF-8.
///
/// - Ownership: every string is copied; `*out` is the caller's (`dmd_sim_device_free`).
/// - NULL: any argument NULL gives `DMD_ERR_NULL_ARGUMENT`.
/// - Threads: any thread.
///
/// # Safety
///
/// The strings are NULL or NUL-terminated; `out` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn dmd_sim_device_new(
    device_id: *const c_char,
    manufacturer: *const c_char,
    model: *const c_char,
    owner_server_id: *const c_char,
    owner_url: *const c_char,
    client_secret: *const c_char,
    server_secret: *const c_char,
    out: *mut *mut dmd_sim_device,
) -> dmd_result {
    crate::ffi_guard!({
        // SAFETY (this block): the caller guarantees the strings.
        let (id, man, model, owner, url, cs, ss) = unsafe {
            (
                arg_str(device_id, "device_id")?,
                arg_str(manufacturer, "manufacturer")?,
                arg_str(model, "model")?,
                arg_str(owner_server_id, "owner_server_id")?,
                arg_str(owner_url, "owner_url")?,
                arg_str(client_secret, "client_secret")?,
                arg_str(server_secret, "server_secret")?,
            )
        };
        check_out(out, "out")?;
        let device = SimDevice::new(DeviceInfo {
            device_id: id.to_string(),
            manufacturer: man.to_string(),
            model: model.to_string(),
        });
        provision_sample_tree(&device, &DmAcc::simple(owner, url, cs, ss));
        let device = Arc::new(device);
        // SAFETY: non-NULL and writable.
        unsafe { out.write(Box::into_raw(Box::new(dmd_sim_device { device }))) };
        Ok(())
    })
}

/// Executes `command` on the device as `server_id`, enforcing ACLs: what a C host's
/// `execute` callback forwards to. Fills `reply` as the callback must (TNDS for
/// `DMD_COMMAND_GET_TREE`, ACL text for `DMD_COMMAND_GET_ACL`; the detail on failure).
///
/// Returns the SyncML status: 200, or the device's refusal (404 not found, 425
/// permission denied, ...); 400 when an argument is NULL or not UTF-8, 500 on an internal
/// failure (the last-error message is not changed).
///
/// - Ownership: nothing is retained.
/// - NULL: `reply` may be NULL (then nothing is replied); other NULLs give 400.
/// - Threads: any thread.
///
/// # Safety
///
/// `device` is NULL or live; `server_id` NULL or a string; `command` and `reply` NULL or
/// the ones a callback received, during that callback.
#[no_mangle]
pub unsafe extern "C" fn dmd_sim_device_execute(
    device: *const dmd_sim_device,
    server_id: *const c_char,
    command: *const dmd_command,
    reply: *mut dmd_reply,
) -> u16 {
    crate::ffi_guard!(500; {
        // SAFETY (this block): forwarded from the caller.
        let (d, cmd) = unsafe { (device.as_ref(), command.as_ref()) };
        // SAFETY: forwarded from the caller.
        let sid = unsafe { arg_str(server_id, "server_id") };
        let (Some(d), Some(cmd), Ok(sid)) = (d, cmd, sid) else {
            return 400;
        };
        let (status, text) = match d.device.execute(sid, &cmd.inner) {
            Ok(output) => (DMD_STATUS_OK, output.to_reply()),
            Err(e) => (e.status, Some(e.message)),
        };
        // SAFETY: the caller guarantees `reply` is NULL or live and used by this thread.
        if let (Some(r), Some(t)) = (unsafe { reply.as_mut() }, text) {
            r.text = Some(t);
        }
        status
    })
}

/// Opens a DM session from `server_id` (which must have an account on the device):
/// what DMS-2's `open_dm_session` callback forwards to. Returns 200, the refusal's
/// status (401: no account), or 400 for a NULL or non-UTF-8 argument.
///
/// Threads: any thread.
///
/// # Safety
///
/// `device` is NULL or live; `server_id` NULL or a string.
#[no_mangle]
pub unsafe extern "C" fn dmd_sim_device_open_session(
    device: *const dmd_sim_device,
    server_id: *const c_char,
) -> u16 {
    crate::ffi_guard!(500; {
        // SAFETY (this block): forwarded from the caller.
        let (d, sid) = unsafe { (device.as_ref(), arg_str(server_id, "server_id")) };
        let (Some(d), Ok(sid)) = (d, sid) else {
            return 400;
        };
        match d.device.open_session(sid) {
            Ok(()) => DMD_STATUS_OK,
            Err(e) => e.status,
        }
    })
}

/// Writes a text dump of the whole DM Tree (every node with its ACL and value, secrets
/// included) into `buf`, following the needed-length convention: compare two dumps to
/// see whether anything changed.
///
/// - NULL: `device` or `needed` NULL gives `DMD_ERR_NULL_ARGUMENT`.
/// - Threads: any thread.
///
/// # Safety
///
/// `device` is NULL or live; `buf` NULL or `len` writable bytes; `needed` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn dmd_sim_device_dump(
    device: *const dmd_sim_device,
    buf: *mut c_char,
    len: usize,
    needed: *mut usize,
) -> dmd_result {
    crate::ffi_guard!({
        // SAFETY: forwarded from the caller.
        let d = unsafe { arg_ref(device, "device") }?;
        // SAFETY: forwarded from the caller.
        unsafe { write_string(&d.device.dump(), buf, len, needed) }
    })
}

/// Frees a device. NULL does nothing. Any thread, once no other thread (and no server
/// whose callbacks use it) uses it.
///
/// # Safety
///
/// `device` is NULL or from `dmd_sim_device_new`, not yet freed.
#[no_mangle]
pub unsafe extern "C" fn dmd_sim_device_free(device: *mut dmd_sim_device) {
    crate::ffi_guard!((); {
        if !device.is_null() {
            // SAFETY: from `Box::into_raw`, given back once.
            drop(unsafe { Box::from_raw(device) });
        }
    })
}

/// Writes the TNDS document of a simple DM account (one DMAcc node: ServerID
/// `server_id`, server address `url`, client and server credentials) into `buf`,
/// following the needed-length convention: what a `dm_account` callback replies.
///
/// Returns `DMD_OK`, `DMD_ERR_INVALID_ARGUMENT` when the account is not valid (for
/// example a bad ServerID), or `DMD_ERR_BUFFER_TOO_SMALL`.
///
/// - NULL: a NULL string or `needed` gives `DMD_ERR_NULL_ARGUMENT`.
/// - Threads: any thread.
///
/// # Safety
///
/// The strings are NULL or NUL-terminated; `buf` NULL or `len` writable bytes; `needed`
/// NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn dmd_dmacc_simple_tnds(
    server_id: *const c_char,
    url: *const c_char,
    client_secret: *const c_char,
    server_secret: *const c_char,
    buf: *mut c_char,
    len: usize,
    needed: *mut usize,
) -> dmd_result {
    crate::ffi_guard!({
        // SAFETY (this block): the caller guarantees the strings.
        let (sid, url, cs, ss) = unsafe {
            (
                arg_str(server_id, "server_id")?,
                arg_str(url, "url")?,
                arg_str(client_secret, "client_secret")?,
                arg_str(server_secret, "server_secret")?,
            )
        };
        let acc = DmAcc::simple(sid, url, cs, ss);
        acc.validate().map_err(|e| Failure::invalid("account", e))?;
        let xml = acc.to_tnds();
        // SAFETY: forwarded from the caller.
        unsafe { write_string(&xml, buf, len, needed) }
    })
}

/// A simulated Bootstrap Server (DMS-2's, for Methods 3/4): it hands a registered DM
/// account to a device that asks at a registered URL. Opaque:
/// `dmd_sim_bootstrap_server_new`, `dmd_sim_bootstrap_server_free`. Thread-safe.
pub struct dmd_sim_bootstrap_server {
    server: Arc<SimBootstrapServer>,
}

/// Creates an empty Bootstrap Server and stores it in `*out`.
///
/// - Ownership: `*out` is the caller's (`dmd_sim_bootstrap_server_free`).
/// - NULL: `out` NULL gives `DMD_ERR_NULL_ARGUMENT`.
/// - Threads: any thread.
///
/// # Safety
///
/// `out` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn dmd_sim_bootstrap_server_new(
    out: *mut *mut dmd_sim_bootstrap_server,
) -> dmd_result {
    crate::ffi_guard!({
        check_out(out, "out")?;
        let server = Arc::new(SimBootstrapServer::new());
        // SAFETY: non-NULL and writable.
        unsafe { out.write(Box::into_raw(Box::new(dmd_sim_bootstrap_server { server }))) };
        Ok(())
    })
}

/// Registers the account a device bootstrapping from `url` receives: `dmacc_tnds`, a
/// TNDS document holding one DMAcc node (what `dmd_dmacc_simple_tnds` writes).
///
/// Returns `DMD_OK`, or `DMD_ERR_DECODE` / `DMD_ERR_INVALID_ARGUMENT` for a document
/// that is not one valid DMAcc.
///
/// - Ownership: the strings are copied.
/// - NULL: any argument NULL gives `DMD_ERR_NULL_ARGUMENT`.
/// - Threads: any thread.
///
/// # Safety
///
/// `server` is NULL or live; the strings NULL or NUL-terminated.
#[no_mangle]
pub unsafe extern "C" fn dmd_sim_bootstrap_server_register(
    server: *const dmd_sim_bootstrap_server,
    url: *const c_char,
    dmacc_tnds: *const c_char,
) -> dmd_result {
    crate::ffi_guard!({
        // SAFETY: forwarded from the caller.
        let b = unsafe { arg_ref(server, "server") }?;
        // SAFETY (this block): the caller guarantees the strings.
        let (url, tnds) = unsafe { (arg_str(url, "url")?, arg_str(dmacc_tnds, "dmacc_tnds")?) };
        let account = DmAcc::from_tnds(tnds)?;
        b.server.register(url, account);
        Ok(())
    })
}

/// Frees a Bootstrap Server. NULL does nothing. A device routed to it keeps it alive
/// until that device is freed.
///
/// # Safety
///
/// `server` is NULL or from `dmd_sim_bootstrap_server_new`, not yet freed.
#[no_mangle]
pub unsafe extern "C" fn dmd_sim_bootstrap_server_free(server: *mut dmd_sim_bootstrap_server) {
    crate::ffi_guard!((); {
        if !server.is_null() {
            // SAFETY: from `Box::into_raw`, given back once.
            drop(unsafe { Box::from_raw(server) });
        }
    })
}

/// Makes the device behave like a real one in Methods 3/4: when a DMS-1 triggers its
/// bootstrap (through `dmd_sim_device_execute`), it fetches its bootstrap from
/// `bootstrap`, installs the account, opens its first DM session with DMS-2 and tells
/// `dms2` (as `dmd_server_client_connected` would), on `dms2`'s threads. Replaces an
/// earlier routing.
///
/// - Ownership: nothing is taken; the device keeps `bootstrap` alive, and holds `dms2`
///   weakly (after `dmd_server_free(dms2)` a trigger only logs).
/// - NULL: any argument NULL gives `DMD_ERR_NULL_ARGUMENT`.
/// - Threads: any thread except the library's own.
///
/// # Safety
///
/// Every argument is NULL or live.
#[no_mangle]
pub unsafe extern "C" fn dmd_sim_device_route_bootstrap(
    device: *const dmd_sim_device,
    bootstrap: *const dmd_sim_bootstrap_server,
    dms2: *const crate::server::dmd_server,
) -> dmd_result {
    crate::ffi_guard!({
        // SAFETY (this block): forwarded from the caller.
        let (d, b, s) = unsafe {
            (
                arg_ref(device, "device")?,
                arg_ref(bootstrap, "bootstrap")?,
                arg_ref(dms2, "dms2")?,
            )
        };
        let server = s.facade()?;
        dmdelegate_net::route_bootstrap(&d.device, b.server.clone(), server);
        Ok(())
    })
}
