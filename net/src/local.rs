//! Two DM Servers on loopback, talking HTTPS with mutual TLS under a freshly generated
//! test PKI, around the simulated device and Bootstrap Server of
//! [`dmdelegate::sim::Testbed`]. What `dmdelegate demo` and the network tests run.

use std::collections::HashMap;
use std::sync::Arc;

use dmdelegate::sim::{PartFactory, Testbed, TestbedOptions};
use dmdelegate::{SessionStore, Timeouts, Transport};
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

impl LocalPair {
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
        let make: PartFactory<dyn Transport> = Box::new(move |id: &str| {
            Arc::new(HttpsSender(transports[id].clone())) as Arc<dyn Transport>
        });
        let testbed = Testbed::with_options(TestbedOptions {
            transport: Some(make),
            store: options.store,
            system_clock: true,
            timeouts: options.timeouts,
            host: None,
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
        Ok(Self {
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
