"""`dmdelegate.HttpsSettings`: the HTTPS binding's limits, timeouts, retries and batching
(docs/protocol.md sections 8.1 and 8.2), given to a server as `ServerConfig(https=...)`.

Durations are in seconds. The constructor refuses what can never work (a duration that is
not above zero, a count below 1); what only the binding can judge (a body cap too small
for a message) is refused when the server starts, named `https.<field>`.
"""

from __future__ import annotations

import inspect
import math

import pytest
from harness import DMS1, DeviceHost, Pair, start_server

import dmdelegate
from dmdelegate import HttpsSettings, ServerConfig, TestPki

KIB = 1024

# What docs/protocol.md 8.1 and 8.2 give as the defaults.
DOCUMENTED_DEFAULTS: dict[str, float | int] = {
    "connect_timeout": 5.0,
    "request_timeout": 30.0,
    "handshake_timeout": 10.0,
    "backoff": 0.2,
    "attempts": 4,
    "max_body_bytes": 256 * KIB,
    "max_requests_per_peer": 2,
    "max_unbatched_requests_per_peer": 32,
    "max_batch_messages": 64,
    "max_batch_bytes": 128 * KIB,
}


def test_the_defaults_are_the_documented_ones() -> None:
    settings = HttpsSettings()
    assert {name: getattr(settings, name) for name in DOCUMENTED_DEFAULTS} == DOCUMENTED_DEFAULTS
    assert settings == HttpsSettings(**DOCUMENTED_DEFAULTS)  # type: ignore[arg-type]


def test_the_signature_shows_the_defaults_the_settings_get() -> None:
    """The defaults come from the Rust `HttpsOptions::default()`; the signature `inspect`
    reads spells them out, and says the same. (stubtest checks `_native.pyi`'s literal
    defaults against this signature, so the stub shows them too.)"""
    settings = HttpsSettings()
    parameters = inspect.signature(HttpsSettings).parameters
    assert list(parameters) == list(DOCUMENTED_DEFAULTS)
    for name, parameter in parameters.items():
        assert parameter.kind is inspect.Parameter.KEYWORD_ONLY
        assert parameter.default == getattr(settings, name), name
        assert type(parameter.default) is type(getattr(settings, name)), name


def test_settings_are_keyword_only_immutable_values() -> None:
    settings = HttpsSettings(max_requests_per_peer=1, backoff=0.05)
    assert (settings.max_requests_per_peer, settings.backoff) == (1, 0.05)
    assert settings.max_batch_messages == 64  # the rest keep their defaults
    assert settings == HttpsSettings(backoff=0.05, max_requests_per_peer=1)
    assert settings != HttpsSettings()
    assert repr(settings).startswith("HttpsSettings(connect_timeout=5.0,")
    assert "max_requests_per_peer=1," in repr(settings)
    with pytest.raises(TypeError):
        HttpsSettings(5.0)  # type: ignore[call-arg]
    with pytest.raises(AttributeError):
        settings.attempts = 1  # type: ignore[misc]


def test_a_server_config_takes_them_and_defaults_to_none(pki: TestPki) -> None:
    identity = pki.issue(DMS1)

    def config(https: HttpsSettings | None = None) -> ServerConfig:
        return ServerConfig(
            DMS1,
            cert_pem=identity.cert_pem,
            key_pem=identity.key_pem,
            trust_pem=pki.ca_pem,
            https=https,
        )

    assert config().https is None
    settings = HttpsSettings(max_batch_messages=8)
    assert config(settings).https == settings


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("connect_timeout", 0.0),
        ("request_timeout", -1.0),
        ("handshake_timeout", math.nan),
        ("backoff", -0.2),
        ("backoff", math.inf),
        ("attempts", 0),
        ("max_body_bytes", 0),
        ("max_requests_per_peer", -1),
        ("max_unbatched_requests_per_peer", 0),
        ("max_batch_messages", 0),
        ("max_batch_bytes", -128),
    ],
)
def test_a_bad_value_is_refused_with_the_field_named(field: str, value: float) -> None:
    with pytest.raises(dmdelegate.InvalidArgumentError) as caught:
        HttpsSettings(**{field: value})  # type: ignore[arg-type]
    assert caught.value.field == field
    assert caught.value.reason_code == 121
    assert field in str(caught.value)


@pytest.mark.parametrize(
    "settings",
    [
        # One request at a time to each peer, batches of up to 8 messages.
        HttpsSettings(max_requests_per_peer=1, max_batch_messages=8),
        # Batching off both ways: one message per request, at most 4 in flight.
        HttpsSettings(max_batch_messages=1, max_unbatched_requests_per_peer=4),
        # Short timeouts and a single attempt still suffice on loopback.
        HttpsSettings(connect_timeout=2.0, request_timeout=5.0, attempts=1, backoff=0.05),
    ],
    ids=["one-request-batches-of-8", "batching-off", "short-timeouts-no-retry"],
)
def test_servers_with_explicit_settings_complete_a_delegation(
    pki: TestPki, settings: HttpsSettings
) -> None:
    with Pair(pki, https=settings) as pair:
        dms1, dms2 = pair.finish(pair.start(1, "partial"))
    assert (dms1.state, dms2.state) == ("Completed", "Completed")


@pytest.mark.parametrize("field", ["max_body_bytes", "max_batch_bytes"])
def test_a_cap_too_small_for_a_message_is_refused_when_the_server_starts(
    pki: TestPki, field: str
) -> None:
    """100 bytes is a count the constructor takes, but no message fits in it: the server
    refuses to start, naming the setting as `https.<field>`."""
    settings = HttpsSettings(**{field: 100})
    with pytest.raises(dmdelegate.InvalidArgumentError) as caught:
        start_server(pki, DMS1, DeviceHost(DMS1), https=settings)
    assert caught.value.field == f"https.{field}"
    assert caught.value.reason_code == 121
