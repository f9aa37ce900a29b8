"""DMS-1 delegates a device to DMS-2 over HTTPS with mutual TLS, from Python.

Run after ``pip install ./python``::

    python examples/python/delegate.py [METHOD] [full|partial]
"""

import asyncio
import logging
import sys

import dmdelegate


async def main(method: int, kind: str) -> int:
    pair = dmdelegate.LocalPair()
    outcome = await pair.run_async(method, kind)
    print(f"Method {method}, {kind}: DMS-1 {outcome.dms1_state}, DMS-2 {outcome.dms2_state}")
    for message in outcome.messages:
        print("  ", message)
    if outcome.reason_code is not None:
        description = dmdelegate.reason_description(outcome.reason_code)
        print(f"   reason {outcome.reason_code} ({description}): {outcome.reason}")
    return 0 if outcome.completed else 1


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    method = int(sys.argv[1]) if len(sys.argv) > 1 else 1
    kind = sys.argv[2] if len(sys.argv) > 2 else "partial"
    sys.exit(asyncio.run(main(method, kind)))
