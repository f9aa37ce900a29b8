//! Delegations under load through a hostile network, with both servers restarted mid-way and
//! devices that never answer: every delegation ends (Completed, RolledBack or Rejected)
//! on both servers, and each device is exactly as DMS-1's outcome says — carrying DMS-2's
//! account after a completion, byte for byte as before otherwise.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use dmdelegate::sim::{provision_sample_tree, SimDevice, SimHost, Testbed};
use dmdelegate::{
    DelegationInfo, DelegationType, DeviceInfo, DmAcc, Method, Role, SessionInfo, State, Timeouts,
};
use dmdelegate_net::{
    HttpsOptions, Identity, Peer, Server, ServerOptions, StartDelegation, TestPki, Wire,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const DMS1: &str = "dms1.operator.example";
const DMS2: &str = "dms2.enterprise.example";
const DEVICES: usize = 24;

/// A small deterministic generator: the faults differ per connection, the same per run.
struct Dice(AtomicU64);

impl Dice {
    fn roll(&self, below: u64) -> u64 {
        let mut x = self.0.fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed);
        x ^= x >> 33;
        x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
        x ^= x >> 33;
        x % below
    }
}

/// A TCP proxy in front of `target` that cuts one connection in `1/cut_one_in` after a
/// random number of bytes, and slows one in `slow_one_in` down (30 ms per read).
async fn chaos_proxy(target: Arc<std::sync::Mutex<SocketAddr>>, dice: Arc<Dice>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut inbound, _)) = listener.accept().await {
            let to = *target.lock().unwrap();
            let cut_after = (dice.roll(8) == 0).then(|| dice.roll(3000) as usize);
            let slow = dice.roll(6) == 0;
            tokio::spawn(async move {
                let Ok(mut outbound) = TcpStream::connect(to).await else {
                    return;
                };
                let (mut ri, mut wi) = inbound.split();
                let (mut ro, mut wo) = outbound.split();
                let mut budget = cut_after.unwrap_or(usize::MAX);
                let up = async {
                    let mut buf = [0u8; 4096];
                    loop {
                        let n = match ri.read(&mut buf).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => n,
                        };
                        if slow {
                            tokio::time::sleep(Duration::from_millis(30)).await;
                        }
                        let n = n.min(budget);
                        budget -= n;
                        if n == 0 || wo.write_all(&buf[..n]).await.is_err() || budget == 0 {
                            break;
                        }
                    }
                    let _ = wo.shutdown().await;
                };
                let down = async {
                    let _ = tokio::io::copy(&mut ro, &mut wi).await;
                    let _ = wi.shutdown().await;
                };
                tokio::join!(up, down);
            });
        }
    });
    addr
}

struct Side {
    identity: Identity,
    host: Arc<SimHost>,
    store: std::path::PathBuf,
}

fn timeouts() -> Timeouts {
    let s = Duration::from_secs;
    Timeouts {
        response: s(2),
        preparation: s(4),
        confirm: s(4),
        bootstrap_confirm: s(4),
        client_session: s(4),
    }
}

fn options(id: &str, side: &Side, trust: &str, listen: SocketAddr, peer: Peer) -> ServerOptions {
    let https = HttpsOptions {
        request_timeout: Duration::from_secs(2),
        backoff: Duration::from_millis(50),
        ..HttpsOptions::default()
    };
    let mut options = ServerOptions::new(
        id,
        Wire::Https {
            listen,
            identity: side.identity.clone(),
            trust_pem: trust.to_string(),
            peers: vec![peer],
            options: https,
        },
    );
    options.timeouts = timeouts();
    options.store_path = Some(side.store.clone());
    options.watch_period = Duration::from_millis(100);
    options
}

