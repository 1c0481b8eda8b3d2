"""Conference rooms (SPEC section 4)."""

from __future__ import annotations

from typing import Annotated

from pydantic import StringConstraints

from .common import InternalNumber, Matches, Model, StoredEntity

Pin = Annotated[str, Matches(r"^[0-9]{1,16}$", "PIN must be 1 to 16 digits (digits only)", ("4321",))]


class ConferenceRoomFields(Model):
    name: Annotated[str, StringConstraints(min_length=1, max_length=100)]
    number: InternalNumber
    pin: Pin | None = None


class ConferenceRoom(ConferenceRoomFields, StoredEntity):
    """A stored ConferenceRoom: its fields plus id, tenant, revision and timestamps."""
