"""Sound files for Asterisk: the media service's 8 kHz wav of a sound file, read over the bus
and kept in a folder that Asterisk reads too (played as ``sound:<path without .wav>``)."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from pathlib import Path

from nats.aio.client import Client as NATS
from switchboard_contracts.sounds import MAX_READ_CHUNK, SoundVariant
from switchboard_contracts.subjects import media_rpc

log = logging.getLogger("switchboard.callflow.media")


class SoundCache:
    def __init__(self, connection: Callable[[], NATS], local_dir: str, asterisk_dir: str) -> None:
        self._connection = connection
        self.local = Path(local_dir)
        self.asterisk = asterisk_dir.rstrip("/")
        self._locks: dict[str, asyncio.Lock] = {}

    async def media_uri(self, tenant_id: str, sound_id: str | None) -> str | None:
        """``sound:...`` for Asterisk, None when there is no such file (the caller then
        hears the built-in prompt instead of silence)."""
        if not sound_id:
            return None
        path = self.local / tenant_id / f"{sound_id}.wav"
        lock = self._locks.setdefault(f"{tenant_id}/{sound_id}", asyncio.Lock())
        async with lock:
            if not path.exists():
                try:
                    await self._fetch(tenant_id, sound_id, path)
                except Exception as exc:
                    log.warning("sound %s of %s not available: %s", sound_id, tenant_id, exc)
                    return None
        return f"sound:{self.asterisk}/{tenant_id}/{sound_id}"

    async def _fetch(self, tenant_id: str, sound_id: str, path: Path) -> None:
        chunks: list[bytes] = []
        offset = 0
        while True:
            body = {
                "tenant_id": tenant_id,
                "id": sound_id,
                "variant": SoundVariant.WAV_8K.value,
                "offset": offset,
                "length": MAX_READ_CHUNK,
            }
            reply = await self._connection().request(
                media_rpc(tenant_id, "read"), json.dumps(body).encode(), timeout=5
            )
            headers = reply.headers or {}
            if headers.get("Sb-Error"):
                raise RuntimeError(json.loads(reply.data).get("error", {}).get("message", "media error"))
            chunks.append(reply.data)
            offset += len(reply.data)
            if offset >= int(headers.get("Sb-Total-Size", "0")) or not reply.data:
                break
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(".part")
        partial.write_bytes(b"".join(chunks))
        partial.chmod(0o644)
        partial.rename(path)
