"""The config service's in-memory view of its bucket: loaded at start, kept current by its own
writes (the service is the bucket's only writer). Reads never wait for the bus."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from switchboard_contracts.common import StoredEntity
from switchboard_contracts.config import ENTITY_MODELS
from switchboard_contracts.subjects import EntityKind
from switchboard_contracts.tenants import Tenant


@dataclass
class TenantState:
    tenant: Tenant
    entities: dict[EntityKind, dict[str, StoredEntity]] = field(
        default_factory=lambda: {kind: {} for kind in EntityKind}
    )
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    def all_entities(self) -> list[tuple[EntityKind, StoredEntity]]:
        return [(kind, e) for kind, items in self.entities.items() for e in items.values()]

    def holder_of(self, number: str) -> tuple[EntityKind, StoredEntity] | None:
        for kind, entity in self.all_entities():
            if entity.number == number:
                return kind, entity
        return None

    def holder_of_mobile(self, mobile: str) -> StoredEntity | None:
        bare = mobile.lstrip("+")
        for entity in self.entities[EntityKind.EMPLOYEE].values():
            held = getattr(entity, "mobile", None)
            if held and held.lstrip("+") == bare:
                return entity
        return None


def describe(kind: EntityKind, entity: StoredEntity) -> str:
    """How an error names an object: ``queue 'Sales' (200)``."""
    label = kind.value.replace("_", " ").replace("ivr", "IVR")
    return f"{label} {entity.name!r} ({entity.number})"


def entity_from_store(kind: EntityKind, data: dict[str, Any], revision: int) -> StoredEntity:
    _, model = ENTITY_MODELS[kind]
    return model.model_validate({**data, "revision": revision})
