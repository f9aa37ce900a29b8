"""OMA DM Client Authority Delegation from Python.

One DM Server (DMS-1) hands authority over a managed device to another (DMS-2), fully or
for parts of its DM Tree. This package wraps the dmdelegate Rust core:

* :func:`validate` and :class:`DelegationMessage` check, decode and encode protocol
  messages (``application/vnd.dm.delegation+xml``);
* :class:`LocalPair` runs delegations between two servers over HTTPS with mutual TLS
  around a simulated device, blocking (:meth:`LocalPair.run`) or with asyncio
  (:meth:`LocalPair.run_async`);
* every failure is a :class:`DelegationError` subclass carrying ``reason_code``.

Rust log output reaches :mod:`logging` under the logger ``dmdelegate``.
"""

from ._native import (
    AuthenticationError,
    DecodeError,
    DelegationError,
    DelegationMessage,
    DeviceError,
    FailedError,
    HostError,
    InvalidArgumentError,
    InvalidStateError,
    LocalPair,
    Outcome,
    StoreError,
    TransportError,
    UnknownSessionError,
    reason_description,
    terminal_states,
    validate,
    version,
)

__version__ = version()

__all__ = [
    "AuthenticationError",
    "DecodeError",
    "DelegationError",
    "DelegationMessage",
    "DeviceError",
    "FailedError",
    "HostError",
    "InvalidArgumentError",
    "InvalidStateError",
    "LocalPair",
    "Outcome",
    "StoreError",
    "TransportError",
    "UnknownSessionError",
    "reason_description",
    "terminal_states",
    "validate",
    "version",
]
