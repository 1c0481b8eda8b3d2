"""REST resources of a tenant's telephony objects, one router per kind, all over the bus."""

from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Header, Path, Query, Response
from pydantic import BaseModel, Field, create_model
from switchboard_contracts.common import ENTITY_ID_PATTERN, Page, SortOrder
from switchboard_contracts.config import ENTITY_MODELS, LIST_FIELDS
from switchboard_contracts.employees import EmployeeView
from switchboard_contracts.partial import partial_model
from switchboard_contracts.subjects import Action, EntityKind, config_rpc

from ..auth import Principal
from ..registrations import registrations
from .common import Deps, TenantPath, revision_of

PATHS = {
    EntityKind.EMPLOYEE: "employees",
    EntityKind.QUEUE: "queues",
    EntityKind.IVR_MENU: "ivr-menus",
    EntityKind.CONFERENCE_ROOM: "conference-rooms",
}
IdPath = Annotated[str, Path(pattern=ENTITY_ID_PATTERN)]


class SipPassword(BaseModel):
    sip_password: str


class CreatedEmployee(EmployeeView):
    sip_password: str = Field(description="Shown here and through /sip-password, never in lists.")


def _view(kind: EntityKind, entity: dict[str, Any], status: dict[str, bool] | None = None) -> dict[str, Any]:
    """An entity from the bus as the API shows it; employees without the SIP password and with
    their device status (``status``: number -> registered, None when unknown)."""
    if kind is EntityKind.EMPLOYEE:
        registered = status.get(entity["number"]) if status is not None else None
        return EmployeeView.model_validate(
            {**{k: v for k, v in entity.items() if k != "sip_password"}, "registered": registered}
        ).model_dump(mode="json")
    return entity


def build(deps: Deps, kind: EntityKind) -> APIRouter:
    fields_model, entity_model = ENTITY_MODELS[kind]
    view_model: type[BaseModel] = EmployeeView if kind is EntityKind.EMPLOYEE else entity_model
    patch_model = create_model(
        f"{entity_model.__name__}Patch",
        __base__=partial_model(fields_model),
        revision=(int | None, Field(default=None, ge=0, description="The revision you read (or If-Match).")),
    )
    path = PATHS[kind]
    label = kind.value.replace("_", " ")
    sortable = LIST_FIELDS[kind]
    router = APIRouter(prefix=f"/v1/tenants/{{tenant_id}}/{path}", tags=[path])
    auth = Depends(deps.tenant_guard())

    def rpc(tenant_id: str, action: Action) -> str:
        return config_rpc(tenant_id, kind, action)

    @router.get("", response_model=Page[view_model], summary=f"List {label}s")  # type: ignore[valid-type]
    async def list_(
        tenant_id: TenantPath,
        search: Annotated[
            str | None, Query(max_length=100, description=f"Substring of {', '.join(sortable)}")
        ] = None,
        sort: Annotated[str | None, Query(description=f"One of {', '.join(sortable)}")] = None,
        order: SortOrder = SortOrder.ASC,
        offset: Annotated[int, Query(ge=0)] = 0,
        limit: Annotated[int, Query(ge=1, le=500)] = 50,
        principal: Principal = auth,
    ) -> Any:
        page = await deps.bus.request(
            rpc(tenant_id, Action.LIST),
            {"tenant_id": tenant_id, "search": search, "sort": sort, "order": order.value,
             "offset": offset, "limit": limit},
        )  # fmt: skip
        status = None
        if kind is EntityKind.EMPLOYEE:  # one question for the whole page
            status = await registrations(deps.bus, tenant_id, [item["number"] for item in page["items"]])
        page["items"] = [_view(kind, item, status) for item in page["items"]]
        return page

    created_model: type[BaseModel] = CreatedEmployee if kind is EntityKind.EMPLOYEE else entity_model

    async def create(
        tenant_id: TenantPath,
        body: Any,
        response: Response,
        principal: Principal = auth,
    ) -> Any:
        entity = await deps.bus.request(
            rpc(tenant_id, Action.CREATE), {"tenant_id": tenant_id, "data": body.model_dump(mode="json")}
        )
        response.headers["ETag"] = str(entity["revision"])
        response.headers["Location"] = f"/v1/tenants/{tenant_id}/{path}/{entity['id']}"
        if kind is EntityKind.EMPLOYEE:
            return {**_view(kind, entity), "sip_password": entity["sip_password"]}
        return entity

    # the body types are per kind, so they are set here rather than written in the signatures
    create.__annotations__["body"] = Annotated[fields_model, Body()]
    router.post("", status_code=201, response_model=created_model, summary=f"Create a {label}")(create)

    @router.get("/{entity_id}", response_model=view_model, summary=f"Read a {label}")
    async def read(
        tenant_id: TenantPath, entity_id: IdPath, response: Response, principal: Principal = auth
    ) -> Any:
        entity = await deps.bus.request(rpc(tenant_id, Action.GET), {"tenant_id": tenant_id, "id": entity_id})
        response.headers["ETag"] = str(entity["revision"])
        status = None
        if kind is EntityKind.EMPLOYEE:
            status = await registrations(deps.bus, tenant_id, [entity["number"]])
        return _view(kind, entity, status)

    async def update(
        tenant_id: TenantPath,
        entity_id: IdPath,
        body: Any,
        response: Response,
        if_match: Annotated[str | None, Header()] = None,
        principal: Principal = auth,
    ) -> Any:
        changes = body.model_dump(mode="json", exclude_unset=True, exclude={"revision"})
        entity = await deps.bus.request(
            rpc(tenant_id, Action.UPDATE),
            {"tenant_id": tenant_id, "id": entity_id, "revision": revision_of(body.revision, if_match),
             "changes": changes},
        )  # fmt: skip
        response.headers["ETag"] = str(entity["revision"])
        return _view(kind, entity)

    update.__annotations__["body"] = Annotated[patch_model, Body()]
    router.patch("/{entity_id}", response_model=view_model, summary=f"Change a {label}")(update)

    @router.delete("/{entity_id}", status_code=204, summary=f"Delete a {label}")
    async def delete(
        tenant_id: TenantPath,
        entity_id: IdPath,
        if_match: Annotated[str | None, Header()] = None,
        principal: Principal = auth,
    ) -> Response:
        await deps.bus.request(
            rpc(tenant_id, Action.DELETE),
            {
                "tenant_id": tenant_id,
                "id": entity_id,
                "revision": revision_of(None, if_match, required=False),
            },
        )
        return Response(status_code=204)

    if kind is EntityKind.EMPLOYEE:

        @router.get("/{entity_id}/sip-password", response_model=SipPassword, summary="Show the SIP password")
        async def sip_password(tenant_id: TenantPath, entity_id: IdPath, principal: Principal = auth) -> Any:
            entity = await deps.bus.request(
                rpc(tenant_id, Action.GET), {"tenant_id": tenant_id, "id": entity_id}
            )
            return {"sip_password": entity["sip_password"]}

    return router
