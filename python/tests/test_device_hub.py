"""`ServerConfig(device_hub=DeviceHub(...))`: the server reaches networked devices over its
own SyncML DM endpoint, so the host keeps only policy, accounts and events. (Delegations
through hubs across processes and languages run in the interop matrix, `interop/`.)"""

from __future__ import annotations

import pytest
from harness import DEVICE_ID, DMS1, DMS2, DeviceHost, new_device, subtrees

import dmdelegate
from dmdelegate import DeviceHub, DeviceLink, ServerConfig, TestPki, Timeouts

# Nothing listens on the discard port: a notification sent there fails at once.
UNREACHABLE = "http://127.0.0.1:9/notify"


def link(device_id: str = DEVICE_ID, notify_url: str = UNREACHABLE) -> DeviceLink:
    return DeviceLink(device_id, notify_url, client_secret="client-1", server_secret="server-1")


def server_with_hub(pki: TestPki, server_id: str, host: DeviceHost, hub: DeviceHub) -> dmdelegate.Server:
    identity = pki.issue(server_id)
    quick = Timeouts(response=5, preparation=5, confirm=5, bootstrap_confirm=5, client_session=5)
    config = ServerConfig(
        server_id,
        cert_pem=identity.cert_pem,
        key_pem=identity.key_pem,
        trust_pem=pki.ca_pem,
        timeouts=quick,
        device_hub=hub,
    )
    return dmdelegate.Server(config, host)


def test_a_device_link_keeps_its_secrets_out_of_the_repr() -> None:
    d = DeviceLink(DEVICE_ID, UNREACHABLE, client_secret="c-secret", server_secret="s-secret", scheme="md5")
    assert (d.device_id, d.notify_url, d.client_name, d.scheme) == (DEVICE_ID, UNREACHABLE, "device", "md5")
    assert "secret" not in repr(d)
    assert d == DeviceLink(DEVICE_ID, UNREACHABLE, client_secret="c-secret", server_secret="s-secret", scheme="md5")


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"device_id": ""}, "device_id"),
        ({"notify_url": "https://device.example/notify"}, "notify_url"),
        ({"scheme": "hmac"}, "scheme"),
    ],
)
def test_a_bad_device_link_is_refused_with_the_field_named(kwargs: dict[str, str], field: str) -> None:
    args = {"device_id": DEVICE_ID, "notify_url": UNREACHABLE, "scheme": "basic"} | kwargs
    with pytest.raises(dmdelegate.InvalidArgumentError, match=field):
        DeviceLink(
            args["device_id"],
            args["notify_url"],
            client_secret="c",
            server_secret="s",
            scheme=args["scheme"],  # type: ignore[arg-type]
        )


def test_a_bad_listen_address_is_refused() -> None:
    with pytest.raises(dmdelegate.InvalidArgumentError, match="listen"):
        DeviceHub("not-an-address")


def test_the_hub_url_is_where_devices_reach_the_server(pki: TestPki) -> None:
    server = server_with_hub(pki, DMS1, DeviceHost(DMS1), DeviceHub(devices=[link()]))
    try:
        url = server.device_hub_url
        assert url is not None and url.startswith("http://127.0.0.1:") and url.endswith("/dm")
        assert int(url.split(":")[2].split("/")[0]) > 0
        server.add_device(link("IMEI:1", "http://127.0.0.1:9/notify"))
    finally:
        server.close()
    with pytest.raises(dmdelegate.InvalidStateError):
        server.add_device(link())


def test_without_a_hub_there_is_no_url_and_no_device_to_add(pki: TestPki) -> None:
    identity = pki.issue(DMS1)
    config = ServerConfig(DMS1, cert_pem=identity.cert_pem, key_pem=identity.key_pem, trust_pem=pki.ca_pem)
    assert config.device_hub is None
    with dmdelegate.Server(config, DeviceHost(DMS1)) as server:
        assert server.device_hub_url is None
        with pytest.raises(dmdelegate.InvalidStateError, match="device hub"):
            server.add_device(link())


def test_with_a_hub_the_hosts_execute_is_never_called(pki: TestPki) -> None:
    """DMS-1's hub cannot reach the device: the delegation fails at DMS-1's first command,
    which went to the hub, not to the host (whose in-process device would have answered)."""
    device = new_device()
    before = device.dump()
    host1, host2 = DeviceHost(DMS1, [device]), DeviceHost(DMS2, [device])
    dms1 = server_with_hub(pki, DMS1, host1, DeviceHub(devices=[link()]))
    dms2 = server_with_hub(pki, DMS2, host2, DeviceHub(devices=[link()]))
    try:
        dms1.set_peers([dms2.as_peer()])
        dms2.set_peers([dms1.as_peer()])
        session_id = dms1.start_delegation(DMS2, 1, "full", device.device, subtrees("full"))
        session = dms1.wait(session_id, 30)
        assert session.state == "RolledBack", session
        assert session.reason_code is not None
        assert host1.commands == [], "the host's execute was called"
        assert device.dump() == before
        assert host2.offers and host2.offers[0].session_id == session_id, "DMS-2's host still decides"
    finally:
        dms1.close()
        dms2.close()
