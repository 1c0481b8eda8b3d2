"""Embedded backend: chDB (the ClickHouse engine in-process), data kept under a directory.

chDB runs one embedded server per process, bound to the first data path opened: a second
store on another path in the same process fails until the first is closed. The store holds
several connections to it, each used by one thread at a time: one for inserts and other
statements, the others for reads (``readers``), so a search never waits behind an insert of a
whole batch (hundreds of milliseconds) and searches run side by side.

Inserts hand chDB the batch as an Arrow table (one Python list per column, no per-row
formatting or parsing: measured about 3x faster than the JSON rows of the server backend) read
by chDB's ``Python()`` table function, and the ``payload`` column is rendered by the engine
(``formatRowNoNewline('JSONCompactEachRow', ...)``): the same JSON array as
``queries.leg_payload``, which ``queries.leg_from_payload`` reads back.
"""

from __future__ import annotations

import json
import queue
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import chdb
import pyarrow as pa
from switchboard_contracts.cdr import CallRecord

from .arrow import ARROW_COLUMNS, arrow_batch, decode
from .base import INSERT_COLUMNS, SqlCallStore, StoreError, new_version
from .queries import PAYLOAD_V1, sql_int

#: Settings of every connection (chDB 26; the 18.16 server knows neither). Searches are a few
#: short key-range reads, each paying a fixed cost: the query condition cache only helps a
#: predicate that repeats (each search has its own) and costs a write per read, and the implicit
#: min-max projection is analysed for every aggregate. Measured at 1M rows: number and pair
#: searches about 1-2 ms faster.
SESSION_SETTINGS = ("use_query_condition_cache = 0", "optimize_use_implicit_projections = 0")

#: chdb ships without complete type hints: use it through Any.
_connect: Any = chdb.connect


class _Connection:
    """One chDB connection, used by one thread at a time."""

    def __init__(self, path: Path) -> None:
        self._lock = threading.Lock()
        self._conn: Any = _connect(str(path))
        for setting in SESSION_SETTINGS:
            self._conn.query(f"SET {setting}")

    def query(self, sql: str, fmt: str) -> str:
        with self._lock:
            if self._conn is None:
                raise StoreError("the chDB store is closed")
            try:
                result = self._conn.query(sql, fmt)
            except Exception as exc:
                raise StoreError(f"chDB: {exc}") from exc
            return bytes(result.bytes()).decode("utf-8")

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None


class ChdbCallStore(SqlCallStore):
    accepts_arrow = True

    def __init__(self, path: str | Path, readers: int = 2, compact_after: int = 0) -> None:
        if readers < 1:
            raise ValueError("the chDB store needs at least one reader connection")
        if compact_after < 0:
            raise ValueError("compact_after must be 0 (off) or a number of seconds")
        self.compact_after = compact_after
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        self._connections: list[_Connection] = []
        self._idle_readers: queue.SimpleQueue[_Connection] = queue.SimpleQueue()
        try:
            self._writer = self._open()
            for _ in range(readers):
                self._idle_readers.put(self._open())
        except Exception as exc:
            self.close()
            raise StoreError(f"chDB could not open {self.path}: {exc}") from exc

    def _open(self) -> _Connection:
        connection = _Connection(self.path)
        self._connections.append(connection)
        return connection

    def _read(self, sql: str, fmt: str) -> str:
        reader = self._idle_readers.get()  # waits while every reader is busy
        try:
            return reader.query(sql, fmt)
        finally:
            self._idle_readers.put(reader)

    def _select(self, sql: str) -> Sequence[Sequence[Any]]:
        text = self._read(sql, "JSONCompactEachRow")
        return [json.loads(line) for line in text.splitlines() if line]

    def _select_counted(self, sql: str) -> tuple[Sequence[Sequence[Any]], int | None]:
        document = json.loads(self._read(sql, "JSONCompact"))
        before_limit = document.get("rows_before_limit_at_least")
        return document["data"], None if before_limit is None else int(before_limit)

    def _command(self, sql: str) -> None:
        self._writer.query(sql, "TabSeparated")

    def insert(self, records: Sequence[CallRecord]) -> None:
        if not records:
            return
        self._insert_table(arrow_batch(records))

    def insert_encoded(self, data: bytes) -> None:
        """Insert a batch encoded by ``arrow.encode`` (in a parsing process)."""
        self._insert_table(decode(data))

    def _insert_table(self, table: pa.Table) -> None:
        arrow_batch = table  # read by name by Python(arrow_batch) below
        self._command(_ARROW_INSERT.format(version=sql_int(new_version())))
        del arrow_batch

    def _insert_rows(self, rows: list[list[Any]]) -> None:
        data = "\n".join(json.dumps(row, ensure_ascii=False, separators=(",", ":")) for row in rows)
        # (not used by insert, which sends Arrow; kept for the interface) many months at once:
        # lift the default cap of 100 partitions per insert.
        self._command(
            f"INSERT INTO calls_in ({INSERT_COLUMNS}) SETTINGS max_partitions_per_insert_block = 0"
            f" FORMAT JSONCompactEachRow\n{data}"
        )

    def close(self) -> None:
        """Close every connection (a query after this raises StoreError)."""
        for connection in self._connections:
            connection.close()


#: Optional strings are '' in the tables when absent (null in the payload), transfer 'none'.
_OPTIONAL = (
    "caller_account",
    "called_account",
    "queue_number",
    "ivr_number",
    "transferred_to",
    "recording_id",
)


def _select_expression(name: str) -> str:
    if name in ("start", "end"):
        return f"toDateTime({name}, 'UTC')"
    if name == "answer":
        return "if(answer IS NULL, NULL, toDateTime(assumeNotNull(answer), 'UTC'))"
    if name in _OPTIONAL:
        return f"ifNull({name}, '')"
    if name == "transfer":
        return "ifNull(transfer, 'none')"
    return name


_PAYLOAD = (
    f"formatRowNoNewline('JSONCompactEachRow', toUInt8({PAYLOAD_V1}), toUInt32(start), toUInt32(answer), toUInt32(end), caller_number,"
    " caller_name, called_number, called_name, caller_account, called_account, disposition, duration,"
    " billsec, queue_number, ivr_number, ivr_digits, transfer, transferred_to, recording_id)"
)
_ARROW_INSERT = (  # built from this module's constants only
    f"INSERT INTO calls_in ({', '.join(ARROW_COLUMNS)}, version, payload)"  # noqa: S608
    f" SELECT {', '.join(_select_expression(name) for name in ARROW_COLUMNS)}, {{version}}, {_PAYLOAD}"
    " FROM Python(arrow_batch)"
)
