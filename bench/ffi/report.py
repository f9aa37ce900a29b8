"""Checks and tabulates one run of scripts/bench-ffi.sh.

    python bench/ffi/report.py [--checks-only] RESULTS_DIR

RESULTS_DIR holds ``rust-P.json``, ``c-P.json`` and ``python-P.json`` for every pass P
(the one-line JSON of ``dmdelegate-bench ffi-baseline --json``, codec_bench and
codec_bench.py) and ``encoded/{rust,c,python}/``, every vector's encoding as each
language wrote it.

Fails (exit status 1, every reason on stderr) unless: every language has the same passes,
every file reports zero errors and every vector, the same vectors in the same order with
the same sizes, iterations and rounds; every language's encoding of every vector is
byte-identical to Rust's (and as long as its JSON says).

Then prints (unless --checks-only), in Markdown, per vector and call: the fastest pass's ns per call in Rust, C and
Python, and the overhead of C and Python over Rust in ns and as a ratio. The calls:

* ``decode``: ``Message::from_xml`` / ``dmd_message_decode`` + ``dmd_message_free`` /
  ``DelegationMessage.decode``;
* ``validate``: ``Message::from_xml`` (timed again) / ``dmd_message_validate`` /
  ``dmdelegate.validate``: the same work, no message handed over;
* ``encode``: ``Message::to_xml`` / (none) / ``DelegationMessage.encode()``;
* ``validate+encode``: ``Message::validate`` + ``Message::to_xml`` /
  ``dmd_message_encode`` + ``dmd_bytes_free`` / (none).

The C ABI's encode validates the message first, Python's does not: each is compared with
the Rust call that does the same work.

Then the boundary itself, each figure from one process and one build (so free of the
differences between the Rust harness's and the libraries' code generation): the cheapest
call (reading a message's sequence number), and ``decode - validate`` (what handing a
decoded message over costs: for Rust the same call timed twice, i.e. the noise).
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path
from typing import Any

LANGUAGES = ("rust", "c", "python")
# (row, Rust field, C field, Python field)
CALLS = (
    ("decode", "decode_ns", "decode_ns", "decode_ns"),
    ("validate", "validate_ns", "validate_ns", "validate_ns"),
    ("encode", "encode_ns", None, "encode_ns"),
    ("validate+encode", "validate_encode_ns", "encode_ns", None),
)


def fail(problems: list[str], why: str) -> None:
    problems.append(why)
    print(f"bench-ffi: FAIL: {why}", file=sys.stderr)


def load(results: Path, problems: list[str]) -> dict[str, list[dict[str, Any]]]:
    """Every language's passes, in pass order."""
    runs: dict[str, list[dict[str, Any]]] = {}
    for lang in LANGUAGES:
        files = sorted(results.glob(f"{lang}-*.json"), key=lambda p: int(p.stem.split("-")[1]))
        runs[lang] = []
        if not files:
            fail(problems, f"{lang}: no results")
        for f in files:
            try:
                run = json.loads(f.read_text())["ffi_baseline"]
            except (OSError, ValueError, KeyError, TypeError) as e:
                fail(problems, f"{f.name}: no ffi_baseline result ({type(e).__name__}: {e})")
                continue
            if run.get("language") != lang:
                fail(problems, f"{f.name}: language {run.get('language')!r}, not {lang!r}")
            if run.get("errors") != 0:
                fail(problems, f"{f.name}: {run.get('errors')} errors")
            if not isinstance(run.get("call_ns"), (int, float)):
                fail(problems, f"{f.name}: no call_ns")
            for v in run.get("vectors", []):
                if "error" in v:
                    fail(problems, f"{f.name}: {v['error']}")
            runs[lang].append(run)
    return runs


def check(runs: dict[str, list[dict[str, Any]]], results: Path, problems: list[str]) -> None:
    """The same vectors, sizes and settings everywhere; encodings byte-identical to Rust's."""
    if not runs["rust"]:
        return
    ref = runs["rust"][0]
    names = [v["name"] for v in ref["vectors"]]
    if not names:
        fail(problems, "rust: no vectors")
    sizes = {v["name"]: (v.get("bytes"), v.get("encoded_bytes")) for v in ref["vectors"]}
    passes = {lang: len(r) for lang, r in runs.items()}
    if len(set(passes.values())) != 1:
        fail(problems, f"passes differ: {passes}")
    for lang, lang_runs in runs.items():
        for i, run in enumerate(lang_runs, 1):
            where = f"{lang} pass {i}"
            for key in ("iterations", "rounds"):
                if run.get(key) != ref.get(key):
                    fail(problems, f"{where}: {key} {run.get(key)}, Rust {ref.get(key)}")
            got = [v["name"] for v in run.get("vectors", [])]
            if got != names:
                fail(problems, f"{where}: vectors {got}, Rust {names}")
                continue
            for v in run["vectors"]:
                if "error" in v:
                    continue
                mine = (v.get("bytes"), v.get("encoded_bytes"))
                if mine != sizes[v["name"]]:
                    fail(problems, f"{where}: {v['name']}: (bytes, encoded_bytes) {mine}, "
                                   f"Rust {sizes[v['name']]}")
    encoded = results / "encoded"
    for lang in LANGUAGES:
        d = encoded / lang
        present = sorted(p.name for p in d.iterdir()) if d.is_dir() else []
        if present != sorted(names):
            fail(problems, f"{lang}: encodings written {present}, vectors {sorted(names)}")
        for name in names:
            f = d / name
            if not f.is_file():
                continue
            data = f.read_bytes()
            if len(data) != sizes[name][1]:
                fail(problems, f"{lang}: {name}: encoding of {len(data)} bytes, "
                               f"JSON says {sizes[name][1]}")
            rust = encoded / "rust" / name
            if lang != "rust" and rust.is_file() and data != rust.read_bytes():
                r = rust.read_bytes()
                at = next((i for i, (a, b) in enumerate(zip(data, r)) if a != b),
                          min(len(data), len(r)))
                fail(problems, f"{lang}: {name}: encoding differs from Rust's at byte {at} "
                               f"({len(data)} vs {len(r)} bytes)")


