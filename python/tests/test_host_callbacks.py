"""The host's callbacks: what they receive, on which threads they run, and what happens
when they raise, return the wrong thing, are missing, or are coroutines. Whatever a host
does, the delegation ends with a reason code and the device as it was; nothing crashes."""

from __future__ import annotations

import asyncio
import logging
import threading

import pytest
from harness import (
    DEVICE_ID,
    DMS1,
    DMS2,
    DeviceHost,
    Pair,
    account_of,
    new_device,
    start_server,
    subtrees,
)

import dmdelegate
from dmdelegate import (
    Command,
    CommandResult,
    Device,
    DmAccount,
    Event,
    HostError,
    Offer,
    Rejection,
    Session,
    TestPki,
)


def test_callbacks_run_on_the_servers_threads(pki: TestPki) -> None:
    host1, host2 = DeviceHost(DMS1), DeviceHost(DMS2)
    with Pair(pki, host1, host2) as pair:
        pair.finish(pair.start(1, "partial"))
    assert host1.threads and host2.threads
    assert threading.get_ident() not in host1.threads | host2.threads


def test_execute_gets_commands_a_real_host_can_run(pki: TestPki) -> None:
    host1 = DeviceHost(DMS1)
    with Pair(pki, host1) as pair:
        pair.finish(pair.start(1, "partial"))

    kinds = [c.kind for c in host1.commands]
    assert kinds[0] == "GetTree" and host1.commands[0].values
    assert {"GetTree", "GetAcl", "Add", "ReplaceAcl", "Delete"} <= set(kinds)
    add = next(c for c in host1.commands if c.kind == "Add")
    assert add.parent == "./DMAcc" and add.uri == "./DMAcc/dms2_enterprise_example"
    assert add.tnds is not None and "<MgmtTree" in add.tnds
    assert add.to_syncml(7).startswith("<Add><CmdID>7</CmdID>")
    assert str(add) == "Add ./DMAcc/dms2_enterprise_example"
    replace = next(c for c in host1.commands if c.kind == "ReplaceAcl")
    assert replace.acl is not None and DMS2 in replace.acl
    assert replace.is_write and not host1.commands[0].is_write


def test_events_carry_states_and_reasons(pki: TestPki) -> None:
    host1 = DeviceHost(DMS1)
    with Pair(pki, host1) as pair:
        session_id = pair.start(1, "partial")
        pair.finish(session_id)
    changes = [(e.from_state, e.to_state) for e in host1.events if e.kind == "StateChanged"]
    assert changes[0] == ("NotifSent", "AwaitingStart")
    assert changes[-1] == ("Finalizing", "Completed")
    done = host1.events[-1]
    assert (done.kind, done.session_id, done.role, done.device_id) == (
        "Completed",
        session_id,
        "DMS-1",
        DEVICE_ID,
    )
    assert done.reason_code is None and done.from_state is None


