//! `ServerOptions::device_hub`: two facade servers reach a device on the network through
//! their own SyncML endpoints, while policy, accounts and events stay with their hosts.
//! The hosts know no device at all, so every command that reached the device went
//! through a hub.

use std::sync::Arc;
use std::time::Duration;

use dmdelegate::sim::{provision_sample_tree, SimDevice, SimHost, Testbed};
use dmdelegate::syncml::AuthScheme;
use dmdelegate::{DelegationInfo, DelegationType, DeviceInfo, DmAcc, Error, Method, State};
use dmdelegate_net::device::{DeviceOptions, NetworkDevice, STATE_PATH};
use dmdelegate_net::{
    DeviceHubOptions, DeviceLink, Peer, Server, ServerOptions, StartDelegation, TestPki, Wire,
};

const DMS1: &str = Testbed::DMS1;
const DMS2: &str = Testbed::DMS2;

fn link(device_id: &str, notify_url: &str, n: u8) -> DeviceLink {
    DeviceLink {
        device_id: device_id.into(),
        notify_url: notify_url.into(),
        server_secret: format!("server-secret-{n}"),
        server_nonce: Vec::new(),
        client_name: "device".into(),
        client_secret: format!("client-secret-{n}"),
        scheme: AuthScheme::Basic,
    }
}

struct Pair {
    dms1: Server,
    dms2: Server,
    host2: Arc<SimHost>,
    device: NetworkDevice,
    sim: Arc<SimDevice>,
}

async fn pair() -> Pair {
    let pki = TestPki::new("hub test CA").unwrap();
    let sim = Arc::new(SimDevice::new(DeviceInfo {
        device_id: "IMEI:490154203237518".into(),
        manufacturer: "Acme".into(),
        model: "Phone X".into(),
    }));
    let device = NetworkDevice::start(sim.clone(), DeviceOptions::default())
        .await
        .unwrap();
    let loopback = "127.0.0.1:0".parse().unwrap();
    let start = |id: &str, n: u8, host: Arc<SimHost>| {
        let mut options = ServerOptions::new(
            id,
            Wire::Https {
                listen: loopback,
                identity: pki.issue(id, &[]).unwrap(),
                trust_pem: pki.ca_pem().to_string(),
                peers: Vec::new(),
                options: Default::default(),
            },
        );
        options.device_hub = Some(DeviceHubOptions::new(
            loopback,
            vec![link(&sim.info().device_id, &device.notify_url(), n)],
        ));
        Server::start(options, host)
    };
    let host1 = Arc::new(SimHost::new(DMS1));
    let host2 = Arc::new(SimHost::new(DMS2));
    let dms1 = start(DMS1, 1, host1).await.unwrap();
    let dms2 = start(DMS2, 2, host2.clone()).await.unwrap();
    let hub1 = dms1.device_hub_url().unwrap().to_string();
    let hub2 = dms2.device_hub_url().unwrap().to_string();
    provision_sample_tree(
        &sim,
        &DmAcc::simple(DMS1, &hub1, "client-secret-1", "server-secret-1"),
    );
    host2.set_account(DmAcc::simple(
        DMS2,
        &hub2,
        "client-secret-2",
        "server-secret-2",
    ));
    let peer = |s: &Server, id: &str| Peer {
        server_id: id.into(),
        endpoint: s.endpoint_url("127.0.0.1").unwrap(),
        identity: None,
        address: None,
    };
    // Certificates name the ServerID: reach each peer by its name at the loopback address.
    let with_address = |mut p: Peer, s: &Server| {
        p.endpoint = s.endpoint_url(&p.server_id).unwrap();
        p.address = s.local_addr();
        p
    };
    dms1.set_peers(vec![with_address(peer(&dms2, DMS2), &dms2)])
        .unwrap();
    dms2.set_peers(vec![with_address(peer(&dms1, DMS1), &dms1)])
        .unwrap();
    Pair {
        dms1,
        dms2,
        host2,
        device,
        sim,
    }
}

