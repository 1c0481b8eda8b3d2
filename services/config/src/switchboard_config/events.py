"""What the config service publishes: change events on the PBX_CONFIG JetStream stream."""

from __future__ import annotations

from faststream.nats import NatsBroker
from nats.js.api import DiscardPolicy, StorageType, StreamConfig
from pydantic import BaseModel
from switchboard_contracts import runtime
from switchboard_contracts.config import (
    CallQueueChanged,
    ConferenceRoomChanged,
    EmployeeChanged,
    IvrMenuChanged,
    TenantChanged,
)
from switchboard_contracts.subjects import CONFIG_EVENTS_STREAM, CONFIG_EVENTS_SUBJECTS

STREAM_CONFIG = StreamConfig(
    name=CONFIG_EVENTS_STREAM,
    subjects=CONFIG_EVENTS_SUBJECTS,
    storage=StorageType.FILE,
    discard=DiscardPolicy.OLD,
    max_age=30 * 24 * 3600,  # consumers that fall further behind start from a snapshot
    duplicate_window=120,
    description="Configuration change events of every tenant",
)


async def ensure_stream(broker: NatsBroker) -> None:
    await runtime.ensure_stream(broker.connection.jetstream(), STREAM_CONFIG)


class JetStreamEvents:
    """EventSink over the broker: deduplicated by message id on the stream."""

    def __init__(self, broker: NatsBroker) -> None:
        self._broker = broker

    async def publish(self, subject: str, event: BaseModel, msg_id: str) -> None:
        await self._broker.publish(
            event.model_dump(mode="json"),
            subject,
            stream=CONFIG_EVENTS_STREAM,
            headers={"Nats-Msg-Id": msg_id},
        )

    async def last_sequence(self) -> int:
        info = await self._broker.connection.jetstream().stream_info(CONFIG_EVENTS_STREAM)
        return int(info.state.last_seq)


EVENT_SCHEMAS: dict[str, type[BaseModel]] = {
    "tenant": TenantChanged,
    "employee": EmployeeChanged,
    "queue": CallQueueChanged,
    "ivr_menu": IvrMenuChanged,
    "conference_room": ConferenceRoomChanged,
}


def document(broker: NatsBroker) -> None:
    """Declare the change events for the AsyncAPI document (publishing goes through
    JetStreamEvents, which fills the tenant and change tokens of the subject)."""
    for kind, schema in EVENT_SCHEMAS.items():
        broker.publisher(
            f"pbx.{{tenant_id}}.config.{kind}.{{change}}",
            title=f"{kind} changed",
            description=f"A {kind.replace('_', ' ')} was created, updated or deleted (stream "
            f"{CONFIG_EVENTS_STREAM}); the payload carries the new state, none when deleted.",
            schema=schema,
        )
