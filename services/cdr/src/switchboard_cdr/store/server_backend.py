"""Server backend: a ClickHouse server over the native protocol (``clickhouse-driver``), as
run in docker-compose and Kubernetes and in CI (Debian's 18.16 package).

One connection, used under a lock. When it fails (server restarted, network cut), the
connection is dropped and the statement tried once more on a new one; a statement that still
fails raises StoreError. Retrying an insert is safe: legs are deduplicated by leg_id.
"""

from __future__ import annotations

import re
import socket
import threading
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar

from clickhouse_driver import Client
from clickhouse_driver import errors as ch_errors

from .base import INSERT_COLUMNS, SqlCallStore, StoreError

T = TypeVar("T")
_DATABASE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
_CONNECTION_ERRORS = (ch_errors.NetworkError, ch_errors.SocketTimeoutError, EOFError, OSError, socket.timeout)


class ServerCallStore(SqlCallStore):
    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 9000,
        database: str = "switchboard",
        user: str = "default",
        password: str = "",
        connect_timeout: float = 3.0,
        send_receive_timeout: float = 30.0,
        compact_after: int = 0,
    ) -> None:
        if not _DATABASE.fullmatch(database):
            raise ValueError(f"invalid database name {database!r}")
        if compact_after < 0:
            raise ValueError("compact_after must be 0 (off) or a number of seconds")
        self.compact_after = compact_after
        self.database = database
        self._options: dict[str, Any] = {
            "host": host,
            "port": port,
            "user": user,
            "password": password,
            "connect_timeout": connect_timeout,
            "send_receive_timeout": send_receive_timeout,
            "sync_request_timeout": connect_timeout,
        }
        self._lock = threading.Lock()
        self._client: Client | None = Client(database=database, **self._options)

    def _run(self, action: Callable[[Client], T]) -> T:
        with self._lock:
            if self._client is None:
                raise StoreError("the ClickHouse store is closed")
            for attempt in range(2):
                try:
                    return action(self._client)
                except _CONNECTION_ERRORS as exc:
                    self._client.disconnect()
                    if attempt:
                        raise StoreError(
                            f"ClickHouse at {self._options['host']}:{self._options['port']}: {exc}"
                        ) from exc
                except ch_errors.Error as exc:
                    message = str(getattr(exc, "message", exc)).split("Stack trace:")[0].strip()
                    raise StoreError(f"ClickHouse: {message}") from exc
            raise AssertionError("unreachable")

    def _select(self, sql: str) -> Sequence[Sequence[Any]]:
        rows: list[tuple[Any, ...]] = self._run(lambda client: client.execute(sql))
        return rows

    def _select_counted(self, sql: str) -> tuple[Sequence[Sequence[Any]], int | None]:
        def run(client: Client) -> tuple[Sequence[Sequence[Any]], int | None]:
            rows: list[tuple[Any, ...]] = client.execute(sql)
            info = client.last_query.profile_info if client.last_query is not None else None
            if info is None or not info.calculated_rows_before_limit:
                return rows, None
            return rows, int(info.rows_before_limit)

        return self._run(run)

    def _command(self, sql: str) -> None:
        self._run(lambda client: client.execute(sql))

    def _insert_rows(self, rows: list[list[Any]]) -> None:
        # The driver wants datetimes for DateTime columns (start, answer, end: columns 1, 4, 5).
        for row in rows:
            row[1] = datetime.fromtimestamp(row[1], UTC)
            if row[4] is not None:
                row[4] = datetime.fromtimestamp(row[4], UTC)
            row[5] = datetime.fromtimestamp(row[5], UTC)
        self._run(lambda client: client.execute(f"INSERT INTO calls_in ({INSERT_COLUMNS}) VALUES", rows))

    def migrate(self) -> None:
        with Client(database="default", **self._options) as admin:
            try:
                admin.execute(f"CREATE DATABASE IF NOT EXISTS `{self.database}`")
            except (*_CONNECTION_ERRORS, ch_errors.Error) as exc:
                raise StoreError(f"ClickHouse: cannot create database {self.database}: {exc}") from exc
        super().migrate()

    def close(self) -> None:
        with self._lock:
            if self._client is not None:
                self._client.disconnect()
                self._client = None
