"""Conference rooms (SPEC section 4)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import StringConstraints

from .common import EntityId, InternalNumber, Model, TenantId, constrained

Pin = constrained(r"^[0-9]{1,16}$", "PIN must be 1 to 16 digits (digits only)", ["4321"])


class ConferenceRoomFields(Model):
    name: Annotated[str, StringConstraints(min_length=1, max_length=100)]
    number: InternalNumber
    pin: Pin | None = None


class ConferenceRoom(ConferenceRoomFields):
    id: EntityId
    tenant_id: TenantId
    revision: int = 0
    created_at: datetime
    updated_at: datetime
