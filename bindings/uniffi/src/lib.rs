//! # dmdelegate-uniffi: Kotlin and Swift bindings of dmdelegate
//!
//! uniffi proc-macros over `dmdelegate_net::Server`, the facade the C ABI and the Python
//! module wrap too. The generated Kotlin (package `org.dmdelegate`) and Swift (module
//! `DMDelegate`) see:
//!
//! - [`DelegationServer`]: a DM Server's delegation engine on the HTTPS binding with mutual
//!   TLS; every call that waits is `suspend fun` / `async throws`;
//! - [`DelegationHost`]: the host DM Server's callbacks, implemented in Kotlin or Swift;
//! - [`DelegationError`]: the one error type (`DelegationException` in Kotlin), a sealed
//!   hierarchy mapped variant by variant from `dmdelegate::Error`;
//! - records and enums for requests, sessions, offers, commands and events;
//! - the message codec, and the simulated device, Bootstrap Server and test PKI.
//!
//! This bridging layer is not API: the generated bindings are.
#![warn(missing_docs)]

mod codec;
mod error;
mod host;
mod server;
mod sim;
mod types;

pub use codec::{decode_message, reason_description, validate_message, version, MessageSummary};
pub use error::DelegationError;
pub use host::{DelegationHost, PolicyAnswer};
pub use server::{DelegationServer, ServerConfig};
pub use sim::{simple_dmacc_tnds, Identity, SimBootstrapServer, SimDevice, TestPki};
pub use types::*;

uniffi::setup_scaffolding!();

/// The runtime every server's tasks and every async call run on: two worker threads,
/// created on first use and shared by the whole process.
pub(crate) fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: std::sync::OnceLock<tokio::runtime::Runtime> = std::sync::OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("dmdelegate")
            .enable_all()
            .build()
            .expect("the dmdelegate runtime cannot start")
    })
}

/// Runs `future` on [`runtime`] and awaits it from whatever executor drives the caller
/// (Kotlin coroutines, Swift concurrency): the foreign side polls, tokio does the work.
pub(crate) async fn on_runtime<T, F>(future: F) -> Result<T, DelegationError>
where
    T: Send + 'static,
    F: std::future::Future<Output = Result<T, DelegationError>> + Send + 'static,
{
    match runtime().spawn(future).await {
        Ok(r) => r,
        Err(e) => Err(DelegationError::Internal {
            message: format!("task failed: {e}"),
        }),
    }
}
