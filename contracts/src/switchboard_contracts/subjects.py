"""NATS subjects. The tenant is always a token; events are past tense and live on JetStream
streams; request/reply subjects start with ``rpc.`` and lie outside every stream."""

from __future__ import annotations

from enum import StrEnum

from .common import TenantId


class EntityKind(StrEnum):
    EMPLOYEE = "employee"
    QUEUE = "queue"
    IVR_MENU = "ivr_menu"
    CONFERENCE_ROOM = "conference_room"


class Change(StrEnum):
    CREATED = "created"
    UPDATED = "updated"
    DELETED = "deleted"


class Action(StrEnum):
    CREATE = "create"
    GET = "get"
    UPDATE = "update"
    DELETE = "delete"
    LIST = "list"


#: JetStream stream holding every configuration change event of every tenant.
CONFIG_EVENTS_STREAM = "PBX_CONFIG"
CONFIG_EVENTS_SUBJECTS = ["pbx.*.config.>"]


def config_event(tenant_id: TenantId, kind: str, change: Change) -> str:
    """``pbx.<tenant>.config.<kind>.<created|updated|deleted>``; kind ``tenant`` included."""
    return f"pbx.{tenant_id}.config.{kind}.{change.value}"


def config_events_of(tenant_id: TenantId) -> str:
    """Filter subject for one tenant's configuration events."""
    return f"pbx.{tenant_id}.config.>"


# Request/reply ---------------------------------------------------------------------------

RPC_PREFIX = "rpc"


def config_rpc(tenant_id: TenantId, kind: str, action: Action) -> str:
    """``rpc.config.<tenant>.<kind>.<action>`` (kind: an EntityKind or ``tenant``)."""
    return f"{RPC_PREFIX}.config.{tenant_id}.{kind}.{action.value}"


#: Subscriber pattern for the config service (FastStream path parameters).
CONFIG_RPC_PATTERN = RPC_PREFIX + ".config.{tenant_id}.{kind}.{action}"


def config_snapshot(tenant_id: TenantId) -> str:
    return f"{RPC_PREFIX}.config.{tenant_id}.snapshot"


CONFIG_SNAPSHOT_PATTERN = RPC_PREFIX + ".config.{tenant_id}.snapshot"

#: Operator-wide query: every tenant (no tenant token: it lists them).
CONFIG_TENANT_LIST = f"{RPC_PREFIX}.config.tenants.list"


# Call history ----------------------------------------------------------------------------

#: JetStream stream of finished call legs (CallRecord), published by the call-flow service.
CALL_RECORDS_STREAM = "PBX_CALL_RECORDS"
CALL_RECORDS_SUBJECTS = ["pbx.*.call.leg.ended"]
#: Records the cdr service could not accept, with the reason (never redelivered).
CALL_RECORDS_DEAD_STREAM = "PBX_CALL_RECORDS_DEAD"
CALL_RECORDS_DEAD_SUBJECTS = ["deadletter.cdr.>"]


def call_leg_ended(tenant_id: TenantId) -> str:
    """``pbx.<tenant>.call.leg.ended``: one finished call leg (a CallRecord)."""
    return f"pbx.{tenant_id}.call.leg.ended"


def cdr_dead_letter(tenant_token: str) -> str:
    """``deadletter.cdr.<tenant>``; ``_unknown`` when the record had no readable tenant."""
    return f"deadletter.cdr.{tenant_token}"


def cdr_search(tenant_id: TenantId) -> str:
    """``rpc.cdr.<tenant>.calls.search``: CallSearchRequest -> CallSearchPage."""
    return f"{RPC_PREFIX}.cdr.{tenant_id}.calls.search"


CDR_SEARCH_PATTERN = RPC_PREFIX + ".cdr.*.calls.search"


# Media -----------------------------------------------------------------------------------

MEDIA_EVENTS_STREAM = "PBX_MEDIA"
MEDIA_EVENTS_SUBJECTS = ["pbx.*.media.>"]


def media_rpc(tenant_id: TenantId, action: str) -> str:
    """``rpc.media.<tenant>.sound.<create|get|list|delete|read>``."""
    return f"{RPC_PREFIX}.media.{tenant_id}.sound.{action}"


def media_event(tenant_id: TenantId, change: Change) -> str:
    """``pbx.<tenant>.media.sound.<created|deleted>`` with the sound file's metadata."""
    return f"pbx.{tenant_id}.media.sound.{change.value}"


def config_sound_usages(tenant_id: TenantId) -> str:
    """``rpc.config.<tenant>.sound.usages``: which IVR menus and queues use a sound file."""
    return f"{RPC_PREFIX}.config.{tenant_id}.sound.usages"


# Devices ---------------------------------------------------------------------------------

#: JetStream stream of device registration changes, published by the call-flow service.
DEVICE_EVENTS_STREAM = "PBX_DEVICES"
DEVICE_EVENTS_SUBJECTS = ["pbx.*.device.>"]


def device_registration_changed(tenant_id: TenantId) -> str:
    """``pbx.<tenant>.device.registration.changed``: a DeviceRegistration."""
    return f"pbx.{tenant_id}.device.registration.changed"


def callflow_registrations(tenant_id: TenantId) -> str:
    """``rpc.callflow.<tenant>.registrations``: RegistrationsRequest -> RegistrationsReply."""
    return f"{RPC_PREFIX}.callflow.{tenant_id}.registrations"


#: Subscriber pattern for the call-flow service (FastStream path parameter).
CALLFLOW_REGISTRATIONS_PATTERN = RPC_PREFIX + ".callflow.{tenant_id}.registrations"
