"""Streams the cdr service reads and writes: the call records it consumes and the dead letters
it publishes for records it can never store."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from faststream.nats import NatsBroker
from nats.js import JetStreamContext
from nats.js.api import DiscardPolicy, RetentionPolicy, StorageType, StreamConfig
from pydantic import BaseModel
from switchboard_contracts.cdr import CallRecord
from switchboard_contracts.runtime import ensure_stream
from switchboard_contracts.subjects import (
    CALL_RECORDS_DEAD_STREAM,
    CALL_RECORDS_DEAD_SUBJECTS,
    CALL_RECORDS_STREAM,
    CALL_RECORDS_SUBJECTS,
    cdr_dead_letter,
)

RECORDS = StreamConfig(
    name=CALL_RECORDS_STREAM,
    subjects=CALL_RECORDS_SUBJECTS,
    storage=StorageType.FILE,
    retention=RetentionPolicy.LIMITS,
    max_age=7 * 24 * 3600,  # a week of buffer while ClickHouse is down
    discard=DiscardPolicy.OLD,
    duplicate_window=600,
    description="Finished call legs (CallRecord) waiting to be written to call history",
)
DEAD = StreamConfig(
    name=CALL_RECORDS_DEAD_STREAM,
    subjects=CALL_RECORDS_DEAD_SUBJECTS,
    storage=StorageType.FILE,
    max_age=30 * 24 * 3600,
    description="Call records the cdr service rejected, with the reason",
)


async def ensure_streams(js: JetStreamContext) -> None:
    for config in (RECORDS, DEAD):
        await ensure_stream(js, config)


class DeadLetters:
    def __init__(self, js: JetStreamContext) -> None:
        self._js = js

    async def publish(self, tenant_token: str, subject: str, payload: bytes, reason: str, seq: int) -> None:
        body = {
            "version": 1,
            "tenant_id": tenant_token,
            "reason": reason,
            "subject": subject,
            "stream_sequence": seq,
            "payload": payload.decode("utf-8", errors="replace")[:65536],
            "rejected_at": datetime.now(UTC).isoformat(),
        }
        token = (
            tenant_token
            if tenant_token and "." not in tenant_token and "*" not in tenant_token
            else "_unknown"
        )
        await self._js.publish(
            cdr_dead_letter(token),
            json.dumps(body, ensure_ascii=False).encode(),
            headers={"Nats-Msg-Id": f"cdr-dead-{seq}"},
        )


class RejectedCallRecord(BaseModel):
    """What ``deadletter.cdr.<tenant>`` carries."""

    version: int = 1
    tenant_id: str
    reason: str
    subject: str
    stream_sequence: int
    payload: str
    rejected_at: datetime


def document(broker: NatsBroker) -> None:
    """Declare, for the AsyncAPI document, the records this service consumes (through a
    nats-py pull consumer, not a FastStream subscriber) and the dead letters it publishes."""
    broker.publisher(
        "pbx.{tenant_id}.call.leg.ended",
        title="call leg ended",
        description=f"One finished call leg (published by callflow) on stream {CALL_RECORDS_STREAM}; "
        "the cdr service batches them into call history (durable consumer cdr-ingest).",
        schema=CallRecord,
    )
    broker.publisher(
        "deadletter.cdr.{tenant_id}",
        title="call record rejected",
        description=f"A record the cdr service can never store, with the reason (stream {CALL_RECORDS_DEAD_STREAM}).",
        schema=RejectedCallRecord,
    )
