//! Simulated surroundings for tests and demos: a DM Client ([`SimDevice`]), a Bootstrap
//! Server ([`SimBootstrapServer`]), an in-process network ([`InProcessNetwork`]), a host
//! ([`SimHost`]) and a two-server [`Testbed`] wiring them together.

mod bootstrap;
mod device;
mod host;
mod network;
mod testbed;

pub use bootstrap::SimBootstrapServer;
pub use device::{BootstrapTrigger, DeviceFault, SimDevice, TriggerHook};
pub use host::{HostFaults, SimHost};
pub use network::{InProcessNetwork, LinkFault};
pub use testbed::{HostWrapper, PartFactory, Testbed, TestbedOptions};
