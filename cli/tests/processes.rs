//! Separate processes, as an operator runs them: two `dmdelegate serve`, two
//! `dmdelegate device`, driven by `dmdelegate delegate` and `dmdelegate sessions`; one
//! server is killed mid-delegation and restarted from its SQLite store.

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const DMS1: &str = "dms1.operator.example";
const DMS2: &str = "dms2.enterprise.example";
const BOOT: &str = "bootstrap.enterprise.example";

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_dmdelegate"))
}

/// A child process killed when dropped.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn(args: &[&str]) -> Proc {
    Proc(
        bin()
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    )
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Ports {
    listen: u16,
    dm: u16,
    admin: u16,
}

fn ports() -> Ports {
    Ports {
        listen: free_port(),
        dm: free_port(),
        admin: free_port(),
    }
}

fn device_entry(id: &str, notify: u16, client: &str, server: &str) -> String {
    format!(
        "[[devices]]\ndevice_id = \"{id}\"\nmanufacturer = \"Acme\"\nmodel = \"Phone X\"\n\
         notify_url = \"http://127.0.0.1:{notify}/notify\"\nclient_secret = \"{client}\"\n\
         server_secret = \"{server}\"\n"
    )
}

fn server_config(
    dir: &Path,
    me: &str,
    p: &Ports,
    peer: &str,
    peer_port: u16,
    extra: &str,
) -> String {
    let path = dir.join(format!("{me}.toml"));
    let text = format!(
        "server_id = \"{me}\"\nlisten = \"127.0.0.1:{}\"\ndm_listen = \"127.0.0.1:{}\"\n\
         admin_listen = \"127.0.0.1:{}\"\ncertificate = \"{me}.pem\"\nprivate_key = \"{me}.key\"\n\
         trust = \"ca.pem\"\nstore = \"{me}.sqlite\"\n{extra}\n\
         [[peers]]\nserver_id = \"{peer}\"\nendpoint = \"https://{peer}:{peer_port}/dm-delegation\"\n\
         address = \"127.0.0.1:{peer_port}\"\n",
        p.listen, p.dm, p.admin
    );
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

fn device_config(dir: &Path, id: &str, notify: u16, dm1: u16, boot: Option<u16>) -> String {
    let path = dir.join(format!("device-{notify}.toml"));
    let bootstrap = match boot {
        Some(b) => {
            format!("bootstrap_trust = \"ca.pem\"\nresolve = [[\"{BOOT}\", \"127.0.0.1:{b}\"]]\n")
        }
        None => String::new(),
    };
    let text = format!(
        "device_id = \"{id}\"\nmanufacturer = \"Acme\"\nmodel = \"Phone X\"\nlisten = \"127.0.0.1:{notify}\"\n\
         {bootstrap}\n[owner]\nserver_id = \"{DMS1}\"\nurl = \"http://127.0.0.1:{dm1}/dm\"\n\
         client_secret = \"c1\"\nserver_secret = \"s1\"\n"
    );
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

fn sessions(admin: u16) -> Option<Vec<serde_json::Value>> {
    let out = bin()
        .args([
            "sessions",
            "--json",
            "--admin",
            &format!("127.0.0.1:{admin}"),
        ])
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    serde_json::from_slice::<serde_json::Value>(&out.stdout)
        .ok()?
        .as_array()
        .cloned()
}

fn wait_until(what: &str, timeout: Duration, mut check: impl FnMut() -> bool) {
    let end = Instant::now() + timeout;
    while !check() {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn delegate(
    admin: u16,
    peer: &str,
    method: &str,
    kind: &str,
    device: &str,
    subtree: &str,
) -> (bool, String) {
    let out = bin()
        .args([
            "delegate",
            "--admin",
            &format!("127.0.0.1:{admin}"),
            "--peer",
            peer,
            "--method",
            method,
            "--type",
            kind,
            "--device-id",
            device,
            "--manufacturer",
            "Acme",
            "--model",
            "Phone X",
            "--subtree",
            subtree,
            "--wait",
            "30",
        ])
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn state_of(admin: u16, session: &str) -> Option<String> {
    sessions(admin)?
        .into_iter()
        .find(|s| s["session_id"] == session)
        .map(|s| s["state"].as_str().unwrap_or("").to_string())
}

#[test]
fn servers_and_devices_as_processes_survive_a_crash() {
    let dir = std::env::temp_dir().join(format!("dmdelegate-procs-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let certs = bin()
        .args(["certs", "--out"])
        .arg(&dir)
        .args([DMS1, DMS2, BOOT])
        .output()
        .unwrap();
    assert!(certs.status.success());

    let (p1, p2) = (ports(), ports());
    let boot = free_port();
    let (dev_a, dev_b) = (free_port(), free_port());
    let devices1 = format!(
        "[timeouts]\nbootstrap_confirm = 3\n{}{}",
        device_entry("IMEI:1", dev_a, "c1", "s1"),
        device_entry("IMEI:2", dev_b, "c1", "s1")
    );
    let devices2 = format!(
        "[account]\nclient_secret = \"c2\"\nserver_secret = \"s2\"\n\
         [bootstrap]\nlisten = \"127.0.0.1:{boot}\"\nhost = \"{BOOT}\"\ncertificate = \"{BOOT}.pem\"\nprivate_key = \"{BOOT}.key\"\n{}{}",
        device_entry("IMEI:1", dev_a, "c2", "s2"),
        device_entry("IMEI:2", dev_b, "c2", "s2")
    );
    let c1 = server_config(&dir, DMS1, &p1, DMS2, p2.listen, &devices1);
    let c2 = server_config(&dir, DMS2, &p2, DMS1, p1.listen, &devices2);
    let da = device_config(&dir, "IMEI:1", dev_a, p1.dm, Some(boot));
    // Device B cannot verify the Bootstrap Server: in Methods 3/4 it never reaches DMS-2.
    let db = device_config(&dir, "IMEI:2", dev_b, p1.dm, None);

    let mut dms1 = spawn(&["serve", "--config", &c1]);
    let _dms2 = spawn(&["serve", "--config", &c2]);
    let _device_a = spawn(&["device", "--config", &da]);
    let _device_b = spawn(&["device", "--config", &db]);
    wait_until("both servers", Duration::from_secs(20), || {
        sessions(p1.admin).is_some() && sessions(p2.admin).is_some()
    });

    // Method 1, Partial, started by DMS-1; then Method 4, Full, started by DMS-2.
    let (ok, out) = delegate(
        p1.admin,
        DMS2,
        "1",
        "partial",
        "IMEI:1",
        "./Vendor/Apps=Add,Get,Replace",
    );
    assert!(ok, "{out}");
    assert!(out.contains("Completed"), "{out}");
    let (ok, out) = delegate(p2.admin, DMS1, "4", "full", "IMEI:1", ".=Get");
    assert!(ok, "{out}");
    let one = sessions(p1.admin).unwrap();
    assert_eq!(one.len(), 2);
    assert!(one.iter().all(|s| s["state"] == "Completed"), "{one:?}");

    // Method 3 with device B: DMS-1 prepares the device, then waits for a CONFIRM that
    // cannot come. Kill DMS-1 while it waits, restart it from its store: at the deadline it
    // rolls the device back and tells DMS-2.
    let id = {
        let out = bin()
            .args([
                "delegate",
                "--admin",
                &format!("127.0.0.1:{}", p1.admin),
                "--peer",
                DMS2,
                "--method",
                "3",
                "--type",
                "partial",
                "--device-id",
                "IMEI:2",
                "--manufacturer",
                "Acme",
                "--model",
                "Phone X",
                "--subtree",
                "./Vendor/Apps=Get",
                "--wait",
                "1",
            ])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        text.split_whitespace().nth(1).unwrap().to_string()
    };
    wait_until("DMS-1 waiting for CONFIRM", Duration::from_secs(10), || {
        state_of(p1.admin, &id).as_deref() == Some("AwaitingConfirm")
    });
    let _ = dms1.0.kill();
    let _ = dms1.0.wait();
    std::thread::sleep(Duration::from_millis(300));
    let _dms1_again = spawn(&["serve", "--config", &c1]);
    wait_until("DMS-1 back", Duration::from_secs(20), || {
        sessions(p1.admin).is_some()
    });
    wait_until(
        "the rollback after the restart",
        Duration::from_secs(20),
        || {
            state_of(p1.admin, &id).as_deref() == Some("RolledBack")
                && state_of(p2.admin, &id).as_deref() == Some("RolledBack")
        },
    );
    let restarted = sessions(p1.admin).unwrap();
    let failed = restarted
        .iter()
        .find(|s| s["session_id"] == id.as_str())
        .unwrap();
    assert_eq!(failed["reason"]["code"], 141, "{failed}");
    assert_eq!(
        failed["pending_operations"], 0,
        "every inverse was applied: {failed}"
    );

    // Device B is as it was: a new delegation of it runs from a clean state.
    let (ok, out) = delegate(
        p1.admin,
        DMS2,
        "1",
        "partial",
        "IMEI:2",
        "./Vendor/Apps=Get",
    );
    assert!(ok, "{out}");
    let _ = std::fs::remove_dir_all(&dir);
}
