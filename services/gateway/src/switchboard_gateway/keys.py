"""Tenant API keys, owned by the gateway in its own KV bucket. Only a SHA-256 hash of each
key's secret is stored; the key itself is shown once, when issued.

A key reads ``sbk_<key id>_<secret>``: the id finds the record, the secret is checked against
its hash in constant time."""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
from datetime import UTC, datetime

from nats.js import JetStreamContext
from nats.js.api import KeyValueConfig, StorageType
from nats.js.errors import KeyNotFoundError, NoKeysError
from nats.js.kv import KeyValue
from pydantic import BaseModel
from switchboard_contracts.runtime import open_key_value

KEY_PATTERN = re.compile(r"^sbk_([0-9a-f]{16})_([A-Za-z0-9_-]{32,64})$")


class ApiKeyRecord(BaseModel):
    key_id: str
    tenant_id: str
    name: str
    secret_sha256: str
    created_at: datetime


class ApiKeyView(BaseModel):
    key_id: str
    tenant_id: str
    name: str
    created_at: datetime


class IssuedApiKey(ApiKeyView):
    key: str  # shown once


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


class ApiKeys:
    def __init__(self, bucket: str, replicas: int = 1) -> None:
        self._bucket = bucket
        self._replicas = replicas
        self._kv: KeyValue | None = None

    @property
    def ready(self) -> bool:
        return self._kv is not None

    async def open(self, js: JetStreamContext) -> None:
        self._kv = await open_key_value(
            js,
            KeyValueConfig(
                bucket=self._bucket,
                storage=StorageType.FILE,
                replicas=self._replicas,
                description="Switchboard tenant API keys (hashed)",
            ),
        )

    @property
    def kv(self) -> KeyValue:
        if self._kv is None:
            raise RuntimeError("key store not open")
        return self._kv

    async def issue(self, tenant_id: str, name: str) -> IssuedApiKey:
        key_id = secrets.token_hex(8)
        secret = secrets.token_urlsafe(32)
        record = ApiKeyRecord(
            key_id=key_id,
            tenant_id=tenant_id,
            name=name,
            secret_sha256=_digest(secret),
            created_at=datetime.now(UTC),
        )
        await self.kv.create(f"key.{key_id}", record.model_dump_json().encode())
        return IssuedApiKey(**record.model_dump(exclude={"secret_sha256"}), key=f"sbk_{key_id}_{secret}")

    async def verify(self, presented: str) -> str | None:
        """The tenant a presented key belongs to, or None."""
        match = KEY_PATTERN.match(presented)
        if not match:
            return None
        key_id, secret = match.groups()
        try:
            entry = await self.kv.get(f"key.{key_id}")
        except KeyNotFoundError:
            return None
        if entry.value is None:
            return None
        record = ApiKeyRecord.model_validate(json.loads(entry.value))
        if not hmac.compare_digest(record.secret_sha256, _digest(secret)):
            return None
        return record.tenant_id

    async def list_for(self, tenant_id: str) -> list[ApiKeyView]:
        views = []
        for record in await self._records():
            if record.tenant_id == tenant_id:
                views.append(ApiKeyView(**record.model_dump(exclude={"secret_sha256"})))
        return sorted(views, key=lambda v: v.created_at)

    async def revoke(self, tenant_id: str, key_id: str) -> bool:
        try:
            entry = await self.kv.get(f"key.{key_id}")
        except KeyNotFoundError:
            return False
        if entry.value is None or ApiKeyRecord.model_validate(json.loads(entry.value)).tenant_id != tenant_id:
            return False
        await self.kv.purge(f"key.{key_id}")
        return True

    async def revoke_all(self, tenant_id: str) -> int:
        count = 0
        for record in await self._records():
            if record.tenant_id == tenant_id:
                await self.kv.purge(f"key.{record.key_id}")
                count += 1
        return count

    async def _records(self) -> list[ApiKeyRecord]:
        try:
            keys = await self.kv.keys()
        except NoKeysError:
            return []
        records = []
        for key in keys:
            try:
                entry = await self.kv.get(key)
            except KeyNotFoundError:
                continue
            if entry.value:
                records.append(ApiKeyRecord.model_validate(json.loads(entry.value)))
        return records
