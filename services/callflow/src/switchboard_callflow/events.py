"""What the call-flow service publishes: call records (stream PBX_CALL_RECORDS) and device
registration changes (stream PBX_DEVICES). Records wait in an outbox while NATS is away."""

from __future__ import annotations

import asyncio
import logging
from collections import deque

from faststream.nats import NatsBroker
from nats.aio.client import Client as NATS
from nats.js.api import DiscardPolicy, StorageType, StreamConfig
from pydantic import BaseModel
from switchboard_contracts.cdr import CallRecord
from switchboard_contracts.devices import DeviceRegistration
from switchboard_contracts.runtime import ensure_stream
from switchboard_contracts.subjects import (
    CALL_RECORDS_STREAM,
    CALL_RECORDS_SUBJECTS,
    DEVICE_EVENTS_STREAM,
    DEVICE_EVENTS_SUBJECTS,
    call_leg_ended,
    device_registration_changed,
)

log = logging.getLogger("switchboard.callflow.events")

RECORDS_STREAM = StreamConfig(
    name=CALL_RECORDS_STREAM,
    subjects=CALL_RECORDS_SUBJECTS,
    storage=StorageType.FILE,
    duplicate_window=600,
    description="Finished call legs of every tenant (CallRecord)",
)
DEVICES_STREAM = StreamConfig(
    name=DEVICE_EVENTS_STREAM,
    subjects=DEVICE_EVENTS_SUBJECTS,
    storage=StorageType.FILE,
    discard=DiscardPolicy.OLD,
    max_age=7 * 24 * 3600,
    description="Phone registration changes of every tenant",
)


async def ensure_streams(nc: NATS) -> None:
    js = nc.jetstream()
    try:
        await js.stream_info(CALL_RECORDS_STREAM)  # the cdr service owns its settings
    except Exception:
        await ensure_stream(js, RECORDS_STREAM)
    await ensure_stream(js, DEVICES_STREAM)


class BusPublisher:
    """JetStream publishing with message ids (a retried record is stored once) and an
    outbox that drains in order when the bus is back."""

    def __init__(self, nc: NATS) -> None:
        self.nc = nc
        self._outbox: deque[tuple[str, bytes, str]] = deque()
        self._wake = asyncio.Event()

    @property
    def backlog(self) -> int:
        return len(self._outbox)

    def record(self, record: CallRecord) -> None:
        self._enqueue(call_leg_ended(record.tenant_id), record, f"leg-{record.leg_id}")

    def registration(self, change: DeviceRegistration) -> None:
        self._enqueue(
            device_registration_changed(change.tenant_id),
            change,
            f"reg-{change.tenant_id}-{change.number}-{change.occurred_at.timestamp()}",
        )

    def _enqueue(self, subject: str, message: BaseModel, msg_id: str) -> None:
        self._outbox.append((subject, message.model_dump_json().encode(), msg_id))
        self._wake.set()

    async def run(self) -> None:
        js = self.nc.jetstream()
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._outbox:
                subject, data, msg_id = self._outbox[0]
                try:
                    await js.publish(subject, data, headers={"Nats-Msg-Id": msg_id}, timeout=3)
                except Exception as exc:
                    log.warning("publishing %s failed (%s); %d waiting", subject, exc, len(self._outbox))
                    await asyncio.sleep(1)
                    continue
                self._outbox.popleft()


def document(broker: NatsBroker) -> None:
    """Declare what callflow publishes, for the AsyncAPI document (its device subjects are
    declared with their contracts, switchboard_contracts.devices.document)."""
    broker.publisher(
        "pbx.{tenant_id}.call.leg.ended",
        title="call record published",
        description=f"A finished call leg (stream {CALL_RECORDS_STREAM}).",
        schema=CallRecord,
    )
