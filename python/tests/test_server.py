"""`dmdelegate.Server`: two DM Servers on loopback over HTTPS with mutual TLS, each with a
Python host backed by a simulated device. Every method and type completes and leaves the
device as the profile says; every failure leaves the device exactly as it was."""

from __future__ import annotations

import datetime
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from harness import (
    BOOTSTRAP_URL,
    DEVICE_ID,
    DMS1,
    DMS2,
    METHODS_AND_TYPES,
    DeviceHost,
    Pair,
    new_device,
    start_server,
    subtrees,
    wait_for,
)

import dmdelegate
from dmdelegate import Offer, Peer, Rejection, Session, Subtree, TestPki, Timeouts


@pytest.mark.parametrize(("method", "kind"), METHODS_AND_TYPES)
def test_every_method_and_type_completes(pki: TestPki, method: int, kind: str) -> None:
    host1, host2 = DeviceHost(DMS1), DeviceHost(DMS2)
    with Pair(pki, host1, host2) as pair:
        device = pair.device
        session_id = pair.start(method, kind)
        dms1, dms2 = pair.finish(session_id)

        assert (dms1.state, dms2.state) == ("Completed", "Completed")
        assert (dms1.role, dms2.role) == ("DMS-1", "DMS-2")
        assert dms1.reason_code is None and dms1.pending_operations == 0
        assert [s.state for s in dms1.history][-1] == "Completed"
        # DMS-2 now has an account and the delegated rights ...
        assert device.accounts_of(DMS2) == ["dms2_enterprise_example"]
        assert device.permits(DMS2, "Replace", "./Vendor/Apps/Mail/Server")
        assert DMS2 in (device.acl_of("./Vendor/Apps/Mail") or "")
        # ... and, for Full, everything DMS-1 had; DMS-1 is gone.
        assert device.permits(DMS2, "Replace", "./Vendor/Settings/Volume") == (kind == "full")
        assert device.accounts_of(DMS1) == ([] if kind == "full" else ["dms1_operator_example"])
        if method in (1, 2):
            # DMS-2's host opened its DM session itself.
            assert DMS2 in device.sessions()
            assert pair.bootstrap.served() == []
        else:
            # The device bootstrapped from DMS-2's Bootstrap Server and called DMS-2.
            assert pair.bootstrap.served() == [(BOOTSTRAP_URL, DEVICE_ID)]
            assert device.sessions()[-1] == DMS2
        # Only DMS-1 touches the device; both hosts heard the outcome.
        assert host1.commands and not host2.commands
        assert "Completed" in host1.event_kinds(session_id)
        assert "Completed" in host2.event_kinds(session_id)


def test_the_responder_sees_the_offer(pki: TestPki) -> None:
    host1, host2 = DeviceHost(DMS1), DeviceHost(DMS2)
    with Pair(pki, host1, host2) as pair:
        expires = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(hours=1)
        session_id = pair.dms1.start_delegation(
            DMS2, 1, "partial", pair.device.device, subtrees("partial"), expires=expires
        )
        pair.finish(session_id)

    [offer] = host2.offers
    assert isinstance(offer, Offer)
    assert (offer.session_id, offer.peer, offer.role) == (session_id, DMS1, "DMS-2")
    assert (offer.method, offer.delegation_type) == (1, "Partial")
    assert offer.device == pair.device.device
    assert offer.subtrees == [Subtree("./Vendor/Apps", "Add+Get+Replace")]
    assert offer.expires is not None
    assert abs((offer.expires - expires).total_seconds()) < 0.001
    assert host1.offers == []  # the initiator is not asked


def test_a_refusal_changes_nothing(pki: TestPki) -> None:
    class Refusing(DeviceHost):
        def accept_delegation(self, offer: Offer) -> bool | Rejection:
            return Rejection(102, "we do not manage this device")

    with Pair(pki, host2=Refusing(DMS2)) as pair:
        before = pair.device.dump()
        dms1, dms2 = pair.finish(pair.start(1, "partial"))

    assert (dms1.state, dms2.state) == ("Rejected", "Rejected")
    assert dms1.reason_code == 102
    assert dms1.reason_text == "we do not manage this device"
    assert pair.device.dump() == before