class TestRaisingCallbacks:
    """A HostError carries its reason code to the peer; any other exception fails the
    delegation with 199 (internal error) and its traceback goes to `dmdelegate.host`."""

    def test_accept_raising(self, pki: TestPki, caplog: pytest.LogCaptureFixture) -> None:
        class Broken(DeviceHost):
            def accept_delegation(self, offer: Offer) -> bool | Rejection:
                raise ZeroDivisionError("policy bug")

        with Pair(pki, host2=Broken(DMS2)) as pair, caplog.at_level(logging.ERROR):
            before = pair.device.dump()
            dms1, dms2 = pair.finish(pair.start(1, "partial"))
        assert (dms1.state, dms2.state) == ("Rejected", "Rejected")
        assert dms1.reason_code == 199
        assert dms1.reason_text is not None and "ZeroDivisionError: policy bug" in dms1.reason_text
        assert pair.device.dump() == before
        [record] = [r for r in caplog.records if r.name == "dmdelegate.host"]
        assert record.exc_info is not None and record.exc_info[0] is ZeroDivisionError
        assert "accept_delegation" in record.getMessage()

    def test_accept_raising_a_host_error(self, pki: TestPki) -> None:
        class Busy(DeviceHost):
            def accept_delegation(self, offer: Offer) -> bool | Rejection:
                raise HostError("another delegation is running", reason_code=105)

        with Pair(pki, host2=Busy(DMS2)) as pair:
            dms1, _ = pair.finish(pair.start(1, "partial"))
        assert (dms1.state, dms1.reason_code) == ("Rejected", 105)

    def test_execute_raising_rolls_back(
        self, pki: TestPki, caplog: pytest.LogCaptureFixture
    ) -> None:
        class Flaky(DeviceHost):
            """Fails the first ACL change, after DMS-2's account was added."""

            failed = False

            def execute(self, device: Device, command: Command) -> CommandResult:
                if command.kind == "ReplaceAcl" and not self.failed:
                    self.failed = True
                    raise ConnectionResetError("DM session dropped")
                return super().execute(device, command)

        host1 = Flaky(DMS1)
        with Pair(pki, host1) as pair, caplog.at_level(logging.ERROR):
            before = pair.device.dump()
            dms1, dms2 = pair.finish(pair.start(1, "partial"))
        assert (dms1.state, dms2.state) == ("RolledBack", "RolledBack")
        assert dms1.reason_code == 130  # the client operation failed (status 500)
        assert dms1.reason_text is not None and "ConnectionResetError" in dms1.reason_text
        assert [c.kind for c in host1.commands].count("Delete") >= 1  # the undo
        assert pair.device.dump() == before
        assert any(r.name == "dmdelegate.host" and r.exc_info for r in caplog.records)

    def test_dm_account_raising(self, pki: TestPki) -> None:
        class NoAccount(DeviceHost):
            def dm_account(self, device: Device) -> str | DmAccount:
                raise KeyError(device.device_id)

        with Pair(pki, host2=NoAccount(DMS2)) as pair:
            before = pair.device.dump()
            dms1, _ = pair.finish(pair.start(1, "full"))
        assert (dms1.state, dms1.reason_code) == ("Rejected", 199)
        assert pair.device.dump() == before

    def test_a_host_error_without_a_code_takes_the_callbacks_reason(self, pki: TestPki) -> None:
        class NoAccount(DeviceHost):
            def dm_account(self, device: Device) -> str | DmAccount:
                raise HostError("no account for this device")

        with Pair(pki, host2=NoAccount(DMS2)) as pair:
            dms1, _ = pair.finish(pair.start(1, "partial"))
        assert (dms1.state, dms1.reason_code) == ("Rejected", 161)
        assert dms1.reason_text is not None and "no account for this device" in dms1.reason_text

    def test_an_unpublished_code_falls_back_to_the_callbacks_reason(self, pki: TestPki) -> None:
        class Odd(DeviceHost):
            def bootstrap_server_url(self, device: Device) -> str:
                raise HostError("nope", reason_code=999)

        with Pair(pki, host2=Odd(DMS2)) as pair:
            before = pair.device.dump()
            dms1, _ = pair.finish(pair.start(3, "partial"))
        assert (dms1.state, dms1.reason_code) == ("RolledBack", 160)
        assert dms1.reason_text is not None and "999" in dms1.reason_text
        assert pair.device.dump() == before

    def test_on_event_raising_is_logged_and_ignored(
        self, pki: TestPki, caplog: pytest.LogCaptureFixture
    ) -> None:
        class Noisy(DeviceHost):
            def on_event(self, event: Event) -> None:
                raise RuntimeError("dashboard down")

        with Pair(pki, Noisy(DMS1)) as pair, caplog.at_level(logging.ERROR):
            dms1, _ = pair.finish(pair.start(1, "partial"))
        assert dms1.state == "Completed"
        assert any("dashboard down" in r.getMessage() for r in caplog.records)


class TestWrongAnswers:
    """A wrong return type is the host's failure, reported like an exception."""

    def test_accept_returning_none(self, pki: TestPki) -> None:
        class Forgetful(DeviceHost):
            def accept_delegation(self, offer: Offer) -> bool | Rejection:
                super().accept_delegation(offer)
                return None  # type: ignore[return-value]

        with Pair(pki, host2=Forgetful(DMS2)) as pair:
            dms1, _ = pair.finish(pair.start(1, "partial"))
        assert (dms1.state, dms1.reason_code) == ("Rejected", 199)
        assert dms1.reason_text is not None and "NoneType" in dms1.reason_text

    def test_execute_returning_a_string(self, pki: TestPki) -> None:
        class Sloppy(DeviceHost):
            answered = False

            def execute(self, device: Device, command: Command) -> CommandResult:
                if command.is_write and not self.answered:
                    self.answered = True
                    return "done"  # type: ignore[return-value]
                return super().execute(device, command)

        with Pair(pki, Sloppy(DMS1)) as pair:
            before = pair.device.dump()
            dms1, _ = pair.finish(pair.start(1, "partial"))
        assert (dms1.state, dms1.reason_code) == ("RolledBack", 130)
        assert pair.device.dump() == before

    def test_execute_refusing_a_write(self, pki: TestPki) -> None:
        # Not an error of the host: the device's refusal, as SyncML status 425.
        with Pair(pki) as pair:
            pair.device.inject_fault(status=425, matching="Replace")
            before = pair.device.dump()
            dms1, _ = pair.finish(pair.start(2, "partial"))
        assert (dms1.state, dms1.reason_code) == ("RolledBack", 130)
        assert dms1.reason_text is not None and "425" in dms1.reason_text
        assert pair.device.dump() == before

    def test_dm_account_returning_a_bad_account(self, pki: TestPki) -> None:
        class Confused(DeviceHost):
            def dm_account(self, device: Device) -> str | DmAccount:
                return account_of("someone.else.example")

        with Pair(pki, host2=Confused(DMS2)) as pair:
            dms1, _ = pair.finish(pair.start(1, "partial"))
        assert (dms1.state, dms1.reason_code) == ("Rejected", 161)

    def test_dm_account_object_and_insecure_bootstrap_url(self, pki: TestPki) -> None:
        class Insecure(DeviceHost):
            def dm_account(self, device: Device) -> str | DmAccount:
                return DmAccount.from_tnds(account_of(self.server_id))

            def bootstrap_server_url(self, device: Device) -> str:
                return "http://bootstrap.enterprise.example/bs"

        with Pair(pki, host2=Insecure(DMS2)) as pair:
            before = pair.device.dump()
            dms1, _ = pair.finish(pair.start(4, "partial"))
        assert (dms1.state, dms1.reason_code) == ("RolledBack", 160)
        assert pair.device.dump() == before


