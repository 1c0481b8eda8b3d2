"""The ingestion loop: a durable JetStream pull consumer batches call records (by count and by
time) into the store and acknowledges them only after the insert is committed. Bad records go
to the dead-letter stream and are terminated; a store outage leaves records in JetStream.

Pull requests are sent by hand (``$JS.API.CONSUMER.MSG.NEXT.<stream>.<consumer>`` with
``{"batch": n, "expires": ns}``, replies to a plain inbox subscription) instead of through
nats-py's ``fetch``, which costs about 20 us a message (measured 36k msgs/s with fetch, 117k by
hand). At most one request is open at a time, for what the batch being collected still lacks,
and it expires within ``max_wait`` (a 408 status ends it early).

Collecting, parsing and writing overlap: a writer task inserts batch k while the parsing
processes (``prepare``) validate batch k+1 and the collector gathers the next (at most one
more waits in between), so the consumer's ``max_ack_pending`` must exceed five batches.
Guarantees:

- a record is acknowledged only after the insert holding it committed;
- a malformed record is dead-lettered with the reason and terminated, never retried, never
  blocking the others;
- a store error naks the whole batch with a growing delay (JetStream redelivers it, nothing is
  lost: ``max_deliver`` is unlimited);
- a redelivered record is stored again under the same leg_id, which every search and count sees
  once (see ``store``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time

from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import NotFoundError
from switchboard_contracts.subjects import CALL_RECORDS_STREAM

from .events import DeadLetters
from .prepare import Prepared, PrepareError, PreparePool
from .service import CallHistoryService, Parsed, cyclic_gc_paused, parse_batch
from .store import StoreError

log = logging.getLogger(__name__)

_ACK = b"+ACK"


def _nak(delay: float) -> bytes:
    """A negative acknowledgement: JetStream hands the message again after ``delay`` seconds."""
    return f'-NAK {{"delay": {int(delay * 1e9)}}}'.encode()


_TERM = b"+TERM"
_STATUS = "Status"
#: Longest life of one pull request (seconds): when the service stops, the records a request
#: already had delivered are nak'ed, and a short request ends soon after the last one is sent.
REQUEST_MAX_EXPIRES = 1.0
#: Batches collected but not yet written (the one being written not included).
QUEUED_BATCHES = 1


class Ingestor:
    def __init__(
        self,
        nc: NatsClient,
        js: JetStreamContext,
        service: CallHistoryService,
        dead: DeadLetters,
        consumer: str,
        batch_size: int,
        max_wait: float,
        stream: str = CALL_RECORDS_STREAM,
        pool: PreparePool | None = None,
    ) -> None:
        self._nc = nc
        self._js = js
        self._service = service
        self._dead = dead
        self._consumer = consumer
        self._stream = stream
        self._batch_size = batch_size
        self._max_wait = max_wait
        #: Parses batches in other processes (records encoded for the store); None: in a thread.
        self._pool = pool
        self.committed = 0
        self.rejected = 0
        self.running = False
        self._stopping = asyncio.Event()
        # collector state, touched by the subscription callback and the collector only
        self._buffer: list[Msg] = []
        self._first_at: float | None = None
        self._open = False  # a pull request is open
        self._expected = 0  # messages the open request may still deliver
        self._wake = asyncio.Event()
        self._request_deadline = 0.0

    def stop(self) -> None:
        """Finish: no more pull requests; records collected but not written are nak'ed (handed
        again at once to the next run), the batch being written is finished."""
        self._stopping.set()
        self._wake.set()

    def consumer_config(self) -> ConsumerConfig:
        return ConsumerConfig(
            durable_name=self._consumer,
            ack_policy=AckPolicy.EXPLICIT,
            deliver_policy=DeliverPolicy.ALL,
            ack_wait=120,
            # the batch being written, one parsed, one being parsed, one queued, the one being
            # collected, and some slack
            max_ack_pending=max((QUEUED_BATCHES + 5) * self._batch_size, 10_000),
            max_deliver=-1,  # a store outage must not turn good records into lost ones
        )

    async def _ensure_consumer(self) -> None:
        try:
            await self._js.consumer_info(self._stream, self._consumer)
        except NotFoundError:
            await self._js.add_consumer(self._stream, self.consumer_config())

    async def run(self) -> None:
        self._buffer, self._first_at, self._open, self._expected = [], None, False, 0
        await self._ensure_consumer()
        inbox = self._nc.new_inbox()
        sub = await self._nc.subscribe(
            inbox, cb=self._on_msg, pending_msgs_limit=4 * self._batch_size + 1000, pending_bytes_limit=-1
        )
        batches: asyncio.Queue[list[Msg]] = asyncio.Queue(maxsize=QUEUED_BATCHES)
        writer = asyncio.create_task(self._writer(batches))
        self.running = True
        try:
            await self._collect(inbox, batches, writer)
        finally:
            self.running = False
            await self._shutdown(sub, batches, writer)

    # Collecting ---------------------------------------------------------------------------------

    async def _on_msg(self, msg: Msg) -> None:
        headers = msg.headers
        if headers is not None and _STATUS in headers:
            # 408 request expired, 409 request ended (consumer changed, too many waiting): the
            # open request delivers nothing more.
            self._open = False
            self._wake.set()
            return
        if self._stopping.is_set():
            await self._nc.publish(msg.reply, b"-NAK")
            return
        self._buffer.append(msg)
        self._expected -= 1
        if self._first_at is None:
            self._first_at = time.monotonic()
            self._wake.set()  # starts the batch's clock
        if self._expected <= 0:
            self._open = False
            self._wake.set()
        elif len(self._buffer) >= self._batch_size:
            self._wake.set()

    async def _collect(
        self, inbox: str, batches: asyncio.Queue[list[Msg]], writer: asyncio.Task[None]
    ) -> None:
        request_subject = f"$JS.API.CONSUMER.MSG.NEXT.{self._stream}.{self._consumer}"
        while not self._stopping.is_set():
            if writer.done():
                writer.result()  # the writer failed: raise its error (the service restarts us)
                raise RuntimeError("the ingest writer stopped")
            now = time.monotonic()
            due = None if self._first_at is None else self._first_at + self._max_wait
            if len(self._buffer) >= self._batch_size or (due is not None and now >= due and self._buffer):
                batch = self._buffer[: self._batch_size]
                del self._buffer[: self._batch_size]
                self._first_at = time.monotonic() if self._buffer else None
                await batches.put(batch)  # waits while the writer is behind (back pressure)
                continue
            if not self._open:
                wanted = self._batch_size - len(self._buffer)
                expires = (
                    REQUEST_MAX_EXPIRES if due is None else min(max(due - now, 0.01), REQUEST_MAX_EXPIRES)
                )
                self._open, self._expected = True, wanted
                self._wake.clear()
                await self._nc.publish(
                    request_subject,
                    json.dumps({"batch": wanted, "expires": int(expires * 1e9)}).encode(),
                    reply=inbox,
                )
                self._request_deadline = time.monotonic() + expires + 1.0
            timeout = self._request_deadline - time.monotonic()
            if due is not None:
                timeout = min(timeout, due - time.monotonic())
            if timeout > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout)
            self._wake.clear()
            if self._open and time.monotonic() >= self._request_deadline:
                self._open = False  # its status was lost (reconnect): send another

    # Writing --------------------------------------------------------------------------------

    async def _writer(self, batches: asyncio.Queue[list[Msg]]) -> None:
        """Write the batches one after another. With parsing processes, a preparer task parses
        the next batch while this one is written."""
        ready: asyncio.Queue[tuple[list[Msg], Prepared | None]] = asyncio.Queue(maxsize=1)
        preparer = asyncio.create_task(self._preparer(batches, ready))
        backoff = 0.5
        try:
            while True:
                getter = asyncio.ensure_future(ready.get())
                await asyncio.wait({getter, preparer}, return_when=asyncio.FIRST_COMPLETED)
                if not getter.done():
                    getter.cancel()
                    preparer.result()  # raises what stopped it
                    raise RuntimeError("the ingest preparer stopped")
                batch, prepared = getter.result()
                try:
                    if await self._write(batch, prepared, backoff):
                        backoff = 0.5
                    else:
                        await asyncio.sleep(backoff)
                        backoff = min(backoff * 2, 30.0)
                finally:
                    batches.task_done()
        finally:
            preparer.cancel()
            while not ready.empty():  # parsed but not written: back to JetStream at once
                batch, _ = ready.get_nowait()
                with contextlib.suppress(Exception):
                    await self._reply_all([msg.reply for msg in batch], b"-NAK")

    async def _preparer(
        self, batches: asyncio.Queue[list[Msg]], ready: asyncio.Queue[tuple[list[Msg], Prepared | None]]
    ) -> None:
        """Hand each batch to the writer, parsed by the pool first when there is one; a batch
        the pool failed on is nak'ed here (it comes back a second later)."""
        while True:
            batch = await batches.get()
            if self._pool is None:
                await ready.put((batch, None))
                continue
            try:
                prepared = await self._pool.prepare([(msg.subject, msg.data) for msg in batch])
            except asyncio.CancelledError:  # stopping: back to JetStream at once
                with contextlib.suppress(Exception):
                    await self._reply_all([msg.reply for msg in batch], b"-NAK")
                raise
            except PrepareError as exc:
                log.warning("%s; %d records stay in JetStream", exc, len(batch))
                await self._reply_all([msg.reply for msg in batch], _nak(1.0))
                batches.task_done()
                continue
            await ready.put((batch, prepared))

    async def _write(self, batch: list[Msg], prepared: Prepared | None, backoff: float) -> bool:
        """Insert in a worker thread (the event loop keeps collecting) the batch parsed by the
        pool, or parse and insert it there; dead-letter the rejected records, then acknowledge
        the stored ones. When the store failed, nak them with a ``backoff`` delay instead and
        return False."""
        error: StoreError | None
        if prepared is not None:
            rejected_records, record_indexes = prepared.rejected, prepared.record_indexes
            error = (
                await asyncio.to_thread(self._insert_encoded, prepared.encoded) if record_indexes else None
            )
        else:
            parsed, error = await asyncio.to_thread(
                self._parse_and_insert, [(msg.subject, msg.data) for msg in batch]
            )
            rejected_records, record_indexes = parsed.rejected, parsed.record_indexes
        for rejected in rejected_records:
            msg = batch[rejected.index]
            await self._dead.publish(
                rejected.tenant_token, msg.subject, msg.data, rejected.reason, msg.metadata.sequence.stream
            )
            await self._nc.publish(msg.reply, _TERM)
            self.rejected += 1
        replies = [batch[index].reply for index in record_indexes]
        if error is not None:
            log.warning("store unavailable (%s); %d records stay in JetStream", error, len(replies))
            await self._reply_all(replies, _nak(backoff))
            return False
        await self._reply_all(replies, _ACK)
        self.committed += len(replies)
        return True

    def _insert_encoded(self, data: bytes) -> StoreError | None:
        try:
            self._service.insert_encoded_sync(data)
        except StoreError as exc:
            return exc
        return None

    def _parse_and_insert(self, items: list[tuple[str, bytes]]) -> tuple[Parsed, StoreError | None]:
        with cyclic_gc_paused():
            parsed = parse_batch(items)
            try:
                if parsed.records:
                    self._service.insert_sync(parsed.records)
            except StoreError as exc:
                return parsed, exc
            return parsed, None

    async def _reply_all(self, subjects: list[str], body: bytes) -> None:
        """Publish ``body`` to each subject (acks): one buffer of PUB commands when nats-py
        exposes its command queue (about 5 us a message less than one publish each)."""
        send = getattr(self._nc, "_send_command", None)
        if send is None or not subjects or not self._nc.is_connected:
            for subject in subjects:
                await self._nc.publish(subject, body)
            return
        tail = b" %d\r\n%s\r\n" % (len(body), body)
        for start in range(0, len(subjects), 5000):
            await send(
                b"".join(b"PUB " + subject.encode() + tail for subject in subjects[start : start + 5000])
            )
        await self._nc.flush()

    async def _shutdown(
        self, sub: Subscription, batches: asyncio.Queue[list[Msg]], writer: asyncio.Task[None]
    ) -> None:
        """Nak what was collected, let the writer finish what it holds, wait for the open request
        to end (its late deliveries are nak'ed by the callback), then leave the inbox."""
        self._stopping.set()
        pending = self._buffer
        self._buffer = []
        while not batches.empty():
            pending.extend(batches.get_nowait())
            batches.task_done()
        await self._reply_all([msg.reply for msg in pending], b"-NAK")
        with contextlib.suppress(Exception):
            if not writer.done():
                await asyncio.wait_for(batches.join(), 25)
        writer.cancel()
        with contextlib.suppress(BaseException):
            await writer
        deadline = time.monotonic() + REQUEST_MAX_EXPIRES + 0.5
        while self._open and (left := deadline - time.monotonic()) > 0:
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), left)
        with contextlib.suppress(Exception):
            await sub.unsubscribe()
            await self._nc.flush(timeout=5)
