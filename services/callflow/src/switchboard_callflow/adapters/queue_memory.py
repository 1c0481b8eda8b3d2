"""Where call queues keep their memory (round-robin position, agents' answered calls and last
call end, average wait) across restarts of the call-flow service: the NATS key-value bucket
``sb_callflow_queues``, one JSON value per queue (key ``<tenant id>.<queue id>``)."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable
from typing import Any, Protocol

from nats.aio.client import Client as NATS
from nats.js.api import KeyValueConfig
from nats.js.kv import KeyValue
from switchboard_contracts.runtime import open_key_value

log = logging.getLogger("switchboard.callflow.queue_memory")

BUCKET = "sb_callflow_queues"
_KEY_UNSAFE = re.compile(r"[^-_=a-zA-Z0-9]")


def memory_key(tenant_id: str, queue_id: str) -> str:
    return f"{_KEY_UNSAFE.sub('_', tenant_id)}.{_KEY_UNSAFE.sub('_', queue_id)}"


class QueueMemoryStore(Protocol):
    async def load(self) -> dict[str, dict[str, Any]]: ...

    async def save(self, key: str, value: dict[str, Any]) -> None: ...


class NoQueueMemoryStore:
    """Memory for this process only (tests, or no bus)."""

    async def load(self) -> dict[str, dict[str, Any]]:
        return {}

    async def save(self, key: str, value: dict[str, Any]) -> None:
        return None


class KvQueueMemoryStore:
    def __init__(self, connection: Callable[[], NATS], bucket: str = BUCKET) -> None:
        self._connection = connection
        self.bucket = bucket
        self._kv: KeyValue | None = None

    async def _open(self) -> KeyValue:
        if self._kv is None:
            js = self._connection().jetstream()
            self._kv = await open_key_value(
                js, KeyValueConfig(bucket=self.bucket, history=1, description="call queue memory")
            )
        return self._kv

    async def load(self) -> dict[str, dict[str, Any]]:
        """Every queue's memory: the newest value of each key (one pass of a watcher)."""
        kv = await self._open()
        result: dict[str, dict[str, Any]] = {}
        watcher = await kv.watchall(ignore_deletes=True)
        try:
            async for entry in watcher:
                if entry is None:  # the end of what is stored
                    break
                if not entry.value:
                    continue
                try:
                    result[entry.key] = json.loads(entry.value)
                except ValueError:
                    log.warning("queue memory %s is not JSON; ignored", entry.key)
        finally:
            await watcher.stop()  # type: ignore[no-untyped-call]
        return result

    async def save(self, key: str, value: dict[str, Any]) -> None:
        kv = await self._open()
        await kv.put(key, json.dumps(value, separators=(",", ":")).encode())