async fn start(id: &str, side: &Side, trust: &str, listen: SocketAddr, peer: Peer) -> Server {
    // The port of a server just shut down may take a moment to be free again.
    let mut attempt = 0;
    loop {
        let o = options(id, side, trust, listen, peer.clone());
        match Server::start(o, side.host.clone()).await {
            Ok(s) => return s,
            Err(e) if attempt < 50 => {
                attempt += 1;
                eprintln!("start {id}: {e}; retrying");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("{id} did not start: {e}"),
        }
    }
}

fn device(i: usize) -> DeviceInfo {
    DeviceInfo {
        device_id: format!("IMEI:{i:015}"),
        manufacturer: "Acme".into(),
        model: "Chaos".into(),
    }
}

fn request(i: usize, peer: &str, method: Method) -> StartDelegation {
    let delegation_type = if i.is_multiple_of(2) {
        DelegationType::Partial
    } else {
        DelegationType::Full
    };
    StartDelegation {
        peer: peer.into(),
        method,
        delegation_type,
        info: DelegationInfo {
            device: device(i),
            subtrees: Testbed::subtrees(delegation_type),
        },
        expires: None,
        session_id: Some(format!("chaos-{i}")),
    }
}

async fn wait_terminal(server: &Server, id: &str) -> SessionInfo {
    let s = server.wait(id, Duration::from_secs(60)).await.unwrap();
    assert!(
        s.state.is_terminal(),
        "{id} still {:?} at {}",
        s.state,
        server.server_id()
    );
    s
}

fn side(pki: &TestPki, id: &str, dir: &Path) -> Side {
    Side {
        identity: pki.issue(id, &[]).unwrap(),
        host: Arc::new(SimHost::new(id)),
        store: dir.join(format!("{id}.sqlite")),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_delegation_ends_cleanly_through_drops_delays_restarts_and_dead_devices() {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::new("chaos CA").unwrap();
    let trust = pki.ca_pem().to_string();
    let (one, two) = (side(&pki, DMS1, dir.path()), side(&pki, DMS2, dir.path()));
    let acc1 = DmAcc::simple(DMS1, "https://dms1.operator.example/dm", "c1", "s1");
    two.host.set_account(DmAcc::simple(
        DMS2,
        "https://dms2.enterprise.example/dm",
        "c2",
        "s2",
    ));
    let devices: Vec<Arc<SimDevice>> = (0..DEVICES)
        .map(|i| {
            let d = Arc::new(SimDevice::new(device(i)));
            provision_sample_tree(&d, &acc1);
            // One device in eight never answers.
            if i % 8 == 7 {
                d.set_reachable(false);
            }
            one.host.add_device(d.clone());
            two.host.add_device(d.clone());
            d
        })
        .collect();
    let before: Vec<String> = devices.iter().map(|d| d.dump()).collect();

    // Real ports first (so the proxies know where to go), then the proxies.
    let listen: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let port1 = TcpListener::bind(listen)
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let port2 = TcpListener::bind(listen)
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let dice = Arc::new(Dice(AtomicU64::new(7)));
    let proxy_to_1 = chaos_proxy(Arc::new(std::sync::Mutex::new(port1)), dice.clone()).await;
    let proxy_to_2 = chaos_proxy(Arc::new(std::sync::Mutex::new(port2)), dice.clone()).await;
    let peer = |id: &str, via: SocketAddr| Peer {
        server_id: id.into(),
        endpoint: format!("https://{id}:{}/dm-delegation", via.port()),
        identity: None,
        address: Some(via),
    };
    let dms1 = start(DMS1, &one, &trust, port1, peer(DMS2, proxy_to_2)).await;
    let dms2 = start(DMS2, &two, &trust, port2, peer(DMS1, proxy_to_1)).await;

    // Load: DMS-1 starts Method 1 for the even devices, DMS-2 Method 2 for the odd ones.
    let mut ids = Vec::new();
    for i in 0..DEVICES {
        let (server, peer_id, method) = if i.is_multiple_of(2) {
            (&dms1, DMS2, Method::DelegatingInitiates)
        } else {
            (&dms2, DMS1, Method::DelegatedInitiates)
        };
        match server.start_delegation(request(i, peer_id, method)).await {
            Ok(id) => ids.push((i, id)),
            // A NOTIF that cannot even be queued: nothing started, nothing to check.
            Err(e) => panic!("device {i}: {e}"),
        }
    }

    // DMS-2 stops mid-way and comes back on the same port from its SQLite store; then
    // DMS-1 (which holds the rollback journals) does the same.
    tokio::time::sleep(Duration::from_millis(300)).await;
    drop(dms2);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let dms2 = start(DMS2, &two, &trust, port2, peer(DMS1, proxy_to_1)).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    drop(dms1);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let dms1 = start(DMS1, &one, &trust, port1, peer(DMS2, proxy_to_2)).await;

    let mut completed = 0;
    for (i, id) in &ids {
        let at1 = wait_terminal(&dms1, id).await;
        let mut at2 = wait_terminal(&dms2, id).await;
        // DMS-2 may have completed (it does when it sends CONFIRM) while DMS-1 rolled back:
        // DMS-1's FAILURE, possibly still on its way, moves it to RolledBack.
        for _ in 0..100 {
            if at1.state == State::Completed || at2.state != State::Completed {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            at2 = dms2.session(id).await.unwrap();
        }
        assert_eq!(at1.role, Role::Delegating);
        match at1.state {
            State::Completed => {
                completed += 1;
                assert_eq!(at2.state, State::Completed, "device {i}: {at1:?} / {at2:?}");
                assert_eq!(devices[*i].accounts_of(DMS2).len(), 1, "device {i}");
                if at1.delegation_type == DelegationType::Full {
                    assert!(devices[*i].accounts_of(DMS1).is_empty(), "device {i}");
                }
            }
            State::RolledBack | State::Rejected => {
                assert_eq!(
                    devices[*i].dump(),
                    before[*i],
                    "device {i} changed: {at1:?}"
                );
                assert!(
                    matches!(at2.state, State::RolledBack | State::Rejected),
                    "device {i}: DMS-1 {:?} ({:?}) {:?}\n DMS-2 {:?} {:?}",
                    at1.state,
                    at1.reason,
                    at1.history,
                    at2.state,
                    at2.history
                );
            }
            other => panic!("device {i}: DMS-1 ended {other:?}"),
        }
        if i % 8 == 7 {
            assert_ne!(
                at1.state,
                State::Completed,
                "an unreachable device cannot complete"
            );
        }
    }
    eprintln!("chaos: {completed} of {} delegations completed", ids.len());
    assert!(completed > 0, "the network is hostile, not dead");
}

/// DMS-2's host opening its DM session more slowly than the sender's whole patience
/// (2 attempts of a 1 s request timeout): the HTTP answer does not wait for the host, so
/// the delegation completes instead of failing with 170.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_slower_than_the_senders_patience_still_completes() {
    struct Slow(Arc<SimHost>);

    #[async_trait::async_trait]
    impl dmdelegate::Host for Slow {
        async fn accept_delegation(
            &self,
            offer: &dmdelegate::DelegationOffer,
        ) -> dmdelegate::PolicyDecision {
            self.0.accept_delegation(offer).await
        }
        async fn execute(
            &self,
            device: &DeviceInfo,
            command: &dmdelegate::ClientCommand,
        ) -> Result<dmdelegate::CommandOutput, dmdelegate::DeviceError> {
            self.0.execute(device, command).await
        }
        async fn open_dm_session(&self, s: &SessionInfo) -> Result<(), dmdelegate::HostError> {
            tokio::time::sleep(Duration::from_millis(2500)).await;
            self.0.open_dm_session(s).await
        }
        async fn dm_account(&self, d: &DeviceInfo) -> Result<DmAcc, dmdelegate::HostError> {
            self.0.dm_account(d).await
        }
        async fn bootstrap_server_url(
            &self,
            d: &DeviceInfo,
        ) -> Result<String, dmdelegate::HostError> {
            self.0.bootstrap_server_url(d).await
        }
        fn on_event(&self, e: &dmdelegate::Event) {
            self.0.on_event(e)
        }
    }

    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::new("slow CA").unwrap();
    let trust = pki.ca_pem().to_string();
    let (one, two) = (side(&pki, DMS1, dir.path()), side(&pki, DMS2, dir.path()));
    let acc1 = DmAcc::simple(DMS1, "https://dms1.operator.example/dm", "c1", "s1");
    two.host.set_account(DmAcc::simple(
        DMS2,
        "https://dms2.enterprise.example/dm",
        "c2",
        "s2",
    ));
    let d = Arc::new(SimDevice::new(device(0)));
    provision_sample_tree(&d, &acc1);
    one.host.add_device(d.clone());
    two.host.add_device(d.clone());

    let listen: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let port1 = TcpListener::bind(listen)
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let port2 = TcpListener::bind(listen)
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let peer = |id: &str, to: SocketAddr| Peer {
        server_id: id.into(),
        endpoint: format!("https://{id}:{}/dm-delegation", to.port()),
        identity: None,
        address: Some(to),
    };
    let impatient = |o: &mut ServerOptions| {
        if let Wire::Https { options, .. } = &mut o.wire {
            options.request_timeout = Duration::from_secs(1);
            options.attempts = 2;
        }
    };
    let mut o1 = options(DMS1, &one, &trust, port1, peer(DMS2, port2));
    impatient(&mut o1);
    let mut o2 = options(DMS2, &two, &trust, port2, peer(DMS1, port1));
    impatient(&mut o2);
    o2.timeouts.preparation = Duration::from_secs(10);
    o1.timeouts.confirm = Duration::from_secs(10);
    let dms1 = Server::start(o1, one.host.clone()).await.unwrap();
    let dms2 = Server::start(o2, Arc::new(Slow(two.host.clone())))
        .await
        .unwrap();

    let id = dms1
        .start_delegation(request(0, DMS2, Method::DelegatingInitiates))
        .await
        .unwrap();
    let at1 = wait_terminal(&dms1, &id).await;
    let at2 = wait_terminal(&dms2, &id).await;
    assert_eq!(
        (at1.state, at2.state),
        (State::Completed, State::Completed),
        "{at1:?}"
    );
    assert_eq!(d.accounts_of(DMS2).len(), 1);
}
