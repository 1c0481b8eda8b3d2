"""What every router needs: the bus, the key store, the authenticator; revision handling."""

from __future__ import annotations

from dataclasses import dataclass

from ..auth import Authenticator
from ..bus import Bus
from ..errors import ApiError
from ..keys import ApiKeys


@dataclass(frozen=True)
class Deps:
    bus: Bus
    keys: ApiKeys
    authenticate: Authenticator


def revision_of(body_revision: int | None, if_match: str | None, required: bool = True) -> int | None:
    """The revision a write is based on: ``revision`` in the body or an ``If-Match`` header."""
    if body_revision is not None:
        return body_revision
    if if_match:
        tag = if_match.strip().removeprefix("W/").strip('"')
        if tag.isdigit():
            return int(tag)
        raise ApiError(400, "bad_request", "If-Match must hold the revision number (the ETag)", "If-Match")
    if required:
        raise ApiError(
            428,
            "precondition_required",
            "send the revision you read (field 'revision' or header If-Match) so that a concurrent "
            "change is not overwritten",
            "revision",
        )
    return None
