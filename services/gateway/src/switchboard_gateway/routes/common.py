"""What every router needs: the bus, the key store, the authenticator; revision handling."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated

from fastapi import Path, Request
from switchboard_contracts.common import TENANT_ID_PATTERN

from ..auth import Authenticator, Principal, require_operator, require_tenant
from ..bus import Bus
from ..errors import ApiError
from ..keys import ApiKeys

TenantPath = Annotated[str, Path(pattern=TENANT_ID_PATTERN, description="Tenant id")]


@dataclass(frozen=True)
class Deps:
    bus: Bus
    keys: ApiKeys
    authenticate: Authenticator

    def tenant_guard(self) -> Callable[..., Awaitable[Principal]]:
        """Dependency: the caller may act on the path's tenant. It runs before the body is
        validated, so a foreign caller learns nothing but 401/403."""
        authenticate = self.authenticate

        async def guard(tenant_id: TenantPath, request: Request) -> Principal:
            principal = await authenticate(request)
            require_tenant(principal, tenant_id)
            return principal

        return guard

    def operator_guard(self) -> Callable[..., Awaitable[Principal]]:
        authenticate = self.authenticate

        async def guard(request: Request) -> Principal:
            principal = await authenticate(request)
            require_operator(principal)
            return principal

        return guard


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
