"""Parsing batches of call records in a process of their own.

Validating a record and building its Arrow row is pure Python (about 11 us a record: validation
8, the Arrow batch 3), and in the service's process it holds the GIL that the event loop needs
to take in records, acknowledge them and answer searches. Measured with ingest at full speed
(1M rows, both cores busy): searches over the bus at 128 ms median with parsing in a thread,
77 ms with the parsing process; draining a backlog at 10M rows 28,088 -> 38,180 records/s (with
the other changes of that commit). A ``PreparePool`` runs ``prepare_arrow`` in worker processes
instead (``SB_CDR_PARSE_WORKERS``, spawned, so they never inherit chDB or the event loop) and
hands back the accepted records already encoded for the store (``store.arrow.encode``), the
indexes of the messages they came from, and the rejected ones with their reasons.

Workers die with the service's process, however it ends (``PR_SET_PDEATHSIG``). A worker
that dies (killed, out of memory) breaks the pool: the batch being parsed fails with
``PrepareError``, which the ingestor treats like a store outage (the batch is nak'ed and comes
back), and the next batch starts a new pool.
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import multiprocessing
import os
import signal
import sys
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass

from .service import Rejected, cyclic_gc_paused, parse_batch
from .store.arrow import encode

log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1  # linux/prctl.h


class PrepareError(Exception):
    """The parsing process failed: the batch must be tried again."""


@dataclass(frozen=True)
class Prepared:
    """A parsed batch: the accepted records encoded for the store, where they came from in the
    batch, and the rejected ones."""

    encoded: bytes
    record_indexes: list[int]
    rejected: list[Rejected]


def prepare_arrow(items: Sequence[tuple[str, bytes]]) -> Prepared:
    """Validate raw (subject, payload) messages like ``parse_batch`` and encode the accepted
    records with ``store.arrow.encode`` (runs in a worker process)."""
    with cyclic_gc_paused():
        parsed = parse_batch(items)
        encoded = encode(parsed.records) if parsed.records else b""
        return Prepared(encoded, parsed.record_indexes, parsed.rejected)


def _worker_started(parent: int) -> None:
    """Initializer of each worker: the kernel kills it when the service's process dies, even
    by SIGKILL (a spawned worker would otherwise live on, and with it the resource tracker);
    Ctrl-C is the service's to handle, not the worker's."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if sys.platform == "linux":
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # it died before prctl took effect
        os._exit(1)


def _ping() -> None:
    """A no-op task: waits until a worker runs."""


class PreparePool:
    def __init__(self, workers: int) -> None:
        if workers < 1:
            raise ValueError("a prepare pool needs at least one worker")
        self._workers = workers
        self._pool: ProcessPoolExecutor | None = None

    def _ensure(self) -> ProcessPoolExecutor:
        if self._pool is None:
            self._pool = ProcessPoolExecutor(
                self._workers,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_worker_started,
                initargs=(os.getpid(),),
            )
        return self._pool

    async def start(self) -> None:
        """Start the workers now (spawning takes about a second), not at the first batch."""
        await asyncio.get_running_loop().run_in_executor(self._ensure(), _ping)

    async def prepare(self, items: Sequence[tuple[str, bytes]]) -> Prepared:
        pool = self._ensure()
        try:
            return await asyncio.get_running_loop().run_in_executor(pool, prepare_arrow, items)
        except BrokenProcessPool as exc:
            log.warning("a parsing process died; starting new ones")
            self._pool = None
            pool.shutdown(wait=False, cancel_futures=True)
            raise PrepareError("the parsing process died") from exc

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