class TestMissingMethods:
    """A host lacking a method fails only the delegations that need it."""

    class Dms1Only:
        """Can delegate its devices, but is no DMS-2: no dm_account, no open_dm_session."""

        def __init__(self) -> None:
            self.device = new_device()

        def accept_delegation(self, offer: Offer) -> bool:
            return True

        def execute(self, device: Device, command: Command) -> CommandResult:
            return self.device.execute(DMS1, command)

    def test_a_missing_dm_account(self, pki: TestPki) -> None:
        host = self.Dms1Only()
        with Pair(pki, host2=host, devices=[host.device]) as pair:  # type: ignore[arg-type]
            dms1, _ = pair.finish(pair.start(1, "partial"))
        assert (dms1.state, dms1.reason_code) == ("Rejected", 161)
        assert dms1.reason_text is not None and "no `dm_account` method" in dms1.reason_text

    def test_a_missing_open_dm_session(self, pki: TestPki) -> None:
        class AccountOnly:
            """Offers its account, but cannot open DM sessions."""

            def accept_delegation(self, offer: Offer) -> bool:
                return True

            def dm_account(self, device: Device) -> str:
                return account_of(DMS2)

        with Pair(pki, host2=AccountOnly()) as pair:  # type: ignore[arg-type]
            before = pair.device.dump()
            dms1, _ = pair.finish(pair.start(1, "partial"))
        assert (dms1.state, dms1.reason_code) == ("RolledBack", 132)
        assert pair.device.dump() == before

    def test_a_host_with_nothing(self, pki: TestPki) -> None:
        with Pair(pki, host2=object()) as pair:  # type: ignore[arg-type]
            dms1, _ = pair.finish(pair.start(1, "partial"))
        assert (dms1.state, dms1.reason_code) == ("Rejected", 101)
        assert dms1.reason_text is not None and "accept_delegation" in dms1.reason_text


def test_a_callback_cannot_block_on_the_server(pki: TestPki) -> None:
    refused: list[Exception] = []

    class Curious(DeviceHost):
        server: dmdelegate.Server | None = None

        def accept_delegation(self, offer: Offer) -> bool | Rejection:
            assert self.server is not None
            try:
                self.server.sessions()
            except dmdelegate.InvalidStateError as e:
                refused.append(e)
            return True

    host2 = Curious(DMS2)
    with Pair(pki, host2=host2) as pair:
        host2.server = pair.dms2
        dms1, _ = pair.finish(pair.start(1, "partial"))
    assert dms1.state == "Completed"
    [error] = refused
    assert "sessions_async" in str(error)


