//! Runs every delegation method × Full/Partial in process (two servers, a simulated
//! device, a Bootstrap Server) and prints, for each, the messages exchanged, the client
//! operations DMS-1 performed, and what changed on the device. Exits non-zero if any
//! delegation did not complete with the expected device state.
//!
//! ```text
//! cargo run -p dmdelegate --example demo [-- --method N] [-- --type full|partial]
//! ```

use std::process::ExitCode;
use std::time::Instant;

use dmdelegate::sim::{describe_changes, Testbed};
use dmdelegate::{DelegationType, Method, State};

fn short(server_id: &str) -> &str {
    match server_id {
        Testbed::DMS1 => "DMS-1",
        Testbed::DMS2 => "DMS-2",
        other => other,
    }
}

fn parse_args() -> Result<(Vec<Method>, Vec<DelegationType>), String> {
    let mut methods = Method::ALL.to_vec();
    let mut types = vec![DelegationType::Partial, DelegationType::Full];
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--method" => {
                let n: u8 = args
                    .next()
                    .and_then(|v| v.parse().ok())
                    .ok_or("--method takes 1, 2, 3 or 4")?;
                methods = vec![Method::from_number(n).ok_or("--method takes 1, 2, 3 or 4")?];
            }
            "--type" => {
                types = match args.next().as_deref() {
                    Some("full") => vec![DelegationType::Full],
                    Some("partial") => vec![DelegationType::Partial],
                    _ => return Err("--type takes full or partial".into()),
                }
            }
            other => {
                return Err(format!(
                    "unknown argument `{other}` (try --method N, --type full|partial)"
                ))
            }
        }
    }
    Ok((methods, types))
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> ExitCode {
    let (methods, types) = match parse_args() {
        Ok(v) => v,
        Err(e) => {
            eprintln!("demo: {e}");
            return ExitCode::from(2);
        }
    };
    let mut failures = 0;
    for method in methods {
        for dtype in &types {
            let dtype = *dtype;
            let tb = Testbed::new();
            let before = tb.device.acls();
            let subtrees: Vec<String> = Testbed::subtrees(dtype)
                .iter()
                .map(|s| {
                    let r: Vec<&str> = s.rights.iter().map(|r| r.as_str()).collect();
                    format!("{} [{}]", s.uri, r.join(" "))
                })
                .collect();
            println!(
                "\n== {method} ({} initiates{}) — {dtype} delegation of {}",
                method.initiator(),
                if method.uses_bootstrap() {
                    ", client bootstraps"
                } else {
                    ""
                },
                subtrees.join(", ")
            );
            let started = Instant::now();
            let result = tb.run(method, dtype).await;
            let elapsed = started.elapsed();
            println!("  messages:");
            for (i, line) in tb.network.trace().iter().enumerate() {
                let (route, what) = line.split_once(": ").unwrap_or((line, ""));
                let (from, to) = route.split_once(" -> ").unwrap_or((route, ""));
                println!(
                    "    {:>2}. {} → {}  {}",
                    i + 1,
                    short(from),
                    short(to),
                    what
                );
            }
            println!("  client operations:");
            for op in tb.device.log() {
                println!("    {op}");
            }
            println!("  device changes:");
            for line in describe_changes(&before, &tb.device.acls()) {
                println!("    {line}");
            }
            let ok = match &result {
                Ok((one, two)) => {
                    let expected_accounts = usize::from(dtype == DelegationType::Partial);
                    let checks = [
                        ("DMS-1 completed", one.state == State::Completed),
                        ("DMS-2 completed", two.state == State::Completed),
                        (
                            "DMS-2 has an account",
                            tb.device.accounts_of(Testbed::DMS2).len() == 1,
                        ),
                        (
                            "DMS-1 account kept only for Partial",
                            tb.device.accounts_of(Testbed::DMS1).len() == expected_accounts,
                        ),
                        (
                            "DMS-2 can manage ./Vendor/Apps",
                            tb.device
                                .replace_value(
                                    Testbed::DMS2,
                                    "./Vendor/Apps/Mail/Server",
                                    "imap.enterprise.example",
                                )
                                .is_ok(),
                        ),
                        (
                            "DMS-2 had its DM session",
                            tb.device.sessions() == [Testbed::DMS2.to_string()],
                        ),
                    ];
                    for (name, passed) in checks {
                        println!(
                            "  check: {name:<40} {}",
                            if passed { "ok" } else { "FAILED" }
                        );
                    }
                    checks.iter().all(|(_, p)| *p)
                }
                Err(e) => {
                    println!("  error: {e}");
                    false
                }
            };
            println!(
                "  outcome: {} in {:.1} ms",
                if ok { "completed" } else { "FAILED" },
                elapsed.as_secs_f64() * 1e3
            );
            if !ok {
                failures += 1;
            }
            tb.network.clear();
        }
    }
    if failures > 0 {
        eprintln!("\n{failures} delegation(s) failed");
        ExitCode::FAILURE
    } else {
        println!("\nall delegations completed with the expected device state");
        ExitCode::SUCCESS
    }
}
