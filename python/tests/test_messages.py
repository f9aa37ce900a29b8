"""Messages: every golden vector decodes and re-encodes; every invalid one is refused
with a DecodeError that names what is wrong."""

from pathlib import Path

import pytest

import dmdelegate

VECTORS = Path(__file__).resolve().parents[2] / "vectors"


def valid_vectors() -> list[Path]:
    return sorted((VECTORS / "valid").glob("*.xml"))


def invalid_vectors() -> list[Path]:
    return sorted((VECTORS / "invalid").glob("*.xml"))


@pytest.mark.parametrize("path", valid_vectors(), ids=lambda p: p.name)
def test_a_valid_vector_round_trips(path: Path) -> None:
    message = dmdelegate.DelegationMessage.decode(path.read_bytes())
    again = dmdelegate.DelegationMessage.decode(message.encode())
    assert (again.kind, again.session_id, again.seq) == (
        message.kind,
        message.session_id,
        message.seq,
    )
    assert again.encode() == message.encode()
    assert message.kind.startswith(("DELEGATION_", "BOOTSTRAP_URL"))
    assert 1 <= message.method <= 4
    dmdelegate.validate(path.read_bytes())


def test_every_message_type_has_a_vector() -> None:
    kinds = {dmdelegate.DelegationMessage.decode(p.read_bytes()).kind for p in valid_vectors()}
    assert len(kinds) == 8


@pytest.mark.parametrize("path", invalid_vectors(), ids=lambda p: p.name)
def test_an_invalid_vector_is_refused(path: Path) -> None:
    with pytest.raises(dmdelegate.DecodeError) as caught:
        dmdelegate.validate(path.read_bytes())
    assert str(caught.value)
    assert caught.value.reason_code in (121, 122)


def test_a_decode_error_names_the_field() -> None:
    bad = (VECTORS / "invalid" / "dmserverid-not-sender.xml").read_bytes()
    with pytest.raises(dmdelegate.DecodeError) as caught:
        dmdelegate.DelegationMessage.decode(bad)
    assert caught.value.field == "Delegation/Notif/DMServerID"
    assert isinstance(caught.value, dmdelegate.DelegationError)


def test_garbage_is_a_decode_error_not_a_crash() -> None:
    for data in (b"", b"\x00\xff", b"<a>", b"<Delegation/>" * 3):
        with pytest.raises(dmdelegate.DecodeError):
            dmdelegate.validate(data)


def test_reason_codes_are_published() -> None:
    assert dmdelegate.reason_description(141) == "confirmation timed out"
    assert dmdelegate.reason_description(999) is None
    assert "RolledBack" in dmdelegate.terminal_states()
    assert dmdelegate.__version__ == dmdelegate.version()
