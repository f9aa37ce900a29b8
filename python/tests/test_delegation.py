"""Delegations between two servers over HTTPS with mutual TLS, from Python: blocking and
asyncio, every method and type, and bad arguments."""

import asyncio
import logging

import pytest

import dmdelegate

RUNS = [(method, kind) for method in (1, 2, 3, 4) for kind in ("partial", "full")]


@pytest.mark.parametrize(("method", "kind"), RUNS)
def test_every_method_and_type_completes(method: int, kind: str) -> None:
    pair = dmdelegate.LocalPair()
    outcome = pair.run(method, kind)
    assert outcome.completed, outcome
    assert outcome.reason_code is None
    assert any("DELEGATION_NOTIF" in m for m in outcome.messages)
    assert any("DELEGATION_CONFIRM" in m for m in outcome.messages)
    assert "dms2.enterprise.example" in pair.device_sessions()
    inside = pair.device_permits("dms2.enterprise.example", "Replace", "./Vendor/Apps/Mail/Server")
    outside = pair.device_permits("dms2.enterprise.example", "Replace", "./Vendor/Settings/Volume")
    assert inside
    assert outside == (kind == "full")


def test_asyncio_runs_delegations_concurrently() -> None:
    async def main() -> list[dmdelegate.Outcome]:
        pairs = [dmdelegate.LocalPair(), dmdelegate.LocalPair()]
        return list(
            await asyncio.gather(pairs[0].run_async(1, "partial"), pairs[1].run_async(4, "full"))
        )

    outcomes = asyncio.run(main())
    assert [o.completed for o in outcomes] == [True, True]


def test_a_pair_delegates_its_device_once() -> None:
    pair = dmdelegate.LocalPair()
    assert pair.run(1, "full").completed
    again = pair.run(1, "full")
    # DMS-1 no longer has an account on the device: the device refuses to be woken
    # (reason 131, device unreachable) and the delegation ends rolled back, with why.
    assert not again.completed
    assert again.dms1_state == "RolledBack"
    assert again.reason_code == 131
    assert again.reason and "404" in again.reason


def test_bad_arguments_raise_value_errors() -> None:
    pair = dmdelegate.LocalPair()
    with pytest.raises(ValueError, match="method"):
        pair.run(5, "full")
    with pytest.raises(ValueError, match="delegation_type"):
        pair.run(1, "half")
    with pytest.raises(ValueError):
        pair.device_permits("x", "Fly", ".")


def test_rust_logs_reach_python_logging(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG, logger="dmdelegate"):
        assert dmdelegate.LocalPair().run(2, "partial").completed
    assert any(r.name.startswith("dmdelegate.") for r in caplog.records)
