"""OMA DM Client Authority Delegation from Python.

One DM Server (DMS-1) hands authority over a managed device to another (DMS-2), fully or
for parts of its DM Tree. This package wraps the dmdelegate Rust core:

* :class:`Server` is a DM Server's delegation engine over HTTPS with mutual TLS, configured
  by a :class:`ServerConfig` (:class:`Peer`, :class:`Timeouts`, the HTTPS binding's
  :class:`HttpsSettings`, an optional SQLite store)
  and calling back a host object that implements the :class:`~dmdelegate.host.Host`
  protocol (policy, client operations, DM session, DM account, Bootstrap Server URL,
  events), with plain or ``async def`` methods. Each server method comes blocking (the
  GIL released, Ctrl-C interrupts) and for asyncio (``start_delegation`` /
  ``start_delegation_async``, ``wait`` / ``wait_async``, ...);
* the values it exchanges are immutable: :class:`Device`, :class:`Subtree`,
  :class:`Offer`, :class:`Session`, :class:`Event`, :class:`Command`,
  :class:`CommandResult`, :class:`Rejection`, :class:`DmAccount`;
* :class:`TestPki`, :class:`SimDevice` and :class:`SimBootstrapServer` stand in for a
  real PKI, device and Bootstrap Server in tests and demos;
* :class:`LocalPair` runs whole delegations between two ready-made servers around a
  simulated device, blocking (:meth:`LocalPair.run`) or with asyncio
  (:meth:`LocalPair.run_async`);
* :func:`validate` and :class:`DelegationMessage` check, decode and encode protocol
  messages (``application/vnd.dm.delegation+xml``);
* every failure is a :class:`DelegationError` subclass carrying ``reason_code``; a host
  raises :class:`HostError` (``reason_code=...``) to fail a delegation with a reason.

Rust log output reaches :mod:`logging` under the logger ``dmdelegate``; tracebacks of host
callbacks that raised go to ``dmdelegate.host``.
"""

from ._native import (
    AuthenticationError,
    Command,
    CommandResult,
    DecodeError,
    DelegationError,
    DelegationMessage,
    Device,
    DeviceError,
    DeviceHub,
    DeviceLink,
    DmAccount,
    Event,
    FailedError,
    HostError,
    HttpsSettings,
    Identity,
    InvalidArgumentError,
    InvalidStateError,
    LocalPair,
    Offer,
    Outcome,
    Peer,
    Rejection,
    Server,
    ServerConfig,
    Session,
    SimBootstrapServer,
    SimDevice,
    Step,
    StoreError,
    Subtree,
    TestPki,
    Timeouts,
    TransportError,
    UnknownSessionError,
    reason_description,
    simple_dmacc_tnds,
    terminal_states,
    validate,
    version,
)
from .host import Host

__version__ = version()

__all__ = [
    "AuthenticationError",
    "Command",
    "CommandResult",
    "DecodeError",
    "DelegationError",
    "DelegationMessage",
    "Device",
    "DeviceError",
    "DeviceHub",
    "DeviceLink",
    "DmAccount",
    "Event",
    "FailedError",
    "Host",
    "HostError",
    "HttpsSettings",
    "Identity",
    "InvalidArgumentError",
    "InvalidStateError",
    "LocalPair",
    "Offer",
    "Outcome",
    "Peer",
    "Rejection",
    "Server",
    "ServerConfig",
    "Session",
    "SimBootstrapServer",
    "SimDevice",
    "Step",
    "StoreError",
    "Subtree",
    "TestPki",
    "Timeouts",
    "TransportError",
    "UnknownSessionError",
    "reason_description",
    "simple_dmacc_tnds",
    "terminal_states",
    "validate",
    "version",
]
