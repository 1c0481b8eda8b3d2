"""Conference rooms (SPEC section 4)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import StringConstraints

from .common import EntityId, InternalNumber, Model, TenantId


class ConferenceRoomFields(Model):
    name: Annotated[str, StringConstraints(min_length=1, max_length=100)]
    number: InternalNumber
    pin: Annotated[str, StringConstraints(pattern=r"^[0-9]{1,16}$")] | None = None


class ConferenceRoom(ConferenceRoomFields):
    id: EntityId
    tenant_id: TenantId
    revision: int = 0
    created_at: datetime
    updated_at: datetime
