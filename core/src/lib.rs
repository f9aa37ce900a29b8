//! # dmdelegate
//!
//! The reference implementation of **OMA Device Management Client Authority Delegation**:
//! one DM Server (DMS-1) hands authority over a device to another (DMS-2), fully or for
//! parts of the DM Tree, by the four methods of the specification.
//!
//! - [`message`]: the wire format (one XML envelope, [`message::NAMESPACE`], version 1.0);
//! - [`batch`]: several messages in one document, for bindings that batch under load;
//! - [`acl`], [`tree`], [`dmacc`]: the DM Tree model (ACLs, TNDS, the DMAcc MO);
//! - [`engine`]: [`DelegationServer`], the state machines, the client-preparation plan,
//!   the rollback journal and deadlines;
//! - [`host`]: the traits the host DM Server implements ([`Host`], [`Transport`], [`Clock`]);
//! - [`store`]: session persistence;
//! - [`ops`]: client operations and their SyncML DM 1.2 rendering;
//! - [`sim`]: a simulated DM Client, Bootstrap Server and in-process network for tests
//!   and demos.
//!
//! The crate is pure Rust with no FFI types; the bindings wrap [`DelegationServer`].
//!
//! ```
//! use dmdelegate::{sim::Testbed, DelegationType, Method, State};
//! # tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap().block_on(async {
//! // Two servers, a simulated device and a Bootstrap Server, in process.
//! let tb = Testbed::new();
//! let (dms1, dms2) = tb.run(Method::DelegatingInitiates, DelegationType::Partial).await?;
//! assert_eq!((dms1.state, dms2.state), (State::Completed, State::Completed));
//! assert_eq!(tb.device.accounts_of(Testbed::DMS2).len(), 1);
//! # Ok::<(), dmdelegate::Error>(()) }).unwrap();
//! ```
#![warn(missing_docs)]

pub mod acl;
pub mod batch;
pub mod dmacc;
pub mod engine;
pub mod error;
pub mod host;
pub mod message;
pub mod ops;
pub mod reason;
pub mod sim;
pub mod store;
pub mod syncml;
pub mod tree;
mod xml;

pub use acl::{Acl, AclCommand};
pub use dmacc::DmAcc;
pub use engine::{
    DelegationRequest, DelegationServer, Receipt, ServerConfig, SessionInfo, SessionRecord, State,
    Timeouts, WeakDelegationServer,
};
pub use error::{DecodeError, Error, Result};
pub use host::{
    Clock, DelegationOffer, Event, EventKind, Host, HostError, ManualClock, PolicyDecision,
    SystemClock, Transport, TransportError,
};
pub use message::{
    Body, DelegatedSubtree, DelegationInfo, DelegationType, DeviceInfo, Message, MessageKind,
    Method, Reason, Role, Timestamp,
};
pub use ops::{ClientCommand, CommandOutput, DeviceError};
pub use reason::ReasonCode;
pub use store::{MemoryStore, SessionStore, StoreError};
pub use tree::{MgmtTree, Node};
pub use xml::XmlLimits;

/// This crate's version.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
