"""The config service's own storage: one NATS JetStream key-value bucket (file storage).

Key layout (all keys scoped by tenant except the platform-wide domain claims):
    tenant.<tenant>                     Tenant
    domain.<sip domain>                 claim: which tenant owns a SIP domain
    t.<tenant>.<kind>.<id>              an entity (employee, queue, ivr_menu, conference_room)
    t.<tenant>.number.<number>          claim: which entity holds an internal number
    t.<tenant>.mobile.<mobile>          claim: which employee holds a mobile number

Claims are written with ``create`` (fails when the key exists), which makes uniqueness atomic
even when two writers race. Entities are written with ``update(last=revision)``, which makes a
stale write fail instead of overwriting.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass

from nats.js import JetStreamContext
from nats.js.api import KeyValueConfig, StorageType
from nats.js.errors import (
    KeyNotFoundError,
    KeyWrongLastSequenceError,
    NoKeysError,
)
from nats.js.kv import KeyValue
from switchboard_contracts.runtime import open_key_value

log = logging.getLogger(__name__)


class KeyExists(Exception):
    """A create found the key already there."""


class StaleRevision(Exception):
    """An update's expected revision is no longer the latest."""


@dataclass(frozen=True)
class Entry:
    key: str
    value: bytes
    revision: int


def tenant_key(tenant_id: str) -> str:
    return f"tenant.{tenant_id}"


def domain_key(domain: str) -> str:
    return f"domain.{domain}"


def entity_key(tenant_id: str, kind: str, entity_id: str) -> str:
    return f"t.{tenant_id}.{kind}.{entity_id}"


def number_key(tenant_id: str, number: str) -> str:
    return f"t.{tenant_id}.number.{number}"


def mobile_key(tenant_id: str, mobile: str) -> str:
    # '+' is not allowed in a key; +7916... and 7916... are the same mobile anyway.
    return f"t.{tenant_id}.mobile.{mobile.lstrip('+')}"


class KvStore:
    def __init__(self, bucket: str, replicas: int = 1) -> None:
        self._bucket = bucket
        self._replicas = replicas
        self._kv: KeyValue | None = None

    async def open(self, js: JetStreamContext) -> None:
        self._kv = await open_key_value(
            js,
            KeyValueConfig(
                bucket=self._bucket,
                history=5,
                storage=StorageType.FILE,
                replicas=self._replicas,
                description="Switchboard tenants and telephony configuration",
            ),
        )

    @property
    def kv(self) -> KeyValue:
        if self._kv is None:
            raise RuntimeError("store not opened")
        return self._kv

    async def entries(self, prefix: str = "") -> AsyncIterator[Entry]:
        """Every current value whose key starts with ``prefix``."""
        try:
            keys = await self.kv.keys()
        except NoKeysError:
            return
        for key in keys:
            if not key.startswith(prefix):
                continue
            try:
                found = await self.kv.get(key)
            except KeyNotFoundError:
                continue
            if found.value is not None and found.revision is not None:
                yield Entry(key, found.value, found.revision)

    async def get(self, key: str) -> Entry | None:
        try:
            found = await self.kv.get(key)
        except KeyNotFoundError:
            return None
        if found.value is None or found.revision is None:
            return None
        return Entry(key, found.value, found.revision)

    async def create(self, key: str, value: bytes) -> int:
        try:
            return int(await self.kv.create(key, value))
        except KeyWrongLastSequenceError:
            raise KeyExists(key) from None

    async def update(self, key: str, value: bytes, last: int) -> int:
        try:
            return int(await self.kv.update(key, value, last=last))
        except KeyWrongLastSequenceError:
            raise StaleRevision(key) from None

    async def delete(self, key: str, last: int | None = None) -> None:
        try:
            if last is None:
                await self.kv.purge(key)
            else:
                await self.kv.delete(key, last=last)
                # compact history of the deleted key while keeping the revision check above
                await self.kv.purge(key)
        except KeyWrongLastSequenceError:
            raise StaleRevision(key) from None
        except KeyNotFoundError:
            return

    async def release(self, key: str) -> None:
        """Drop a claim; retried because a leaked claim blocks a number until restart."""
        for attempt in range(5):
            try:
                await self.kv.purge(key)
                return
            except Exception:  # the bus may be reconnecting
                log.warning("releasing %s failed (attempt %d)", key, attempt + 1, exc_info=True)
                await asyncio.sleep(0.2 * (attempt + 1))
