"""The call-flow service: configuration into PJSIP objects, registrations, and every call
that enters the Stasis application. No broker or HTTP types here."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from switchboard_contracts.cdr import CallRecord

from .adapters.ami import Contacts
from .adapters.ari import Ari, AriError
from .adapters.media import SoundCache
from .calls import CallRouter
from .channels import CallEvents
from .conferences import Conferences
from .conversation import Conversations
from .directory import Directory
from .features import Features
from .menus import Menus
from .provisioner import Provisioner
from .provisioning import PjsipObjects, employee_objects, split_endpoint_id
from .queues import Queues
from .recorder import Recorder
from .registry import Presence, Registry
from .settings import Settings
from .trunking import trunk_objects

log = logging.getLogger("switchboard.callflow")


class CallService:
    def __init__(
        self,
        settings: Settings,
        ari: Ari,
        sounds: SoundCache,
        publish_record: Any,
        publish_registration: Any,
    ) -> None:
        self.settings = settings
        self.ari = ari
        self.sounds = sounds
        self._publish_record = publish_record
        self.directory = Directory()
        self.events = CallEvents()
        self.provisioner = Provisioner(ari)
        self.registry = Registry(self.directory, publish_registration)
        self.presence = Presence()
        self.router = CallRouter(self)
        self.menus = Menus(self)
        self.conferences = Conferences(self)
        self.conversations = Conversations(self)
        self.features = Features(self)
        self.queues = Queues(self)
        self.recorder = Recorder(self)
        self.calls: set[asyncio.Task[None]] = set()
        #: reads Asterisk's contact table now (AMI); set by the composition root
        self.read_contacts: Callable[[], Awaitable[Contacts]] | None = None
        self.provisioned = False
        self._asterisk_started: str | None = None
        self._sync_lock = asyncio.Lock()
        self._resync_wanted = asyncio.Event()

    # ARI events ----------------------------------------------------------------------------

    async def on_event(self, event: dict[str, Any]) -> None:
        """Every ARI event, in order. New calls get their own task; the rest goes to the
        coroutines waiting for it."""
        if event.get("type") == "StasisStart" and event.get("args", [None])[0] in ("internal", "trunk"):
            task = asyncio.create_task(self.router.run(event))
            self.calls.add(task)
            task.add_done_callback(self.calls.discard)
        self.events.dispatch(event)

    async def on_connected(self) -> None:
        started = self.ari.asterisk_started
        if started != self._asterisk_started:
            self.provisioner.forget()  # a new Asterisk: it holds nothing of ours
            self._asterisk_started = started
        self._resync_wanted.set()
        # --- call queues: resume callers a previous run left waiting (queues.py) ---
        self.queues.reconnected()

    def on_disconnected(self) -> None:
        self.provisioned = False

    async def variable(self, channel_id: str, name: str) -> str | None:
        try:
            reply = await self.ari.request("GET", f"/channels/{channel_id}/variable", {"variable": name})
        except AriError:
            return None
        value = reply.get("value") if reply else None
        return str(value) if value else None

    def publish(self, record: CallRecord) -> None:
        self._publish_record(record)

    def registrations_changed(self, contacts: Contacts) -> None:
        self.registry.update(contacts)

    async def contacts_of(self, object_id: str) -> list[str]:
        """Registered contacts of an endpoint; asks Asterisk again when none are known (a
        phone that registered a moment ago)."""
        contacts = self.registry.contacts(object_id)
        if not contacts and self.read_contacts is not None:
            try:
                self.registry.update(await asyncio.wait_for(self.read_contacts(), 2))
            except Exception as exc:
                log.warning("contacts not read: %r", exc)
            contacts = self.registry.contacts(object_id)
        return contacts

    # provisioning --------------------------------------------------------------------------

    def desired(self) -> dict[str, tuple[PjsipObjects, list[tuple[str, list[tuple[str, str]]]]]]:
        wanted: dict[str, tuple[PjsipObjects, list[tuple[str, list[tuple[str, str]]]]]] = {}
        for config in self.directory.tenants.values():
            for employee in config.employees.values():
                objects = employee_objects(config.tenant, employee)
                wanted[objects.object_id] = (objects, [])
            trunk = trunk_objects(config.tenant)
            if trunk is not None:
                wanted[trunk[0].object_id] = trunk
        return wanted

    async def config_changed(self, tenant_id: str) -> None:
        self._resync_wanted.set()

    async def provision_forever(self, ready: asyncio.Event) -> None:
        """Bring Asterisk to the configuration whenever it changed or Asterisk came back."""
        await ready.wait()
        while True:
            await self._resync_wanted.wait()
            self._resync_wanted.clear()
            if not self.ari.connected:
                continue
            try:
                await self.reconcile()
                self.provisioned = True
            except Exception as exc:
                log.warning("provisioning failed (%s); retrying", exc)
                await asyncio.sleep(1)
                self._resync_wanted.set()

    async def reconcile(self) -> None:
        async with self._sync_lock:
            wanted = self.desired()
            for objects, extra in wanted.values():
                await self.provisioner.apply(objects, extra)
            present = await self.provisioner.endpoints_on_asterisk()
            for object_id in present:
                if object_id in wanted:
                    continue
                if object_id.startswith("trunk-"):
                    await self.provisioner.remove(object_id, ("registration", "identify"))
                elif split_endpoint_id(object_id) is not None:
                    await self.provisioner.remove(object_id)

    async def stop(self) -> None:
        for task in list(self.calls):
            task.cancel()
        await self.ari.close()