async fn delegate(p: &Pair, method: Method, dtype: DelegationType) -> (State, State) {
    let (starter, peer) = if method.initiator() == dmdelegate::Role::Delegated {
        (&p.dms2, DMS1)
    } else {
        (&p.dms1, DMS2)
    };
    let id = starter
        .start_delegation(StartDelegation {
            peer: peer.into(),
            method,
            delegation_type: dtype,
            info: DelegationInfo {
                device: p.sim.info(),
                subtrees: Testbed::subtrees(dtype),
            },
            expires: None,
            session_id: None,
        })
        .await
        .unwrap();
    let wait = Duration::from_secs(20);
    let one = p.dms1.wait(&id, wait).await.unwrap();
    let two = p.dms2.wait(&id, wait).await.unwrap();
    assert!(
        one.state.is_terminal() && two.state.is_terminal(),
        "{one:?} {two:?}"
    );
    (one.state, two.state)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn methods_1_and_2_complete_through_the_servers_own_syncml_endpoints() {
    for (method, dtype) in [
        (Method::DelegatingInitiates, DelegationType::Full),
        (Method::DelegatedInitiates, DelegationType::Partial),
    ] {
        let p = pair().await;
        let before = p.sim.dump();
        assert_eq!(
            delegate(&p, method, dtype).await,
            (State::Completed, State::Completed),
            "{method} {dtype}"
        );
        assert_eq!(p.sim.accounts_of(DMS2).len(), 1, "{method} {dtype}");
        assert_ne!(p.sim.dump(), before);
        // Both servers opened DM sessions with the device over SyncML (a session is
        // logged when it ends, after the hub's idle time).
        let mut servers = Vec::new();
        for _ in 0..200 {
            servers = p
                .device
                .sessions()
                .into_iter()
                .map(|s| s.server_id)
                .collect();
            if [DMS1, DMS2]
                .iter()
                .all(|id| servers.iter().any(|s| s == id))
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        assert!(servers.iter().any(|s| s == DMS1), "{servers:?}");
        assert!(servers.iter().any(|s| s == DMS2), "{servers:?}");
        // The host still saw the events (the hub only replaces device access).
        assert!(p
            .host2
            .events()
            .iter()
            .any(|e| matches!(e.kind, dmdelegate::EventKind::Completed)));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_the_hub_cannot_reach_rolls_back_and_the_device_is_unchanged() {
    let p = pair().await;
    let before = p.sim.dump();
    // DMS-2 may not open its DM session: the device refuses every notification then.
    p.dms2
        .add_device(link(
            &p.sim.info().device_id,
            "http://127.0.0.1:9/notify",
            2,
        ))
        .unwrap();
    let (one, two) = delegate(&p, Method::DelegatingInitiates, DelegationType::Full).await;
    assert_eq!((one, two), (State::RolledBack, State::RolledBack));
    assert_eq!(p.sim.dump(), before, "the rollback restored the tree");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_device_state_endpoint_shows_acls_and_accounts() {
    let p = pair().await;
    let url = format!("http://{}{STATE_PATH}", p.device.local_addr());
    let client = reqwest::Client::builder()
        .tls_backend_preconfigured(dmdelegate_net::tls::plain_http_client_config())
        .build()
        .unwrap();
    let body = client
        .get(&url)
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let state: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(state["device_id"], "IMEI:490154203237518");
    assert_eq!(state["accounts"], serde_json::json!([DMS1]));
    assert_eq!(state["dump"], p.sim.dump());
    assert_eq!(
        state["acls"]["./Vendor/Apps"].as_str().unwrap(),
        p.sim.acls()["./Vendor/Apps"]
    );
}

#[tokio::test]
async fn add_device_needs_a_hub_and_a_device_id() {
    let pki = TestPki::new("hub test CA").unwrap();
    let options = ServerOptions::new(
        DMS1,
        Wire::Https {
            listen: "127.0.0.1:0".parse().unwrap(),
            identity: pki.issue(DMS1, &[]).unwrap(),
            trust_pem: pki.ca_pem().to_string(),
            peers: Vec::new(),
            options: Default::default(),
        },
    );
    let server = Server::start(options, Arc::new(SimHost::new(DMS1)))
        .await
        .unwrap();
    assert!(server.device_hub_url().is_none());
    assert!(matches!(
        server.add_device(link("dev", "http://127.0.0.1:9/notify", 1)),
        Err(Error::InvalidState(_))
    ));

    let mut options = ServerOptions::new(
        DMS1,
        Wire::Custom(Arc::new(dmdelegate::sim::InProcessNetwork::new())),
    );
    options.device_hub = Some(DeviceHubOptions::new(
        "127.0.0.1:0".parse().unwrap(),
        vec![link("", "http://127.0.0.1:9/notify", 1)],
    ));
    let refused = Server::start(options, Arc::new(SimHost::new(DMS1))).await;
    assert!(
        matches!(refused, Err(Error::InvalidArgument { ref field, .. }) if field == "device_hub.devices[0].device_id"),
        "{refused:?}"
    );

    // A notification URL that is not plain HTTP, at start and when added later.
    let hub = |devices| {
        let mut o = ServerOptions::new(
            DMS1,
            Wire::Custom(Arc::new(dmdelegate::sim::InProcessNetwork::new())),
        );
        o.device_hub = Some(DeviceHubOptions::new(
            "127.0.0.1:0".parse().unwrap(),
            devices,
        ));
        o
    };
    let ok = link("dev", "http://127.0.0.1:9/notify", 1);
    let tls = link("dev2", "https://127.0.0.1:9/notify", 2);
    let refused = Server::start(
        hub(vec![ok.clone(), tls.clone()]),
        Arc::new(SimHost::new(DMS1)),
    )
    .await;
    assert!(
        matches!(refused, Err(Error::InvalidArgument { ref field, ref reason })
            if field == "device_hub.devices[1].notify_url" && reason.contains("not an http:// URL")),
        "{refused:?}"
    );
    let server = Server::start(hub(vec![ok]), Arc::new(SimHost::new(DMS1)))
        .await
        .unwrap();
    assert!(matches!(
        server.add_device(tls.clone()),
        Err(Error::InvalidArgument { ref field, .. }) if field == "notify_url"
    ));
    let e = tls.validate().unwrap_err();
    assert_eq!(
        (e.field, e.to_string().as_str()),
        (
            "notify_url",
            "notify_url `https://127.0.0.1:9/notify` is not an http:// URL"
        )
    );
}
