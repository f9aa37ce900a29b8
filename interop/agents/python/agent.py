"""Interop agent: one DM Server on dmdelegate's Python binding (see interop/README.md).

    python agent.py CONFIG

Reads the agent configuration, starts the server with its device hub and prints READY.
An initiator then waits for a line on stdin and starts the delegation. Both roles wait
for the session to end, print ``RESULT <state> <reason code>``, and keep serving until
stdin closes.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field

import dmdelegate as dmd


@dataclass
class Config:
    """What interop/run.py writes: one ``key value...`` per line."""

    values: dict[str, list[str]] = field(default_factory=dict)
    lists: dict[str, list[list[str]]] = field(default_factory=dict)

    @staticmethod
    def read(path: str) -> Config:
        config = Config()
        with open(path, encoding="utf-8") as f:
            for line in f:
                words = line.split()
                if not words or words[0].startswith("#"):
                    continue
                config.values[words[0]] = words[1:]
                config.lists.setdefault(words[0], []).append(words[1:])
        return config

    def one(self, key: str) -> str:
        return self.values[key][0]

    def text(self, path_key: str) -> str:
        with open(self.one(path_key), encoding="utf-8") as f:
            return f.read()


class HubHost:
    """Policy and account in Python; device access is the server's own hub."""

    def __init__(self, config: Config) -> None:
        self.server_id = config.one("server_id")
        self.accept = config.one("accept") == "yes"
        self.hub_url = f"http://{config.one('hub')}/dm"
        self.account = config.values.get("account")

    def accept_delegation(self, offer: dmd.Offer) -> bool | dmd.Rejection:
        return True if self.accept else dmd.Rejection(101, "this agent accepts no delegation")

    def execute(self, device: dmd.Device, command: dmd.Command) -> dmd.CommandResult:
        raise dmd.HostError("device access goes through the device hub")

    def open_dm_session(self, session: dmd.Session) -> None:
        raise dmd.HostError("device access goes through the device hub")

    def dm_account(self, device: dmd.Device) -> str:
        if self.account is None:
            raise dmd.HostError("this agent hands out no account")
        client_secret, server_secret = self.account
        return dmd.simple_dmacc_tnds(self.server_id, self.hub_url, client_secret, server_secret)

    def bootstrap_server_url(self, device: dmd.Device) -> str:
        raise dmd.HostError("this agent runs no Bootstrap Server")

    def on_event(self, event: dmd.Event) -> None:
        pass


def main(path: str) -> int:
    config = Config.read(path)
    seconds = [float(s) for s in config.values["timeouts"]]
    timeouts = dmd.Timeouts(
        response=seconds[0],
        preparation=seconds[1],
        confirm=seconds[2],
        bootstrap_confirm=seconds[3],
        client_session=seconds[4],
    )
    peers = [dmd.Peer(p[0], p[1], address=p[2]) for p in config.lists.get("peer", [])]
    links = [
        dmd.DeviceLink(d[0], d[1], client_secret=d[2], server_secret=d[3])
        for d in config.lists.get("device", [])
    ]
    server_config = dmd.ServerConfig(
        config.one("server_id"),
        cert_pem=config.text("cert"),
        key_pem=config.text("key"),
        trust_pem=config.text("trust"),
        listen=config.one("listen"),
        peers=peers,
        timeouts=timeouts,
        device_hub=dmd.DeviceHub(config.one("hub"), links),
    )
    session_id = config.one("session")
    wait = float(config.one("wait"))
    with dmd.Server(server_config, HubHost(config)) as server:
        print("READY", flush=True)
        if "delegate" in config.values:
            sys.stdin.readline()
            peer, method, kind, device_id, manufacturer, model = config.values["delegate"]
            subtrees = [dmd.Subtree(s[0], s[1].split(",")) for s in config.lists["subtree"]]
            server.start_delegation(
                peer,
                int(method),
                kind,
                dmd.Device(device_id, manufacturer, model),
                subtrees,
                session_id=session_id,
            )
        session = server.wait(session_id, wait)
        print(f"RESULT {session.state} {session.reason_code or 0}", flush=True)
        sys.stdin.read()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
