"""Messages of the config service: commands, queries, replies and change events."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Generic, TypeVar

from pydantic import Field

from .common import EntityId, Message, Model, SortOrder, StoredEntity, utcnow
from .conferences import ConferenceRoom, ConferenceRoomFields
from .employees import Employee, EmployeeFields
from .ivr import IvrMenu, IvrMenuFields
from .queues import CallQueue, CallQueueFields
from .subjects import Change, EntityKind
from .tenants import Tenant, TenantFields

F = TypeVar("F", bound=Model)
E = TypeVar("E", bound=Model)

#: kind -> (fields a client gives, the stored entity)
ENTITY_MODELS: dict[EntityKind, tuple[type[Model], type[StoredEntity]]] = {
    EntityKind.EMPLOYEE: (EmployeeFields, Employee),
    EntityKind.QUEUE: (CallQueueFields, CallQueue),
    EntityKind.IVR_MENU: (IvrMenuFields, IvrMenu),
    EntityKind.CONFERENCE_ROOM: (ConferenceRoomFields, ConferenceRoom),
}

#: Fields a list may be searched and sorted by, per kind.
LIST_FIELDS: dict[EntityKind, tuple[str, ...]] = {
    EntityKind.EMPLOYEE: ("name", "number", "mobile", "email"),
    EntityKind.QUEUE: ("name", "number"),
    EntityKind.IVR_MENU: ("name", "number"),
    EntityKind.CONFERENCE_ROOM: ("name", "number"),
}


class CreateRequest(Message, Generic[F]):
    data: F


class GetRequest(Message):
    id: EntityId


class UpdateRequest(Message):
    """Partial update: ``changes`` is merged into the stored entity (nested objects merged
    key by key) and the result validated whole. ``revision`` is the one the client read."""

    id: EntityId
    revision: int = Field(ge=0)
    changes: dict[str, Any]


class DeleteRequest(Message):
    id: EntityId
    revision: int | None = Field(default=None, ge=0, description="Refuse if it changed since.")


class ListRequest(Message):
    search: str | None = Field(default=None, max_length=100)
    sort: str | None = None
    order: SortOrder = SortOrder.ASC
    offset: int = Field(default=0, ge=0)
    limit: int = Field(default=50, ge=1, le=500)


class TenantCreateRequest(Message):
    data: TenantFields


class TenantGetRequest(Message):
    pass


class TenantUpdateRequest(Message):
    revision: int = Field(ge=0)
    changes: dict[str, Any]


class TenantDeleteRequest(Message):
    purge: bool = Field(default=False, description="Also delete all of the tenant's objects.")


class TenantListRequest(Model):
    version: int = 1
    offset: int = Field(default=0, ge=0)
    limit: int = Field(default=100, ge=1, le=1000)


class SnapshotRequest(Message):
    pass


class Snapshot(Message):
    """A tenant's whole configuration, consistent with ``stream_sequence``: a consumer that
    starts cold applies it, then consumes events after that sequence."""

    tenant: Tenant
    employees: list[Employee]
    queues: list[CallQueue]
    ivr_menus: list[IvrMenu]
    conference_rooms: list[ConferenceRoom]
    stream_sequence: int


class EntityChanged(Message, Generic[E]):
    """Published on ``pbx.<tenant>.config.<kind>.<change>`` with the new state (none when
    deleted)."""

    kind: str
    change: Change
    entity_id: str
    revision: int
    entity: E | None = None
    occurred_at: datetime = Field(default_factory=utcnow)


EmployeeChanged = EntityChanged[Employee]
CallQueueChanged = EntityChanged[CallQueue]
IvrMenuChanged = EntityChanged[IvrMenu]
ConferenceRoomChanged = EntityChanged[ConferenceRoom]
TenantChanged = EntityChanged[Tenant]
