//! `dmdelegate-bench`: how fast delegation runs, against the physical limit of the same
//! stack measured in the same run. Results and the exact commands: BENCHMARKS.md.
//!
//! ```text
//! dmdelegate-bench [all|delegations|codec|inflight] [--n N] [--concurrency C] [--rounds R] [--inflight K]
//!                  [--peer-requests P] [--batch B] [--json]
//! dmdelegate-bench ffi-baseline [--iterations N] [--rounds R] [--vectors DIR] [--encoded-dir DIR] [--json]
//! ```
//!
//! `delegations` alternates `--rounds` rounds of Method 1 delegations with echo requests
//! and reports the median round's limit ratio. `--peer-requests` and `--batch` set the
//! HTTPS binding's requests in flight per peer and messages per request (the binding's
//! defaults otherwise; `--batch 1 --peer-requests 32` is the binding without batches).
//! `ffi-baseline` (not part of `all`) is the
//! Rust side of `scripts/bench-ffi.sh`: see `ffi.rs`.

mod alloc;
mod ffi;
mod pair;

use std::alloc::{GlobalAlloc, Layout, System};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dmdelegate::{DelegationType, MemoryStore, Message, Method, SessionStore, State};
use dmdelegate_net::{client_builder, serve_echo, HttpsOptions, DELEGATION_PATH};
use serde_json::json;
use tokio::sync::Semaphore;

#[global_allocator]
static ALLOC: Allocator = Allocator;

/// Whether [`Allocator`] counts; `ffi-baseline` switches counting off.
static COUNTING: AtomicBool = AtomicBool::new(true);

/// The counting allocator ([`alloc::Counting`]) while [`COUNTING`] is set, else the system
/// allocator alone: `ffi-baseline` compares Rust calls with the same calls from C and
/// Python, whose allocations go straight to the system allocator, so the counter's atomic
/// updates must not be charged to the Rust side. Both forward to `System`, so a block may
/// be freed by either; only the count is then off, and nothing reads it after the switch.
struct Allocator;

// SAFETY: every call is forwarded unchanged to `alloc::Counting` or to `System`, both of
// which allocate with `System`.
unsafe impl GlobalAlloc for Allocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded.
        unsafe {
            if COUNTING.load(Ordering::Relaxed) {
                alloc::Counting.alloc(layout)
            } else {
                System.alloc(layout)
            }
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded.
        unsafe {
            if COUNTING.load(Ordering::Relaxed) {
                alloc::Counting.dealloc(ptr, layout)
            } else {
                System.dealloc(ptr, layout)
            }
        }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded.
        unsafe {
            if COUNTING.load(Ordering::Relaxed) {
                alloc::Counting.alloc_zeroed(layout)
            } else {
                System.alloc_zeroed(layout)
            }
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: forwarded.
        unsafe {
            if COUNTING.load(Ordering::Relaxed) {
                alloc::Counting.realloc(ptr, layout, new_size)
            } else {
                System.realloc(ptr, layout, new_size)
            }
        }
    }
}

struct Args {
    what: String,
    n: usize,
    concurrency: usize,
    inflight: usize,
    iterations: usize,
    rounds: usize,
    vectors: PathBuf,
    encoded_dir: Option<PathBuf>,
    json: bool,
    https: HttpsOptions,
}

const USAGE: &str = "usage: dmdelegate-bench [all|delegations|codec|inflight] [--n N] [--concurrency C] [--rounds R] [--inflight K] [--peer-requests P] [--batch B] [--json]
       dmdelegate-bench ffi-baseline [--iterations N] [--rounds R] [--vectors DIR] [--encoded-dir DIR] [--json]";

