"""Call recordings from Asterisk to the media service. Asterisk writes a recording as
``<recordings_dir>/<name>.wav``; once the file is finished it is staged in the NATS object
store bucket ``UPLOADS_BUCKET`` and the media service is asked to take it in under the
``recording_id`` the call record carries. The local file is deleted only after the media
service has it; while the media service is unreachable the file stays and the delivery is
tried again a few times with growing pauses, in the background (a call never waits for it).

Next to each recording in delivery lies ``<name>.delivery.json`` (tenant, recording id,
linkedid, leg): after a restart of the call-flow service ``resume`` finds the recordings
that were not delivered yet."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import struct
import uuid
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from nats.aio.client import Client as NATS
from nats.js.api import ObjectStoreConfig, StorageType
from nats.js.errors import BucketNotFoundError
from nats.js.object_store import ObjectStore
from switchboard_contracts.common import ErrorCode
from switchboard_contracts.sounds import UPLOADS_BUCKET

log = logging.getLogger("switchboard.callflow.recordings")

#: What the media service answers for call recordings (its handlers subscribe to
#: ``rpc.media.*.recording.create``; RecordingUploadRequest -> SoundFile).
RECORDING_CREATE = "rpc.media.{tenant_id}.recording.create"
#: A recording's name as given to Asterisk: letters, digits, ``._-``, optionally in folders.
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}(/[A-Za-z0-9][A-Za-z0-9._-]{0,127}){0,3}$")
SIDECAR_SUFFIX = ".delivery.json"
#: Answers of the media service after which another attempt cannot help (the file itself
#: was refused, or the request was malformed).
FINAL_ERRORS = {ErrorCode.VALIDATION, ErrorCode.BAD_REQUEST, ErrorCode.FORBIDDEN}
WAV_HEADER_BYTES = 44


def recording_id() -> str:
    """A new recording id: 32 lower-case hex digits. It is a valid SoundFileId (the media
    service's id of the file) and a valid cdr RecordingId (the call record's link to it)."""
    return uuid.uuid4().hex


@dataclass(frozen=True)
class Delivery:
    tenant_id: str
    recording_id: str
    name: str
    linkedid: str
    leg_id: str


class RecordingDelivery:
    """Hands Asterisk's recordings to the media service.

    ``deliver`` does the whole job and says whether the media service took the file;
    ``submit`` runs it as a background task (what a call uses). ``retry_delays`` are the
    pauses before the second, third, ... attempt."""

    def __init__(
        self,
        connection: Callable[[], NATS],
        recordings_dir: str,
        *,
        retry_delays: Sequence[float] = (2, 5, 15, 30, 60, 120, 300),
        request_timeout: float = 120,
        finish_timeout: float = 60,
        poll_interval: float = 0.25,
        settle_time: float = 10.0,
        concurrency: int = 4,
    ) -> None:
        self._connection = connection
        self.directory = Path(recordings_dir)
        self.retry_delays = tuple(retry_delays)
        self.request_timeout = request_timeout
        self.finish_timeout = finish_timeout
        self.poll_interval = poll_interval
        self.settle_time = settle_time
        self._slots = asyncio.Semaphore(concurrency)
        self._tasks: set[asyncio.Task[bool]] = set()
        self._in_flight: set[str] = set()

    @property
    def pending(self) -> int:
        """Recordings waiting for delivery or being delivered now."""
        return len(self._in_flight)

    def path_of(self, name: str) -> Path:
        """``<recordings_dir>/<name>.wav``; a name that could leave the folder is refused."""
        if not NAME_PATTERN.fullmatch(name) or ".." in name.split("/"):
            raise ValueError(f"{name!r} is not a valid recording name")
        return self.directory / f"{name}.wav"

    def submit(
        self, tenant_id: str, recording_id: str, name: str, linkedid: str, leg_id: str
    ) -> asyncio.Task[bool]:
        """Deliver in the background; the task is kept until it ends."""
        task = asyncio.create_task(self.deliver(tenant_id, recording_id, name, linkedid, leg_id))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def resume(self) -> list[asyncio.Task[bool]]:
        """Submit again every recording whose delivery had not ended at the last stop (its
        sidecar is still there); their background tasks."""
        found: list[asyncio.Task[bool]] = []
        for sidecar in sorted(self.directory.rglob(f"*{SIDECAR_SUFFIX}")):
            try:
                item = Delivery(**json.loads(sidecar.read_text()))
            except (OSError, ValueError, TypeError) as exc:
                log.warning("unreadable %s (%s); removed", sidecar, exc)
                _forget(sidecar)
                continue
            if item.name not in self._in_flight:
                found.append(
                    self.submit(item.tenant_id, item.recording_id, item.name, item.linkedid, item.leg_id)
                )
        if found:
            log.info("%d recordings from before the restart are delivered again", len(found))
        return found

    async def close(self) -> None:
        """Stop the background deliveries (their files and sidecars stay for ``resume``)."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def deliver(self, tenant_id: str, recording_id: str, name: str, linkedid: str, leg_id: str) -> bool:
        """Wait until Asterisk finished ``<name>.wav``, hand it to the media service (with
        retries) and delete it. True when the media service has the recording."""
        item = Delivery(tenant_id, recording_id, name, linkedid, leg_id)
        try:
            path = self.path_of(name)
        except ValueError as exc:
            log.error("recording %s of %s: %s", recording_id, tenant_id, exc)
            return False
        if name in self._in_flight:
            log.info("recording %s is being delivered already", name)
            return False
        self._in_flight.add(name)
        try:
            return await self._deliver(item, path)
        except asyncio.CancelledError:
            log.info("recording %s: delivery stopped; resumed at the next start", name)
            raise
        except Exception:
            log.exception("recording %s of %s: delivery failed", recording_id, tenant_id)
            return False
        finally:
            self._in_flight.discard(name)

    async def _deliver(self, item: Delivery, path: Path) -> bool:
        sidecar = path.with_name(path.name.removesuffix(".wav") + SIDECAR_SUFFIX)
        with contextlib.suppress(OSError):  # without it only a restart loses the retry
            await asyncio.to_thread(_write_json, sidecar, asdict(item))
        state, data_bytes = await self._finished(path)
        if state == "missing":
            log.warning("recording %s of %s: %s did not appear", item.recording_id, item.tenant_id, path)
            _forget(sidecar)
            return False
        if state == "growing":  # still recorded: left (with its sidecar) for the next start
            log.warning("recording %s of %s: %s still grows after %.0f s; not delivered now",
                        item.recording_id, item.tenant_id, path, self.finish_timeout)  # fmt: skip
            return False
        if data_bytes == 0:
            log.info("recording %s of %s holds no audio; dropped", item.recording_id, item.tenant_id)
            _forget(path, sidecar)
            return False
        attempts = len(self.retry_delays) + 1
        for attempt in range(1, attempts + 1):
            async with self._slots:
                outcome, reason = await self._attempt(item, path)
            if outcome == "ok":
                _forget(path, sidecar)
                log.info(
                    "recording %s of %s (call %s) delivered", item.recording_id, item.tenant_id, item.linkedid
                )
                return True
            if outcome == "refused":
                # kept for the operator; the sidecar goes so a restart does not try again
                log.error("recording %s of %s refused by the media service: %s; kept as %s",
                          item.recording_id, item.tenant_id, reason, path)  # fmt: skip
                _forget(sidecar)
                return False
            if attempt < attempts:
                delay = self.retry_delays[attempt - 1]
                log.warning("recording %s of %s not delivered (%s); attempt %d of %d in %g s",
                            item.recording_id, item.tenant_id, reason, attempt + 1, attempts, delay)  # fmt: skip
                await asyncio.sleep(delay)
        log.error("recording %s of %s not delivered after %d attempts; kept as %s for the next start",
                  item.recording_id, item.tenant_id, attempts, path)  # fmt: skip
        return False

    async def _finished(self, path: Path) -> tuple[str, int]:
        """Wait until Asterisk closed the file: it exists and its size stays the same, with
        a header that covers the whole file (Asterisk writes the sizes when it closes it) or
        for ``settle_time``. ("done", bytes of audio), ("missing", 0) when it never came, or
        ("growing", 0) when it was still written at ``finish_timeout``."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.finish_timeout
        last_size = -1
        stable_since = loop.time()
        while True:
            state = await asyncio.to_thread(_wav_state, path)
            now = loop.time()
            if state is not None:
                size, riff_size, data_bytes = state
                if size != last_size:
                    last_size, stable_since = size, now
                else:
                    complete = riff_size is not None and riff_size + 8 in (size, size - 1)
                    if complete and data_bytes is not None:
                        return "done", data_bytes
                    if now - stable_since >= self.settle_time:
                        return "done", max(0, size - WAV_HEADER_BYTES)
            if now >= deadline:
                return ("missing" if state is None else "growing"), 0
            await asyncio.sleep(self.poll_interval)

    async def _attempt(self, item: Delivery, path: Path) -> tuple[str, str]:
        """One try: ("ok" | "refused" | "retry", why)."""
        nc = self._connection()
        if nc is None or not nc.is_connected:
            return "retry", "the bus is not connected"
        upload = uuid.uuid4().hex
        store: ObjectStore | None = None
        try:
            store = await _uploads(nc)
            with path.open("rb") as handle:  # nats-py reads it in a thread
                await store.put(upload, handle)
        except Exception as exc:
            await _unstage(store, upload)
            return "retry", f"staging failed: {_describe(exc)}"
        body = {
            "tenant_id": item.tenant_id,
            "upload": upload,
            "id": item.recording_id,
            "linkedid": item.linkedid,
            "leg_id": item.leg_id,
        }
        try:
            reply = await nc.request(
                RECORDING_CREATE.format(tenant_id=item.tenant_id),
                json.dumps(body).encode(),
                timeout=self.request_timeout,
            )
        except TimeoutError:
            # the media service may still be working on it (it removes the staged copy
            # itself); a later attempt that finds the id taken counts as delivered
            return "retry", f"no answer in {self.request_timeout:.0f} s"
        except Exception as exc:  # no responders, connection lost: nobody took it
            await _unstage(store, upload)
            return "retry", _describe(exc)
        return _judge(reply.data, item.recording_id)


async def _unstage(store: ObjectStore | None, upload: str) -> None:
    """Remove a staged copy nobody took (else it waits for the bucket's TTL)."""
    if store is not None:
        with contextlib.suppress(Exception):
            await store.delete(upload)


def _describe(exc: Exception) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _judge(data: bytes, recording: str) -> tuple[str, str]:
    try:
        answer: dict[str, Any] = json.loads(data)
    except ValueError:
        return "retry", "an unreadable answer"
    if answer.get("ok"):
        return "ok", ""
    error = answer.get("error") or {}
    code, message = error.get("code"), str(error.get("message", "unknown error"))
    if code == ErrorCode.CONFLICT and error.get("field") == "id":
        return "ok", f"{recording} was taken in by an earlier attempt"
    if code in FINAL_ERRORS:
        return "refused", message
    return "retry", message


async def _uploads(nc: NATS) -> ObjectStore:
    js = nc.jetstream()
    try:
        return await js.object_store(UPLOADS_BUCKET)
    except BucketNotFoundError:  # created by the media service or the gateway, else by us
        config = ObjectStoreConfig(ttl=3600, storage=StorageType.FILE, description="Uploads in transit")
        try:
            return await js.create_object_store(UPLOADS_BUCKET, config)
        except Exception:
            return await js.object_store(UPLOADS_BUCKET)


def _wav_state(path: Path) -> tuple[int, int | None, int | None] | None:
    """(file size, the RIFF size field, the data chunk's size field) or None when the file is
    not there. The size fields are None when the header cannot be read (yet)."""
    try:
        with path.open("rb") as handle:
            size = path.stat().st_size
            head = handle.read(4096)
    except FileNotFoundError:
        return None
    if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
        return size, None, None
    riff_size = struct.unpack_from("<I", head, 4)[0]
    offset, data_bytes = 12, None
    while offset + 8 <= len(head):
        chunk, chunk_size = head[offset : offset + 4], struct.unpack_from("<I", head, offset + 4)[0]
        if chunk == b"data":
            data_bytes = chunk_size
            break
        offset += 8 + chunk_size + (chunk_size & 1)
    return size, riff_size, data_bytes


def _write_json(path: Path, data: dict[str, str]) -> None:
    partial = path.with_name(path.name + ".part")
    partial.write_text(json.dumps(data))
    partial.rename(path)


def _forget(*paths: Path) -> None:
    for path in paths:
        try:
            path.unlink(missing_ok=True)
        except OSError as exc:
            log.warning("could not remove %s: %s", path, exc)
