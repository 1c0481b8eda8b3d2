"""Parsing in worker processes: the same split as ``parse_batch``, the accepted records encoded
for the store and read back unchanged, and a pool that recovers when its process dies."""

from __future__ import annotations

import asyncio
import json
import os
import signal
from typing import Any

import pytest
from switchboard_cdr.prepare import PrepareError, PreparePool, prepare_arrow
from switchboard_cdr.service import parse_batch
from switchboard_cdr.store.arrow import ARROW_COLUMNS, arrow_batch, decode

from tests.cdr.test_fast_paths import GOOD


def batch() -> list[tuple[str, bytes]]:
    missed = {**GOOD, "leg_id": "1700000000.2", "answer": None, "disposition": "no_answer", "billsec": 0,
              "recording_id": None, "start": "2023-11-15T01:13:20+03:00"}  # fmt: skip
    return [
        ("pbx.acme.call.leg.ended", json.dumps(GOOD).encode()),
        ("pbx.acme.call.leg.ended", b"{not json"),
        ("pbx.other.call.leg.ended", json.dumps(GOOD).encode()),  # another tenant's subject
        ("pbx.acme.call.leg.ended", json.dumps(missed).encode()),
        ("pbx.acme.call.leg.ended", json.dumps({**GOOD, "billsec": 61}).encode()),
    ]


def test_prepare_splits_like_parse_batch_and_encodes_the_accepted() -> None:
    items = batch()
    parsed = parse_batch(items)
    prepared = prepare_arrow(items)
    assert prepared.record_indexes == parsed.record_indexes == [0, 3]
    assert prepared.rejected == parsed.rejected
    assert [r.index for r in prepared.rejected] == [1, 2, 4]
    assert decode(prepared.encoded).to_pylist() == arrow_batch(parsed.records).to_pylist()
    first = decode(prepared.encoded).to_pylist()[1]
    assert list(first) == ARROW_COLUMNS
    assert (first["start"], first["answer"], first["disposition"]) == (1_700_000_000, None, "no_answer")


def test_prepare_with_nothing_accepted() -> None:
    prepared = prepare_arrow([("pbx.acme.call.leg.ended", b"[]")])
    assert (prepared.encoded, prepared.record_indexes, len(prepared.rejected)) == (b"", [], 1)


def _worker_pids(pool: PreparePool) -> list[int]:
    executor: Any = pool._pool
    return list(executor._processes)


def test_pool_parses_in_another_process_and_recovers_when_it_dies() -> None:
    async def scenario() -> None:
        pool = PreparePool(1)
        try:
            await pool.start()
            (pid,) = _worker_pids(pool)
            assert pid != os.getpid()
            prepared = await pool.prepare(batch())
            assert prepared.record_indexes == [0, 3]

            os.kill(pid, signal.SIGKILL)
            executor: Any = pool._pool
            for _ in range(100):  # the executor's manager thread notices the death
                if executor._broken:
                    break
                await asyncio.sleep(0.05)
            with pytest.raises(PrepareError):
                await pool.prepare(batch())
            again = await pool.prepare(batch())  # a new process
            assert again.record_indexes == [0, 3]
            assert _worker_pids(pool) != [pid]
        finally:
            pool.close()

    asyncio.run(scenario())
