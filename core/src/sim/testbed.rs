//! Two servers, one device, a Bootstrap Server and a manual clock, wired in process.

use std::sync::Arc;
use std::time::Duration;

use crate::acl::{Acl, AclCommand};
use crate::dmacc::DmAcc;
use crate::engine::{DelegationRequest, DelegationServer, ServerConfig, SessionInfo};
use crate::error::Result;
use crate::host::ManualClock;
use crate::host::{Clock, Host, SystemClock, Transport};
use crate::message::{
    DelegatedSubtree, DelegationInfo, DelegationType, DeviceInfo, Method, Timestamp,
};
use crate::store::{MemoryStore, SessionStore};
use crate::tree::Node;

use super::{InProcessNetwork, SimBootstrapServer, SimDevice, SimHost};

/// Makes a part for the server with the given ServerID.
pub type PartFactory<T> = Box<dyn Fn(&str) -> Arc<T> + Send + Sync>;

/// How [`Testbed::with_options`] builds its servers.
#[derive(Default)]
pub struct TestbedOptions {
    /// Transport per server; default: the testbed's [`InProcessNetwork`].
    pub transport: Option<PartFactory<dyn Transport>>,
    /// Store per server; default: a [`MemoryStore`].
    pub store: Option<PartFactory<dyn SessionStore>>,
    /// Use the system clock instead of the testbed's manual clock.
    pub system_clock: bool,
    /// Deadlines; default: [`crate::Timeouts::default`].
    pub timeouts: Option<crate::Timeouts>,
    /// Wraps each server's [`SimHost`] (for example to reach the device over a network);
    /// default: the `SimHost` itself.
    pub host: Option<HostWrapper>,
}

/// Turns a server's [`SimHost`] into the host the server uses.
pub type HostWrapper = Box<dyn Fn(&str, Arc<SimHost>) -> Arc<dyn Host> + Send + Sync>;

impl std::fmt::Debug for TestbedOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestbedOptions")
            .field("system_clock", &self.system_clock)
            .finish_non_exhaustive()
    }
}

/// A complete in-process delegation setup.
///
/// The device starts with DMS-1's account and this tree (ACLs in brackets):
/// ```text
/// .                      [Add=*&Get=*]
/// ./DevInfo              [Get=*]
/// ./DMAcc                [Add=dms1&Get=*&Replace=dms1]
/// ./DMAcc/dms1_...       [Add=dms1&Delete=dms1&Get=dms1&Replace=dms1]
/// ./Vendor               [Add=dms1&Delete=dms1&Get=dms1&Replace=dms1]
/// ./Vendor/Apps          (inherits)
/// ./Vendor/Apps/Mail     [Get=*&Replace=dms1]
/// ./Vendor/Apps/Mail/Server, ./Vendor/Apps/Browser/Home, ./Vendor/Settings/Volume
/// ./Network              [Add=dms1&Delete=dms1&Get=*&Replace=dms1]
/// ./Network/APN
/// ```
#[derive(Debug)]
pub struct Testbed {
    /// The clock both servers read.
    pub clock: ManualClock,
    /// The network between them.
    pub network: Arc<InProcessNetwork>,
    /// The device.
    pub device: Arc<SimDevice>,
    /// DMS-2's Bootstrap Server.
    pub bootstrap: Arc<SimBootstrapServer>,
    /// DMS-1's host.
    pub host1: Arc<SimHost>,
    /// DMS-2's host.
    pub host2: Arc<SimHost>,
    /// DMS-1.
    pub dms1: DelegationServer,
    /// DMS-2.
    pub dms2: DelegationServer,
}

impl Testbed {
    /// DMS-1's ServerID.
    pub const DMS1: &'static str = "dms1.operator.example";
    /// DMS-2's ServerID.
    pub const DMS2: &'static str = "dms2.enterprise.example";
    /// DMS-2's Bootstrap Server URL.
    pub const BOOTSTRAP_URL: &'static str = "https://bootstrap.enterprise.example/bs";

    /// A fresh testbed on the in-process network and a manual clock. Must be called inside
    /// a tokio runtime (Methods 3/4 spawn the device's bootstrap as a task).
    pub fn new() -> Self {
        Self::with_options(TestbedOptions::default())
    }

