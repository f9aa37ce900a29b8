//! A server that stops at any step and restarts from its SQLite store finishes every
//! delegation: Completed, or RolledBack with the device exactly as it was.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dmdelegate::sim::{LinkFault, Testbed, TestbedOptions};
use dmdelegate::{DelegationServer, DelegationType, Method, ServerConfig, SessionStore, State};
use dmdelegate_net::sqlite::SqliteStore;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_at_every_step_ends_every_delegation_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let mut runs = 0;
    for method in Method::ALL {
        for dtype in [DelegationType::Partial, DelegationType::Full] {
            for stall in method.message_flow().iter().copied() {
                // DMS-2 is restarted too, except in Methods 3/4 where the simulated device
                // holds a handle to the first DMS-2 for its bootstrap.
                let restartable: &[&str] = if method.uses_bootstrap() {
                    &[Testbed::DMS1]
                } else {
                    &[Testbed::DMS1, Testbed::DMS2]
                };
                for who in restartable {
                    runs += 1;
                    let label = format!("{method} {dtype}, stalled before {stall}, restart {who}");
                    let files: Arc<Mutex<HashMap<String, std::path::PathBuf>>> = Arc::default();
                    let (d, f) = (dir.path().to_path_buf(), files.clone());
                    let tb = Testbed::with_options(TestbedOptions {
                        store: Some(Box::new(move |id: &str| {
                            let path = d.join(format!("{id}-{}.sqlite", uuid_like()));
                            f.lock().unwrap().insert(id.to_string(), path.clone());
                            Arc::new(SqliteStore::open(&path).unwrap()) as Arc<dyn SessionStore>
                        })),
                        ..TestbedOptions::default()
                    });
                    let before = tb.device.dump();
                    tb.network.inject(stall, LinkFault::Drop);
                    let mut request = tb.request(method, dtype);
                    request.session_id = Some("restart-1".into());
                    tb.initiator(method)
                        .start_delegation(request)
                        .await
                        .unwrap();
                    tokio::time::sleep(Duration::from_millis(30)).await;

                    // The stopped server's replacement: same host and network, the store
                    // reopened from its file.
                    let path = files.lock().unwrap()[*who].clone();
                    let host: Arc<dyn dmdelegate::Host> = if *who == Testbed::DMS1 {
                        tb.host1.clone()
                    } else {
                        tb.host2.clone()
                    };
                    let restarted = DelegationServer::with_parts(
                        ServerConfig::new(*who),
                        host,
                        tb.network.clone(),
                        Arc::new(SqliteStore::open(&path).unwrap()),
                        Arc::new(tb.clock.clone()),
                    )
                    .unwrap();
                    tb.network.attach(&restarted);
                    let other = if *who == Testbed::DMS1 {
                        &tb.dms2
                    } else {
                        &tb.dms1
                    };

                    tb.clock.advance(Duration::from_secs(3600));
                    restarted.expire_due().await.unwrap();
                    other.expire_due().await.unwrap();
                    tokio::time::sleep(Duration::from_millis(30)).await;

                    let mine = restarted.session("restart-1").await;
                    let theirs = other.session("restart-1").await;
                    let states: Vec<State> = [mine, theirs]
                        .into_iter()
                        .filter_map(Result::ok)
                        .map(|s| s.state)
                        .collect();
                    assert!(!states.is_empty(), "{label}");
                    let completed = states.iter().all(|s| *s == State::Completed);
                    let rolled_back = states.iter().all(|s| *s == State::RolledBack);
                    assert!(completed || rolled_back, "{label}: {states:?}");
                    if rolled_back {
                        assert_eq!(tb.device.dump(), before, "{label}: device restored");
                    }
                    tb.network.clear();
                }
            }
        }
    }
    assert!(runs >= 60, "{runs} runs");
}

fn uuid_like() -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    N.fetch_add(1, Ordering::Relaxed).to_string()
}
