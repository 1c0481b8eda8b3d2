"""Embedded backend: chDB (the ClickHouse engine in-process), data kept under a directory.

chDB runs one embedded server per process, bound to the first data path opened: a second
store on another path in the same process fails until the first is closed. Every use of the
session goes through one lock.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import chdb.session

from .base import INSERT_COLUMNS, SqlCallStore, StoreError

#: chdb ships without complete type hints: use it through Any.
_Session: Any = chdb.session.Session


class ChdbCallStore(SqlCallStore):
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        try:
            self._session: Any = _Session(str(self.path))
        except Exception as exc:
            raise StoreError(f"chDB could not open {self.path}: {exc}") from exc

    def _query(self, sql: str, fmt: str) -> str:
        with self._lock:
            if self._session is None:
                raise StoreError("the chDB store is closed")
            try:
                result = self._session.query(sql, fmt)
            except Exception as exc:
                raise StoreError(f"chDB: {exc}") from exc
            return bytes(result.bytes()).decode("utf-8")

    def _select(self, sql: str) -> Sequence[Sequence[Any]]:
        text = self._query(sql, "JSONCompactEachRow")
        return [json.loads(line) for line in text.splitlines() if line]

    def _select_counted(self, sql: str) -> tuple[Sequence[Sequence[Any]], int | None]:
        document = json.loads(self._query(sql, "JSONCompact"))
        before_limit = document.get("rows_before_limit_at_least")
        return document["data"], None if before_limit is None else int(before_limit)

    def _command(self, sql: str) -> None:
        self._query(sql, "TabSeparated")

    def _insert_rows(self, rows: list[list[Any]]) -> None:
        data = "\n".join(json.dumps(row, ensure_ascii=False, separators=(",", ":")) for row in rows)
        # One part per (tenant, month) partition is written: lift the default cap of 100.
        self._command(
            f"INSERT INTO calls_in ({INSERT_COLUMNS}) SETTINGS max_partitions_per_insert_block = 0"
            f" FORMAT JSONCompactEachRow\n{data}"
        )

    def close(self) -> None:
        with self._lock:
            if self._session is not None:
                self._session.close()
                self._session = None
