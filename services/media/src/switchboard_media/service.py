"""Media logic: take in an upload (check, convert, store every variant), list, read and
delete sound files. No broker or HTTP types: the metadata store, the object store, the event
sink and the config lookup are passed in. Blocking work (ffmpeg, S3) runs in threads."""

from __future__ import annotations

import asyncio
import logging
import tempfile
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Protocol

from switchboard_contracts.common import ErrorCode, ServiceError, utcnow
from switchboard_contracts.sounds import UPLOADABLE_CATEGORIES, SoundCategory, SoundFile, SoundVariant
from switchboard_contracts.subjects import Change

from . import audio
from .storage import ObjectNotFound, ObjectStore, RangeNotSatisfiable, StorageError, object_key, object_prefix
from .store import MetadataStore

log = logging.getLogger(__name__)

CONTENT_TYPES = {
    SoundVariant.MP3: "audio/mpeg",
    SoundVariant.WAV_8K: "audio/wav",
    SoundVariant.WAV_16K: "audio/wav",
    SoundVariant.ORIGINAL: "application/octet-stream",
}

UsageLookup = Callable[[str, str], Awaitable[list[dict[str, Any]]]]


class EventSink(Protocol):
    async def publish(self, tenant_id: str, change: Change, sound: SoundFile) -> None: ...


def _kind(category: SoundCategory) -> str:
    """The object-store folder: ``recordings`` for call recordings, ``sounds`` otherwise."""
    return "recordings" if category is SoundCategory.CALL_RECORDING else "sounds"


def _unavailable(exc: Exception) -> ServiceError:
    log.warning("object storage: %s", exc)
    return ServiceError(ErrorCode.UNAVAILABLE, "sound storage is not reachable; retry shortly")


class MediaService:
    def __init__(
        self,
        metadata: MetadataStore,
        objects: ObjectStore,
        events: EventSink,
        usages: UsageLookup,
        limits: audio.Limits,
        work_dir: str = "",
    ) -> None:
        self._metadata = metadata
        self._objects = objects
        self._events = events
        self._usages = usages
        self._limits = limits
        self._work_dir = work_dir or None

    async def create(
        self,
        tenant_id: str,
        upload: Path,
        file_name: str,
        name: str,
        category: SoundCategory,
        sound_id: str | None = None,
        call: tuple[str, str] | None = None,
    ) -> SoundFile:
        """Check, convert and store an upload. A call recording (``call`` = linkedid, leg id)
        keeps only its original and the mp3, under ``recordings/``."""
        file_name = audio.safe_file_name(file_name)
        info = await asyncio.to_thread(audio.validate, upload, self._limits)
        sound_id = sound_id or uuid.uuid4().hex
        if await self._metadata.get(tenant_id, sound_id) is not None:
            raise ServiceError(ErrorCode.CONFLICT, f"sound file {sound_id!r} already exists", "id")
        kind = _kind(category)
        with tempfile.TemporaryDirectory(dir=self._work_dir, prefix="sb-media-") as out:
            converted = await asyncio.to_thread(audio.convert, upload, out, "sound")
            files = {
                SoundVariant.ORIGINAL: (upload, info.size_bytes),
                SoundVariant.WAV_8K: (converted.wav_8k.path, converted.wav_8k.size_bytes),
                SoundVariant.WAV_16K: (converted.wav_16k.path, converted.wav_16k.size_bytes),
                SoundVariant.MP3: (converted.mp3.path, converted.mp3.size_bytes),
            }
            if call is not None:  # playback in history needs the mp3 only
                files = {v: files[v] for v in (SoundVariant.ORIGINAL, SoundVariant.MP3)}
            try:
                for variant, (path, _) in files.items():
                    await asyncio.to_thread(
                        self._objects.put_file,
                        object_key(tenant_id, kind, sound_id, variant.value),
                        path,
                        CONTENT_TYPES[variant],
                    )
            except StorageError as exc:  # nothing half-stored stays behind
                await asyncio.to_thread(self._forget_objects, tenant_id, kind, sound_id)
                raise _unavailable(exc) from None
        sound = SoundFile(
            id=sound_id,
            tenant_id=tenant_id,
            name=name,
            category=category,
            duration_ms=converted.duration_ms,
            file_name=file_name,
            original_format=f"{info.container}/{info.codec}",
            sizes={variant: size for variant, (_, size) in files.items()},
            linkedid=call[0] if call else None,
            leg_id=call[1] if call else None,
            created_at=utcnow(),
        )
        revision = await self._metadata.put(sound)
        sound = sound.model_copy(update={"revision": revision})
        await self._events.publish(tenant_id, Change.CREATED, sound)
        return sound

    def _forget_objects(self, tenant_id: str, kind: str, sound_id: str) -> None:
        try:
            self._objects.remove_prefix(object_prefix(tenant_id, kind, sound_id))
        except StorageError:
            log.exception("could not remove the objects of sound %s/%s", tenant_id, sound_id)

    async def get(self, tenant_id: str, sound_id: str) -> SoundFile:
        sound = await self._metadata.get(tenant_id, sound_id)
        if sound is None:
            raise ServiceError(ErrorCode.NOT_FOUND, f"sound file {sound_id!r} does not exist", "id")
        return sound

    async def list(
        self, tenant_id: str, category: SoundCategory | None, search: str | None
    ) -> list[SoundFile]:
        sounds = await self._metadata.list(tenant_id)
        # call recordings are listed only when asked for (call history links to them)
        sounds = [
            s
            for s in sounds
            if s.category is category or (category is None and s.category in UPLOADABLE_CATEGORIES)
        ]
        if search:
            needle = search.casefold()
            sounds = [s for s in sounds if needle in s.name.casefold() or needle in s.file_name.casefold()]
        return sorted(sounds, key=lambda s: (s.name.casefold(), s.id))

    async def delete(self, tenant_id: str, sound_id: str) -> None:
        sound = await self.get(tenant_id, sound_id)
        users = await self._usages(tenant_id, sound_id)
        if users:
            listed = "; ".join(
                f"{u['kind'].replace('_', ' ')} {u['name']!r} ({u['number']}) in {u['field']}" for u in users
            )
            raise ServiceError(
                ErrorCode.CONFLICT, f"sound file {sound.name!r} is still used by: {listed}", "id", users
            )
        await self._metadata.delete(tenant_id, sound_id)
        await asyncio.to_thread(self._forget_objects, tenant_id, _kind(sound.category), sound_id)
        await self._events.publish(tenant_id, Change.DELETED, sound)

    async def read(
        self, tenant_id: str, sound_id: str, variant: SoundVariant, offset: int, length: int
    ) -> tuple[bytes, int, str]:
        """Part of a variant: (bytes, the variant's whole size, content type)."""
        sound = await self.get(tenant_id, sound_id)
        total = sound.sizes.get(variant, 0)
        if offset >= total:
            raise ServiceError(
                ErrorCode.BAD_REQUEST, f"offset {offset} is beyond the end ({total} bytes)", "offset"
            )
        key = object_key(tenant_id, _kind(sound.category), sound_id, variant.value)

        def fetch() -> bytes:
            with self._objects.open_range(key, offset, min(length, total - offset)) as reader:
                return reader.read_all()

        try:
            data = await asyncio.to_thread(fetch)
        except (ObjectNotFound, RangeNotSatisfiable):
            raise ServiceError(
                ErrorCode.NOT_FOUND, f"sound file {sound_id!r} has no {variant.value}", "variant"
            ) from None
        except StorageError as exc:
            raise _unavailable(exc) from None
        return data, total, CONTENT_TYPES[variant]
