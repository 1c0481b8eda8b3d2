"""Tenants and their API keys. The operator manages them; a tenant key may read its tenant and
change its settings."""

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Path, Query, Response
from pydantic import BaseModel, Field
from switchboard_contracts.common import ErrorCode, Page
from switchboard_contracts.partial import partial_model
from switchboard_contracts.subjects import CONFIG_TENANT_LIST, Action, config_rpc
from switchboard_contracts.tenants import Tenant, TenantFields, TenantSettings, TenantView

from ..auth import Principal
from ..errors import ApiError
from ..keys import ApiKeyView, IssuedApiKey
from .common import Deps, TenantPath, revision_of

SettingsPatch = partial_model(TenantSettings)


class TenantPatch(BaseModel):
    model_config = {"extra": "forbid"}
    name: str | None = Field(default=None, min_length=1, max_length=100)
    sip_domain: str | None = None
    settings: SettingsPatch | None = None  # type: ignore[valid-type]
    revision: int | None = Field(default=None, ge=0, description="Or send If-Match.")


class NewApiKey(BaseModel):
    model_config = {"extra": "forbid"}
    name: str = Field(default="default", min_length=1, max_length=100)


def tenant_view(tenant: dict[str, Any]) -> dict[str, Any]:
    """A tenant from the bus as the API shows it: the trunk password becomes ``password_set``."""
    return TenantView.of(Tenant.model_validate(tenant)).model_dump(mode="json")


def build(deps: Deps) -> APIRouter:
    router = APIRouter(prefix="/v1/tenants", tags=["tenants"])
    auth = Depends(deps.tenant_guard())
    operator = Depends(deps.operator_guard())

    @router.post("", status_code=201, response_model=TenantView, summary="Create a tenant (operator)")
    async def create_tenant(body: TenantFields, response: Response, principal: Principal = operator) -> Any:
        tenant = await deps.bus.request(
            config_rpc(body.id, "tenant", Action.CREATE),
            {"tenant_id": body.id, "data": body.model_dump(mode="json")},
        )
        response.headers["ETag"] = str(tenant["revision"])
        return tenant_view(tenant)

    @router.get("", response_model=Page[TenantView], summary="List tenants (operator)")
    async def list_tenants(
        offset: Annotated[int, Query(ge=0)] = 0,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
        principal: Principal = operator,
    ) -> Any:
        page = await deps.bus.request(CONFIG_TENANT_LIST, {"offset": offset, "limit": limit})
        page["items"] = [tenant_view(item) for item in page["items"]]
        return page

    @router.get("/{tenant_id}", response_model=TenantView)
    async def get_tenant(tenant_id: TenantPath, response: Response, principal: Principal = auth) -> Any:
        tenant = await deps.bus.request(config_rpc(tenant_id, "tenant", Action.GET), {"tenant_id": tenant_id})
        response.headers["ETag"] = str(tenant["revision"])
        return tenant_view(tenant)

    @router.patch(
        "/{tenant_id}", response_model=TenantView, summary="Change a tenant (tenant keys: settings only)"
    )
    async def update_tenant(
        tenant_id: TenantPath,
        body: TenantPatch,
        response: Response,
        if_match: Annotated[str | None, Header()] = None,
        principal: Principal = auth,
    ) -> Any:
        changes = body.model_dump(mode="json", exclude_unset=True, exclude={"revision"})
        if not principal.is_operator and set(changes) - {"settings"}:
            raise ApiError(403, ErrorCode.FORBIDDEN, "a tenant key may change only settings", "settings")
        tenant = await deps.bus.request(
            config_rpc(tenant_id, "tenant", Action.UPDATE),
            {"tenant_id": tenant_id, "revision": revision_of(body.revision, if_match), "changes": changes},
        )
        response.headers["ETag"] = str(tenant["revision"])
        return tenant_view(tenant)

    @router.delete("/{tenant_id}", status_code=204, summary="Delete a tenant (operator)")
    async def delete_tenant(
        tenant_id: TenantPath,
        purge: Annotated[bool, Query(description="Also delete all its objects")] = False,
        principal: Principal = operator,
    ) -> Response:
        await deps.bus.request(
            config_rpc(tenant_id, "tenant", Action.DELETE), {"tenant_id": tenant_id, "purge": purge}
        )
        await deps.keys.revoke_all(tenant_id)
        return Response(status_code=204)

    @router.post("/{tenant_id}/api-keys", status_code=201, response_model=IssuedApiKey,
                 summary="Issue a tenant API key (operator); the key is shown only here")  # fmt: skip
    async def issue_key(
        tenant_id: TenantPath, body: NewApiKey | None = None, principal: Principal = operator
    ) -> Any:
        await deps.bus.request(config_rpc(tenant_id, "tenant", Action.GET), {"tenant_id": tenant_id})
        return await deps.keys.issue(tenant_id, (body or NewApiKey()).name)

    @router.get("/{tenant_id}/api-keys", response_model=list[ApiKeyView])
    async def list_keys(tenant_id: TenantPath, principal: Principal = operator) -> Any:
        return await deps.keys.list_for(tenant_id)

    @router.delete("/{tenant_id}/api-keys/{key_id}", status_code=204)
    async def revoke_key(
        tenant_id: TenantPath,
        key_id: Annotated[str, Path(pattern=r"^[0-9a-f]{16}$")],
        principal: Principal = operator,
    ) -> Response:
        if not await deps.keys.revoke(tenant_id, key_id):
            raise ApiError(404, ErrorCode.NOT_FOUND, f"API key {key_id!r} does not exist", "key_id")
        return Response(status_code=204)

    return router