class AsyncHost:
    """The same host with `async def` callbacks: they run on the event loop the server
    was created in, and may await the server's `*_async` methods."""

    def __init__(self, server_id: str, devices: list[dmdelegate.SimDevice]) -> None:
        self.server_id = server_id
        self.devices = {d.device.device_id: d for d in devices}
        self.server: dmdelegate.Server | None = None
        self.loop_threads: set[int] = set()
        self.events: list[Event] = []
        self.known_sessions: list[int] = []

    async def accept_delegation(self, offer: Offer) -> bool:
        self.loop_threads.add(threading.get_ident())
        if self.server is not None:
            self.known_sessions.append(len(await self.server.sessions_async()))
        await asyncio.sleep(0.01)
        return True

    async def execute(self, device: Device, command: Command) -> CommandResult:
        self.loop_threads.add(threading.get_ident())
        await asyncio.sleep(0)
        return self.devices[device.device_id].execute(self.server_id, command)

    async def open_dm_session(self, session: Session) -> None:
        answer = self.devices[session.device.device_id].open_session(self.server_id)
        if not answer.ok:
            raise HostError(answer.text, reason_code=132)

    async def dm_account(self, device: Device) -> str:
        return account_of(self.server_id)

    async def bootstrap_server_url(self, device: Device) -> str:
        return "https://bootstrap.enterprise.example/bs"

    async def on_event(self, event: Event) -> None:
        self.events.append(event)


def test_async_callbacks_and_concurrent_delegations(pki: TestPki) -> None:
    devices = [new_device(f"IMEI:{n}") for n in range(4)]
    hosts = [AsyncHost(DMS1, devices), AsyncHost(DMS2, devices)]

    async def main() -> list[dmdelegate.Session]:
        # Created inside the running loop: the async callbacks run on it.
        with Pair(pki, hosts[0], hosts[1], devices) as pair:
            hosts[0].server, hosts[1].server = pair.dms1, pair.dms2
            with pytest.raises(dmdelegate.InvalidStateError, match="wait_async"):
                pair.dms1.wait("any", 1)  # blocking here would stall the callbacks
            started = await asyncio.gather(
                *(
                    pair.initiator(method).start_delegation_async(
                        pair.responder(method).server_id,
                        method,
                        "partial",
                        device.device,
                        subtrees("partial"),
                    )
                    for method, device in zip((1, 2, 3, 4), devices)
                )
            )
            ends = await asyncio.gather(
                *(
                    pair.initiator(m).wait_async(s, 20)
                    for m, s in zip((1, 2, 3, 4), started)
                )
            )
            ends += await asyncio.gather(
                *(pair.responder(m).wait_async(s, 20) for m, s in zip((1, 2, 3, 4), started))
            )
            with pytest.raises(dmdelegate.UnknownSessionError):
                await pair.dms1.session_async("no-such-session")
            assert len(await pair.dms2.sessions_async()) == 4
            return ends

    ends = asyncio.run(main())
    assert [s.state for s in ends] == ["Completed"] * 8
    for d in devices:
        assert d.accounts_of(DMS2) and d.permits(DMS2, "Replace", "./Vendor/Apps/Mail")
    assert len(hosts[0].loop_threads) == 1  # the loop's thread
    assert threading.get_ident() in hosts[0].loop_threads
    assert hosts[1].known_sessions  # an async callback awaited the server
    assert any(e.kind == "Completed" for e in hosts[0].events)


def test_async_server_context_manager_and_cancel(pki: TestPki) -> None:
    async def main() -> dmdelegate.Session:
        devices = [new_device()]
        host1 = AsyncHost(DMS1, devices)
        async with start_server(pki, DMS1, host1) as dms1, start_server(
            pki, DMS2, AsyncHost(DMS2, devices)
        ) as dms2:
            dms1.set_peers([dms2.as_peer()])
            dms2.set_peers([dms1.as_peer()])
            before = devices[0].dump()
            session_id = await dms1.start_delegation_async(
                DMS2, 3, "partial", devices[0].device, subtrees("partial")
            )
            while (await dms1.session_async(session_id)).state != "AwaitingConfirm":
                await asyncio.sleep(0.02)
            cancelled = await dms1.cancel_async(session_id)
            assert devices[0].dump() == before
            with pytest.raises(dmdelegate.InvalidStateError):  # nothing left to undo
                await dms1.retry_rollback_async(session_id)
            assert (await dms2.wait_async(session_id, 10)).state == "RolledBack"
            assert await dms2.client_connected_async(DEVICE_ID) == []  # nothing waits
        assert dms1.closed and dms2.closed
        return cancelled

    cancelled = asyncio.run(main())
    assert (cancelled.state, cancelled.reason_code) == ("RolledBack", 150)


def test_an_async_callback_needs_an_event_loop(pki: TestPki) -> None:
    class Eager(DeviceHost):
        async def accept_delegation(self, offer: Offer) -> bool:  # type: ignore[override]
            return True

    # Created outside any event loop: the coroutine has nowhere to run.
    with Pair(pki, host2=Eager(DMS2)) as pair:
        dms1, _ = pair.finish(pair.start(1, "partial"))
    assert (dms1.state, dms1.reason_code) == ("Rejected", 199)
    assert dms1.reason_text is not None and "event loop" in dms1.reason_text
