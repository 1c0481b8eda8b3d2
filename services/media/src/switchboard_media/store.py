"""The media service's metadata: one NATS KV bucket, key ``t.<tenant>.sound.<id>``. The audio
itself is in S3 under ``tenants/<tenant>/sounds/<id>/<variant>`` (storage.py)."""

from __future__ import annotations

from nats.js import JetStreamContext
from nats.js.api import KeyValueConfig, StorageType
from nats.js.errors import KeyNotFoundError, NoKeysError
from nats.js.kv import KeyValue
from switchboard_contracts.runtime import open_key_value
from switchboard_contracts.sounds import SoundFile


def sound_key(tenant_id: str, sound_id: str) -> str:
    return f"t.{tenant_id}.sound.{sound_id}"


class MetadataStore:
    def __init__(self, bucket: str) -> None:
        self._bucket = bucket
        self._kv: KeyValue | None = None

    async def open(self, js: JetStreamContext) -> None:
        self._kv = await open_key_value(
            js,
            KeyValueConfig(bucket=self._bucket, storage=StorageType.FILE, description="Sound file metadata"),
        )

    @property
    def kv(self) -> KeyValue:
        if self._kv is None:
            raise RuntimeError("metadata store not open")
        return self._kv

    async def put(self, sound: SoundFile) -> int:
        return int(await self.kv.put(sound_key(sound.tenant_id, sound.id), sound.model_dump_json().encode()))

    async def get(self, tenant_id: str, sound_id: str) -> SoundFile | None:
        try:
            entry = await self.kv.get(sound_key(tenant_id, sound_id))
        except KeyNotFoundError:
            return None
        if not entry.value:
            return None
        return SoundFile.model_validate_json(entry.value).model_copy(update={"revision": entry.revision or 0})

    async def list(self, tenant_id: str) -> list[SoundFile]:
        try:
            keys = await self.kv.keys()
        except NoKeysError:
            return []
        prefix = f"t.{tenant_id}.sound."
        sounds = []
        for key in keys:
            if key.startswith(prefix):
                found = await self.get(tenant_id, key[len(prefix) :])
                if found is not None:
                    sounds.append(found)
        return sounds

    async def delete(self, tenant_id: str, sound_id: str) -> None:
        await self.kv.purge(sound_key(tenant_id, sound_id))
