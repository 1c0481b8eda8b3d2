"""Sound-file references (SPEC section 5). The media service owns the files themselves."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

from pydantic import StringConstraints

from .common import Model, SoundFileId, TenantId


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
