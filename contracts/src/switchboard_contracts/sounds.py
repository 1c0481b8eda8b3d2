"""Sound-file references (SPEC section 5). The media service owns the files themselves."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated

from pydantic import Field, StringConstraints, field_validator

from .common import Message, Model, SoundFileId, TenantId

#: NATS object store bucket where the gateway streams uploads for the media service.
UPLOADS_BUCKET = "sb_uploads"
#: Largest piece of a file one read request returns (stays under NATS' 1 MB payload).
MAX_READ_CHUNK = 512 * 1024


class SoundCategory(StrEnum):
    CUSTOM = "custom"
    MUSIC_ON_HOLD = "music_on_hold"
    #: A call's recording (taken in from Asterisk, not uploaded by an admin).
    CALL_RECORDING = "call_recording"


#: What an admin may upload (call recordings come from calls only).
UPLOADABLE_CATEGORIES = (SoundCategory.CUSTOM, SoundCategory.MUSIC_ON_HOLD)


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
    linkedid: str | None = Field(default=None, description="Call recordings: the call's linkedid.")
    leg_id: str | None = Field(default=None, description="Call recordings: the leg recorded.")
    revision: int = 0
    created_at: datetime


class SoundUploadRequest(Message):
    """Asks the media service to take in an upload that the gateway streamed into the NATS
    object store bucket ``UPLOADS_BUCKET`` under ``upload``."""

    upload: Annotated[str, StringConstraints(pattern=r"^[a-z0-9]{16,64}$")]
    file_name: Annotated[str, StringConstraints(min_length=1, max_length=255)]
    name: Annotated[str, StringConstraints(min_length=1, max_length=200)]
    category: SoundCategory = SoundCategory.CUSTOM

    @field_validator("category")
    @classmethod
    def _uploadable(cls, value: SoundCategory) -> SoundCategory:
        if value not in UPLOADABLE_CATEGORIES:
            raise ValueError(f"must be one of {', '.join(c.value for c in UPLOADABLE_CATEGORIES)}")
        return value


class RecordingUploadRequest(Message):
    """A call's recording (a wav Asterisk wrote), staged in ``UPLOADS_BUCKET`` under ``upload``.
    ``id`` is the ``recording_id`` the call record carries, so history links to it."""

    upload: Annotated[str, StringConstraints(pattern=r"^[a-z0-9]{16,64}$")]
    id: SoundFileId
    linkedid: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9._-]{1,64}$")]
    leg_id: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9._-]{1,64}$")]


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
