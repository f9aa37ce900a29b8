"""Two delegation servers on loopback over HTTPS with mutual TLS, each with a Python host
that manages simulated devices: the setup the server tests start from.

`DeviceHost` is what a host DM Server looks like: its `execute` and `open_dm_session` go to
the device in the server's own DM session (here, a `SimDevice` standing in for the DM
Client), `dm_account` and `bootstrap_server_url` give what DMS-2 offers, and every offer,
command and event is recorded for the tests to look at.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterable
from types import TracebackType

import dmdelegate
from dmdelegate import (
    Command,
    CommandResult,
    Device,
    DmAccount,
    Event,
    Host,
    HostError,
    HttpsSettings,
    Offer,
    Rejection,
    Server,
    ServerConfig,
    Session,
    SimBootstrapServer,
    SimDevice,
    Subtree,
    TestPki,
    Timeouts,
)

DMS1 = "dms1.operator.example"
DMS2 = "dms2.enterprise.example"
BOOTSTRAP_URL = "https://bootstrap.enterprise.example/bs"
DEVICE_ID = "IMEI:490154203237518"

METHODS_AND_TYPES = [(method, kind) for method in (1, 2, 3, 4) for kind in ("partial", "full")]


def new_device(device_id: str = DEVICE_ID) -> SimDevice:
    """A device DMS-1 manages today: its account is installed and it owns the sample tree
    (`./Vendor/Apps/Mail`, `./Vendor/Apps/Browser`, `./Vendor/Settings`, `./Network`)."""
    return SimDevice(
        device_id,
        "Acme",
        "Phone X",
        DMS1,
        "https://dms1.operator.example/dm",
        "client-secret-1",
        "server-secret-1",
    )


def account_of(server_id: str) -> str:
    """The DMAcc (TNDS) a server offers devices: `dm_account` returns it, and DMS-2's
    Bootstrap Server serves it."""
    return dmdelegate.simple_dmacc_tnds(
        server_id, f"https://{server_id}/dm", "client-secret-2", "server-secret-2"
    )


def subtrees(kind: str) -> list[Subtree]:
    """Partial: `./Vendor/Apps` with Add, Get and Replace. Full: the whole tree with Get
    (DMS-2 also gets everything DMS-1 holds)."""
    if kind == "partial":
        return [Subtree("./Vendor/Apps", "Add+Get+Replace")]
    return [Subtree(".", "Get")]


class DeviceHost:
    """A host DM Server managing simulated devices (see the module docstring)."""

    def __init__(self, server_id: str, devices: Iterable[SimDevice] = ()) -> None:
        self.server_id = server_id
        self.devices: dict[str, SimDevice] = {}
        self.offers: list[Offer] = []
        self.commands: list[Command] = []
        self.events: list[Event] = []
        self.threads: set[int] = set()
        self.manage(*devices)

    def manage(self, *devices: SimDevice) -> None:
        for d in devices:
            self.devices[d.device.device_id] = d

    def accept_delegation(self, offer: Offer) -> bool | Rejection:
        self.threads.add(threading.get_ident())
        self.offers.append(offer)
        return True

    def execute(self, device: Device, command: Command) -> CommandResult:
        self.threads.add(threading.get_ident())
        self.commands.append(command)
        return self.devices[device.device_id].execute(self.server_id, command)

    def open_dm_session(self, session: Session) -> None:
        self.threads.add(threading.get_ident())
        answer = self.devices[session.device.device_id].open_session(self.server_id)
        if not answer.ok:
            raise HostError(f"session refused: {answer.text}", reason_code=132)

    def dm_account(self, device: Device) -> str | DmAccount:
        return account_of(self.server_id)

    def bootstrap_server_url(self, device: Device) -> str:
        return BOOTSTRAP_URL

    def on_event(self, event: Event) -> None:
        self.events.append(event)

    def event_kinds(self, session_id: str) -> list[str]:
        return [e.kind for e in self.events if e.session_id == session_id]


def start_server(
    pki: TestPki,
    server_id: str,
    host: Host,
    *,
    timeouts: Timeouts | None = None,
    store_path: str | os.PathLike[str] | None = None,
    watch_period: float = 0.5,
    https: HttpsSettings | None = None,
) -> Server:
    """A server on 127.0.0.1 (any free port) with an identity from `pki`, no peers yet."""
    identity = pki.issue(server_id)
    config = ServerConfig(
        server_id,
        cert_pem=identity.cert_pem,
        key_pem=identity.key_pem,
        trust_pem=pki.ca_pem,
        timeouts=timeouts,
        store_path=store_path,
        watch_period=watch_period,
        https=https,
    )
    return Server(config, host)


class Pair:
    """DMS-1 and DMS-2, peers of each other, with their hosts and devices.

    Hosts default to `DeviceHost`s; a `DeviceHost` given is made to manage the devices.
    DMS-2's Bootstrap Server serves DMS-2's account, and each device is wired to fetch it
    when DMS-1 leaves the bootstrap trigger (Methods 3/4), unless `route_bootstrap` is
    False (then the device never comes back). `https` configures both servers' HTTPS
    binding (None: the defaults).
    """

    def __init__(
        self,
        pki: TestPki,
        host1: Host | None = None,
        host2: Host | None = None,
        devices: Iterable[SimDevice] | None = None,
        *,
        timeouts: Timeouts | None = None,
        store1: str | os.PathLike[str] | None = None,
        route_bootstrap: bool = True,
        watch_period: float = 0.5,
        https: HttpsSettings | None = None,
    ) -> None:
        self.devices = list(devices) if devices is not None else [new_device()]
        self.device = self.devices[0]
        self.host1: Host = host1 if host1 is not None else DeviceHost(DMS1)
        self.host2: Host = host2 if host2 is not None else DeviceHost(DMS2)
        for host in (self.host1, self.host2):
            if isinstance(host, DeviceHost):
                host.manage(*self.devices)
        self.dms1 = start_server(
            pki,
            DMS1,
            self.host1,
            timeouts=timeouts,
            store_path=store1,
            watch_period=watch_period,
            https=https,
        )
        self.dms2 = start_server(
            pki, DMS2, self.host2, timeouts=timeouts, watch_period=watch_period, https=https
        )
        self.dms1.set_peers([self.dms2.as_peer()])
        self.dms2.set_peers([self.dms1.as_peer()])
        self.bootstrap = SimBootstrapServer()
        self.bootstrap.register(BOOTSTRAP_URL, account_of(DMS2))
        if route_bootstrap:
            for d in self.devices:
                d.route_bootstrap(self.bootstrap, self.dms2)

    def __enter__(self) -> Pair:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        self.dms1.close()
        self.dms2.close()

    def initiator(self, method: int) -> Server:
        """DMS-1 starts Methods 1 and 3, DMS-2 Methods 2 and 4."""
        return self.dms1 if method in (1, 3) else self.dms2

    def responder(self, method: int) -> Server:
        return self.dms2 if method in (1, 3) else self.dms1

    def start(self, method: int, kind: str, device: SimDevice | None = None) -> str:
        """Starts a delegation of `device` (the first one by default) by `method`."""
        return self.initiator(method).start_delegation(
            self.responder(method).server_id,
            method,
            kind,
            (device or self.device).device,
            subtrees(kind),
        )

    def finish(self, session_id: str, timeout: float = 10.0) -> tuple[Session, Session]:
        """Waits for both sides to finish; returns (DMS-1's view, DMS-2's view)."""
        first, second = (self.dms1, self.dms2)
        if not _knows(first, session_id):
            first, second = second, first
        a = first.wait(session_id, timeout)
        b = wait_for(second, session_id, lambda s: s.finished, timeout)
        return (a, b) if first is self.dms1 else (b, a)


def _knows(server: Server, session_id: str) -> bool:
    try:
        server.session(session_id)
        return True
    except dmdelegate.UnknownSessionError:
        return False


def wait_for(
    server: Server,
    session_id: str,
    condition: str | Callable[[Session], bool],
    timeout: float = 10.0,
) -> Session:
    """Polls `server`'s view of the session until `condition(session)` holds (a state
    name is a condition too)."""
    deadline = time.monotonic() + timeout
    session: Session | None = None
    while True:
        try:
            session = server.session(session_id)
            met = session.state == condition if isinstance(condition, str) else condition(session)
            if met:
                return session
        except dmdelegate.UnknownSessionError:
            session = None  # the peer has not heard of it yet
        if time.monotonic() > deadline:
            raise AssertionError(f"{server.server_id}: {session_id} is still {session!r}")
        time.sleep(0.02)