/// The command line, or what is wrong with it.
fn parse_args(mut it: impl Iterator<Item = String>) -> Result<Args, String> {
    let mut a = Args {
        what: "all".into(),
        n: 2000,
        concurrency: 32,
        inflight: 10_000,
        iterations: 10_000,
        rounds: 5,
        vectors: PathBuf::from("vectors/valid"),
        encoded_dir: None,
        json: false,
        https: HttpsOptions::default(),
    };
    fn value(it: &mut impl Iterator<Item = String>, name: &str) -> Result<String, String> {
        it.next().ok_or_else(|| format!("{name} needs a value"))
    }
    fn number(it: &mut impl Iterator<Item = String>, name: &str) -> Result<usize, String> {
        let v = value(it, name)?;
        v.parse()
            .map_err(|_| format!("{name} needs a whole number, not `{v}`"))
    }
    while let Some(arg) = it.next() {
        let it = &mut it;
        match arg.as_str() {
            "--n" => a.n = number(it, "--n")?,
            "--concurrency" => a.concurrency = number(it, "--concurrency")?,
            "--inflight" => a.inflight = number(it, "--inflight")?,
            "--iterations" => a.iterations = number(it, "--iterations")?,
            "--rounds" => a.rounds = number(it, "--rounds")?,
            "--vectors" => a.vectors = value(it, "--vectors")?.into(),
            "--encoded-dir" => a.encoded_dir = Some(value(it, "--encoded-dir")?.into()),
            // Both: with `--batch 1` every message needs a request of its own.
            "--peer-requests" => {
                let p = number(it, "--peer-requests")?;
                a.https.max_requests_per_peer = p;
                a.https.max_unbatched_requests_per_peer = p;
            }
            "--batch" => a.https.max_batch_messages = number(it, "--batch")?,
            "--json" => a.json = true,
            w if !w.starts_with('-') => a.what = w.to_string(),
            other => return Err(format!("unknown argument `{other}`")),
        }
    }
    let known = ["all", "delegations", "codec", "inflight", "ffi-baseline"];
    if !known.contains(&a.what.as_str()) {
        return Err(format!("unknown benchmark `{}`", a.what));
    }
    let counts = [
        a.iterations,
        a.rounds,
        a.n,
        a.concurrency,
        a.https.max_requests_per_peer,
        a.https.max_batch_messages,
    ];
    if counts.contains(&0) {
        return Err(
            "--n, --concurrency, --iterations, --rounds, --peer-requests and --batch must be at least 1"
                .into(),
        );
    }
    Ok(a)
}

