"""The host DM Server a :class:`~dmdelegate.Server` calls back, as a :class:`typing.Protocol`.

A host is any object with these methods; it need not inherit from anything. Each method
may be a plain function or an ``async def`` coroutine function:

* plain functions run on a thread of the server's runtime (never the thread that created
  the server), holding the GIL only while they run. Calls for one delegation session never
  overlap; calls for different sessions may come from different threads, so a host must be
  thread-safe. A plain callback must not call the server's blocking methods (they raise
  :class:`~dmdelegate.InvalidStateError` there) and should return promptly: it holds up
  its session.
* ``async def`` callbacks run on the event loop the server captured: the loop running in
  the thread that created the :class:`~dmdelegate.Server` (``async with Server(...)``), or
  the one given as ``Server(..., loop=...)``. They may ``await`` the server's ``*_async``
  methods, except for the session they are called for. A server created outside a running
  event loop, without ``loop=``, fails every ``async def`` callback (reason 199, the cause
  logged under ``dmdelegate.host``). An ``async def on_event`` is scheduled and not waited
  for: its events may be handled out of order.

Failures never escape into the server: a callback that raises
:class:`~dmdelegate.HostError` fails the delegation with the exception's ``reason_code``
(or, when it names none, the callback's own reason below); any other exception fails it
with reason 199 (internal error) and its traceback is logged under the logger
``dmdelegate.host``. A missing method fails only the delegations that need it, with the
callback's own reason.

==========================  ======  ===========================================================
method                      reason  called
==========================  ======  ===========================================================
``accept_delegation``       101     when a peer offers a delegation (either role)
``execute``                 130     DMS-1, for every client operation (a failure is status 500)
``open_dm_session``         132     DMS-2, Methods 1/2, once DMS-1 prepared the device
``dm_account``              161     DMS-2, for the account the device gets
``bootstrap_server_url``    160     DMS-2, Methods 3/4
``on_event``                –       every state change, completion, failure, rollback
==========================  ======  ===========================================================
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Protocol

from ._native import Command, CommandResult, Device, DmAccount, Event, Offer, Rejection, Session

__all__ = ["Host"]


class Host(Protocol):
    """What a :class:`~dmdelegate.Server` needs from its host DM Server."""

    def accept_delegation(
        self, offer: Offer, /
    ) -> bool | Rejection | Awaitable[bool | Rejection]:
        """Decides whether to take part in a delegation a peer offers.

        ``True`` accepts; ``False`` refuses with reason 101 (rejected by policy); a
        :class:`~dmdelegate.Rejection` refuses with its reason code and text.
        """
        ...

    def execute(
        self, device: Device, command: Command, /
    ) -> CommandResult | Awaitable[CommandResult]:
        """DMS-1: runs one client operation on the device in the host's own DM session.

        Returns the device's status; for a ``"GetTree"`` the subtree's TNDS document in
        ``text``, for a ``"GetAcl"`` the ACL. Any status but 200 is a refusal (404 not
        found, 425 permission denied, ...). :meth:`~dmdelegate.SimDevice.execute`
        answers exactly this way; :meth:`~dmdelegate.Command.to_syncml` renders the
        command for a SyncML DM 1.2 engine.
        """
        ...

    def open_dm_session(self, session: Session, /) -> None | Awaitable[None]:
        """DMS-2, Methods 1/2: opens a DM session with the device; returning confirms."""
        ...

    def dm_account(self, device: Device, /) -> str | DmAccount | Awaitable[str | DmAccount]:
        """DMS-2: the DM account the device gets for this server (a DMAcc TNDS document,
        as :func:`~dmdelegate.simple_dmacc_tnds` makes, or a :class:`~dmdelegate.DmAccount`)."""
        ...

    def bootstrap_server_url(self, device: Device, /) -> str | Awaitable[str]:
        """DMS-2, Methods 3/4: the ``https://`` URL of the Bootstrap Server the device uses."""
        ...

    def on_event(self, event: Event, /) -> None | Awaitable[None]:
        """Reports what happened to a delegation. Must not block: the session waits."""
        ...
