//! `ffi-baseline`: the per-call cost, in Rust, of the codec calls the bindings wrap, the
//! baseline of `bench/ffi/codec_bench.c` (the C ABI) and `bench/ffi/codec_bench.py`
//! (Python), which do the same calls on the same vectors and print the same JSON.
//! `scripts/bench-ffi.sh` runs the three and compares them.
//!
//! For every golden vector (`*.xml` in the vectors directory, in file-name order), after a
//! warm-up of `iterations / 10` calls, `rounds` rounds of `iterations` calls each; the
//! figure is the fastest round's nanoseconds per call:
//!
//! - `decode_ns`: `Message::from_xml` (decode + validate), the message dropped: the work
//!   of `dmd_message_decode` + `dmd_message_free` and of `DelegationMessage.decode(data)`;
//! - `validate_ns`: the same call again: the work of `dmd_message_validate` and of
//!   `dmdelegate.validate(data)`, which decode and validate without handing a message
//!   over (so, in C and Python, `decode_ns - validate_ns` is the cost of the message
//!   object, measured in one process with one build);
//! - `encode_ns`: `Message::to_xml`, the string dropped: the work of
//!   `DelegationMessage.encode()`;
//! - `validate_encode_ns` (Rust only): `Message::validate`, then `Message::to_xml`: the
//!   work of `dmd_message_encode` + `dmd_bytes_free`, which validates before encoding.
//!
//! And `call_ns`, for the first vector's message: reading its sequence number, the
//! cheapest call there is (`dmd_message_seq` in C, the `seq` property in Python): the
//! fixed cost of crossing the boundary.
//!
//! Checked, outside the timed loops (each failure counts in `errors`): every vector
//! decodes; its encoding decodes back to an equal message. With `encoded_dir`, the encoding
//! of every vector is written there under the vector's name, for a byte comparison with
//! the other languages' encodings.

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::time::Instant;

use dmdelegate::Message;
use serde_json::json;

/// What `ffi-baseline` runs.
pub struct Options {
    /// Calls per round.
    pub iterations: usize,
    /// Rounds; the fastest counts.
    pub rounds: usize,
    /// The directory of the vectors.
    pub vectors: PathBuf,
    /// Where to write every vector's encoding, if anywhere.
    pub encoded_dir: Option<PathBuf>,
}

/// The fastest of `rounds` rounds of `iterations` calls of `f`, in ns per call, after a
/// warm-up of `iterations / 10` calls; and the number of calls that returned false.
fn per_call(iterations: usize, rounds: usize, mut f: impl FnMut() -> bool) -> (f64, usize) {
    let mut failures = 0usize;
    for _ in 0..iterations / 10 {
        failures += usize::from(!f());
    }
    let mut best = f64::INFINITY;
    for _ in 0..rounds {
        let started = Instant::now();
        for _ in 0..iterations {
            failures += usize::from(!f());
        }
        let ns = started.elapsed().as_nanos() as f64 / iterations as f64;
        best = best.min(ns);
    }
    (best, failures)
}

/// The `*.xml` files in `dir`, by file name.
fn vector_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "xml"))
        .collect();
    files.sort_by(|a, b| a.file_name().cmp(&b.file_name()));
    Ok(files)
}

/// One vector's figures and its message, or its error.
fn one(path: &Path, o: &Options) -> Result<(serde_json::Value, Message), String> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let doc = std::fs::read(path).map_err(|e| format!("{name}: {e}"))?;
    let message = Message::from_xml(&doc).map_err(|e| format!("{name}: does not decode: {e}"))?;
    let encoded = message.to_xml();
    match Message::from_xml(encoded.as_bytes()) {
        Ok(back) if back == message => {}
        Ok(_) => return Err(format!("{name}: its encoding decodes to another message")),
        Err(e) => return Err(format!("{name}: its encoding does not decode: {e}")),
    }
    if let Some(dir) = &o.encoded_dir {
        std::fs::write(dir.join(&name), encoded.as_bytes())
            .map_err(|e| format!("{name}: writing its encoding: {e}"))?;
    }

    let (n, r) = (o.iterations, o.rounds);
    let (decode, decode_failures) = per_call(n, r, || {
        black_box(Message::from_xml(black_box(&doc))).is_ok()
    });
    let (validate, check_failures) = per_call(n, r, || {
        black_box(Message::from_xml(black_box(&doc))).is_ok()
    });
    let (encode, _) = per_call(n, r, || {
        black_box(black_box(&message).to_xml());
        true
    });
    let (validate_encode, validate_failures) = per_call(n, r, || {
        let m = black_box(&message);
        if m.validate().is_err() {
            return false;
        }
        black_box(m.to_xml());
        true
    });
    let failures = decode_failures + check_failures + validate_failures;
    if failures > 0 {
        return Err(format!("{name}: {failures} timed calls failed"));
    }
    let figures = json!({
        "name": name,
        "bytes": doc.len(),
        "encoded_bytes": encoded.len(),
        "decode_ns": decode,
        "validate_ns": validate,
        "encode_ns": encode,
        "validate_encode_ns": validate_encode,
    });
    Ok((figures, message))
}

/// The baseline: `{"language": "rust", "iterations", "rounds", "errors", "call_ns",
/// "vectors": [...]}`, one entry per vector (`name`, `bytes`, `encoded_bytes`,
/// `decode_ns`, `validate_ns`, `encode_ns`, `validate_encode_ns`; or `name` and `error`).
pub fn baseline(o: &Options) -> serde_json::Value {
    let mut errors = 0usize;
    let mut vectors = Vec::new();
    let files = match vector_files(&o.vectors) {
        Ok(files) if !files.is_empty() => files,
        Ok(_) => {
            eprintln!("ffi-baseline: no *.xml in {}", o.vectors.display());
            errors += 1;
            Vec::new()
        }
        Err(e) => {
            eprintln!("ffi-baseline: {}: {e}", o.vectors.display());
            errors += 1;
            Vec::new()
        }
    };
    if let Some(dir) = &o.encoded_dir {
        if let Err(e) = std::fs::create_dir_all(dir) {
            eprintln!("ffi-baseline: {}: {e}", dir.display());
            errors += 1;
        }
    }
    let mut call = None;
    for path in &files {
        match one(path, o) {
            Ok((v, message)) => {
                vectors.push(v);
                if call.is_none() {
                    let (ns, _) = per_call(o.iterations, o.rounds, || {
                        black_box(black_box(&message).header.seq);
                        true
                    });
                    call = Some(ns);
                }
            }
            Err(e) => {
                eprintln!("ffi-baseline: {e}");
                errors += 1;
                let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
                vectors.push(json!({ "name": name, "error": e }));
            }
        }
    }
    json!({
        "language": "rust",
        "iterations": o.iterations,
        "rounds": o.rounds,
        "errors": errors,
        "call_ns": call,
        "vectors": vectors,
    })
}
