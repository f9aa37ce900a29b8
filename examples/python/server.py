"""DMS-1 delegates a device to DMS-2 over HTTPS with mutual TLS, both servers with hosts
written in Python.

Each host is a plain class (see ``dmdelegate.host.Host``): it decides on offers, runs
client operations on the device in its own DM session, opens DM sessions, gives its DM
account and Bootstrap Server URL, and hears every event. Here the device, the PKI and
DMS-2's Bootstrap Server are simulated. Run after ``pip install ./python``::

    python examples/python/server.py [METHOD] [full|partial]
"""

from __future__ import annotations

import logging
import sys

import dmdelegate
from dmdelegate import (
    Command,
    CommandResult,
    Device,
    Event,
    HostError,
    Offer,
    Server,
    ServerConfig,
    Session,
    SimBootstrapServer,
    SimDevice,
    Subtree,
    TestPki,
)

DMS1 = "dms1.operator.example"
DMS2 = "dms2.enterprise.example"
BOOTSTRAP_URL = "https://bootstrap.enterprise.example/bs"


class OperatorHost:
    """A DM Server's side of delegation: policy, device access, account, events."""

    def __init__(self, server_id: str, device: SimDevice) -> None:
        self.server_id = server_id
        self.device = device  # stands in for this server's DM sessions with the device

    def accept_delegation(self, offer: Offer) -> bool:
        print(f"  {self.server_id}: offer from {offer.peer}: Method {offer.method}, "
              f"{offer.delegation_type}, {[s.uri for s in offer.subtrees]}")
        return offer.device.device_id == self.device.device.device_id

    def execute(self, device: Device, command: Command) -> CommandResult:
        # A real host sends command.to_syncml(cmd_id) in its DM session with the device.
        result = self.device.execute(self.server_id, command)
        print(f"  {self.server_id}: {command} -> {result.status}")
        return result

    def open_dm_session(self, session: Session) -> None:
        answer = self.device.open_session(self.server_id)
        if not answer.ok:
            raise HostError(f"the device refused: {answer.text}", reason_code=132)

    def dm_account(self, device: Device) -> str:
        return dmdelegate.simple_dmacc_tnds(
            self.server_id, f"https://{self.server_id}/dm", "client-secret", "server-secret"
        )

    def bootstrap_server_url(self, device: Device) -> str:
        return BOOTSTRAP_URL

    def on_event(self, event: Event) -> None:
        if event.kind == "StateChanged":
            print(f"  {self.server_id}: {event.from_state} -> {event.to_state}")
        else:
            print(f"  {self.server_id}: {event.kind} {event.reason_code or ''}".rstrip())


def start(pki: TestPki, server_id: str, host: OperatorHost) -> Server:
    identity = pki.issue(server_id)
    config = ServerConfig(
        server_id,
        cert_pem=identity.cert_pem,
        key_pem=identity.key_pem,
        trust_pem=pki.ca_pem,
        listen="127.0.0.1:0",
    )
    return Server(config, host)


def main(method: int, kind: str) -> int:
    pki = TestPki()
    device = SimDevice(
        "IMEI:490154203237518",
        "Acme",
        "Phone X",
        DMS1,
        "https://dms1.operator.example/dm",
        "client-secret-1",
        "server-secret-1",
    )
    with start(pki, DMS1, OperatorHost(DMS1, device)) as dms1, start(
        pki, DMS2, OperatorHost(DMS2, device)
    ) as dms2:
        # Two servers on port 0 learn each other's port, then start serving.
        dms1.set_peers([dms2.as_peer()])
        dms2.set_peers([dms1.as_peer()])
        # Methods 3/4: the device fetches DMS-2's account from its Bootstrap Server.
        bootstrap = SimBootstrapServer()
        bootstrap.register(BOOTSTRAP_URL, OperatorHost(DMS2, device).dm_account(device.device))
        device.route_bootstrap(bootstrap, dms2)

        initiator, responder = (dms1, dms2) if method in (1, 3) else (dms2, dms1)
        subtrees = (
            [Subtree("./Vendor/Apps", "Add+Get+Replace")]
            if kind == "partial"
            else [Subtree(".", "Get")]
        )
        print(f"Method {method}, {kind}: {initiator.server_id} starts")
        session_id = initiator.start_delegation(
            responder.server_id, method, kind, device.device, subtrees
        )
        # The initiator knows the session at once; the responder once the NOTIF arrived.
        initiator.wait(session_id, 30)
        one, two = dms1.wait(session_id, 30), dms2.wait(session_id, 30)

    print(f"DMS-1 {one.state}, DMS-2 {two.state}")
    if one.reason_code is not None:
        print(f"  reason {one.reason_code} ({dmdelegate.reason_description(one.reason_code)}): "
              f"{one.reason_text}")
    print(f"DMS-2 may replace ./Vendor/Apps/Mail/Server: "
          f"{device.permits(DMS2, 'Replace', './Vendor/Apps/Mail/Server')}")
    return 0 if (one.state, two.state) == ("Completed", "Completed") else 1


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    method = int(sys.argv[1]) if len(sys.argv) > 1 else 1
    kind = sys.argv[2] if len(sys.argv) > 2 else "partial"
    sys.exit(main(method, kind))
