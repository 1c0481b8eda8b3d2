"""Config service logic: tenants and their telephony objects, validated and kept in the KV
store, every change announced. No broker or HTTP types here: the store and the event sink are
passed in."""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from pydantic import BaseModel, ValidationError
from switchboard_contracts.common import ErrorCode, Page, ServiceError, SortOrder, StoredEntity, utcnow
from switchboard_contracts.config import ENTITY_MODELS, LIST_FIELDS, EntityChanged, Snapshot
from switchboard_contracts.employees import Employee, generate_sip_password
from switchboard_contracts.subjects import Change, EntityKind, config_event
from switchboard_contracts.tenants import Tenant, TenantFields, TenantSettings

from .sealing import Sealer
from .state import TenantState, describe, entity_from_store
from .store import (
    Entry,
    KeyExists,
    StaleRevision,
    domain_key,
    entity_key,
    mobile_key,
    number_key,
    tenant_key,
)
from .validation import (
    Reference,
    deep_merge,
    references_of,
    renumbered,
    renumbered_settings,
    settings_references,
)

log = logging.getLogger(__name__)

READ_ONLY_FIELDS = ("id", "tenant_id", "revision", "created_at", "updated_at")


class Store(Protocol):
    def entries(self, prefix: str = "") -> Any: ...
    async def create(self, key: str, value: bytes) -> int: ...
    async def update(self, key: str, value: bytes, last: int) -> int: ...
    async def delete(self, key: str, last: int | None = None) -> None: ...
    async def release(self, key: str) -> None: ...


class EventSink(Protocol):
    async def publish(self, subject: str, event: BaseModel, msg_id: str) -> None: ...
    async def last_sequence(self) -> int: ...


def _new_id() -> str:
    return uuid.uuid4().hex


def _not_found(what: str, ident: str, field: str = "id") -> ServiceError:
    return ServiceError(ErrorCode.NOT_FOUND, f"{what} {ident!r} does not exist", field)


#: Asks the media service whether a sound file exists: True, False, or None when it cannot tell.
SoundLookup = Callable[[str, str], Awaitable[bool | None]]

SOUND_FIELDS: dict[EntityKind, tuple[str, ...]] = {
    EntityKind.IVR_MENU: ("greeting_sound_id",),
    EntityKind.QUEUE: ("music_on_hold_sound_id", "all_busy_sound_id"),
}


