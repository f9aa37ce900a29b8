//! Two delegation servers over loopback mutual TLS (the facade every binding wraps), with
//! simulated devices in process and DMS-2's Bootstrap Server.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use dmdelegate::sim::{
    provision_sample_tree, InProcessNetwork, SimBootstrapServer, SimDevice, SimHost,
};
use dmdelegate::{
    ClientCommand, CommandOutput, DelegationInfo, DelegationOffer, DelegationType, DeviceError,
    DeviceInfo, DmAcc, Event, EventKind, Host, HostError, MemoryStore, Method, PolicyDecision,
    SessionInfo, SessionStore, State,
};
use dmdelegate_net::{
    route_bootstrap, HttpsOptions, Identity, Peer, Server, ServerOptions, StartDelegation, TestPki,
    Wire,
};

pub const DMS1: &str = "dms1.operator.example";
pub const DMS2: &str = "dms2.enterprise.example";
const BOOTSTRAP_URL: &str = "https://bootstrap.enterprise.example/bs";

/// A host that keeps no event log (SimHost's would grow with every run); it counts the
/// sessions that reached AwaitingConfirm.
struct Quiet(Arc<SimHost>, Arc<AtomicUsize>);

#[async_trait]
impl Host for Quiet {
    async fn accept_delegation(&self, offer: &DelegationOffer) -> PolicyDecision {
        self.0.accept_delegation(offer).await
    }
    async fn execute(
        &self,
        device: &DeviceInfo,
        command: &ClientCommand,
    ) -> Result<CommandOutput, DeviceError> {
        self.0.execute(device, command).await
    }
    async fn open_dm_session(&self, session: &SessionInfo) -> Result<(), HostError> {
        self.0.open_dm_session(session).await
    }
    async fn dm_account(&self, device: &DeviceInfo) -> Result<DmAcc, HostError> {
        self.0.dm_account(device).await
    }
    async fn bootstrap_server_url(&self, device: &DeviceInfo) -> Result<String, HostError> {
        self.0.bootstrap_server_url(device).await
    }
    fn on_event(&self, event: &Event) {
        if let EventKind::StateChanged {
            to: State::AwaitingConfirm,
            ..
        } = event.kind
        {
            self.1.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// How the two servers reach each other.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Link {
    /// The HTTPS binding over loopback mutual TLS.
    Https,
    /// The simulator's [`InProcessNetwork`]: each message encoded and handed to the other
    /// server's engine, no HTTP or TLS. What a delegation costs beyond the binding.
    InProcess,
}

/// The two servers, their stores and devices.
pub struct Pair {
    pub dms1: Server,
    pub dms2: Server,
    pub store1: Arc<MemoryStore>,
    pub store2: Arc<MemoryStore>,
    /// DMS-1's sessions that reached AwaitingConfirm so far.
    pub awaiting_confirm: Arc<AtomicUsize>,
    /// The in-process link, when the servers use it.
    network: Option<Arc<InProcessNetwork>>,
}

impl Pair {
    /// Messages delivered between the servers so far, both ways.
    pub fn delivered(&self) -> u64 {
        match &self.network {
            Some(network) => network.sent(),
            None => self.dms1.delivery_stats().delivered + self.dms2.delivery_stats().delivered,
        }
    }

    /// Requests that carried the messages: one each in process, fewer over HTTPS when
    /// messages leave in batches.
    pub fn requests(&self) -> u64 {
        match &self.network {
            Some(network) => network.sent(),
            None => self.dms1.delivery_stats().requests + self.dms2.delivery_stats().requests,
        }
    }
}

static HTTPS_OPTIONS: std::sync::OnceLock<HttpsOptions> = std::sync::OnceLock::new();

/// The HTTPS binding's options for every pair started after this (the command line's);
/// the binding's defaults when never called. The first call wins.
pub fn set_https_options(options: HttpsOptions) {
    let _ = HTTPS_OPTIONS.set(options);
}

/// The options [`set_https_options`] set.
pub fn https_options() -> HttpsOptions {
    HTTPS_OPTIONS.get().copied().unwrap_or_default()
}

/// Shuts both servers down and waits (up to 10 s) until no task holds their stores any
/// more, then frees them: tearing down thousands of sessions costs CPU, which must not
/// land in the next measured phase.
pub async fn retire(pair: Arc<Pair>) {
    pair.dms1.shutdown();
    pair.dms2.shutdown();
    let stores = (pair.store1.clone(), pair.store2.clone());
    drop(pair);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while (Arc::strong_count(&stores.0) > 1 || Arc::strong_count(&stores.1) > 1)
        && std::time::Instant::now() < deadline
    {
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
}

impl Drop for Pair {
    fn drop(&mut self) {
        // The network holds both engines and they hold it: break the cycle.
        if let Some(network) = &self.network {
            network.clear();
        }
    }
}

pub fn device_info(i: usize) -> DeviceInfo {
    DeviceInfo {
        device_id: format!("IMEI:{i:015}"),
        manufacturer: "Acme".into(),
        model: "Bench".into(),
    }
}

/// Starts both servers with `devices` devices. `route_devices`: a device triggered by a
/// Method 3/4 bootstrap really bootstraps and connects to DMS-2; without it the
/// delegation waits for the device (what the in-flight benchmark wants).
pub async fn start(devices: usize, route_devices: bool) -> Pair {
    start_linked(devices, route_devices, Link::Https).await
}

/// [`start`], the servers linked by `link`.
pub async fn start_linked(devices: usize, route_devices: bool, link: Link) -> Pair {
    let pki = TestPki::new("bench CA").expect("CA");
    let id1 = pki.issue(DMS1, &[]).expect("identity");
    let id2 = pki.issue(DMS2, &[]).expect("identity");
    let trust = pki.ca_pem().to_string();
    let host1 = Arc::new(SimHost::new(DMS1));
    let host2 = Arc::new(SimHost::new(DMS2));
    let acc1 = DmAcc::simple(DMS1, "https://dms1.operator.example/dm", "c1", "s1");
    let acc2 = DmAcc::simple(DMS2, "https://dms2.enterprise.example/dm", "c2", "s2");
    host2.set_account(acc2.clone());
    host2.set_bootstrap_url(BOOTSTRAP_URL);
    let bootstrap = Arc::new(SimBootstrapServer::new());
    bootstrap.register(BOOTSTRAP_URL, acc2);
    let list: Vec<Arc<SimDevice>> = (0..devices)
        .map(|i| {
            let d = Arc::new(SimDevice::new(device_info(i)));
            // Like `Quiet`: no log that grows with every command of every run.
            d.set_logging(false);
            provision_sample_tree(&d, &acc1);
            host1.add_device(d.clone());
            host2.add_device(d.clone());
            d
        })
        .collect();
    let awaiting_confirm = Arc::new(AtomicUsize::new(0));
    let host2: Arc<dyn Host> = Arc::new(Quiet(host2, Arc::new(AtomicUsize::new(0))));
    let listen: SocketAddr = "127.0.0.1:0".parse().expect("address");
    let network = Arc::new(InProcessNetwork::new());
    let options = |id: &str, identity: &Identity, store: Arc<MemoryStore>| {
        let wire = match link {
            Link::Https => Wire::Https {
                listen,
                identity: identity.clone(),
                trust_pem: trust.clone(),
                peers: Vec::new(),
                options: https_options(),
            },
            Link::InProcess => Wire::Custom(network.clone()),
        };
        let mut o = ServerOptions::new(id, wire);
        o.store = Some(store as Arc<dyn SessionStore>);
        o
    };
    let (store1, store2) = (Arc::new(MemoryStore::new()), Arc::new(MemoryStore::new()));
    let dms1 = Server::start(
        options(DMS1, &id1, store1.clone()),
        Arc::new(Quiet(host1, awaiting_confirm.clone())),
    )
    .await
    .expect("DMS-1");
    let dms2 = Server::start(options(DMS2, &id2, store2.clone()), host2)
        .await
        .expect("DMS-2");
    let network = match link {
        Link::Https => {
            let peer = |id: &str, s: &Server| Peer {
                server_id: id.into(),
                endpoint: s.endpoint_url(id).expect("HTTPS"),
                identity: None,
                address: s.local_addr(),
            };
            dms1.set_peers(vec![peer(DMS2, &dms2)]).expect("peers");
            dms2.set_peers(vec![peer(DMS1, &dms1)]).expect("peers");
            None
        }
        Link::InProcess => {
            network.attach(dms1.engine());
            network.attach(dms2.engine());
            Some(network)
        }
    };
    if route_devices {
        for d in &list {
            route_bootstrap(d, bootstrap.clone(), &dms2);
        }
    }
    Pair {
        dms1,
        dms2,
        store1,
        store2,
        awaiting_confirm,
        network,
    }
}

/// The request DMS-1 starts for device `i`.
pub fn request(i: usize, method: Method, delegation_type: DelegationType) -> StartDelegation {
    StartDelegation {
        peer: DMS2.into(),
        method,
        delegation_type,
        info: DelegationInfo {
            device: device_info(i),
            subtrees: dmdelegate::sim::Testbed::subtrees(delegation_type),
        },
        expires: None,
        session_id: None,
    }
}