    /// A testbed whose servers use the given transports, stores and clock.
    pub fn with_options(options: TestbedOptions) -> Self {
        let clock =
            ManualClock::new(Timestamp::parse_rfc3339("2026-11-21T10:00:00Z").expect("valid"));
        let network = Arc::new(InProcessNetwork::new());
        let info = DeviceInfo {
            device_id: "IMEI:490154203237518".into(),
            manufacturer: "Acme".into(),
            model: "Phone X".into(),
        };
        let device = Arc::new(SimDevice::new(info));
        provision_sample_tree(
            &device,
            &DmAcc::simple(
                Self::DMS1,
                "https://dms1.operator.example/dm",
                "client-secret-1",
                "server-secret-1",
            ),
        );

        let host1 = Arc::new(SimHost::new(Self::DMS1));
        host1.add_device(device.clone());
        let host2 = Arc::new(SimHost::new(Self::DMS2));
        host2.add_device(device.clone());
        let dms2_account = DmAcc::simple(
            Self::DMS2,
            "https://dms2.enterprise.example/dm",
            "client-secret-2",
            "server-secret-2",
        );
        host2.set_account(dms2_account.clone());
        host2.set_bootstrap_url(Self::BOOTSTRAP_URL);
        let bootstrap = Arc::new(SimBootstrapServer::new());
        bootstrap.register(Self::BOOTSTRAP_URL, dms2_account);

        let server = |id: &str, host: Arc<SimHost>| {
            let transport: Arc<dyn Transport> = match &options.transport {
                Some(make) => make(id),
                None => network.clone(),
            };
            let store: Arc<dyn SessionStore> = match &options.store {
                Some(make) => make(id),
                None => Arc::new(MemoryStore::new()),
            };
            let time: Arc<dyn Clock> = if options.system_clock {
                Arc::new(SystemClock)
            } else {
                Arc::new(clock.clone())
            };
            let mut config = ServerConfig::new(id);
            if let Some(t) = options.timeouts {
                config.timeouts = t;
            }
            let host: Arc<dyn Host> = match &options.host {
                Some(wrap) => wrap(id, host),
                None => host,
            };
            DelegationServer::with_parts(config, host, transport, store, time)
                .expect("valid config")
        };
        let dms1 = server(Self::DMS1, host1.clone());
        let dms2 = server(Self::DMS2, host2.clone());
        network.attach(&dms1);
        network.attach(&dms2);

        // Methods 3/4: the device fetches its bootstrap, installs it, then opens its first
        // session to DMS-2, which confirms.
        let (dev, bs, server2) = (device.clone(), bootstrap.clone(), dms2.clone());
        device.on_bootstrap_trigger(Arc::new(move |trigger| {
            let (dev, bs, server2) = (dev.clone(), bs.clone(), server2.clone());
            tokio::spawn(async move {
                let id = dev.info().device_id;
                let outcome = bs
                    .bootstrap(&trigger.url, &id)
                    .and_then(|tree| dev.install_bootstrap(&tree, Some(&trigger.delegator)))
                    .and_then(|()| dev.open_session(&trigger.server_id));
                match outcome {
                    Ok(()) => {
                        if let Err(e) = server2.client_session_established(&id).await {
                            tracing::warn!(error = %e, "confirming the client session failed");
                        }
                    }
                    Err(e) => tracing::info!(error = %e, "device bootstrap failed"),
                }
            });
        }));

        Self {
            clock,
            network,
            device,
            bootstrap,
            host1,
            host2,
            dms1,
            dms2,
        }
    }

    /// The subtrees this testbed delegates: Partial, `./Vendor/Apps` with Add, Get and
    /// Replace; Full, the whole tree (`.`) with Get in addition to all DMS-1 holds.
    pub fn subtrees(delegation_type: DelegationType) -> Vec<DelegatedSubtree> {
        match delegation_type {
            DelegationType::Partial => vec![DelegatedSubtree {
                uri: "./Vendor/Apps".into(),
                rights: vec![AclCommand::Add, AclCommand::Get, AclCommand::Replace],
            }],
            DelegationType::Full => vec![DelegatedSubtree {
                uri: ".".into(),
                rights: vec![AclCommand::Get],
            }],
        }
    }

