"""Cross-entity rules of SPEC sections 1-4 that one model alone cannot check: where an entity
points (its references) and how those follow a renumbering."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from switchboard_contracts.common import StoredEntity, is_internal_number
from switchboard_contracts.subjects import EntityKind
from switchboard_contracts.tenants import TenantSettings


@dataclass(frozen=True)
class Reference:
    field: str  # dotted path, e.g. "routing.busy_target" or "actions.2.target"
    number: str
    only: EntityKind | None = None  # the kind the number must be (queue agents: employees)


def references_of(kind: EntityKind, entity: StoredEntity) -> list[Reference]:
    """Every internal number this entity points at (external numbers are not references)."""
    data = entity.model_dump()
    refs: list[Reference] = []

    def add(field: str, value: Any, only: EntityKind | None = None) -> None:
        if isinstance(value, str) and is_internal_number(value):
            refs.append(Reference(field, value, only))

    if kind is EntityKind.EMPLOYEE:
        for name in ("no_answer_target", "busy_target", "unavailable_target"):
            add(f"routing.{name}", data["routing"][name])
    elif kind is EntityKind.QUEUE:
        for index, agent in enumerate(data["agents"]):
            add(f"agents.{index}", agent, EntityKind.EMPLOYEE)
        add("max_wait_target", data["max_wait_target"])
        add("no_agents_target", data["no_agents_target"])
    elif kind is EntityKind.IVR_MENU:
        for index, action in enumerate(data["actions"]):
            add(f"actions.{index}.target", action["target"])
        add("default_target", data["default_target"])
    return refs


def settings_references(settings: TenantSettings) -> list[Reference]:
    """Every tenant number the tenant's settings point at: the incoming routes' targets."""
    refs = [
        Reference(f"settings.incoming.routes.{index}.target", route.target)
        for index, route in enumerate(settings.incoming.routes)
    ]
    if settings.incoming.default_target is not None:
        refs.append(Reference("settings.incoming.default_target", settings.incoming.default_target))
    return refs


def renumbered_settings(data: dict[str, Any], old: str, new: str) -> dict[str, Any] | None:
    """Tenant settings (JSON form) with incoming routes to ``old`` going to ``new``; None if
    none did."""
    incoming = data["incoming"]
    routes = [{**r, "target": new} if r["target"] == old else r for r in incoming["routes"]]
    default = new if incoming["default_target"] == old else incoming["default_target"]
    if routes == incoming["routes"] and default == incoming["default_target"]:
        return None
    return {**data, "incoming": {**incoming, "routes": routes, "default_target": default}}


def renumbered(kind: EntityKind, data: dict[str, Any], old: str, new: str) -> dict[str, Any] | None:
    """The entity's data with every reference to ``old`` pointing at ``new``; None if none did."""
    changed = False

    def swap(value: Any) -> Any:
        nonlocal changed
        if value == old:
            changed = True
            return new
        return value

    result = dict(data)
    if kind is EntityKind.EMPLOYEE:
        result["routing"] = {k: swap(v) for k, v in data["routing"].items()}
    elif kind is EntityKind.QUEUE:
        result["agents"] = [swap(a) for a in data["agents"]]
        result["max_wait_target"] = swap(data["max_wait_target"])
        result["no_agents_target"] = swap(data["no_agents_target"])
    elif kind is EntityKind.IVR_MENU:
        result["actions"] = [{**a, "target": swap(a["target"])} for a in data["actions"]]
        result["default_target"] = swap(data["default_target"])
    return result if changed else None


def deep_merge(base: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    """Merge a partial update: nested objects key by key, lists and scalars replaced."""
    merged = dict(base)
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged
