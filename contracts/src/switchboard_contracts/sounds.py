"""Sound-file references (SPEC section 5). The media service owns the files themselves."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated

from pydantic import Field, StringConstraints

from .common import Message, Model, SoundFileId, TenantId

#: NATS object store bucket where the gateway streams uploads for the media service.
UPLOADS_BUCKET = "sb_uploads"
#: Largest piece of a file one read request returns (stays under NATS' 1 MB payload).
MAX_READ_CHUNK = 512 * 1024


class SoundCategory(StrEnum):
    CUSTOM = "custom"
    MUSIC_ON_HOLD = "music_on_hold"


class SoundFileRef(Model):
    """How other entities point at a sound file (by id); carried in media events."""

    id: SoundFileId
    tenant_id: TenantId
    name: Annotated[str, StringConstraints(min_length=1, max_length=200)]
    category: SoundCategory = SoundCategory.CUSTOM
    duration_ms: int | None = None


class SoundVariant(StrEnum):
    ORIGINAL = "original"
    WAV_8K = "8k.wav"
    WAV_16K = "16k.wav"
    MP3 = "mp3"


class SoundFile(SoundFileRef):
    """A stored sound file: the original as uploaded plus its converted variants."""

    file_name: str
    original_format: str
    sizes: dict[SoundVariant, int]
    revision: int = 0
    created_at: datetime


class SoundUploadRequest(Message):
    """Asks the media service to take in an upload that the gateway streamed into the NATS
    object store bucket ``UPLOADS_BUCKET`` under ``upload``."""

    upload: Annotated[str, StringConstraints(pattern=r"^[a-z0-9]{16,64}$")]
    file_name: Annotated[str, StringConstraints(min_length=1, max_length=255)]
    name: Annotated[str, StringConstraints(min_length=1, max_length=200)]
    category: SoundCategory = SoundCategory.CUSTOM


class SoundIdRequest(Message):
    id: SoundFileId


class SoundListRequest(Message):
    category: SoundCategory | None = None
    search: str | None = Field(default=None, max_length=100)


class SoundReadRequest(Message):
    """Read part of a variant: the reply body is the raw bytes, headers carry the sizes."""

    id: SoundFileId
    variant: SoundVariant = SoundVariant.MP3
    offset: int = Field(default=0, ge=0)
    length: int = Field(default=MAX_READ_CHUNK, ge=1, le=MAX_READ_CHUNK)


class SoundUsagesRequest(Message):
    """Asks the config service which objects use a sound file."""

    id: SoundFileId