/// The command line; a bad one prints what is wrong and the usage, and exits with 2.
fn args() -> Args {
    parse_args(std::env::args().skip(1)).unwrap_or_else(|e| {
        eprintln!("dmdelegate-bench: {e}\n{USAGE}");
        std::process::exit(2)
    })
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// CPU time (user + system) of the whole process so far, in seconds: both servers and
/// the device run in it, so a phase's CPU per operation is a cost figure that depends
/// less on what else the machine runs than throughput does.
fn cpu_seconds() -> f64 {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage writes a whole `rusage` into the pointer it is given.
    let usage = unsafe {
        if libc::getrusage(libc::RUSAGE_SELF, usage.as_mut_ptr()) != 0 {
            return 0.0;
        }
        usage.assume_init()
    };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(usage.ru_utime) + secs(usage.ru_stime)
}

/// What one measured phase did: operations, errors, wall and CPU time, latencies.
#[derive(Default)]
struct Phase {
    ok: usize,
    errors: usize,
    seconds: f64,
    cpu_seconds: f64,
    /// Messages delivered between the servers (delegation phases only).
    messages: u64,
    /// HTTP requests that carried them (several messages share one in a batch).
    requests: u64,
    latencies: Vec<Duration>,
}

impl Phase {
    fn per_second(&self) -> f64 {
        self.ok as f64 / self.seconds
    }

    /// Operations attempted (at least 1, to divide by).
    fn attempted(&self) -> f64 {
        (self.ok + self.errors).max(1) as f64
    }

    /// CPU time per operation attempted, in µs.
    fn cpu_us_per_op(&self) -> f64 {
        self.cpu_seconds * 1e6 / self.attempted()
    }

    fn add(&mut self, other: Phase) {
        self.ok += other.ok;
        self.errors += other.errors;
        self.seconds += other.seconds;
        self.cpu_seconds += other.cpu_seconds;
        self.messages += other.messages;
        self.requests += other.requests;
        self.latencies.extend(other.latencies);
    }
}

/// Two servers with `n + 1` devices, warmed up by one delegation on device 0.
async fn warm_pair(method: Method, n: usize, link: pair::Link) -> Arc<pair::Pair> {
    let pair = Arc::new(pair::start_linked(n + 1, true, link).await);
    // Warm up: connections, first-use allocations.
    let warm = pair
        .dms1
        .start_delegation(pair::request(0, method, DelegationType::Full))
        .await
        .expect("warm-up start");
    let s = pair
        .dms1
        .wait(&warm, Duration::from_secs(30))
        .await
        .expect("warm-up");
    assert_eq!(s.state, State::Completed, "warm-up: {s:?}");
    pair
}

/// Full delegations on `devices`, `c` at a time.
async fn delegate(
    pair: &Arc<pair::Pair>,
    method: Method,
    devices: std::ops::Range<usize>,
    c: usize,
) -> Phase {
    let n = devices.len();
    let (before, requests_before) = (pair.delivered(), pair.requests());
    let gate = Arc::new(Semaphore::new(c));
    let cpu_before = cpu_seconds();
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(n);
    for i in devices {
        let (pair, gate) = (pair.clone(), gate.clone());
        tasks.push(tokio::spawn(async move {
            let _permit = gate.acquire().await.expect("semaphore");
            let t = Instant::now();
            let id = pair
                .dms1
                .start_delegation(pair::request(i, method, DelegationType::Full))
                .await?;
            let s = pair.dms1.wait(&id, Duration::from_secs(120)).await?;
            Ok::<_, dmdelegate::Error>((s.state, t.elapsed()))
        }));
    }
    let mut phase = Phase {
        latencies: Vec::with_capacity(n),
        ..Phase::default()
    };
    for t in tasks {
        match t.await.expect("task") {
            Ok((State::Completed, d)) => phase.latencies.push(d),
            _ => phase.errors += 1,
        }
    }
    phase.seconds = started.elapsed().as_secs_f64();
    phase.cpu_seconds = cpu_seconds() - cpu_before;
    phase.ok = phase.latencies.len();
    phase.messages = pair.delivered() - before;
    phase.requests = pair.requests() - requests_before;
    phase
}

/// Completed delegations per second and latency, `n` delegations, `c` at a time, the
/// servers linked by `link`.
async fn delegations(method: Method, n: usize, c: usize, link: pair::Link) -> serde_json::Value {
    let pair = warm_pair(method, n, link).await;
    // Device 0 was the warm-up; the n measured delegations use devices 1..=n.
    let phase = delegate(&pair, method, 1..n + 1, c).await;
    pair::retire(pair).await;
    delegation_json(method, phase)
}

fn delegation_json(method: Method, mut phase: Phase) -> serde_json::Value {
    phase.latencies.sort();
    json!({
        "method": method.number(),
        "delegations": phase.ok,
        "errors": phase.errors,
        "seconds": phase.seconds,
        "per_second": phase.per_second(),
        "messages_per_delegation": phase.messages as f64 / phase.attempted(),
        "messages_per_request": phase.messages as f64 / phase.requests.max(1) as f64,
        "cpu_us_per_delegation": phase.cpu_us_per_op(),
        "p50_ms": ms(percentile(&phase.latencies, 0.50)),
        "p99_ms": ms(percentile(&phase.latencies, 0.99)),
    })
}

/// The physical limit: mutual-TLS HTTPS POSTs of a protocol message to an echo on the
/// same stack (one client, as the transport uses).
struct Echo {
    client: reqwest::Client,
    url: String,
    body: Vec<u8>,
    _endpoint: dmdelegate_net::Endpoint,
}

impl Echo {
    async fn start() -> Echo {
        let pki = dmdelegate_net::TestPki::new("echo CA").expect("CA");
        let server_id = pki.issue(pair::DMS2, &[]).expect("identity");
        let client_id = pki.issue(pair::DMS1, &[]).expect("identity");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let options = HttpsOptions::default();
        let endpoint = serve_echo(listener, &server_id, pki.ca_pem(), options).expect("echo");
        let addr = endpoint.local_addr();
        let client = client_builder(&client_id, pki.ca_pem(), &options)
            .expect("client")
            .resolve(pair::DMS2, addr)
            .build()
            .expect("client");
        let echo = Echo {
            client,
            url: format!("https://{}:{}{DELEGATION_PATH}", pair::DMS2, addr.port()),
            body: std::fs::read("vectors/valid/notif-method1-partial.xml")
                .unwrap_or_else(|_| b"<Delegation/>".to_vec()),
            _endpoint: endpoint,
        };
        echo.post().await.expect("warm-up");
        echo
    }

    /// One request, read to the end of the answer.
    fn post(&self) -> impl std::future::Future<Output = reqwest::Result<()>> + 'static {
        let request = self.client.post(&self.url).body(self.body.clone());
        async move { request.send().await?.bytes().await.map(drop) }
    }

    /// `n` requests, `c` at a time.
    async fn run(&self, n: usize, c: usize) -> Phase {
        let gate = Arc::new(Semaphore::new(c));
        let cpu_before = cpu_seconds();
        let started = Instant::now();
        let tasks: Vec<_> = (0..n)
            .map(|_| {
                let (gate, post) = (gate.clone(), self.post());
                tokio::spawn(async move {
                    let _permit = gate.acquire().await.expect("semaphore");
                    post.await.is_ok()
                })
            })
            .collect();
        let mut phase = Phase::default();
        for t in tasks {
            if t.await.expect("task") {
                phase.ok += 1;
            } else {
                phase.errors += 1;
            }
        }
        phase.seconds = started.elapsed().as_secs_f64();
        phase.cpu_seconds = cpu_seconds() - cpu_before;
        phase
    }

    fn json(&self, phase: &Phase) -> serde_json::Value {
        json!({
            "requests": phase.ok,
            "errors": phase.errors,
            "seconds": phase.seconds,
            "per_second": phase.per_second(),
            "cpu_us_per_request": phase.cpu_us_per_op(),
            "body_bytes": self.body.len(),
        })
    }
}