def fastest(lang_runs: list[dict[str, Any]], name: str, field: str) -> float:
    return min(float(next(v for v in run["vectors"] if v["name"] == name)[field])
               for run in lang_runs)


def ns(x: float | None) -> str:
    return "—" if x is None else f"{x:,.0f}"


def over(x: float | None, base: float) -> tuple[str, str]:
    if x is None:
        return "—", "—"
    return f"{x - base:+,.0f}", f"{x / base:.2f}×"


def table(runs: dict[str, list[dict[str, Any]]]) -> None:
    ref = runs["rust"][0]
    print(f"ns per call, fastest of {len(runs['rust'])} pass(es) × {ref['rounds']} round(s) "
          f"of {ref['iterations']} calls; overhead = language − Rust for the same work")
    print()
    print("| vector | bytes | call | Rust | C | C−Rust | C/Rust | Python | Py−Rust | Py/Rust |")
    print("|---|--:|---|--:|--:|--:|--:|--:|--:|--:|")
    totals: dict[str, list[float]] = {}
    c_over: dict[str, list[float]] = {}
    py_over: dict[str, list[float]] = {}
    for v in ref["vectors"]:
        name = v["name"]
        for call, rf, cf, pf in CALLS:
            r = fastest(runs["rust"], name, rf)
            c = fastest(runs["c"], name, cf) if cf else None
            p = fastest(runs["python"], name, pf) if pf else None
            t = totals.setdefault(call, [0.0, 0.0, 0.0])
            t[0] += r
            t[1] += c or 0.0
            t[2] += p or 0.0
            if c is not None:
                c_over.setdefault(call, []).append(c - r)
            if p is not None:
                py_over.setdefault(call, []).append(p - r)
            print(f"| {name.removesuffix('.xml')} | {v['bytes']} | {call} | {ns(r)} | {ns(c)} | "
                  f"{' | '.join(over(c, r))} | {ns(p)} | {' | '.join(over(p, r))} |")
    n = len(ref["vectors"])
    for call, _, cf, pf in CALLS:
        r, c, p = totals[call]
        cc = c if cf else None
        pp = p if pf else None
        print(f"| **all {n}, summed** | | {call} | {ns(r)} | {ns(cc)} | "
              f"{' | '.join(over(cc, r))} | {ns(pp)} | {' | '.join(over(pp, r))} |")
    print()
    print("| median over the vectors | C−Rust | Python−Rust |")
    print("|---|--:|--:|")
    for call, _, cf, pf in CALLS:
        c_med = f"{statistics.median(c_over[call]):+,.0f}" if cf else "—"
        p_med = f"{statistics.median(py_over[call]):+,.0f}" if pf else "—"
        print(f"| {call} | {c_med} | {p_med} |")
    print()
    print("The boundary, each language in its own process (ns):")
    print()
    print("| | Rust | C | Python |")
    print("|---|--:|--:|--:|")
    calls = [min(float(run["call_ns"]) for run in runs[lang]) for lang in LANGUAGES]
    print(f"| cheapest call: read `seq` | {' | '.join(f'{x:,.1f}' for x in calls)} |")
    handover = []
    for lang in LANGUAGES:
        diffs = [fastest(runs[lang], v["name"], "decode_ns")
                 - fastest(runs[lang], v["name"], "validate_ns") for v in ref["vectors"]]
        handover.append(f"{statistics.median(diffs):+,.0f} ({min(diffs):+,.0f} to "
                        f"{max(diffs):+,.0f})")
    print(f"| decode − validate: median (range) over the vectors | {' | '.join(handover)} |")


def main() -> int:
    args = sys.argv[1:]
    checks_only = args[:1] == ["--checks-only"]
    if checks_only:
        args = args[1:]
    if len(args) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    results = Path(args[0])
    problems: list[str] = []
    runs = load(results, problems)
    check(runs, results, problems)
    if problems:
        print(f"bench-ffi: {len(problems)} problem(s)", file=sys.stderr)
        return 1
    if not checks_only:
        table(runs)
        print()
    names = len(runs["rust"][0]["vectors"])
    print(f"bench-ffi: {names} vectors decoded and encoded in Rust, C and Python with zero "
          f"errors; every encoding byte-identical to Rust's")
    return 0


if __name__ == "__main__":
    sys.exit(main())
