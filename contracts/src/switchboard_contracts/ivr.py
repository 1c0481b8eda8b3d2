"""IVR menus (SPEC section 3)."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, StringConstraints, model_validator

from .common import InternalNumber, Matches, Model, SoundFileId, StoredEntity, Target

Digits = Annotated[str, Matches(r"^[0-9*#]{1,10}$", "digits must be 1 to 10 of 0-9, * and #", ("1", "*5"))]


class IvrAction(Model):
    digits: Digits
    target: Target


class IvrMenuFields(Model):
    name: Annotated[str, StringConstraints(min_length=1, max_length=100)]
    number: InternalNumber
    note: Annotated[str, StringConstraints(max_length=1000)] = ""
    greeting_sound_id: SoundFileId | None = None
    actions: list[IvrAction] = Field(default_factory=list, max_length=100)
    repeats: int = Field(default=3, ge=0, le=10)
    timeout: int = Field(default=7, ge=1, le=60, description="Seconds to wait after the greeting.")
    default_target: Target
    allow_internal_dialing: bool = Field(
        default=False, description="Callers may dial any internal number of the tenant."
    )

    @model_validator(mode="after")
    def _distinct_digits(self) -> IvrMenuFields:
        seen: set[str] = set()
        for action in self.actions:
            if action.digits in seen:
                raise ValueError(f"actions: digits {action.digits!r} appear twice")
            seen.add(action.digits)
        return self


class IvrMenu(IvrMenuFields, StoredEntity):
    """A stored IvrMenu: its fields plus id, tenant, revision and timestamps."""