/// Method 1 against the echo, in `rounds` alternating rounds of `n / rounds`
/// delegations and as many echo requests as those delegations sent messages. The limit
/// ratio of each round compares phases a second apart, so a change in what else the
/// machine runs moves both sides; the reported ratio is the median round's.
async fn limit(n: usize, c: usize, rounds: usize) -> serde_json::Map<String, serde_json::Value> {
    let method = Method::DelegatingInitiates;
    let pair = warm_pair(method, n, pair::Link::Https).await;
    let echo = Echo::start().await;
    let (mut m1, mut e) = (Phase::default(), Phase::default());
    let mut ratios = Vec::with_capacity(rounds);
    let mut cpu_ratios = Vec::with_capacity(rounds);
    let per_round = n.div_ceil(rounds);
    let mut next = 1;
    while next <= n {
        let devices = next..(next + per_round).min(n + 1);
        next = devices.end;
        let d = delegate(&pair, method, devices.clone(), c).await;
        let per_delegation = d.messages as f64 / devices.len() as f64;
        let requests = d.messages.max(1) as usize;
        let r = echo.run(requests, c).await;
        ratios.push(d.per_second() * per_delegation / r.per_second());
        cpu_ratios.push(
            (r.cpu_seconds / requests as f64) * per_delegation
                / (d.cpu_seconds / devices.len() as f64),
        );
        m1.add(d);
        e.add(r);
    }
    let mut out = serde_json::Map::new();
    out.insert("method1_full".into(), delegation_json(method, m1));
    out.insert("echo".into(), echo.json(&e));
    out.insert("limit_ratio".into(), json!(median(&ratios)));
    out.insert("limit_ratio_rounds".into(), json!(ratios));
    out.insert("limit_ratio_cpu".into(), json!(median(&cpu_ratios)));
    let https = pair::https_options();
    out.insert(
        "https".into(),
        json!({
            "max_requests_per_peer": https.max_requests_per_peer,
            "max_batch_messages": https.max_batch_messages,
        }),
    );
    // Where the gap is: the same delegations with the servers linked in process, no
    // HTTP or TLS. Its CPU per delegation is the protocol's own work (engine, codec,
    // store, device); the rest of the HTTPS figure is the binding's.
    pair::retire(pair).await;
    let local = delegations(method, n, c, pair::Link::InProcess).await;
    out.insert("method1_in_process".into(), local);
    out
}

/// The median (the mean of the middle two for an even count).
fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// The golden vectors' bytes, the corpus of the codec benchmark.
fn corpus() -> Vec<Vec<u8>> {
    let mut docs: Vec<Vec<u8>> = std::fs::read_dir("vectors/valid")
        .expect("run from the repository root: vectors/valid")
        .filter_map(|e| e.ok())
        .filter(|e| e.path().extension().is_some_and(|x| x == "xml"))
        .map(|e| std::fs::read(e.path()).expect("vector"))
        .collect();
    docs.sort();
    docs
}

/// Runs `f` over the corpus for about `budget`; MB/s.
fn throughput(docs: &[Vec<u8>], budget: Duration, mut f: impl FnMut(&[u8])) -> f64 {
    let bytes_per_round: usize = docs.iter().map(Vec::len).sum();
    let started = Instant::now();
    let mut rounds = 0u64;
    while started.elapsed() < budget {
        for d in docs {
            f(d);
        }
        rounds += 1;
    }
    (rounds as f64 * bytes_per_round as f64) / started.elapsed().as_secs_f64() / 1e6
}

