"""Asterisk Manager Interface through panoramisk: which phones are registered where.

panoramisk reconnects by itself; after each login, and on every ``ContactStatus`` event, the
whole contact table is read again (``PJSIPShowContacts``), so a missed event costs nothing."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

from panoramisk import Manager

log = logging.getLogger("switchboard.callflow.ami")

#: AOR id -> contact URIs registered on it.
Contacts = dict[str, list[str]]


class Ami:
    def __init__(self, host: str, port: int, user: str, password: str, poll_interval: float) -> None:
        self.poll_interval = poll_interval
        self._changed = asyncio.Event()
        self.manager = Manager(
            host=host,
            port=port,
            username=user,
            secret=password,
            ping_delay=5,
            ping_interval=5,
            reconnect_timeout=1,
            on_login=lambda _m: self._changed.set(),
            on_disconnect=lambda _m, _exc: log.warning("AMI connection lost; reconnecting"),
        )
        self.manager.register_event("ContactStatus", self._contact_event)
        self.manager.register_event("FullyBooted", self._contact_event)

    @property
    def ready(self) -> bool:
        return bool(self.manager._connected and self.manager.authenticated)

    def _contact_event(self, _manager: Manager, _event: Any) -> None:
        self._changed.set()

    async def contacts(self) -> Contacts:
        replies = await self.manager.send_action({"Action": "PJSIPShowContacts"})
        result: Contacts = {}
        if not isinstance(replies, list) and str(replies.get("Response")) == "Error":
            if "No Contacts" in str(replies.get("Message", "")):
                return result  # nobody registered
            raise RuntimeError(str(replies.get("Message")))
        for message in replies if isinstance(replies, list) else [replies]:
            if message.get("Event") != "ContactList":
                continue
            # Asterisk 22 names the contact "<aor>;@<hash>" and sends no Aor field.
            aor = str(message.get("Aor") or str(message.get("ObjectName", "")).split(";@")[0])
            uri = str(message.get("Uri", ""))
            status = str(message.get("Status", ""))
            if aor and uri and status not in ("Removed", "Unreachable"):
                result.setdefault(aor, []).append(uri)
        return result

    async def watch(self, on_contacts: Callable[[Contacts], Any]) -> None:
        """Connect, then report the contact table whenever it may have changed."""
        self.manager.connect()
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), self.poll_interval)
            self._changed.clear()
            if not self.ready:
                continue
            try:
                contacts = await asyncio.wait_for(self.contacts(), 5)
            except Exception as exc:
                log.warning("reading PJSIP contacts failed: %r", exc)
                continue
            result = on_contacts(contacts)
            if asyncio.iscoroutine(result):
                await result

    def close(self) -> None:
        self.manager.close()