class ConfigService:
    def __init__(
        self, store: Store, events: EventSink, sealer: Sealer | None = None, sounds: SoundLookup | None = None
    ) -> None:
        self._store = store
        self._events = events
        self._sounds = sounds
        self._sealer = sealer or Sealer("")
        self._tenants: dict[str, TenantState] = {}
        self.ready = False

    # -- loading ------------------------------------------------------------------------

    async def load(self) -> None:
        """Read the whole bucket; drop claims that no object holds (left by a crash)."""
        claims: list[Entry] = []
        rows: list[Entry] = []
        async for entry in self._store.entries():
            if entry.key.startswith("tenant."):
                data = self._unseal_tenant(json.loads(entry.value))
                tenant = Tenant.model_validate({**data, "revision": entry.revision})
                self._tenants[tenant.id] = TenantState(tenant)
            elif entry.key.startswith("domain.") or ".number." in entry.key or ".mobile." in entry.key:
                claims.append(entry)
            else:
                rows.append(entry)
        for entry in rows:
            _, tenant_id, kind, _ = entry.key.split(".", 3)
            state = self._tenants.get(tenant_id)
            if state is None:
                continue
            data = json.loads(entry.value)
            if data.get("sip_password"):
                data["sip_password"] = self._sealer.unseal(data["sip_password"])
            entity = entity_from_store(EntityKind(kind), data, entry.revision)
            state.entities[EntityKind(kind)][entity.id] = entity
        for claim in claims:
            if not self._claim_is_held(claim):
                log.warning("releasing orphan claim %s", claim.key)
                await self._store.release(claim.key)
        self.ready = True

    def _claim_is_held(self, claim: Entry) -> bool:
        holder = claim.value.decode()
        if claim.key.startswith("domain."):
            state = self._tenants.get(holder)
            return state is not None and domain_key(state.tenant.sip_domain) == claim.key
        _, tenant_id, what, value = claim.key.split(".", 3)
        state = self._tenants.get(tenant_id)
        if state is None:
            return False
        kind, _, entity_id = holder.partition(":")
        entity = state.entities.get(EntityKind(kind), {}).get(entity_id) if kind else None
        if entity is None:
            return False
        held = getattr(entity, what, None)
        return held is not None and str(held).lstrip("+") == value

    # -- tenants ------------------------------------------------------------------------

    def _state(self, tenant_id: str) -> TenantState:
        state = self._tenants.get(tenant_id)
        if state is None:
            raise _not_found("tenant", tenant_id, "tenant_id")
        return state

    def get_tenant(self, tenant_id: str) -> Tenant:
        return self._state(tenant_id).tenant

    def list_tenants(self, offset: int, limit: int) -> Page[Tenant]:
        tenants = sorted((s.tenant for s in self._tenants.values()), key=lambda t: t.id)
        return Page[Tenant](
            items=tenants[offset : offset + limit], total=len(tenants), offset=offset, limit=limit
        )

    async def create_tenant(self, fields: TenantFields) -> Tenant:
        if fields.id in self._tenants:
            raise ServiceError(ErrorCode.CONFLICT, f"tenant {fields.id!r} already exists", "id")
        self._check_settings_references(None, fields.settings)  # a new tenant has no numbers yet
        await self._claim(
            domain_key(fields.sip_domain),
            fields.id,
            "sip_domain",
            f"SIP domain {fields.sip_domain!r} is already used by another tenant",
        )
        now = utcnow()
        tenant = Tenant(**fields.model_dump(), created_at=now, updated_at=now)
        try:
            revision = await self._store.create(tenant_key(tenant.id), self._tenant_bytes(tenant))
        except KeyExists:
            await self._store.release(domain_key(fields.sip_domain))
            raise ServiceError(ErrorCode.CONFLICT, f"tenant {fields.id!r} already exists", "id") from None
        except BaseException:
            await self._store.release(domain_key(fields.sip_domain))
            raise
        tenant = tenant.model_copy(update={"revision": revision})
        self._tenants[tenant.id] = TenantState(tenant)
        await self._announce(tenant.id, "tenant", Change.CREATED, tenant.id, revision, tenant)
        return tenant

    async def update_tenant(self, tenant_id: str, revision: int, changes: dict[str, Any]) -> Tenant:
        state = self._state(tenant_id)
        _refuse_read_only(changes)
        async with state.lock:
            current = state.tenant
            _check_revision(current.revision, revision)
            merged = deep_merge(
                current.model_dump(mode="json", exclude=set(READ_ONLY_FIELDS) - {"id"}), changes
            )
            fields = TenantFields.model_validate(merged)
            self._check_settings_references(state, fields.settings)
            new_domain = fields.sip_domain != current.sip_domain
            if new_domain:
                await self._claim(
                    domain_key(fields.sip_domain),
                    tenant_id,
                    "sip_domain",
                    f"SIP domain {fields.sip_domain!r} is already used by another tenant",
                )
            tenant = Tenant(**fields.model_dump(), created_at=current.created_at, updated_at=utcnow())
            try:
                new_rev = await self._store.update(
                    tenant_key(tenant_id), self._tenant_bytes(tenant), revision
                )
            except BaseException as exc:
                if new_domain:
                    await self._store.release(domain_key(fields.sip_domain))
                if isinstance(exc, StaleRevision):
                    raise _stale() from None
                raise
            if new_domain:
                await self._store.release(domain_key(current.sip_domain))
            state.tenant = tenant.model_copy(update={"revision": new_rev})
            await self._announce(tenant_id, "tenant", Change.UPDATED, tenant_id, new_rev, state.tenant)
            return state.tenant

    async def delete_tenant(self, tenant_id: str, purge: bool) -> None:
        state = self._state(tenant_id)
        async with state.lock:
            objects = state.all_entities()
            if objects and not purge:
                counts: dict[str, int] = {}
                for kind, _ in objects:
                    counts[kind.value] = counts.get(kind.value, 0) + 1
                listed = ", ".join(f"{n} {k}" for k, n in sorted(counts.items()))
                raise ServiceError(
                    ErrorCode.CONFLICT,
                    f"tenant {tenant_id!r} still has objects ({listed}); delete them or purge",
                    "purge",
                )
            for kind, entity in objects:
                await self._drop_entity(state, kind, entity, None)
            await self._store.delete(tenant_key(tenant_id))
            await self._store.release(domain_key(state.tenant.sip_domain))
            del self._tenants[tenant_id]
            await self._announce(tenant_id, "tenant", Change.DELETED, tenant_id, state.tenant.revision, None)

    # -- entities -----------------------------------------------------------------------

    def get(self, kind: EntityKind, tenant_id: str, entity_id: str) -> StoredEntity:
        entity = self._state(tenant_id).entities[kind].get(entity_id)
        if entity is None:
            raise _not_found(kind.value.replace("_", " "), entity_id)
        return entity

    def list_entities(
        self,
        kind: EntityKind,
        tenant_id: str,
        search: str | None = None,
        sort: str | None = None,
        order: SortOrder = SortOrder.ASC,
        offset: int = 0,
        limit: int = 50,
    ) -> Page[Any]:
        fields = LIST_FIELDS[kind]
        sort_by = sort or "number"
        if sort_by not in fields:
            raise ServiceError(
                ErrorCode.VALIDATION,
                f"cannot sort by {sort_by!r}; choose one of {', '.join(fields)}",
                "sort",
            )
        items = list(self._state(tenant_id).entities[kind].values())
        if search:
            needle = search.strip().casefold()
            items = [
                e for e in items
                if any(needle in str(getattr(e, f) or "").casefold() for f in fields)
            ]  # fmt: skip
        present = [e for e in items if getattr(e, sort_by) not in (None, "")]
        missing = [e for e in items if getattr(e, sort_by) in (None, "")]

        def sort_key(e: StoredEntity) -> tuple[Any, ...]:
            value = str(getattr(e, sort_by))
            # numbers sort numerically (99 before 100), names case-insensitively
            return (len(value), value) if sort_by == "number" else (value.casefold(), value)

        present.sort(key=sort_key, reverse=order is SortOrder.DESC)
        ordered = present + missing  # empty values last in both orders
        return Page[Any](
            items=ordered[offset : offset + limit], total=len(ordered), offset=offset, limit=limit
        )

    async def create(self, kind: EntityKind, tenant_id: str, data: dict[str, Any]) -> StoredEntity:
        fields_model, entity_model = ENTITY_MODELS[kind]
        state = self._state(tenant_id)
        fields = fields_model.model_validate(data)
        values = fields.model_dump()
        if kind is EntityKind.EMPLOYEE and values.get("sip_password") is None:
            values["sip_password"] = generate_sip_password()
        now = utcnow()
        entity = entity_model.model_validate(
            {
                **values,
                "id": _new_id(),
                "tenant_id": tenant_id,
                "created_at": now,
                "updated_at": now,
            }
        )
        await self._check_sounds(kind, entity, None)
        async with state.lock:
            self._check_references(state, kind, entity)
            claimed = await self._claim_numbers(state, kind, entity, None)
            key = entity_key(tenant_id, kind.value, entity.id)
            try:
                revision = await self._store.create(key, self._entity_bytes(entity))
            except BaseException:
                for claim in claimed:
                    await self._store.release(claim)
                raise
            entity = entity.model_copy(update={"revision": revision})
            state.entities[kind][entity.id] = entity
            await self._announce(tenant_id, kind.value, Change.CREATED, entity.id, revision, entity)
            return entity

    async def update(
        self,
        kind: EntityKind,
        tenant_id: str,
        entity_id: str,
        revision: int,
        changes: dict[str, Any],
    ) -> StoredEntity:
        fields_model, entity_model = ENTITY_MODELS[kind]
        state = self._state(tenant_id)
        _refuse_read_only(changes)
        async with state.lock:
            current = self.get(kind, tenant_id, entity_id)
            _check_revision(current.revision, revision)
            base = current.model_dump(mode="json", exclude=set(READ_ONLY_FIELDS))
            fields = fields_model.model_validate(deep_merge(base, changes))
            values = fields.model_dump()
            if kind is EntityKind.EMPLOYEE and values.get("sip_password") is None:
                values["sip_password"] = generate_sip_password()
            entity = entity_model.model_validate(
                {**values, "id": entity_id, "tenant_id": tenant_id,
                 "created_at": current.created_at, "updated_at": utcnow()}
            )  # fmt: skip
            self._check_references(state, kind, entity)
            await self._check_sounds(kind, entity, current)
            claimed = await self._claim_numbers(state, kind, entity, current)
            key = entity_key(tenant_id, kind.value, entity_id)
            try:
                new_rev = await self._store.update(key, self._entity_bytes(entity), revision)
            except BaseException as exc:
                for claim in claimed:
                    await self._store.release(claim)
                if isinstance(exc, StaleRevision):  # another writer got there first
                    raise _stale() from None
                raise
            for stale in self._released_claims(tenant_id, kind, current, entity):
                await self._store.release(stale)
            entity = entity.model_copy(update={"revision": new_rev})
            state.entities[kind][entity_id] = entity
            await self._announce(tenant_id, kind.value, Change.UPDATED, entity_id, new_rev, entity)
            old_number, new_number = current.number, entity.number
            if old_number != new_number:
                await self._carry_references(state, old_number, new_number)
            return entity

    async def delete(self, kind: EntityKind, tenant_id: str, entity_id: str, revision: int | None) -> None:
        state = self._state(tenant_id)
        async with state.lock:
            entity = self.get(kind, tenant_id, entity_id)
            if revision is not None:
                _check_revision(entity.revision, revision)
            referrers = self._referrers(state, entity.number)
            routed = [r for r in settings_references(state.tenant.settings) if r.number == entity.number]
            if referrers or routed:
                listed = "; ".join(
                    [f"{describe(k, e)} in {ref.field}" for k, e, ref in referrers]
                    + [f"{_describe_route(state.tenant.settings, ref)} in {ref.field}" for ref in routed]
                )
                raise ServiceError(
                    ErrorCode.CONFLICT,
                    f"{describe(kind, entity)} is still used by: {listed}",
                    "id",
                    [{"kind": k.value, "id": e.id, "name": e.name,
                      "number": e.number, "field": ref.field}
                     for k, e, ref in referrers]
                    + [{"kind": "tenant", "id": tenant_id, "name": state.tenant.name,
                        "number": None, "field": ref.field}
                       for ref in routed],
                )  # fmt: skip
            await self._drop_entity(state, kind, entity, revision)

    def sound_usages(self, tenant_id: str, sound_id: str) -> list[dict[str, Any]]:
        """Objects that use a sound file (the media service asks before deleting it)."""
        state = self._state(tenant_id)
        return [
            {
                "kind": kind.value,
                "id": entity.id,
                "name": entity.name,
                "number": entity.number,
                "field": field,
            }
            for kind, names in SOUND_FIELDS.items()
            for entity in state.entities[kind].values()
            for field in names
            if getattr(entity, field, None) == sound_id
        ]

    async def snapshot(self, tenant_id: str) -> Snapshot:
        state = self._state(tenant_id)
        async with state.lock:  # no write of this tenant between the sequence and the state
            sequence = await self._events.last_sequence()
            ents = state.entities
            return Snapshot(
                tenant_id=tenant_id,
                tenant=state.tenant,
                employees=list(ents[EntityKind.EMPLOYEE].values()),
                queues=list(ents[EntityKind.QUEUE].values()),
                ivr_menus=list(ents[EntityKind.IVR_MENU].values()),
                conference_rooms=list(ents[EntityKind.CONFERENCE_ROOM].values()),
                stream_sequence=sequence,
            )

    # -- internals ----------------------------------------------------------------------

    async def _check_sounds(
        self, kind: EntityKind, entity: StoredEntity, current: StoredEntity | None
    ) -> None:
        """Sound files set (or changed) on an IVR menu or queue must exist in the media service."""
        if self._sounds is None:
            return
        for field in SOUND_FIELDS.get(kind, ()):
            sound_id = getattr(entity, field, None)
            if sound_id is None or (current is not None and getattr(current, field, None) == sound_id):
                continue
            exists = await self._sounds(entity.tenant_id, sound_id)
            if exists is None:
                raise ServiceError(
                    ErrorCode.UNAVAILABLE,
                    "cannot check the sound file: the media service is not answering",
                    field,
                )
            if not exists:
                raise ServiceError(ErrorCode.VALIDATION, f"sound file {sound_id!r} does not exist", field)

    def _check_settings_references(self, state: TenantState | None, settings: TenantSettings) -> None:
        """Incoming routes must go to numbers the tenant has."""
        for ref in settings_references(settings):
            if state is None or state.holder_of(ref.number) is None:
                raise ServiceError(
                    ErrorCode.VALIDATION,
                    f"number {ref.number} does not exist in this tenant (incoming calls go to an "
                    "employee, queue, IVR menu or conference room)",
                    ref.field,
                )

    def _check_references(self, state: TenantState, kind: EntityKind, entity: StoredEntity) -> None:
        own = entity.number
        for ref in references_of(kind, entity):
            if ref.number == own:
                reason = (
                    "a forwarding target must not be the employee's own number"
                    if kind is EntityKind.EMPLOYEE
                    else f"{ref.number} is this {kind.value.replace('_', ' ')}'s own number"
                )
                raise ServiceError(ErrorCode.VALIDATION, reason, ref.field)
            held = state.holder_of(ref.number)
            if held is None:
                raise ServiceError(
                    ErrorCode.VALIDATION,
                    f"number {ref.number} does not exist in this tenant "
                    "(an external number has 9 or more digits, or starts with +)",
                    ref.field,
                )
            if ref.only is not None and held[0] is not ref.only:
                raise ServiceError(
                    ErrorCode.VALIDATION,
                    f"{ref.number} is {describe(*held)}, not an {ref.only.value}",
                    ref.field,
                )

    async def _claim(self, key: str, holder: str, field: str, message: str) -> None:
        try:
            await self._store.create(key, holder.encode())
        except KeyExists:
            raise ServiceError(ErrorCode.CONFLICT, message, field) from None

    async def _claim_numbers(
        self, state: TenantState, kind: EntityKind, entity: StoredEntity, current: StoredEntity | None
    ) -> list[str]:
        """Atomically claim the number (and an employee's mobile) unless already ours."""
        tenant_id = state.tenant.id
        holder = f"{kind.value}:{entity.id}"
        wanted: list[tuple[str, str, str]] = []
        number = entity.number
        if current is None or current.number != number:
            taken = state.holder_of(number)
            message = f"number {number} is already used by " + (
                describe(*taken) if taken else "another object of this tenant"
            )
            wanted.append((number_key(tenant_id, number), "number", message))
        mobile = getattr(entity, "mobile", None)
        if mobile and (
            current is None or (getattr(current, "mobile", None) or "").lstrip("+") != mobile.lstrip("+")
        ):
            other = state.holder_of_mobile(mobile)
            message = f"mobile {mobile} is already the mobile of " + (
                describe(EntityKind.EMPLOYEE, other) if other else "another employee"
            )
            wanted.append((mobile_key(tenant_id, mobile), "mobile", message))
        claimed: list[str] = []
        try:
            for key, field, message in wanted:
                await self._claim(key, holder, field, message)
                claimed.append(key)
        except BaseException:
            for key in claimed:
                await self._store.release(key)
            raise
        return claimed

    def _released_claims(
        self, tenant_id: str, kind: EntityKind, old: StoredEntity, new: StoredEntity | None
    ) -> list[str]:
        keys = []
        if new is None or old.number != new.number:
            keys.append(number_key(tenant_id, old.number))
        old_mobile = getattr(old, "mobile", None)
        if old_mobile and (
            new is None or (getattr(new, "mobile", None) or "").lstrip("+") != old_mobile.lstrip("+")
        ):
            keys.append(mobile_key(tenant_id, old_mobile))
        return keys

    def _referrers(self, state: TenantState, number: str) -> list[tuple[EntityKind, StoredEntity, Reference]]:
        found = []
        for kind, entity in state.all_entities():
            for ref in references_of(kind, entity):
                if ref.number == number and entity.number != number:
                    found.append((kind, entity, ref))
        return found

    async def _carry_references(self, state: TenantState, old: str, new: str) -> None:
        """Renumbering: every object that pointed at the old number now points at the new."""
        for kind, entity in list(state.all_entities()):
            data = entity.model_dump(mode="json", exclude=set(READ_ONLY_FIELDS))
            moved = renumbered(kind, data, old, new)
            if moved is None:
                continue
            _, entity_model = ENTITY_MODELS[kind]
            entity_id = entity.id
            updated = entity_model.model_validate(
                {**moved, "id": entity_id, "tenant_id": state.tenant.id,
                 "created_at": entity.created_at, "updated_at": utcnow()}
            )  # fmt: skip
            key = entity_key(state.tenant.id, kind.value, entity_id)
            rev = await self._store.update(key, self._entity_bytes(updated), entity.revision)
            updated = updated.model_copy(update={"revision": rev})
            state.entities[kind][entity_id] = updated
            await self._announce(state.tenant.id, kind.value, Change.UPDATED, entity_id, rev, updated)
        current = state.tenant
        settings = renumbered_settings(current.settings.model_dump(mode="json"), old, new)
        if settings is not None:  # incoming routes follow too
            tenant = Tenant.model_validate(
                {**current.model_dump(mode="json", exclude={"revision"}),
                 "settings": settings, "updated_at": utcnow()}
            )  # fmt: skip
            try:
                rev = await self._store.update(
                    tenant_key(current.id), self._tenant_bytes(tenant), current.revision
                )
            except StaleRevision:
                raise _stale() from None
            state.tenant = tenant.model_copy(update={"revision": rev})
            await self._announce(current.id, "tenant", Change.UPDATED, current.id, rev, state.tenant)

    async def _drop_entity(
        self, state: TenantState, kind: EntityKind, entity: StoredEntity, revision: int | None
    ) -> None:
        entity_id = entity.id
        try:
            await self._store.delete(entity_key(state.tenant.id, kind.value, entity_id), revision)
        except StaleRevision:
            raise _stale() from None
        for claim in self._released_claims(state.tenant.id, kind, entity, None):
            await self._store.release(claim)
        del state.entities[kind][entity_id]
        await self._announce(
            state.tenant.id,
            kind.value,
            Change.DELETED,
            entity_id,
            entity.revision,
            None,
        )

    async def _announce(
        self,
        tenant_id: str,
        kind: str,
        change: Change,
        entity_id: str,
        revision: int,
        entity: BaseModel | None,
    ) -> None:
        event: EntityChanged[Any] = EntityChanged(
            tenant_id=tenant_id, kind=kind, change=change, entity_id=entity_id,
            revision=revision, entity=entity,
        )  # fmt: skip
        msg_id = f"{tenant_id}.{kind}.{entity_id}.{change.value}.{revision}"
        try:
            await self._events.publish(config_event(tenant_id, kind, change), event, msg_id)
        except Exception:
            # The change is stored; consumers catch up through the snapshot query.
            log.exception("could not publish %s", msg_id)

    def _tenant_bytes(self, tenant: Tenant) -> bytes:
        data = json.loads(tenant.model_dump_json(exclude={"revision"}))
        trunk = data["settings"].get("trunk")
        if trunk and trunk.get("password"):  # sealed like the employees' SIP passwords
            trunk["password"] = self._sealer.seal(trunk["password"])
        return json.dumps(data, ensure_ascii=False).encode()

    def _unseal_tenant(self, data: dict[str, Any]) -> dict[str, Any]:
        trunk = (data.get("settings") or {}).get("trunk")
        if trunk and trunk.get("password"):
            trunk["password"] = self._sealer.unseal(trunk["password"])
        return data

    def _entity_bytes(self, entity: StoredEntity) -> bytes:
        data = json.loads(entity.model_dump_json(exclude={"revision"}))
        if isinstance(entity, Employee) and data.get("sip_password"):
            data["sip_password"] = self._sealer.seal(data["sip_password"])
        return json.dumps(data, ensure_ascii=False).encode()


def _describe_route(settings: TenantSettings, ref: Reference) -> str:
    """How an error names an incoming route: ``incoming route of DID 74951234567``."""
    parts = ref.field.split(".")
    if parts[-2:] == ["incoming", "default_target"]:
        return "the default incoming route"
    return f"incoming route of DID {settings.incoming.routes[int(parts[3])].did}"


def _stale() -> ServiceError:
    return ServiceError(
        ErrorCode.STALE_REVISION,
        "the object changed since you read it; read it again and retry with its new revision",
        "revision",
    )


def _check_revision(current: int, given: int) -> None:
    if current != given:
        raise _stale()


def _refuse_read_only(changes: dict[str, Any]) -> None:
    for name in READ_ONLY_FIELDS:
        if name in changes:
            raise ServiceError(ErrorCode.VALIDATION, f"{name} cannot be changed", name)


__all__ = ["ConfigService", "EventSink", "Store", "ValidationError"]
