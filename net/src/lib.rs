//! dmdelegate on the network.
#![warn(missing_docs)]

pub mod sqlite;