/// One event of a scan, kept from being optimised away; false at the end.
fn scanned(event: quick_xml::Result<quick_xml::events::Event<'_>>) -> bool {
    match event {
        Ok(quick_xml::events::Event::Eof) => false,
        Ok(e) => {
            std::hint::black_box(&e);
            true
        }
        Err(e) => panic!("vector does not scan: {e}"),
    }
}

/// Decode + validate against a raw quick-xml event scan of the same bytes.
fn codec(rounds: usize) -> serde_json::Value {
    let docs = corpus();
    // Alternating short rounds of scan and decode, as for the limit ratio: each round's
    // ratio compares measurements a moment apart; the median round's is reported.
    let budget = Duration::from_millis(400);
    let mut buf = Vec::new();
    let mut scan_rounds = Vec::with_capacity(rounds);
    let mut decode_rounds = Vec::with_capacity(rounds);
    let mut borrowed_rounds = Vec::with_capacity(rounds);
    let mut ratios = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        let scan = throughput(&docs, budget, |d| {
            let mut reader = quick_xml::Reader::from_reader(d);
            while scanned(reader.read_event_into(&mut buf)) {
                buf.clear();
            }
        });
        let decode = throughput(&docs, budget, |d| {
            std::hint::black_box(Message::from_xml(d).expect("valid vector"));
        });
        // The same scan borrowing from the bytes (no copy into a buffer), as the decoder
        // reads: reported beside the ratio, not part of it.
        let borrowed = throughput(&docs, budget, |d| {
            let mut reader = quick_xml::Reader::from_reader(d);
            while scanned(reader.read_event()) {}
        });
        borrowed_rounds.push(borrowed);
        scan_rounds.push(scan);
        decode_rounds.push(decode);
        ratios.push(decode / scan);
    }
    let (scan, decode) = (median(&scan_rounds), median(&decode_rounds));
    let budget = Duration::from_secs(1);
    let encode_docs: Vec<Message> = docs
        .iter()
        .map(|d| Message::from_xml(d).expect("valid"))
        .collect();
    let started = Instant::now();
    let mut bytes = 0usize;
    while started.elapsed() < budget {
        for m in &encode_docs {
            bytes += std::hint::black_box(m.to_xml()).len();
        }
    }
    let encode = bytes as f64 / started.elapsed().as_secs_f64() / 1e6;
    json!({
        "documents": docs.len(),
        "scan_mb_s": scan,
        "scan_borrowed_mb_s": median(&borrowed_rounds),
        "decode_validate_mb_s": decode,
        "encode_mb_s": encode,
        "ratio": median(&ratios),
        "ratio_rounds": ratios,
    })
}

/// `k` Method 3 delegations in flight at once (DMS-1 waiting for CONFIRM, DMS-2 for
/// the device's first session after its bootstrap), then released by the devices
/// connecting: heap per in-flight delegation beyond the stores, and errors.
async fn inflight(k: usize) -> serde_json::Value {
    let pair = Arc::new(pair::start(k, false).await);
    let baseline = alloc::live_bytes();
    let started = Instant::now();
    let mut ids = Vec::with_capacity(k);
    let mut start_errors = 0usize;
    for i in 0..k {
        match pair
            .dms1
            .start_delegation(pair::request(
                i,
                Method::DelegatingInitiatesBootstrap,
                DelegationType::Partial,
            ))
            .await
        {
            Ok(id) => ids.push(id),
            Err(_) => start_errors += 1,
        }
    }
    // Until every session waits: DMS-1 for CONFIRM, DMS-2 for the device.
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let waiting = pair
            .awaiting_confirm
            .load(std::sync::atomic::Ordering::Relaxed);
        if waiting == ids.len() || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let ramp = started.elapsed();
    let total = alloc::live_bytes().saturating_sub(baseline);
    // The stores' share: the heap freed by taking every record out of the stores
    // (each then put back as it was). A copy would not do: a clone shares what a record
    // holds behind an Arc (journal commands, the account, ACLs) and a record rebuilt
    // from JSON has other capacities. The stores' hash tables keep their slots after a
    // removal, so the share is slightly low and the figure beyond it slightly high.
    // Each record is kept as JSON meanwhile: a listed copy would share those parts
    // with the store's record and keep them alive.
    let mut kept: Vec<(Arc<MemoryStore>, String, String)> = Vec::new();
    for store in [&pair.store1, &pair.store2] {
        for r in store.list().await.expect("store") {
            let json = serde_json::to_string(&r).expect("serializes");
            kept.push((store.clone(), r.session_id, json));
        }
    }
    let before_removal = alloc::live_bytes();
    for (store, id, _) in &kept {
        store.remove(id).await.expect("store");
    }
    let store = before_removal.saturating_sub(alloc::live_bytes());
    for (s, _, json) in &kept {
        let r: dmdelegate::SessionRecord = serde_json::from_str(json).expect("reads back");
        s.save(&r).await.expect("store");
    }
    drop(kept);
    let released = Instant::now();
    let mut errors_connect = 0usize;
    for i in 0..k {
        if pair
            .dms2
            .client_connected(&pair::device_info(i).device_id)
            .await
            .is_err()
        {
            errors_connect += 1;
        }
    }
    let mut errors = start_errors + errors_connect;
    for id in &ids {
        match pair.dms1.wait(id, Duration::from_secs(600)).await {
            Ok(s) if s.state == State::Completed => {}
            _ => errors += 1,
        }
    }
    let drain = released.elapsed();
    json!({
        "in_flight": ids.len(),
        "errors": errors,
        "ramp_seconds": ramp.as_secs_f64(),
        "drain_seconds": drain.as_secs_f64(),
        "heap_bytes_total": total,
        "heap_bytes_stores": store,
        "bytes_per_delegation_beyond_store": (total.saturating_sub(store)) as f64 / ids.len().max(1) as f64,
    })
}

