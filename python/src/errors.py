# The exception hierarchy of dmdelegate, defined in Python so that a host can raise them
# with keyword arguments: `raise dmdelegate.HostError("no account", reason_code=161)`.
# Compiled into the native module (errors.rs); every class is re-exported by `dmdelegate`.


class DelegationError(Exception):
    """Base of every dmdelegate error.

    ``reason_code`` is the protocol reason code the failure maps to (100-999, see
    ``reason_description``); ``field`` names the offending field or argument, when known.
    """

    __module__ = "dmdelegate"
    reason_code = 100
    field = None

    def __init__(self, *args, reason_code=None, field=None):
        super().__init__(*args)
        if reason_code is not None:
            self.reason_code = int(reason_code)
        if field is not None:
            self.field = str(field)


class DecodeError(DelegationError):
    """A document could not be decoded; ``field`` names the offending field."""

    __module__ = "dmdelegate"


class InvalidArgumentError(DelegationError, ValueError):
    """An argument is not valid; ``field`` names it. Also a ``ValueError``."""

    __module__ = "dmdelegate"


class InvalidStateError(DelegationError):
    """The message or call does not fit the session's (or the server's) state."""

    __module__ = "dmdelegate"


class UnknownSessionError(DelegationError):
    """No such delegation session."""

    __module__ = "dmdelegate"


class AuthenticationError(DelegationError):
    """The sender is not who the transport authenticated."""

    __module__ = "dmdelegate"


class DeviceError(DelegationError):
    """The device refused or failed an operation."""

    __module__ = "dmdelegate"


class HostError(DelegationError):
    """A host callback failed.

    A host raises it to fail the delegation with ``reason_code``; without one, the
    callback's own reason applies (132 for ``open_dm_session``, 161 for ``dm_account``,
    160 for ``bootstrap_server_url``, 101 for ``accept_delegation``).
    """

    __module__ = "dmdelegate"


class TransportError(DelegationError):
    """A message could not be delivered to the peer."""

    __module__ = "dmdelegate"


class StoreError(DelegationError):
    """The session store failed."""

    __module__ = "dmdelegate"


class FailedError(DelegationError):
    """The delegation failed and was rolled back."""

    __module__ = "dmdelegate"
