//! Two DM Servers on loopback, talking HTTPS with mutual TLS under a freshly generated
//! test PKI, around the simulated device and Bootstrap Server of
//! [`dmdelegate::sim::Testbed`]. What `dmdelegate demo` and the network tests run.

use std::collections::HashMap;
use std::sync::Arc;

use dmdelegate::sim::{HostWrapper, PartFactory, SimHost, Testbed, TestbedOptions};
use dmdelegate::syncml::AuthScheme;
use dmdelegate::{DmAcc, Host, SessionStore, Timeouts, Transport};

use crate::bootstrap::BootstrapServer;
use crate::device::{DeviceOptions, NetworkDevice};
use crate::dm::{DeviceLink, DmHub, HubHost, HubOptions};
use tokio::net::TcpListener;

use crate::https::{
    serve, Endpoint, HttpsOptions, HttpsSender, HttpsTransport, Peer, DELEGATION_PATH,
};
use crate::tls::{Identity, TestPki, TlsError};

/// How [`LocalPair::start`] sets things up.
#[derive(Default)]
pub struct LocalOptions {
    /// Step deadlines of both servers.
    pub timeouts: Option<Timeouts>,
    /// HTTPS limits and timeouts.
    pub https: HttpsOptions,
    /// Session store per ServerID; in memory when absent.
    pub store: Option<PartFactory<dyn SessionStore>>,
    /// Where the device lives.
    pub device: DeviceMode,
}

/// How the servers reach the device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeviceMode {
    /// The device is its own network task: each server wakes it with package 0 and
    /// drives it in SyncML DM 1.2 sessions over HTTP; in Methods 3/4 it fetches its
    /// bootstrap from the Bootstrap Server over HTTPS and then calls DMS-2 on its own.
    #[default]
    Network,
    /// The servers call the simulated device directly (faster; for engine tests).
    InProcess,
}

impl std::fmt::Debug for LocalOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalOptions")
            .field("timeouts", &self.timeouts)
            .field("https", &self.https)
            .finish_non_exhaustive()
    }
}

/// DMS-1 and DMS-2 serving HTTPS on loopback.
pub struct LocalPair {
    /// The servers, device, hosts and Bootstrap Server.
    pub testbed: Testbed,
    /// The test PKI (its CA is the only trust anchor).
    pub pki: TestPki,
    /// DMS-1's endpoint.
    pub endpoint1: Endpoint,
    /// DMS-2's endpoint.
    pub endpoint2: Endpoint,
    /// The peer entries each server has for the other: (DMS-1's view of DMS-2, DMS-2's
    /// view of DMS-1).
    pub peers: (Peer, Peer),
    /// DMS-1's and DMS-2's identities.
    pub identities: (Identity, Identity),
    /// DMS-1's and DMS-2's outgoing transports.
    pub transports: (Arc<HttpsTransport>, Arc<HttpsTransport>),
    /// With [`DeviceMode::Network`]: the device's network side, the Bootstrap Server and
    /// each server's SyncML endpoint.
    pub network: Option<NetworkParts>,
}

/// The parts [`DeviceMode::Network`] adds.
#[derive(Debug)]
pub struct NetworkParts {
    /// The device on the network.
    pub device: NetworkDevice,
    /// DMS-2's Bootstrap Server (HTTPS).
    pub bootstrap: BootstrapServer,
    /// DMS-1's SyncML endpoint.
    pub hub1: DmHub,
    /// DMS-2's SyncML endpoint.
    pub hub2: DmHub,
}

impl std::fmt::Debug for LocalPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalPair")
            .field("endpoint1", &self.endpoint1.local_addr())
            .field("endpoint2", &self.endpoint2.local_addr())
            .finish_non_exhaustive()
    }
}

fn io(e: std::io::Error) -> TlsError {
    TlsError(format!("listener: {e}"))
}