fn main() {
    let a = args();
    let mut out = serde_json::Map::new();
    if a.what == "ffi-baseline" {
        COUNTING.store(false, Ordering::Relaxed);
        let options = ffi::Options {
            iterations: a.iterations,
            rounds: a.rounds,
            vectors: a.vectors.clone(),
            encoded_dir: a.encoded_dir.clone(),
        };
        out.insert("ffi_baseline".into(), ffi::baseline(&options));
        finish(out, a.json);
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    pair::set_https_options(a.https);
    let want = |w: &str| a.what == "all" || a.what == w;
    rt.block_on(async {
        if want("delegations") {
            out.extend(limit(a.n, a.concurrency, a.rounds).await);
            let m3 = delegations(
                Method::DelegatingInitiatesBootstrap,
                a.n,
                a.concurrency,
                pair::Link::Https,
            )
            .await;
            out.insert("method3_full".into(), m3);
        }
        if want("codec") {
            out.insert("codec".into(), codec(a.rounds));
        }
        if want("inflight") {
            out.insert("inflight".into(), inflight(a.inflight).await);
        }
    });
    finish(out, a.json);
}

/// Prints the results (one line with `--json`) and exits 1 if any benchmark counted
/// errors.
fn finish(out: serde_json::Map<String, serde_json::Value>, one_line: bool) {
    let errors: u64 = out
        .values()
        .filter_map(|v| v.get("errors").and_then(serde_json::Value::as_u64))
        .sum();
    let value = serde_json::Value::Object(out);
    if one_line {
        println!("{value}");
    } else {
        println!("{}", serde_json::to_string_pretty(&value).expect("json"));
    }
    if errors > 0 {
        eprintln!("dmdelegate-bench: {errors} errors");
        std::process::exit(1);
    }
}

#[cfg(test)]
mod tests {
    use super::parse_args;

    fn parse(line: &str) -> Result<super::Args, String> {
        parse_args(line.split_whitespace().map(String::from))
    }

    #[test]
    fn a_good_command_line_is_read() {
        let a = parse("delegations --n 300 --concurrency 8 --json").unwrap();
        assert_eq!(
            (a.what.as_str(), a.n, a.concurrency, a.json),
            ("delegations", 300, 8, true)
        );
        assert_eq!(parse("").unwrap().what, "all");
    }

    #[test]
    fn a_bad_command_line_says_what_is_wrong() {
        for (line, says) in [
            ("--help", "unknown argument `--help`"),
            ("--n", "--n needs a value"),
            ("--n many", "--n needs a whole number, not `many`"),
            ("speed", "unknown benchmark `speed`"),
            ("--n 0", "must be at least 1"),
        ] {
            let e = parse(line)
                .err()
                .unwrap_or_else(|| panic!("`{line}` was accepted"));
            assert!(e.contains(says), "`{line}`: {e}");
        }
    }
}
