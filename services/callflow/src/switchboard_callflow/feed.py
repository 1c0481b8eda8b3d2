"""The configuration feed: every tenant's snapshot, then the change events after it.

An ordered JetStream consumer on ``pbx.*.config.>`` is opened first (new events only), then
each tenant's snapshot is read over request/reply. An event is applied only when it is newer
than the snapshot of its tenant, so nothing is missed and nothing applied twice."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from nats.aio.client import Client as NATS
from nats.js.api import DeliverPolicy
from pydantic import BaseModel
from switchboard_contracts.conferences import ConferenceRoom
from switchboard_contracts.config import Snapshot
from switchboard_contracts.employees import Employee
from switchboard_contracts.ivr import IvrMenu
from switchboard_contracts.queues import CallQueue
from switchboard_contracts.subjects import CONFIG_TENANT_LIST, config_snapshot
from switchboard_contracts.tenants import Tenant

from .directory import Directory, TenantConfig

log = logging.getLogger("switchboard.callflow.feed")

#: Called with a tenant id after that tenant's configuration changed in the directory.
OnChange = Callable[[str], Awaitable[None]]
COLLECTIONS: dict[str, tuple[str, type[BaseModel]]] = {
    "employee": ("employees", Employee),
    "queue": ("queues", CallQueue),
    "ivr_menu": ("ivr_menus", IvrMenu),
    "conference_room": ("conference_rooms", ConferenceRoom),
}


def config_from_snapshot(snapshot: Snapshot) -> TenantConfig:
    config = TenantConfig(tenant=snapshot.tenant, sequence=snapshot.stream_sequence)
    config.employees = {e.id: e for e in snapshot.employees}
    config.queues = {q.id: q for q in snapshot.queues}
    config.ivr_menus = {m.id: m for m in snapshot.ivr_menus}
    config.conference_rooms = {r.id: r for r in snapshot.conference_rooms}
    return config


class ConfigFeed:
    def __init__(self, nc: NATS, directory: Directory, on_change: OnChange) -> None:
        self.nc = nc
        self.directory = directory
        self.on_change = on_change
        self.ready = False
        self._pending: list[tuple[int, str, bytes]] = []
        self._loaded = False
        self._lock = asyncio.Lock()

    async def _request(self, subject: str, body: dict[str, Any]) -> Any:
        reply = await self.nc.request(subject, json.dumps(body).encode(), timeout=5)
        data = json.loads(reply.data)
        if not data.get("ok"):
            raise RuntimeError(f"{subject}: {data.get('error')}")
        return data["result"]

    async def _snapshot(self, tenant_id: str) -> TenantConfig | None:
        try:
            result = await self._request(config_snapshot(tenant_id), {"tenant_id": tenant_id})
        except RuntimeError as exc:
            log.warning("no snapshot of %s: %s", tenant_id, exc)
            return None
        return config_from_snapshot(Snapshot.model_validate(result))

    async def start(self) -> None:
        js = self.nc.jetstream()
        await js.subscribe(
            "pbx.*.config.>", cb=self._on_message, ordered_consumer=True, deliver_policy=DeliverPolicy.NEW
        )
        offset = 0
        while True:
            page = await self._request(CONFIG_TENANT_LIST, {"offset": offset, "limit": 1000})
            for tenant in page["items"]:
                config = await self._snapshot(tenant["id"])
                if config is not None:
                    self.directory.put(config)
                    await self.on_change(config.tenant.id)
            offset += len(page["items"])
            if offset >= page["total"] or not page["items"]:
                break
        async with self._lock:
            self._loaded = True
            pending, self._pending = self._pending, []
            for sequence, subject, data in pending:
                await self._apply(sequence, subject, data)
        self.ready = True
        log.info("configuration loaded: %d tenants", len(self.directory.tenants))

    async def _on_message(self, msg: Any) -> None:
        sequence = msg.metadata.sequence.stream
        async with self._lock:
            if not self._loaded:
                self._pending.append((sequence, msg.subject, msg.data))
                return
            await self._apply(sequence, msg.subject, msg.data)

    async def _apply(self, sequence: int, subject: str, data: bytes) -> None:
        try:
            _, tenant_id, _, kind, change = subject.split(".")
            event = json.loads(data)
            entity = event.get("entity")
            config = self.directory.get(tenant_id)
            if config is not None and sequence <= config.sequence:
                return  # already in the snapshot
            if kind == "tenant":
                await self._apply_tenant(tenant_id, change, entity, sequence)
                return
            if config is None:
                fresh = await self._snapshot(tenant_id)
                if fresh is not None:
                    self.directory.put(fresh)
                    await self.on_change(tenant_id)
                return
            config.sequence = sequence
            if kind in COLLECTIONS:
                name, model = COLLECTIONS[kind]
                collection = getattr(config, name)
                if change == "deleted" or entity is None:
                    collection.pop(event["entity_id"], None)
                else:
                    collection[event["entity_id"]] = model.model_validate(entity)
                await self.on_change(tenant_id)
        except Exception:
            log.exception("configuration event %s (seq %s) not applied", subject, sequence)

    async def _apply_tenant(self, tenant_id: str, change: str, entity: Any, sequence: int) -> None:
        config = self.directory.get(tenant_id)
        if change == "deleted":
            self.directory.remove(tenant_id)
        elif config is None:
            fresh = await self._snapshot(tenant_id)
            if fresh is None:
                return
            self.directory.put(fresh)
        else:
            config.tenant = Tenant.model_validate(entity)
            config.sequence = sequence
        await self.on_change(tenant_id)
