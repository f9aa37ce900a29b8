//! # dmdelegate-c: the C ABI of dmdelegate
//!
//! Built as `libdmdelegate.a` and `libdmdelegate.so`; the header is
//! `include/dmdelegate.h`, generated from this crate by cbindgen 0.29.4
//! (`bindings/c/cbindgen.toml`) and checked by `scripts/c-tests.sh`.
//!
//! Conventions, the same for every function:
//!
//! - names: `dmd_` prefix, `dmd_<type>_<verb>`; opaque handles are created by a function
//!   that writes them to an out parameter and freed by `dmd_<type>_free`, which accepts
//!   NULL;
//! - results: a function that can fail returns a `dmd_result` (stable numbers, `DMD_OK` =
//!   0); `dmd_result_message` describes a code, `dmd_last_error_message` gives the detail
//!   of the calling thread's last failure;
//! - outputs are written only on success (the one exception: the needed-size output of a
//!   string accessor is also written with `DMD_ERR_BUFFER_TOO_SMALL`);
//! - every pointer argument is NULL-checked (`DMD_ERR_NULL_ARGUMENT`), and every function
//!   runs behind a panic boundary (`DMD_ERR_PANIC`): no panic unwinds into C;
//! - enums passed *into* the library travel as their integer, so an out-of-range value is
//!   `DMD_ERR_INVALID_ARGUMENT`, never undefined behaviour;
//! - strings are UTF-8, NUL-terminated; string outputs follow the needed-length
//!   convention described at `dmd_message_session_id`.
//!
//! Surface: the version, result codes and last-error messages; the message codec;
//! `dmd_server` (a DM Server's delegation engine with the host's callbacks, on the HTTPS
//! binding with mutual TLS or on the host's own transport with `dmd_server_receive`); the
//! test helpers (test PKI, simulated device and Bootstrap Server); and `dmd_local_pair`,
//! two servers over HTTPS around a networked simulated device, in one call.
#![allow(non_camel_case_types)]
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs)]

#[doc(hidden)]
pub mod guard;

// The header lists the functions in this order (cbindgen keeps source order).
pub mod version;

pub mod result;

pub mod codec;

pub mod local;

pub mod host;

pub mod server;

pub mod testing;

pub use codec::{dmd_bytes, dmd_message, dmd_message_type};
pub use host::{
    dmd_command, dmd_command_kind, dmd_event, dmd_event_kind, dmd_host_callbacks, dmd_offer,
    dmd_reply, dmd_role, dmd_subtree,
};
pub use local::{dmd_delegation_type, dmd_local_pair, dmd_outcome, dmd_state};
pub use result::{dmd_last_error_message, dmd_result};
pub use server::{
    dmd_delegation_request, dmd_https_options, dmd_peer, dmd_server, dmd_server_config,
    dmd_session_state, dmd_timeouts, dmd_transport,
};
pub use testing::{dmd_identity, dmd_sim_bootstrap_server, dmd_sim_device, dmd_test_pki};