def test_a_failed_dm_session_rolls_the_device_back(pki: TestPki) -> None:
    class NoSession(DeviceHost):
        def open_dm_session(self, session: Session) -> None:
            raise dmdelegate.HostError("the device did not answer", reason_code=132)

    host1 = DeviceHost(DMS1)
    with Pair(pki, host1, NoSession(DMS2)) as pair:
        before = pair.device.dump()
        dms1, dms2 = pair.finish(pair.start(1, "full"))
        assert (dms1.state, dms2.state) == ("RolledBack", "RolledBack")
        assert dms1.reason_code == 132
        assert dms1.reason_text is not None and "did not answer" in dms1.reason_text
        # Every write DMS-1 made (DMS-2's account, the ACLs) was undone, in reverse.
        assert pair.device.dump() == before
        assert any(c.is_write for c in host1.commands)
        assert ["Failed", "RolledBack"] == [
            k for k in host1.event_kinds(dms1.session_id) if k != "StateChanged"
        ]


def test_cancel_rolls_back_an_unfinished_delegation(pki: TestPki) -> None:
    # Method 3 with a device that never fetches its bootstrap: DMS-1 waits for CONFIRM.
    with Pair(pki, route_bootstrap=False) as pair:
        before = pair.device.dump()
        session_id = pair.start(3, "partial")
        wait_for(pair.dms1, session_id, "AwaitingConfirm")
        assert pair.device.dump() != before  # the trigger and the ACLs are in place

        cancelled = pair.dms1.cancel(session_id)

        assert cancelled.state == "RolledBack"
        assert cancelled.reason_code == 150
        assert wait_for(pair.dms2, session_id, "RolledBack").reason_code == 150
        assert pair.device.dump() == before
        with pytest.raises(dmdelegate.InvalidStateError):
            pair.dms1.cancel(session_id)


def test_a_missed_deadline_rolls_back(pki: TestPki) -> None:
    timeouts = Timeouts(bootstrap_confirm=0.5)
    with Pair(pki, timeouts=timeouts, route_bootstrap=False, watch_period=0.05) as pair:
        before = pair.device.dump()
        dms1, dms2 = pair.finish(pair.start(3, "partial"))
    assert (dms1.state, dms2.state) == ("RolledBack", "RolledBack")
    assert (dms1.reason_code, dms2.reason_code) == (141, 141)
    assert pair.device.dump() == before


def test_retry_rollback_finishes_an_incomplete_rollback(pki: TestPki) -> None:
    host1 = DeviceHost(DMS1)
    with Pair(pki, host1, route_bootstrap=False) as pair:
        before = pair.device.dump()
        session_id = pair.start(3, "partial")
        wait_for(pair.dms1, session_id, "AwaitingConfirm")

        pair.device.set_reachable(False)
        failed = pair.dms1.cancel(session_id)
        assert failed.state == "RollbackFailed"
        assert failed.pending_operations > 0
        [incomplete] = [e for e in host1.events if e.kind == "RollbackIncomplete"]
        assert incomplete.failed_operations and incomplete.reason_code == 150

        pair.device.set_reachable(True)
        retried = pair.dms1.retry_rollback(session_id)
        assert retried.state == "RolledBack"
        assert pair.device.dump() == before


def test_client_connected_confirms_a_bootstrap_delegation(pki: TestPki) -> None:
    # The host reports the device's first DM session itself (no simulated bootstrap).
    with Pair(pki, route_bootstrap=False) as pair:
        session_id = pair.start(3, "partial")
        wait_for(pair.dms2, session_id, "AwaitingClient")

        assert pair.dms2.client_connected(DEVICE_ID) == [session_id]

        dms1, dms2 = pair.finish(session_id)
        assert (dms1.state, dms2.state) == ("Completed", "Completed")
        assert pair.dms2.client_connected(DEVICE_ID) == []


def test_sessions_lists_every_delegation(pki: TestPki) -> None:
    devices = [new_device("IMEI:1"), new_device("IMEI:2")]
    with Pair(pki, devices=devices) as pair:
        first = pair.start(1, "partial", devices[0])
        second = pair.start(2, "full", devices[1])
        pair.finish(first)
        pair.finish(second)

        listed = pair.dms1.sessions()
        assert [s.session_id for s in listed] == [first, second]
        assert [(s.method, s.delegation_type, s.device.device_id) for s in listed] == [
            (1, "Partial", "IMEI:1"),
            (2, "Full", "IMEI:2"),
        ]
        assert pair.dms1.session(first) == listed[0]
        assert {s.session_id for s in pair.dms2.sessions()} == {first, second}
        with pytest.raises(dmdelegate.UnknownSessionError):
            pair.dms1.session("no-such-session")


