"""The call store interface and what both ClickHouse backends share.

The methods are synchronous (both drivers block): the service calls them through
``asyncio.to_thread``. Each backend serialises its own use of the connection with a lock.
"""

from __future__ import annotations

import abc
import re
import time
from collections.abc import Sequence
from datetime import date, datetime
from typing import Any

from switchboard_contracts.cdr import CallRecord, CallSearchPage, ParsedQuery

from . import queries
from .queries import sql_int, sql_string, sql_tenant
from .schema import DDL, INSERT_COLUMN_NAMES, TABLES

#: Retention drops the tables that find calls first and the legs last: a drop cut short leaves
#: no call that a search finds without its legs.
DROP_ORDER = ("calls_by_number", "calls_by_pair", "calls", "calls_by_linkedid")
_PARTITION = re.compile(r"^\('([a-z0-9-]+)',\s*([0-9]{6})\)$")


class StoreError(Exception):
    """The store could not be reached or refused a statement (the service retries later)."""


class CallStore(abc.ABC):
    """Call history storage: one batch insert, the searches, retention."""

    @abc.abstractmethod
    def migrate(self) -> None:
        """Create the tables and views when missing (idempotent)."""

    @abc.abstractmethod
    def insert(self, records: Sequence[CallRecord]) -> None:
        """Insert one batch in one statement. Inserting a leg again (same leg_id) is harmless:
        every search and count sees it once."""

    @abc.abstractmethod
    def search(
        self,
        tenant_id: str,
        query: ParsedQuery,
        date_from: datetime,
        date_to: datetime,
        cursor: str | None = None,
        limit: int = 50,
    ) -> CallSearchPage:
        """One page of calls of ``tenant_id`` in ``[date_from, date_to)`` (aware datetimes; a
        linkedid search ignores them), newest first. ValueError for a bad cursor or range."""

    @abc.abstractmethod
    def partitions(self) -> dict[str, set[int]]:
        """Months (``YYYYMM``) each tenant has data in."""

    @abc.abstractmethod
    def drop_tenant_before(self, tenant_id: str, month: date) -> list[int]:
        """Retention: drop the tenant's partitions of the months before ``month``'s month from
        every table (``month`` is any day of the first month to keep); returns the months
        dropped (``YYYYMM``). Running it again finishes a drop that was cut short."""

    @abc.abstractmethod
    def ping(self) -> bool:
        """True when the store answers ``SELECT 1``."""

    @abc.abstractmethod
    def close(self) -> None: ...


def record_row(record: CallRecord, version: int) -> list[Any]:
    """A record as a row of ``calls_in`` in INSERT_COLUMN_NAMES order (times as epoch seconds,
    '' for absent optional strings, 'none' for no transfer, then the payload)."""
    return [
        record.tenant_id,
        queries.epoch(record.start),
        record.linkedid,
        record.leg_id,
        None if record.answer is None else queries.epoch(record.answer),
        queries.epoch(record.end),
        record.caller_number,
        record.caller_name,
        record.called_number,
        record.called_name,
        record.caller_account or "",
        record.called_account or "",
        record.disposition.value,
        record.duration,
        record.billsec,
        record.queue_number or "",
        record.ivr_number or "",
        record.ivr_digits,
        record.transfer.value if record.transfer is not None else "none",
        record.transferred_to or "",
        record.recording_id or "",
        version,
        queries.leg_payload(record),
    ]


def new_version() -> int:
    """Version of an insert: its time in microseconds (the newest copy of a leg wins)."""
    return time.time_ns() // 1000


class SqlCallStore(CallStore):
    """The logic both backends share, over three primitives: run a SELECT, run a statement,
    insert rows into ``calls``."""

    @abc.abstractmethod
    def _select(self, sql: str) -> Sequence[Sequence[Any]]: ...

    @abc.abstractmethod
    def _select_counted(self, sql: str) -> tuple[Sequence[Sequence[Any]], int | None]:
        """Rows of a SELECT with a LIMIT, and the number of rows before the LIMIT."""

    @abc.abstractmethod
    def _command(self, sql: str) -> None: ...

    @abc.abstractmethod
    def _insert_rows(self, rows: list[list[Any]]) -> None:
        """One INSERT of ``rows`` (INSERT_COLUMN_NAMES order) into ``calls_in``."""

    def migrate(self) -> None:
        for statement in DDL:
            self._command(statement)

    def insert(self, records: Sequence[CallRecord]) -> None:
        if not records:
            return
        version = new_version()
        self._insert_rows([record_row(record, version) for record in records])

    def search(
        self,
        tenant_id: str,
        query: ParsedQuery,
        date_from: datetime,
        date_to: datetime,
        cursor: str | None = None,
        limit: int = 50,
    ) -> CallSearchPage:
        return queries.search(
            self._select, self._select_counted, tenant_id, query, date_from, date_to, cursor, limit
        )

    def partitions(self) -> dict[str, set[int]]:
        """Months (``YYYYMM``) each tenant has data in, in any table (from system.parts)."""
        tables = ", ".join(sql_string(table) for table in TABLES)
        rows = self._select(
            "SELECT DISTINCT partition FROM system.parts"  # noqa: S608 - literals rendered by sql_string
            f" WHERE database = currentDatabase() AND table IN ({tables}) AND active"
        )
        found_months: dict[str, set[int]] = {}
        for (partition,) in rows:
            found = _PARTITION.match(str(partition))
            if found:
                found_months.setdefault(found.group(1), set()).add(int(found.group(2)))
        return found_months

    def tenant_months(self, tenant_id: str) -> list[int]:
        """Months (``YYYYMM``) the tenant has data in, in any table."""
        sql_tenant(tenant_id)  # validates the id
        return sorted(self.partitions().get(tenant_id, set()))

    def drop_tenant_before(self, tenant_id: str, month: date) -> list[int]:
        limit = month.year * 100 + month.month
        dropped = [m for m in self.tenant_months(tenant_id) if m < limit]
        for m in dropped:
            for table in DROP_ORDER:
                self._command(f"ALTER TABLE {table} DROP PARTITION ({sql_tenant(tenant_id)}, {sql_int(m)})")
        return dropped

    def ping(self) -> bool:
        try:
            return [list(row) for row in self._select("SELECT 1")] == [[1]]
        except Exception:
            return False


INSERT_COLUMNS = ", ".join(INSERT_COLUMN_NAMES)
