//! The `dmdelegate` command as a user runs it.

use std::process::Command;

fn dmdelegate() -> Command {
    Command::new(env!("CARGO_BIN_EXE_dmdelegate"))
}

const VECTORS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../vectors");

#[test]
fn demo_runs_every_method_and_type_over_mutual_tls() {
    let out = dmdelegate().args(["demo", "--json"]).output().unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let reports: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(reports.len(), 8);
    let mut seen = std::collections::BTreeSet::new();
    for r in &reports {
        assert_eq!(r["outcome"], "completed", "{r}");
        assert!(r["checks"]
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["passed"] == true));
        let messages = r["messages"].as_array().unwrap();
        assert!(messages.len() >= 5, "{r}");
        assert!(messages
            .iter()
            .all(|m| !m.as_str().unwrap().contains("NOT DELIVERED")));
        assert!(!r["steps"].as_array().unwrap().is_empty());
        seen.insert((
            r["method"].as_u64().unwrap(),
            r["type"].as_str().unwrap().to_string(),
        ));
    }
    assert_eq!(seen.len(), 8, "every method × type once");
}

#[test]
fn demo_narrows_to_one_method_and_prints_a_table() {
    let out = dmdelegate()
        .args(["demo", "--method", "2", "--type", "partial"])
        .output()
        .unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(out.status.success(), "{stdout}");
    assert!(
        stdout.contains("Method 2 — Partial delegation — completed"),
        "{stdout}"
    );
    assert!(
        stdout.contains("DMS-2 → DMS-1  DELEGATION_NOTIF #1"),
        "{stdout}"
    );
    assert!(stdout.contains("1 of 1 delegations completed"), "{stdout}");
}

#[test]
fn bad_arguments_say_what_to_fix() {
    let out = dmdelegate()
        .args(["demo", "--method", "5"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--method"), "{err}");
}

#[test]
fn validate_accepts_the_golden_vectors_and_names_the_bad_field() {
    let valid: Vec<String> = std::fs::read_dir(format!("{VECTORS}/valid"))
        .unwrap()
        .map(|e| e.unwrap().path().display().to_string())
        .collect();
    let out = dmdelegate().arg("validate").args(&valid).output().unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(out.status.success(), "{stdout}");
    assert_eq!(stdout.matches(": valid ").count(), valid.len());

    let out = dmdelegate()
        .args([
            "validate",
            &format!("{VECTORS}/invalid/dmserverid-not-sender.xml"),
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(stdout.contains("Delegation/Notif/DMServerID"), "{stdout}");
}

#[test]
fn certs_writes_a_ca_and_one_identity_per_server() {
    let dir = std::env::temp_dir().join(format!("dmdelegate-certs-{}", std::process::id()));
    let out = dmdelegate()
        .args(["certs", "--out"])
        .arg(&dir)
        .args(["dms1.example", "dms2.example", "--also", "127.0.0.1"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for f in [
        "ca.pem",
        "dms1.example.pem",
        "dms1.example.key",
        "dms2.example.pem",
        "dms2.example.key",
    ] {
        let text = std::fs::read_to_string(dir.join(f)).unwrap();
        assert!(text.starts_with("-----BEGIN"), "{f}");
    }
    let bad = dmdelegate()
        .args(["certs", "--out"])
        .arg(&dir)
        .arg("bad id")
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("ServerID `bad id`"));
    std::fs::remove_dir_all(&dir).unwrap();
}
