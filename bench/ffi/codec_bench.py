"""The per-call cost of the codec from Python, the Python side of scripts/bench-ffi.sh.

The same calls, vectors, rounds and JSON as ``dmdelegate-bench ffi-baseline``
(bench/src/ffi.rs) and bench/ffi/codec_bench.c::

    python bench/ffi/codec_bench.py [--iterations N] [--rounds R] [--vectors DIR]
                                    [--encoded-dir DIR]

For every ``*.xml`` in DIR (default vectors/valid), in file-name order, after a warm-up of
N // 10 calls, R rounds (default 5) of N calls (default 10000), the garbage collector off
during the loops (as :mod:`timeit` does); the figure is the fastest round's nanoseconds
per call:

* ``decode_ns``: ``DelegationMessage.decode(data)`` (decode + validate), the message
  dropped;
* ``validate_ns``: ``dmdelegate.validate(data)`` (decode + validate, nothing handed over:
  ``decode_ns - validate_ns`` is the cost of the message object);
* ``encode_ns``: ``message.encode()``, the bytes dropped (no validation: the Python
  binding encodes only).

And ``call_ns``, for the first vector's message: reading ``message.seq``, the cheapest
call there is (the fixed cost of a call into the extension, attribute lookup included).

The bound callables are looked up once, outside the loop, so a figure is the call itself
(argument conversion, the Rust call, the Python object it returns, its release) plus the
interpreter's ``for`` loop step, not attribute lookups.

Checked outside the timed loops (each failure counts in ``errors``; exit status 1 if
any): every vector decodes; its encoding decodes again and encodes to the same bytes, and
the message's fields survive. With --encoded-dir, every vector's encoding is written
there under the vector's name.

Prints one JSON line: ``{"ffi_baseline": {"language": "python", "iterations", "rounds",
"errors", "call_ns", "vectors": [{"name", "bytes", "encoded_bytes", "decode_ns",
"validate_ns", "encode_ns"} or {"name", "error"}]}}``.
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from dmdelegate import DelegationMessage, validate


def per_call(iterations: int, rounds: int, loop: Callable[[range], None]) -> float:
    """The fastest of ``rounds`` rounds of ``loop(range(iterations))``, ns per iteration,
    after a warm-up of ``iterations // 10``."""
    loop(range(iterations // 10))
    steps = range(iterations)
    best = float("inf")
    enabled = gc.isenabled()
    gc.disable()
    try:
        for _ in range(rounds):
            started = time.perf_counter_ns()
            loop(steps)
            best = min(best, (time.perf_counter_ns() - started) / iterations)
    finally:
        if enabled:
            gc.enable()
    return best


def fields(m: DelegationMessage) -> tuple[object, ...]:
    return (m.kind, m.session_id, m.seq, m.sender, m.recipient, m.method, m.timestamp_ms,
            m.reason_code)


def one(path: Path, iterations: int, rounds: int,
        encoded_dir: Path | None) -> tuple[dict[str, Any], DelegationMessage]:
    """One vector's figures and its message; raises on any failure."""
    data = path.read_bytes()
    decode = DelegationMessage.decode
    message = decode(data)
    encoded = message.encode()
    again = decode(encoded)
    if again.encode() != encoded:
        raise ValueError("encoding its encoding gives other bytes")
    if fields(again) != fields(message):
        raise ValueError("its encoding decodes to other field values")
    if encoded_dir is not None:
        (encoded_dir / path.name).write_bytes(encoded)

    encode = message.encode

    # The loops call the binding directly: no Python frame of ours per call.
    def decode_loop(steps: range) -> None:
        for _ in steps:
            decode(data)

    def validate_loop(steps: range) -> None:
        for _ in steps:
            validate(data)

    def encode_loop(steps: range) -> None:
        for _ in steps:
            encode()

    decode_ns = per_call(iterations, rounds, decode_loop)
    validate_ns = per_call(iterations, rounds, validate_loop)
    encode_ns = per_call(iterations, rounds, encode_loop)
    return {
        "name": path.name,
        "bytes": len(data),
        "encoded_bytes": len(encoded),
        "decode_ns": decode_ns,
        "validate_ns": validate_ns,
        "encode_ns": encode_ns,
    }, message


def call_ns(message: DelegationMessage, iterations: int, rounds: int) -> float:
    """Reading ``message.seq``, ns per read."""
    if message.seq < 1:
        raise ValueError(f"seq {message.seq}")

    def call_loop(steps: range) -> None:
        for _ in steps:
            message.seq

    return per_call(iterations, rounds, call_loop)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=10000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--vectors", type=Path, default=Path("vectors/valid"))
    parser.add_argument("--encoded-dir", type=Path)
    a = parser.parse_args()
    if a.iterations < 1 or a.rounds < 1:
        parser.error("--iterations and --rounds must be at least 1")

    errors = 0
    results: list[dict[str, Any]] = []
    try:
        files = sorted((p for p in a.vectors.iterdir() if p.suffix == ".xml"),
                       key=lambda p: p.name.encode())
    except OSError as e:
        print(f"codec_bench.py: {e}", file=sys.stderr)
        files = []
        errors += 1
    if not files and errors == 0:
        print(f"codec_bench.py: no *.xml in {a.vectors}", file=sys.stderr)
        errors += 1
    if a.encoded_dir is not None:
        a.encoded_dir.mkdir(parents=True, exist_ok=True)
    call: float | None = None
    for path in files:
        try:
            figures, message = one(path, a.iterations, a.rounds, a.encoded_dir)
            if call is None:
                call = call_ns(message, a.iterations, a.rounds)
            results.append(figures)
        except Exception as e:  # every failure is reported, with its vector
            why = f"{path.name}: {type(e).__name__}: {e}"
            print(f"codec_bench.py: {why}", file=sys.stderr)
            results.append({"name": path.name, "error": why})
            errors += 1
    print(json.dumps({"ffi_baseline": {
        "language": "python",
        "iterations": a.iterations,
        "rounds": a.rounds,
        "errors": errors,
        "call_ns": call,
        "vectors": results,
    }}, separators=(",", ":")))
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
