//! # dmdelegate-net
//!
//! The delegation core on the network: the HTTPS binding with mutual TLS between DM
//! Servers ([`https`]), TLS identities and a test PKI ([`tls`]), and durable session state
//! in SQLite ([`sqlite`]); [`Server`], the facade the language bindings wrap.
#![warn(missing_docs)]

pub mod bootstrap;
pub mod device;
pub mod dm;
pub mod https;
pub mod local;
pub mod node;
pub mod server;
pub mod sqlite;
pub mod tls;

pub use dm::{DeviceLink, DmHub, HubHost, HubOptions, InvalidDeviceLink};
pub use https::{
    client_builder, serve, serve_echo, DeliveryStats, Endpoint, HttpsOptions, HttpsSender,
    HttpsTransport, InvalidHttpsOption, Peer, DELEGATION_PATH, MIN_BODY_BYTES,
};
pub use local::{DeviceMode, LocalOptions, LocalPair, NetworkParts, PairDelivery};
pub use server::{route_bootstrap, DeviceHubOptions, Server, ServerOptions, StartDelegation, Wire};
pub use tls::{Identity, TestPki, TlsError};
