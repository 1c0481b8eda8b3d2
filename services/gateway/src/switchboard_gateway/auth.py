"""Who is calling: the operator (key from settings) or one tenant (a tenant API key)."""

from __future__ import annotations

import hmac
from dataclasses import dataclass

from fastapi import Request
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from switchboard_contracts.common import ErrorCode

from .errors import ApiError
from .keys import ApiKeys

bearer = HTTPBearer(auto_error=False, description="Operator key or tenant API key")
api_key_header = APIKeyHeader(name="X-API-Key", auto_error=False)


@dataclass(frozen=True)
class Principal:
    tenant_id: str | None  # None: the operator

    @property
    def is_operator(self) -> bool:
        return self.tenant_id is None


OPERATOR = Principal(None)


class Authenticator:
    def __init__(self, operator_key: str, keys: ApiKeys) -> None:
        if len(operator_key) < 16:
            raise ValueError("SB_GATEWAY_OPERATOR_KEY must be at least 16 characters")
        self._operator_key = operator_key
        self._keys = keys

    async def __call__(self, request: Request) -> Principal:
        creds: HTTPAuthorizationCredentials | None = await bearer(request)
        presented = creds.credentials if creds else await api_key_header(request)
        if not presented:
            raise ApiError(
                401, "unauthorized", "an API key is required (Authorization: Bearer <key>)",
                headers={"WWW-Authenticate": "Bearer"},
            )  # fmt: skip
        if hmac.compare_digest(presented.encode(), self._operator_key.encode()):
            return OPERATOR
        if not self._keys.ready:
            raise ApiError(503, ErrorCode.UNAVAILABLE, "the key store is not reachable yet; retry shortly")
        tenant_id = await self._keys.verify(presented)
        if tenant_id is None:
            raise ApiError(
                401, "unauthorized", "the API key is not valid", headers={"WWW-Authenticate": "Bearer"}
            )
        return Principal(tenant_id)


def require_operator(principal: Principal) -> None:
    if not principal.is_operator:
        raise ApiError(403, ErrorCode.FORBIDDEN, "only the platform operator may do this")


def require_tenant(principal: Principal, tenant_id: str) -> None:
    """A tenant key reaches its own tenant only; the operator reaches every tenant."""
    if not principal.is_operator and principal.tenant_id != tenant_id:
        raise ApiError(403, ErrorCode.FORBIDDEN, "this API key does not belong to this tenant", "tenant_id")