    /// The server that starts `method` (DMS-1 for Methods 1/3, DMS-2 for 2/4).
    pub fn initiator(&self, method: Method) -> &DelegationServer {
        match method.initiator() {
            crate::Role::Delegating => &self.dms1,
            crate::Role::Delegated => &self.dms2,
        }
    }

    /// The other server.
    pub fn responder(&self, method: Method) -> &DelegationServer {
        match method.initiator() {
            crate::Role::Delegating => &self.dms2,
            crate::Role::Delegated => &self.dms1,
        }
    }

    /// The request the initiator of `method` sends.
    pub fn request(&self, method: Method, delegation_type: DelegationType) -> DelegationRequest {
        DelegationRequest {
            session_id: None,
            peer: self.responder(method).server_id().to_string(),
            method,
            delegation_type,
            info: DelegationInfo {
                device: self.device.info(),
                subtrees: Self::subtrees(delegation_type),
            },
            expires: None,
        }
    }

    /// Runs one delegation to its end; returns (DMS-1's view, DMS-2's view).
    pub async fn run(
        &self,
        method: Method,
        delegation_type: DelegationType,
    ) -> Result<(SessionInfo, SessionInfo)> {
        let id = self
            .initiator(method)
            .start_delegation(self.request(method, delegation_type))
            .await?;
        self.finish(&id).await
    }

    /// Waits for both sides of session `id` to end; returns (DMS-1's view, DMS-2's view).
    pub async fn finish(&self, id: &str) -> Result<(SessionInfo, SessionInfo)> {
        let wait = Duration::from_secs(10);
        // The initiator knows the session first; with a transport that delivers in the
        // background the responder may not have it yet.
        if self.dms1.session(id).await.is_ok() {
            let one = self.dms1.wait_until_terminal(id, wait).await?;
            let two = self.dms2.wait_until_terminal(id, wait).await?;
            Ok((one, two))
        } else {
            let two = self.dms2.wait_until_terminal(id, wait).await?;
            let one = self.dms1.wait_until_terminal(id, wait).await?;
            Ok((one, two))
        }
    }
}

impl Default for Testbed {
    fn default() -> Self {
        Self::new()
    }
}

/// Gives `device` the sample tree of [`Testbed`], owned by the server of `owner`
/// (installed as its account): `./Vendor` (with `Apps/Mail`, `Apps/Browser`, `Settings`)
/// and `./Network`, and `./DMAcc` where the owner may add accounts.
pub fn provision_sample_tree(device: &SimDevice, owner: &DmAcc) {
    let d1 = owner.server_id.as_str();
    let acl = |t: String| Acl::parse(&t).expect("static ACL");
    device.provision_account(owner);
    let dmacc_acl = acl(format!("Add={d1}&Get=*&Replace={d1}"));
    let all = acl(format!("Add={d1}&Delete={d1}&Get={d1}&Replace={d1}"));
    device
        .provision(
            ".",
            Node::interior(
                "Vendor",
                vec![
                    Node::interior(
                        "Apps",
                        vec![
                            Node::interior(
                                "Mail",
                                vec![Node::leaf("Server", "imap.operator.example")],
                            )
                            .with_acl(acl(format!("Get=*&Replace={d1}"))),
                            Node::interior(
                                "Browser",
                                vec![Node::leaf("Home", "https://portal.operator.example")],
                            ),
                        ],
                    ),
                    Node::interior("Settings", vec![Node::leaf("Volume", "5")]),
                ],
            )
            .with_acl(all.clone()),
        )
        .expect("root exists");
    device
        .provision(
            ".",
            Node::interior(
                "Network",
                vec![Node::leaf("APN", "internet.operator.example")],
            )
            .with_acl(acl(format!("Add={d1}&Delete={d1}&Get=*&Replace={d1}"))),
        )
        .expect("root exists");
    device
        .set_acl_unchecked("./DMAcc", dmacc_acl)
        .expect("exists");
}