def test_sessions_survive_a_restart_with_sqlite(pki: TestPki, tmp_path: Path) -> None:
    store = tmp_path / "dms1.sqlite"
    with Pair(pki, store1=store) as pair:
        session_id = pair.start(1, "partial")
        done, _ = pair.finish(session_id)

    with start_server(pki, DMS1, DeviceHost(DMS1), store_path=store) as restarted:
        assert restarted.session(session_id) == done
        assert [s.session_id for s in restarted.sessions()] == [session_id]
    assert store.exists()


def test_a_temporary_delegation_expires(pki: TestPki) -> None:
    host1 = DeviceHost(DMS1)
    with Pair(pki, host1, watch_period=0.05) as pair:
        before = pair.device.dump()
        expires = time.time() + 2
        session_id = pair.dms1.start_delegation(
            DMS2, 1, "partial", pair.device.device, subtrees("partial"), expires=expires
        )
        dms1, _ = pair.finish(session_id)
        assert dms1.state == "Completed"
        assert pair.device.permits(DMS2, "Replace", "./Vendor/Apps/Mail/Server")

        wait_for(pair.dms1, session_id, "Expired")
        wait_for(pair.dms2, session_id, "Expired")
        assert pair.device.dump() == before
        assert "Expired" in host1.event_kinds(session_id)


def test_a_server_is_a_context_manager(pki: TestPki) -> None:
    with start_server(pki, DMS1, DeviceHost(DMS1)) as server:
        assert server.server_id == DMS1 and server.local_port > 0
        assert server.endpoint_url("localhost") == (
            f"https://localhost:{server.local_port}/dm-delegation"
        )
        assert server.as_peer() == Peer(
            DMS1, server.endpoint_url(DMS1), f"127.0.0.1:{server.local_port}"
        )
    assert server.closed
    with pytest.raises(dmdelegate.InvalidStateError, match="closed"):
        server.sessions()
    server.close()  # again: nothing happens


def test_ctrl_c_interrupts_a_blocking_wait(pki: TestPki, tmp_path: Path) -> None:
    # In a child process: wait() on a delegation that cannot finish, then SIGINT.
    script = tmp_path / "waits.py"
    script.write_text(
        textwrap.dedent(
            """
            import dmdelegate, harness
            with harness.Pair(dmdelegate.TestPki(), route_bootstrap=False) as pair:
                session_id = pair.start(3, "partial")
                harness.wait_for(pair.dms1, session_id, "AwaitingConfirm")
                try:
                    print("waiting", flush=True)
                    pair.dms1.wait(session_id, 60)
                except KeyboardInterrupt:
                    print("interrupted", pair.dms1.session(session_id).state, flush=True)
            """
        )
    )
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parent))
    child = subprocess.Popen(
        [sys.executable, str(script)], stdout=subprocess.PIPE, text=True, env=env
    )
    assert child.stdout is not None
    assert child.stdout.readline().strip() == "waiting"
    started = time.monotonic()
    child.send_signal(signal.SIGINT)
    out, _ = child.communicate(timeout=20)
    assert out.strip() == "interrupted AwaitingConfirm"
    assert time.monotonic() - started < 5
    assert child.returncode == 0


def test_exiting_while_async_calls_are_still_running_is_clean(tmp_path: Path) -> None:
    # In child processes: asyncio.run returns while other run_async delegations are
    # still going on the runtime, and the interpreter exits at once. Their results must
    # be dropped quietly, never delivered into a finalizing interpreter (which aborts).
    script = tmp_path / "exits.py"
    script.write_text(
        textwrap.dedent(
            """
            import asyncio, dmdelegate

            async def main() -> None:
                pairs = [dmdelegate.LocalPair() for _ in range(4)]
                runs = [asyncio.ensure_future(p.run_async(1, "full")) for p in pairs]
                done, _ = await asyncio.wait(runs, return_when=asyncio.FIRST_COMPLETED)
                print(next(iter(done)).result().completed, flush=True)

            asyncio.run(main())
            """
        )
    )
    for attempt in range(12):
        child = subprocess.run(
            [sys.executable, str(script)], capture_output=True, text=True, timeout=60
        )
        assert (child.returncode, child.stdout.strip()) == (0, "True"), (
            f"attempt {attempt}: exit {child.returncode}\n{child.stderr}"
        )


