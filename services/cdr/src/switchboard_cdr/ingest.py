"""The ingestion loop: a durable JetStream pull consumer batches call records (by count and by
time) into the store and acknowledges them only after the insert is committed. Bad records go
to the dead-letter stream and are terminated; a store outage leaves records in JetStream."""

from __future__ import annotations

import asyncio
import logging
import time

from nats.aio.msg import Msg
from nats.errors import TimeoutError as NatsTimeout
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from switchboard_contracts.subjects import CALL_RECORDS_STREAM

from .events import DeadLetters
from .service import CallHistoryService, parse_batch
from .store import StoreError

log = logging.getLogger(__name__)


class Ingestor:
    def __init__(
        self,
        js: JetStreamContext,
        service: CallHistoryService,
        dead: DeadLetters,
        consumer: str,
        batch_size: int,
        max_wait: float,
    ) -> None:
        self._js = js
        self._service = service
        self._dead = dead
        self._consumer = consumer
        self._batch_size = batch_size
        self._max_wait = max_wait
        self.committed = 0
        self.rejected = 0
        self.running = False
        self._stopping = False

    def stop(self) -> None:
        """Finish after the current batch (nats-py's fetch may swallow a task cancel)."""
        self._stopping = True

    async def run(self) -> None:
        subscription = await self._js.pull_subscribe(
            "",
            durable=self._consumer,
            stream=CALL_RECORDS_STREAM,
            config=ConsumerConfig(
                ack_policy=AckPolicy.EXPLICIT,
                deliver_policy=DeliverPolicy.ALL,
                ack_wait=120,
                max_ack_pending=max(4 * self._batch_size, 10_000),
                max_deliver=-1,  # a store outage must not turn good records into lost ones
            ),
        )
        self.running = True
        backoff = 0.5
        while not self._stopping:
            batch = await self._collect(subscription)
            if not batch:
                continue
            try:
                await self._write(batch)
                backoff = 0.5
            except StoreError as exc:
                log.warning("store unavailable (%s); %d records stay in JetStream", exc, len(batch))
                for msg in batch:
                    await msg.nak(delay=backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 30.0)

    async def _collect(self, subscription: JetStreamContext.PullSubscription) -> list[Msg]:
        batch: list[Msg] = []
        first_at: float | None = None
        while len(batch) < self._batch_size and not self._stopping:
            remaining = self._max_wait if first_at is None else self._max_wait - (time.monotonic() - first_at)
            if remaining <= 0:
                break
            try:
                msgs = await subscription.fetch(
                    min(self._batch_size - len(batch), 5000), timeout=max(remaining, 0.05)
                )
            except (TimeoutError, NatsTimeout):
                if first_at is None:
                    continue
                break
            if msgs and first_at is None:
                first_at = time.monotonic()
            batch.extend(msgs)
        if self._stopping:
            for msg in batch:  # not written: let JetStream hand them to the next run at once
                await msg.nak()
            return []
        return batch

    async def _write(self, batch: list[Msg]) -> None:
        parsed = parse_batch([(msg.subject, msg.data) for msg in batch])
        for rejected in parsed.rejected:
            msg = batch[rejected.index]
            await self._dead.publish(
                rejected.tenant_token, msg.subject, msg.data, rejected.reason, msg.metadata.sequence.stream
            )
            await msg.term()
            self.rejected += 1
        if parsed.records:
            await self._service.insert(parsed.records)
        for index in parsed.record_indexes:
            await batch[index].ack()
        self.committed += len(parsed.records)
