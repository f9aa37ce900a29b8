//! `dmdelegate`: run the delegation protocol end to end, make a test PKI, check messages.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand, ValueEnum};
use dmdelegate::sim::{describe_changes, Testbed};
use dmdelegate::{DelegationType, Message, Method, SessionInfo, State};
use dmdelegate_net::{LocalOptions, LocalPair, PairDelivery, TestPki};
use serde::Serialize;

/// OMA DM Client Authority Delegation: one DM Server hands authority over a device to
/// another, fully or for parts of its DM Tree.
#[derive(Parser)]
#[command(name = "dmdelegate", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run every delegation method between two servers over HTTPS with mutual TLS.
    ///
    /// Starts DMS-1 and DMS-2 on loopback with a freshly generated test PKI, a simulated
    /// device that enforces its ACLs and a Bootstrap Server, runs Methods 1–4 × Full and
    /// Partial, and prints for each delegation its steps with timings and what changed on
    /// the device. Exits 1 if any delegation did not complete with the expected device
    /// state.
    Demo {
        /// Only this method (1: DMS-1 initiates, 2: DMS-2 initiates, 3 and 4: the same with
        /// DMS-2's Bootstrap Server).
        #[arg(long, value_parser = clap::value_parser!(u8).range(1..=4))]
        method: Option<u8>,
        /// Only this delegation type.
        #[arg(long = "type", value_enum)]
        delegation_type: Option<TypeArg>,
        /// One JSON object per delegation on standard output instead of tables.
        #[arg(long)]
        json: bool,
    },
    /// Make a test PKI: a CA and one certificate per ServerID (both TLS server and client).
    ///
    /// Writes `ca.pem`, and `<server-id>.pem` and `<server-id>.key` for each ServerID,
    /// into DIR. For tests and demos only: the CA key is not kept.
    Certs {
        /// Directory to write into (created if missing).
        #[arg(long, default_value = "pki")]
        out: PathBuf,
        /// ServerIDs to issue certificates for (each becomes the certificate's DNS name).
        #[arg(required = true)]
        server_ids: Vec<String>,
        /// Extra DNS names or IP addresses every certificate is also valid for.
        #[arg(long = "also")]
        also: Vec<String>,
    },
    /// Run a DM Server: delegation endpoint (HTTPS, mutual TLS), SyncML endpoint for
    /// devices, optional Bootstrap Server, and an admin API on loopback.
    ///
    /// Sessions survive restarts when `store` names an SQLite file: unfinished delegations
    /// resume or roll back by their deadlines. Stops on Ctrl-C. See docs/cli.md for the
    /// configuration file.
    Serve {
        /// Server configuration (TOML).
        #[arg(long)]
        config: PathBuf,
    },
    /// Run a simulated device: its package 0 endpoint, SyncML sessions, bootstrap.
    Device {
        /// Device configuration (TOML).
        #[arg(long)]
        config: PathBuf,
    },
    /// Start a delegation on a running server (through its admin API) and wait for it.
    ///
    /// The server named by --admin initiates: it is DMS-1 for methods 1 and 3, DMS-2 for 2
    /// and 4. Exits 0 when the delegation completes, 1 otherwise.
    Delegate {
        /// The running server's admin API, e.g. 127.0.0.1:7090.
        #[arg(long)]
        admin: String,
        /// The peer's ServerID.
        #[arg(long)]
        peer: String,
        /// Method 1–4.
        #[arg(long, value_parser = clap::value_parser!(u8).range(1..=4))]
        method: u8,
        /// Delegation type.
        #[arg(long = "type", value_enum)]
        delegation_type: TypeArg,
        /// Device identifier, manufacturer and model.
        #[arg(long)]
        device_id: String,
        /// Device manufacturer.
        #[arg(long)]
        manufacturer: String,
        /// Device model.
        #[arg(long)]
        model: String,
        /// A delegated subtree and its rights, e.g. `./Vendor/Apps=Get,Replace` (repeatable).
        #[arg(long = "subtree", required = true)]
        subtrees: Vec<String>,
        /// Seconds to wait for the end.
        #[arg(long, default_value_t = 60)]
        wait: u64,
        /// The session id to use (1–64 of A–Z a–z 0–9 . _ -); a fresh random one when
        /// absent.
        #[arg(long)]
        session_id: Option<String>,
    },
    /// List a running server's delegation sessions (through its admin API).
    Sessions {
        /// The running server's admin API, e.g. 127.0.0.1:7090.
        #[arg(long)]
        admin: String,
        /// JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Check delegation messages: decode and validate each FILE against the profile.
    ///
    /// Prints the message type of each valid file, or the error naming the offending
    /// field. Exits 1 if any file is invalid.
    Validate {
        /// Message documents (application/vnd.dm.delegation+xml).
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum TypeArg {
    Full,
    Partial,
}

impl From<TypeArg> for DelegationType {
    fn from(t: TypeArg) -> Self {
        match t {
            TypeArg::Full => DelegationType::Full,
            TypeArg::Partial => DelegationType::Partial,
        }
    }
}

#[derive(Serialize)]
struct StepReport {
    server: &'static str,
    state: String,
    at_ms: f64,
}

#[derive(Serialize)]
struct Check {
    name: &'static str,
    passed: bool,
}

#[derive(Serialize)]
struct DelegationReport {
    method: u8,
    #[serde(rename = "type")]
    delegation_type: String,
    outcome: String,
    duration_ms: f64,
    steps: Vec<StepReport>,
    messages: Vec<String>,
    device_changes: Vec<String>,
    device_sessions: Vec<String>,
    checks: Vec<Check>,
    error: Option<String>,
}

fn short(id: &str) -> String {
    id.replace(Testbed::DMS1, "DMS-1")
        .replace(Testbed::DMS2, "DMS-2")
}

async fn run_one(method: Method, dtype: DelegationType) -> DelegationReport {
    let mut report = DelegationReport {
        method: method.number(),
        delegation_type: dtype.to_string(),
        outcome: "failed".into(),
        duration_ms: 0.0,
        steps: Vec::new(),
        messages: Vec::new(),
        device_changes: Vec::new(),
        device_sessions: Vec::new(),
        checks: Vec::new(),
        error: None,
    };
    let pair = match LocalPair::start(LocalOptions::default()).await {
        Ok(p) => p,
        Err(e) => {
            report.error = Some(e.to_string());
            return report;
        }
    };
    let tb = &pair.testbed;
    let before = tb.device.acls();
    let started = Instant::now();
    let result = tb.run(method, dtype).await;
    report.duration_ms = started.elapsed().as_secs_f64() * 1e3;
    // Let the last deliveries and DM sessions finish before reading the device.
    pair.settle(Duration::from_secs(5)).await;
    match result {
        Err(e) => report.error = Some(e.to_string()),
        Ok((one, two)) => {
            report.steps = steps(&one, &two);
            report.messages = message_log(&pair, one.created.min(two.created).unix_millis());
            report.device_changes = describe_changes(&before, &tb.device.acls())
                .iter()
                .map(|l| short(l))
                .collect();
            if let Some(net) = &pair.network {
                report.device_sessions = net
                    .device
                    .sessions()
                    .iter()
                    .map(|s| {
                        let how = if s.initiated_by_server {
                            "package 0 → session"
                        } else {
                            "after bootstrap, device-initiated"
                        };
                        match &s.outcome {
                            Ok(n) => format!("{} ({how}): {n} commands", short(&s.server_id)),
                            Err(e) => format!("{} ({how}): failed: {e}", short(&s.server_id)),
                        }
                    })
                    .collect();
            }
            let partial = dtype == DelegationType::Partial;
            let inside = tb.device.replace_value(
                Testbed::DMS2,
                "./Vendor/Apps/Mail/Server",
                "imap.enterprise.example",
            );
            let outside = tb.device.permits(
                Testbed::DMS2,
                dmdelegate::AclCommand::Replace,
                "./Vendor/Settings/Volume",
            );
            report.checks = vec![
                Check {
                    name: "DMS-1 completed",
                    passed: one.state == State::Completed,
                },
                Check {
                    name: "DMS-2 completed",
                    passed: two.state == State::Completed,
                },
                Check {
                    name: "DMS-2 has exactly one account",
                    passed: tb.device.accounts_of(Testbed::DMS2).len() == 1,
                },
                Check {
                    name: "DMS-1 account kept only for Partial",
                    passed: tb.device.accounts_of(Testbed::DMS1).len() == usize::from(partial),
                },
                Check {
                    name: "DMS-2 manages ./Vendor/Apps",
                    passed: inside.is_ok(),
                },
                Check {
                    name: "DMS-2 outside the delegation only for Full",
                    passed: outside != partial,
                },
                Check {
                    name: "DMS-2 had its DM session with the device",
                    passed: tb.device.sessions().iter().any(|s| s == Testbed::DMS2),
                },
            ];
            if report.checks.iter().all(|c| c.passed) {
                report.outcome = "completed".into();
            }
        }
    }
    report
}

fn steps(one: &SessionInfo, two: &SessionInfo) -> Vec<StepReport> {
    let start = one.created.min(two.created).unix_millis();
    let mut all: Vec<StepReport> = [(one, "DMS-1"), (two, "DMS-2")]
        .into_iter()
        .flat_map(|(info, name)| {
            info.history.iter().map(move |s| StepReport {
                server: name,
                state: s.state.to_string(),
                at_ms: (s.at.unix_millis() - start) as f64,
            })
        })
        .collect();
    all.sort_by(|a, b| a.at_ms.total_cmp(&b.at_ms));
    all
}

/// The messages both servers delivered, in time order, with their delivery times.
fn message_log(pair: &LocalPair, start: i64) -> Vec<String> {
    pair.deliveries()
        .into_iter()
        .map(|PairDelivery { from, delivery: d }| {
            let outcome = match &d.outcome {
                Ok(1) => String::new(),
                Ok(n) => format!(" ({n} attempts)"),
                Err(e) => format!(" NOT DELIVERED: {e}"),
            };
            format!(
                "{:>6} ms  {from} → {}  {} #{}{outcome}",
                d.at.unix_millis() - start,
                short(&d.recipient),
                d.kind,
                d.seq
            )
        })
        .collect()
}

fn print_report(r: &DelegationReport) {
    println!(
        "\n== Method {} — {} delegation — {}",
        r.method, r.delegation_type, r.outcome
    );
    if let Some(e) = &r.error {
        println!("  error: {e}");
    }
    println!("  {:>8}  {:<6} state", "t (ms)", "server");
    for s in &r.steps {
        println!("  {:>8.0}  {:<6} {}", s.at_ms, s.server, s.state);
    }
    println!("  messages (HTTPS, mutual TLS):");
    for m in &r.messages {
        println!("    {m}");
    }
    println!("  device's SyncML DM sessions:");
    for d in &r.device_sessions {
        println!("    {d}");
    }
    println!("  device changes:");
    for c in &r.device_changes {
        println!("    {c}");
    }
    for c in &r.checks {
        println!(
            "  check  {:<44} {}",
            c.name,
            if c.passed { "ok" } else { "FAILED" }
        );
    }
    println!("  total {:.1} ms", r.duration_ms);
}

async fn demo(method: Option<u8>, dtype: Option<TypeArg>, json: bool) -> ExitCode {
    let methods: Vec<Method> = match method {
        Some(n) => Method::from_number(n).into_iter().collect(),
        None => Method::ALL.to_vec(),
    };
    let types: Vec<DelegationType> = match dtype {
        Some(t) => vec![t.into()],
        None => vec![DelegationType::Partial, DelegationType::Full],
    };
    let total = methods.len() * types.len();
    let mut failed = 0;
    let mut n = 0;
    let progress = !json && std::io::IsTerminal::is_terminal(&std::io::stderr());
    for m in &methods {
        for t in &types {
            n += 1;
            if progress {
                eprint!("\r[{n}/{total}] {m} {t}…          ");
            }
            let report = run_one(*m, *t).await;
            if report.outcome != "completed" {
                failed += 1;
            }
            if json {
                match serde_json::to_string(&report) {
                    Ok(line) => println!("{line}"),
                    Err(e) => eprintln!("dmdelegate: cannot encode the report: {e}"),
                }
            } else {
                if progress {
                    eprint!("\r                                        \r");
                }
                print_report(&report);
            }
        }
    }
    if !json {
        println!(
            "\n{} of {total} delegations completed with the expected device state",
            total - failed
        );
    }
    if failed > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

fn certs(out: &PathBuf, server_ids: &[String], also: &[String]) -> Result<(), String> {
    let pki = TestPki::new("dmdelegate test CA").map_err(|e| e.to_string())?;
    std::fs::create_dir_all(out).map_err(|e| format!("cannot create {}: {e}", out.display()))?;
    let write = |name: String, text: &str| {
        let path = out.join(name);
        std::fs::write(&path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        println!("wrote {}", path.display());
        Ok::<(), String>(())
    };
    write("ca.pem".into(), pki.ca_pem())?;
    let also: Vec<&str> = also.iter().map(String::as_str).collect();
    for id in server_ids {
        dmdelegate::acl::validate_server_id(id).map_err(|e| format!("ServerID `{id}`: {e}"))?;
        let identity = pki.issue(id, &also).map_err(|e| format!("`{id}`: {e}"))?;
        write(format!("{id}.pem"), &identity.cert_chain_pem)?;
        write(format!("{id}.key"), &identity.key_pem)?;
    }
    Ok(())
}

fn validate(files: &[PathBuf]) -> ExitCode {
    let mut bad = 0;
    for f in files {
        match std::fs::read(f) {
            Err(e) => {
                bad += 1;
                println!("{}: cannot read: {e}", f.display());
            }
            Ok(bytes) => match Message::from_xml(&bytes) {
                Ok(m) => println!(
                    "{}: valid {} (session {}, seq {}, {} → {}, {})",
                    f.display(),
                    m.body.kind(),
                    m.header.session_id,
                    m.header.seq,
                    m.header.sender,
                    m.header.recipient,
                    m.header.method
                ),
                Err(e) => {
                    bad += 1;
                    println!("{}: invalid: {e}", f.display());
                }
            },
        }
    }
    if bad > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Demo {
            method,
            delegation_type,
            json,
        } => demo(method, delegation_type, json).await,
        Command::Certs {
            out,
            server_ids,
            also,
        } => match certs(&out, &server_ids, &also) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("dmdelegate certs: {e}");
                ExitCode::from(2)
            }
        },
        Command::Validate { files } => validate(&files),
        Command::Serve { config } => report(serve(&config).await),
        Command::Device { config } => report(device(&config).await),
        Command::Delegate {
            admin,
            peer,
            method,
            delegation_type,
            device_id,
            manufacturer,
            model,
            subtrees,
            wait,
            session_id,
        } => {
            let request = dmdelegate_net::node::StartRequest {
                peer,
                method,
                delegation_type: DelegationType::from(delegation_type).to_string(),
                device: dmdelegate::DeviceInfo {
                    device_id,
                    manufacturer,
                    model,
                },
                subtrees: match parse_subtrees(&subtrees) {
                    Ok(s) => s,
                    Err(e) => {
                        eprintln!("dmdelegate delegate: {e}");
                        return ExitCode::from(2);
                    }
                },
                session_id,
            };
            delegate(&admin, request, Duration::from_secs(wait)).await
        }
        Command::Sessions { admin, json } => report(sessions(&admin, json).await),
    }
}

fn report(result: Result<(), String>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("dmdelegate: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(config: &std::path::Path) -> Result<(), String> {
    let config = dmdelegate_net::node::ServerFileConfig::load(config).map_err(|e| e.0)?;
    let node = dmdelegate_net::node::ServerNode::start(&config)
        .await
        .map_err(|e| e.0)?;
    println!(
        "{} serving: delegation https://{}/dm-delegation, SyncML {}, admin http://{}{}",
        config.server_id,
        node.endpoint.local_addr(),
        node.hub.url(),
        node.admin,
        node.bootstrap
            .as_ref()
            .map(|b| format!(", bootstrap {}", b.url("/bs")))
            .unwrap_or_default()
    );
    tokio::signal::ctrl_c().await.map_err(|e| e.to_string())?;
    println!("stopping");
    Ok(())
}

async fn device(config: &std::path::Path) -> Result<(), String> {
    let config = dmdelegate_net::node::DeviceFileConfig::load(config).map_err(|e| e.0)?;
    let node = dmdelegate_net::node::DeviceNode::start(&config)
        .await
        .map_err(|e| e.0)?;
    println!(
        "device {} listening for package 0 at {}",
        config.device_id,
        node.device.notify_url()
    );
    tokio::signal::ctrl_c().await.map_err(|e| e.to_string())?;
    Ok(())
}

fn parse_subtrees(specs: &[String]) -> Result<Vec<dmdelegate_net::node::SubtreeRequest>, String> {
    specs
        .iter()
        .map(|spec| {
            let (uri, rights) = spec.split_once('=').ok_or_else(|| {
                format!(
                    "--subtree `{spec}`: write URI=Right,Right (e.g. ./Vendor/Apps=Get,Replace)"
                )
            })?;
            Ok(dmdelegate_net::node::SubtreeRequest {
                uri: uri.to_string(),
                rights: rights.split(',').map(|r| r.trim().to_string()).collect(),
            })
        })
        .collect()
}

fn admin_client() -> Result<reqwest::Client, String> {
    reqwest::Client::builder()
        .tls_backend_preconfigured(dmdelegate_net::tls::plain_http_client_config())
        .timeout(Duration::from_secs(10))
        .build()
        .map_err(|e| e.to_string())
}

async fn admin_get(client: &reqwest::Client, url: &str) -> Result<serde_json::Value, String> {
    let r = client.get(url).send().await.map_err(|e| {
        format!("cannot reach the admin API at {url}: {e} (is `dmdelegate serve` running?)")
    })?;
    let status = r.status();
    let body: serde_json::Value = r.json().await.map_err(|e| e.to_string())?;
    if status.is_success() {
        Ok(body)
    } else {
        Err(format!("{url}: {status}: {}", body["error"]))
    }
}

async fn delegate(
    admin: &str,
    request: dmdelegate_net::node::StartRequest,
    wait: Duration,
) -> ExitCode {
    let run = async {
        let client = admin_client()?;
        let url = format!("http://{admin}/delegations");
        let r = client.post(&url).json(&request).send().await.map_err(|e| {
            format!("cannot reach the admin API at {url}: {e} (is `dmdelegate serve` running?)")
        })?;
        let status = r.status();
        let body: serde_json::Value = r.json().await.map_err(|e| e.to_string())?;
        if !status.is_success() {
            return Err(format!("the server refused: {}", body["error"]));
        }
        let id = body["session_id"].as_str().unwrap_or_default().to_string();
        println!("session {id} started");
        let deadline = Instant::now() + wait;
        loop {
            let info = admin_get(&client, &format!("http://{admin}/sessions/{id}")).await?;
            let state = info["state"].as_str().unwrap_or("?").to_string();
            let terminal = [
                "Completed",
                "Rejected",
                "RolledBack",
                "RollbackFailed",
                "Expired",
            ];
            if terminal.contains(&state.as_str()) {
                println!("session {id}: {state}");
                if let Some(reason) = info["reason"].as_object() {
                    println!("  reason {}: {}", reason["code"], reason["text"]);
                }
                return Ok(state == "Completed");
            }
            if Instant::now() > deadline {
                return Err(format!("session {id} still {state} after {wait:?}"));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    match run.await {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("dmdelegate delegate: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn sessions(admin: &str, json: bool) -> Result<(), String> {
    let client = admin_client()?;
    let list = admin_get(&client, &format!("http://{admin}/sessions")).await?;
    if json {
        println!("{list}");
        return Ok(());
    }
    println!(
        "{:<34} {:<11} {:<6} {:<8} {:<26} {:<16} reason",
        "session", "role", "method", "type", "peer", "state"
    );
    for s in list.as_array().cloned().unwrap_or_default() {
        let reason = s["reason"]["text"].as_str().unwrap_or("");
        println!(
            "{:<34} {:<11} {:<6} {:<8} {:<26} {:<16} {reason}",
            s["session_id"].as_str().unwrap_or(""),
            s["role"].as_str().unwrap_or(""),
            s["method"].as_str().unwrap_or(""),
            s["delegation_type"].as_str().unwrap_or(""),
            s["peer"].as_str().unwrap_or(""),
            s["state"].as_str().unwrap_or(""),
        );
    }
    Ok(())
}