class TestBadInput:
    """Bad arguments raise typed exceptions (`InvalidArgumentError` is also a ValueError)
    naming the argument, before anything is sent."""

    def test_method_type_and_rights(self, pki: TestPki) -> None:
        with Pair(pki) as pair:
            device = pair.device.device
            with pytest.raises(dmdelegate.InvalidArgumentError) as caught:
                pair.dms1.start_delegation(DMS2, 7, "full", device, subtrees("full"))
            assert caught.value.field == "method"
            assert isinstance(caught.value, ValueError)
            with pytest.raises(dmdelegate.InvalidArgumentError, match="delegation_type"):
                pair.dms1.start_delegation(DMS2, 1, "half", device, subtrees("full"))
            with pytest.raises(dmdelegate.InvalidArgumentError, match="Fly"):
                Subtree("./Vendor", "Add+Fly")
            with pytest.raises(dmdelegate.InvalidArgumentError, match="no command"):
                Subtree("./Vendor", "")
            with pytest.raises(dmdelegate.InvalidArgumentError) as caught:
                pair.dms1.start_delegation(DMS2, 1, "full", device, [Subtree("Vendor", "Get")])
            assert caught.value.field is not None and "URI" in caught.value.field
            with pytest.raises(dmdelegate.InvalidArgumentError, match="itself"):
                pair.dms1.start_delegation(DMS1, 1, "full", device, subtrees("full"))
            assert pair.dms1.sessions() == []

    def test_expiry(self, pki: TestPki) -> None:
        with Pair(pki) as pair:
            device = pair.device.device
            naive = datetime.datetime.now() + datetime.timedelta(hours=1)
            with pytest.raises(dmdelegate.InvalidArgumentError, match="timezone"):
                pair.dms1.start_delegation(DMS2, 1, "partial", device, subtrees("partial"), naive)
            with pytest.raises(dmdelegate.InvalidArgumentError, match="not in the future"):
                pair.dms1.start_delegation(
                    DMS2, 1, "partial", device, subtrees("partial"), time.time() - 10
                )
            with pytest.raises(dmdelegate.InvalidArgumentError):  # Full cannot be temporary
                pair.dms1.start_delegation(
                    DMS2, 1, "full", device, subtrees("full"), time.time() + 60
                )

    def test_peers(self, pki: TestPki) -> None:
        with start_server(pki, DMS1, DeviceHost(DMS1)) as server:
            with pytest.raises(dmdelegate.InvalidArgumentError) as caught:
                server.set_peers([Peer(DMS2, "http://dms2.enterprise.example/dm-delegation")])
            assert caught.value.field == "peers"
            with pytest.raises(dmdelegate.InvalidArgumentError) as caught:
                Peer(DMS2, "https://dms2.enterprise.example/dm-delegation", "nowhere")
            assert caught.value.field == "address"
            server.set_peers([Peer(DMS2, "https://dms2.enterprise.example:1/dm-delegation")])
            with pytest.raises(dmdelegate.InvalidStateError, match="already set"):
                server.set_peers([])

    def test_an_unreachable_peer_fails_the_delegation(self, pki: TestPki) -> None:
        with start_server(pki, DMS1, DeviceHost(DMS1, [new_device()])) as server:
            # Nothing listens on port 1: the NOTIF is queued, retried, then given up on.
            server.set_peers([Peer(DMS2, f"https://{DMS2}:1/dm-delegation", "127.0.0.1:1")])
            session_id = server.start_delegation(
                DMS2, 1, "partial", new_device().device, subtrees("partial")
            )
            ended = server.wait(session_id, 30)
        assert (ended.state, ended.reason_code) == ("RolledBack", 170)

    def test_configuration(self, pki: TestPki) -> None:
        identity = pki.issue(DMS1)
        with pytest.raises(dmdelegate.InvalidArgumentError) as caught:
            bad = dmdelegate.ServerConfig(
                DMS1, cert_pem="nope", key_pem=identity.key_pem, trust_pem=pki.ca_pem
            )
            dmdelegate.Server(bad, DeviceHost(DMS1))
        assert caught.value.field == "identity"
        with pytest.raises(dmdelegate.InvalidArgumentError) as caught:
            dmdelegate.ServerConfig(
                DMS1,
                cert_pem=identity.cert_pem,
                key_pem=identity.key_pem,
                trust_pem=pki.ca_pem,
                listen="localhost",
            )
        assert caught.value.field == "listen"
        with pytest.raises(dmdelegate.InvalidArgumentError, match="response"):
            Timeouts(response=-1)
        with pytest.raises(dmdelegate.InvalidArgumentError):
            dmdelegate.CommandResult(0)
        with pytest.raises(dmdelegate.InvalidArgumentError):
            Rejection(5)
        with pytest.raises(dmdelegate.InvalidArgumentError):
            dmdelegate.simple_dmacc_tnds("bad id", "https://x/dm", "a", "b")