/// One message a server of a [`LocalPair`] delivered (or gave up on).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PairDelivery {
    /// `DMS-1` or `DMS-2`: who sent it.
    pub from: &'static str,
    /// The delivery.
    pub delivery: crate::https::Delivery,
}

impl LocalPair {
    /// Runs one delegation to its end on both servers, then waits (at most 5 s) for the
    /// device's DM sessions to close so its logs are complete; returns (DMS-1's view,
    /// DMS-2's view).
    pub async fn run(
        &self,
        method: dmdelegate::Method,
        delegation_type: dmdelegate::DelegationType,
    ) -> dmdelegate::Result<(dmdelegate::SessionInfo, dmdelegate::SessionInfo)> {
        let ended = self.testbed.run(method, delegation_type).await?;
        self.settle(std::time::Duration::from_secs(5)).await;
        Ok(ended)
    }

    /// Every message both servers delivered, in the order their deliveries began.
    pub fn deliveries(&self) -> Vec<PairDelivery> {
        let mut all: Vec<PairDelivery> =
            [(&self.transports.0, "DMS-1"), (&self.transports.1, "DMS-2")]
                .into_iter()
                .flat_map(|(t, from)| {
                    t.deliveries()
                        .into_iter()
                        .map(move |delivery| PairDelivery { from, delivery })
                })
                .collect();
        all.sort_by_key(|d| d.delivery.at);
        all
    }

    /// Waits until neither server has a DM session open with the device, so the device's
    /// logs are complete. Returns false after `timeout`.
    pub async fn settle(&self, timeout: std::time::Duration) -> bool {
        match &self.network {
            None => true,
            Some(n) => {
                // The device's last answer arrives after the hub ends the session.
                let idle = n.hub1.wait_idle(timeout).await && n.hub2.wait_idle(timeout).await;
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                idle
            }
        }
    }

    /// Puts the device on the network: accounts pointing at the real SyncML endpoints, the
    /// device's package 0 endpoint, and the Bootstrap Server over HTTPS.
    async fn connect_device(
        testbed: &Testbed,
        pki: &TestPki,
        hub1: DmHub,
        hub2: DmHub,
    ) -> Result<NetworkParts, TlsError> {
        let secrets = [
            (Testbed::DMS1, &hub1, "client-secret-1", "server-secret-1"),
            (Testbed::DMS2, &hub2, "client-secret-2", "server-secret-2"),
        ];
        let accounts: Vec<DmAcc> = secrets
            .iter()
            .map(|(id, hub, client, server)| DmAcc::simple(id, hub.url(), client, server))
            .collect();
        testbed.device.provision_account(&accounts[0]);
        testbed.host2.set_account(accounts[1].clone());
        let bootstrap_identity = pki.issue("bootstrap.enterprise.example", &[])?;
        let bootstrap =
            BootstrapServer::start(testbed.bootstrap.clone(), &bootstrap_identity).await?;
        let bootstrap_url = bootstrap.url("/bs");
        testbed
            .bootstrap
            .register(&bootstrap_url, accounts[1].clone());
        testbed.host2.set_bootstrap_url(&bootstrap_url);
        let device = NetworkDevice::start(
            testbed.device.clone(),
            DeviceOptions {
                bootstrap_ca_pem: Some(pki.ca_pem().to_string()),
                resolve: vec![bootstrap.resolve()],
                ..DeviceOptions::default()
            },
        )
        .await
        .map_err(|e| TlsError(e.to_string()))?;
        let device_id = testbed.device.info().device_id;
        for (_, hub, client, server) in secrets {
            hub.add_device(DeviceLink {
                device_id: device_id.clone(),
                notify_url: device.notify_url(),
                server_secret: server.to_string(),
                server_nonce: Vec::new(),
                client_name: "device".into(),
                client_secret: client.to_string(),
                scheme: AuthScheme::Basic,
            });
        }
        hub1.bind_server(&testbed.dms1);
        hub2.bind_server(&testbed.dms2);
        Ok(NetworkParts {
            device,
            bootstrap,
            hub1,
            hub2,
        })
    }

