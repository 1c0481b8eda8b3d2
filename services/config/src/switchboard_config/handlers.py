"""Thin bus subscribers: decode the request, call the service, reply with result or error.

Every request gets a reply: a body that fails validation is answered by the exception
middleware in main.py, everything else here."""

from typing import Any

from faststream.nats import NatsBroker
from faststream.nats.annotations import NatsMessage
from pydantic import BaseModel
from switchboard_contracts.common import ErrorCode, ServiceError
from switchboard_contracts.config import (
    ENTITY_MODELS,
    CreateRequest,
    DeleteRequest,
    GetRequest,
    ListRequest,
    SnapshotRequest,
    TenantCreateRequest,
    TenantDeleteRequest,
    TenantGetRequest,
    TenantListRequest,
    TenantUpdateRequest,
    UpdateRequest,
)
from switchboard_contracts.errors import error_reply, ok_reply
from switchboard_contracts.sounds import SoundUsagesRequest
from switchboard_contracts.subjects import (
    CONFIG_TENANT_LIST,
    Action,
    EntityKind,
    config_rpc,
    config_snapshot,
    config_sound_usages,
)

from .service import ConfigService
from .store import StaleRevision

WILDCARD = "*"


def _dump(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json", serialize_as_any=True)
    return value


async def _serve(
    service: ConfigService, msg: NatsMessage, tenant_id: str | None, call: Any
) -> dict[str, Any]:
    try:
        if tenant_id is not None and msg.raw_message.subject.split(".")[2] != tenant_id:
            raise ServiceError(
                ErrorCode.FORBIDDEN, "the subject's tenant differs from the message's", "tenant_id"
            )
        if not service.ready:
            raise ServiceError(ErrorCode.UNAVAILABLE, "config service is starting; retry shortly")
        result = call()
        if hasattr(result, "__await__"):
            result = await result
        return ok_reply(_dump(result))
    except StaleRevision:
        return error_reply(
            ServiceError(ErrorCode.STALE_REVISION, "the object changed since you read it", "revision")
        )
    except Exception as exc:
        return error_reply(exc)


def register(broker: NatsBroker, service: ConfigService) -> None:
    for kind in EntityKind:
        _register_entity(broker, service, kind)
    _register_tenant(broker, service)


def _register_entity(broker: NatsBroker, service: ConfigService, kind: EntityKind) -> None:
    fields_model, entity_model = ENTITY_MODELS[kind]
    label = kind.value.replace("_", " ")

    async def create(body, msg: NatsMessage) -> dict[str, Any]:  # type: ignore[no-untyped-def]
        return await _serve(
            service,
            msg,
            body.tenant_id,
            lambda: service.create(kind, body.tenant_id, body.data.model_dump()),
        )

    # the body type is per kind, so it is set here rather than written in the signature
    create.__annotations__["body"] = CreateRequest[fields_model]  # type: ignore[valid-type]
    broker.subscriber(config_rpc(WILDCARD, kind, Action.CREATE), title=f"create {label}")(create)

    @broker.subscriber(config_rpc(WILDCARD, kind, Action.GET), title=f"get {label}")
    async def get(body: GetRequest, msg: NatsMessage) -> dict[str, Any]:
        return await _serve(service, msg, body.tenant_id, lambda: service.get(kind, body.tenant_id, body.id))

    @broker.subscriber(config_rpc(WILDCARD, kind, Action.UPDATE), title=f"update {label}")
    async def update(body: UpdateRequest, msg: NatsMessage) -> dict[str, Any]:
        return await _serve(
            service,
            msg,
            body.tenant_id,
            lambda: service.update(kind, body.tenant_id, body.id, body.revision, body.changes),
        )

    @broker.subscriber(config_rpc(WILDCARD, kind, Action.DELETE), title=f"delete {label}")
    async def delete(body: DeleteRequest, msg: NatsMessage) -> dict[str, Any]:
        async def run() -> dict[str, Any]:
            await service.delete(kind, body.tenant_id, body.id, body.revision)
            return {"id": body.id, "deleted": True}

        return await _serve(service, msg, body.tenant_id, run)

    @broker.subscriber(config_rpc(WILDCARD, kind, Action.LIST), title=f"list {label}s")
    async def list_(body: ListRequest, msg: NatsMessage) -> dict[str, Any]:
        return await _serve(
            service,
            msg,
            body.tenant_id,
            lambda: service.list_entities(
                kind, body.tenant_id, body.search, body.sort, body.order, body.offset, body.limit
            ),
        )

    del entity_model


def _register_tenant(broker: NatsBroker, service: ConfigService) -> None:
    @broker.subscriber(config_rpc(WILDCARD, "tenant", Action.CREATE), title="create tenant")
    async def create_tenant(body: TenantCreateRequest, msg: NatsMessage) -> dict[str, Any]:
        if body.data.id != body.tenant_id:
            return error_reply(ServiceError(ErrorCode.BAD_REQUEST, "tenant_id differs from data.id", "id"))
        return await _serve(service, msg, body.tenant_id, lambda: service.create_tenant(body.data))

    @broker.subscriber(config_rpc(WILDCARD, "tenant", Action.GET), title="get tenant")
    async def get_tenant(body: TenantGetRequest, msg: NatsMessage) -> dict[str, Any]:
        return await _serve(service, msg, body.tenant_id, lambda: service.get_tenant(body.tenant_id))

    @broker.subscriber(config_rpc(WILDCARD, "tenant", Action.UPDATE), title="update tenant")
    async def update_tenant(body: TenantUpdateRequest, msg: NatsMessage) -> dict[str, Any]:
        return await _serve(
            service,
            msg,
            body.tenant_id,
            lambda: service.update_tenant(body.tenant_id, body.revision, body.changes),
        )

    @broker.subscriber(config_rpc(WILDCARD, "tenant", Action.DELETE), title="delete tenant")
    async def delete_tenant(body: TenantDeleteRequest, msg: NatsMessage) -> dict[str, Any]:
        async def run() -> dict[str, Any]:
            await service.delete_tenant(body.tenant_id, body.purge)
            return {"id": body.tenant_id, "deleted": True}

        return await _serve(service, msg, body.tenant_id, run)

    @broker.subscriber(CONFIG_TENANT_LIST, title="list tenants")
    async def list_tenants(body: TenantListRequest, msg: NatsMessage) -> dict[str, Any]:
        return await _serve(service, msg, None, lambda: service.list_tenants(body.offset, body.limit))

    @broker.subscriber(config_sound_usages(WILDCARD), title="who uses a sound file")
    async def sound_usages(body: SoundUsagesRequest, msg: NatsMessage) -> dict[str, Any]:
        return await _serve(
            service, msg, body.tenant_id, lambda: service.sound_usages(body.tenant_id, body.id)
        )

    @broker.subscriber(config_snapshot(WILDCARD), title="tenant configuration snapshot")
    async def snapshot(body: SnapshotRequest, msg: NatsMessage) -> dict[str, Any]:
        return await _serve(service, msg, body.tenant_id, lambda: service.snapshot(body.tenant_id))
