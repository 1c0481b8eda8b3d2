"""What the media service publishes: sound files created and deleted (PBX_MEDIA stream), so
that other services (config's reference checks, callflow's playback) know them."""

from __future__ import annotations

from faststream.nats import NatsBroker
from nats.js import JetStreamContext
from nats.js.api import StorageType, StreamConfig
from switchboard_contracts import runtime
from switchboard_contracts.sounds import SoundFile
from switchboard_contracts.subjects import MEDIA_EVENTS_STREAM, MEDIA_EVENTS_SUBJECTS, Change, media_event

STREAM = StreamConfig(
    name=MEDIA_EVENTS_STREAM,
    subjects=MEDIA_EVENTS_SUBJECTS,
    storage=StorageType.FILE,
    max_age=30 * 24 * 3600,
    duplicate_window=120,
    description="Sound files created and deleted",
)


async def ensure_stream(js: JetStreamContext) -> None:
    await runtime.ensure_stream(js, STREAM)


class JetStreamEvents:
    def __init__(self, broker: NatsBroker) -> None:
        self._broker = broker

    async def publish(self, tenant_id: str, change: Change, sound: SoundFile) -> None:
        body = {
            "version": 1,
            "tenant_id": tenant_id,
            "change": change.value,
            "sound": sound.model_dump(mode="json"),
        }
        await self._broker.publish(
            body,
            media_event(tenant_id, change),
            stream=MEDIA_EVENTS_STREAM,
            headers={"Nats-Msg-Id": f"{tenant_id}.{sound.id}.{change.value}"},
        )


def document(broker: NatsBroker) -> None:
    broker.publisher(
        "pbx.{tenant_id}.media.sound.{change}",
        title="sound file changed",
        description=f"A sound file was created or deleted (stream {MEDIA_EVENTS_STREAM}).",
        schema=SoundFile,
    )