    /// Generates the PKI, binds two loopback ports and starts both servers.
    pub async fn start(options: LocalOptions) -> Result<Self, TlsError> {
        let pki = TestPki::new("dmdelegate demo CA")?;
        let id1 = pki.issue(Testbed::DMS1, &[])?;
        let id2 = pki.issue(Testbed::DMS2, &[])?;
        let l1 = TcpListener::bind("127.0.0.1:0").await.map_err(io)?;
        let l2 = TcpListener::bind("127.0.0.1:0").await.map_err(io)?;
        let peer_of = |server_id: &str, l: &TcpListener| -> Result<Peer, TlsError> {
            let addr = l.local_addr().map_err(io)?;
            Ok(Peer {
                server_id: server_id.to_string(),
                endpoint: format!("https://{server_id}:{}{DELEGATION_PATH}", addr.port()),
                identity: None,
                address: Some(addr),
            })
        };
        let to2 = peer_of(Testbed::DMS2, &l2)?;
        let to1 = peer_of(Testbed::DMS1, &l1)?;
        let t1 = HttpsTransport::new(
            &id1,
            pki.ca_pem(),
            std::slice::from_ref(&to2),
            options.https,
        )?;
        let t2 = HttpsTransport::new(
            &id2,
            pki.ca_pem(),
            std::slice::from_ref(&to1),
            options.https,
        )?;
        let transports: HashMap<String, Arc<HttpsTransport>> = [
            (Testbed::DMS1.to_string(), t1.clone()),
            (Testbed::DMS2.to_string(), t2.clone()),
        ]
        .into_iter()
        .collect();
        let hubs = match options.device {
            DeviceMode::InProcess => None,
            DeviceMode::Network => {
                let bind = || TcpListener::bind("127.0.0.1:0");
                let h1 = DmHub::start(
                    Testbed::DMS1,
                    bind().await.map_err(io)?,
                    HubOptions::default(),
                )
                .await
                .map_err(io)?;
                let h2 = DmHub::start(
                    Testbed::DMS2,
                    bind().await.map_err(io)?,
                    HubOptions::default(),
                )
                .await
                .map_err(io)?;
                Some((h1, h2))
            }
        };
        let wrap: Option<HostWrapper> = hubs.clone().map(|(h1, h2)| {
            Box::new(move |id: &str, base: Arc<SimHost>| {
                let hub = if id == Testbed::DMS1 {
                    h1.clone()
                } else {
                    h2.clone()
                };
                Arc::new(HubHost { inner: base, hub }) as Arc<dyn Host>
            }) as HostWrapper
        });
        let make: PartFactory<dyn Transport> = Box::new(move |id: &str| {
            Arc::new(HttpsSender(transports[id].clone())) as Arc<dyn Transport>
        });
        let testbed = Testbed::with_options(TestbedOptions {
            transport: Some(make),
            store: options.store,
            system_clock: true,
            timeouts: options.timeouts,
            host: wrap,
        });
        t1.bind_server(&testbed.dms1);
        t2.bind_server(&testbed.dms2);
        let endpoint1 = serve(
            l1,
            &id1,
            pki.ca_pem(),
            std::slice::from_ref(&to2),
            testbed.dms1.clone(),
            options.https,
        )?;
        let endpoint2 = serve(
            l2,
            &id2,
            pki.ca_pem(),
            std::slice::from_ref(&to1),
            testbed.dms2.clone(),
            options.https,
        )?;
        let network = match hubs {
            None => None,
            Some((hub1, hub2)) => Some(Self::connect_device(&testbed, &pki, hub1, hub2).await?),
        };
        Ok(Self {
            network,
            testbed,
            pki,
            endpoint1,
            endpoint2,
            peers: (to2, to1),
            identities: (id1, id2),
            transports: (t1, t2),
        })
    }
}
