"""The call store interface and what both ClickHouse backends share.

The methods are synchronous (both drivers block): the service calls them through
``asyncio.to_thread``. Each backend serialises its own use of the connection with a lock.
"""

# Every value in this module's SQL goes through the sql_* renderers (validated, escaped).
# ruff: noqa: S608

from __future__ import annotations

import abc
import time
from collections.abc import Sequence
from datetime import UTC, date, datetime
from typing import Any

from switchboard_contracts.cdr import CallRecord, CallSearchPage, ParsedQuery

from . import queries
from .queries import sql_datetime, sql_int, sql_string, sql_tenant
from .schema import DDL, INSERT_COLUMN_NAMES, TABLES

#: Retention deletes from the tables that find calls first and the legs last: a drop cut short
#: leaves no call that a search finds without its legs, and the months it left are still found
#: in ``calls_by_linkedid`` (which ``tenant_months`` reads), so running it again finishes it.
DROP_ORDER = ("calls_by_number", "calls_by_pair", "calls", "calls_by_linkedid")
#: How long retention waits for one table's DELETE mutation before giving up (it carries on in
#: the background; the next pass checks again).
MUTATION_TIMEOUT = 3600.0
#: MergeTree setting (ClickHouse 22.10 and later, chDB; not 18.16) that has the engine merge a
#: partition's parts once all of them are older than this many seconds: see ``compact_after``.
FORCE_MERGE_SETTING = "min_age_to_force_merge_seconds"
#: Settings of single tables where the engine has them as table settings (not 18.16).
#: ``calls_by_linkedid`` is read a call at a time, and reading one call decompresses the whole
#: compressed block around it (64 KiB at least by default, payloads of several granules):
#: measured at 10M rows, fetching the legs of 25 calls spread over 90 days took 12.8 ms with
#: the defaults and 4.8 ms with 4 KiB blocks (and 128-row granules, see ``schema``), +6 % disk.
TABLE_SETTINGS: dict[str, dict[str, int]] = {
    "calls_by_linkedid": {"min_compress_block_size": 4096, "max_compress_block_size": 65536},
}


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

    #: Whether the engine compacts old parts (``SqlCallStore.compact_after``): None before
    #: ``migrate``; False when off or on a server without the setting, such as 18.16, where
    #: ClickHouse's ordinary merges alone run.
    compacts: bool | None = None

    #: Whether ``insert_encoded`` takes batches encoded by ``arrow.encode`` (records parsed
    #: and encoded in another process, see ``prepare``).
    accepts_arrow = False

    def insert_encoded(self, data: bytes) -> None:
        """Insert a batch encoded by ``arrow.encode`` (only when ``accepts_arrow``)."""
        raise NotImplementedError(f"{type(self).__name__} takes records, not encoded batches")

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
        """Retention: delete the tenant's rows of the months before ``month``'s month from
        every table (``month`` is any day of the first month to keep); returns the months
        dropped (``YYYYMM``). Running it again finishes a drop that was cut short."""

    def drop_tenants_before(self, tenant_ids: Sequence[str], month: date) -> dict[str, list[int]]:
        """``drop_tenant_before`` for several tenants at once (the retention pass): the months
        dropped per tenant, tenants without any left out."""
        dropped = {tenant_id: self.drop_tenant_before(tenant_id, month) for tenant_id in tenant_ids}
        return {tenant_id: months for tenant_id, months in dropped.items() if months}

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

    #: Compaction: parts of a partition all older than this many seconds are merged into one
    #: by the engine itself (``FORCE_MERGE_SETTING``, set on every table by ``migrate``; 0: only
    #: ClickHouse's ordinary merges). Every search reads each part of the partitions it covers,
    #: and each part costs a key lookup about 0.2-0.5 ms in chDB: measured at 10M rows, 9 parts
    #: per lookup table against 1, a rare number's search 12.0 ms against 7.9. The price is
    #: write amplification: each compaction rewrites the partition (a year of a lookup table).
    compact_after = 0

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
        tuned = self._set_table_settings(
            {
                table: {FORCE_MERGE_SETTING: self.compact_after, **TABLE_SETTINGS.get(table, {})}
                for table in TABLES
            }
        )
        self.compacts = FORCE_MERGE_SETTING in tuned and self.compact_after > 0

    def _set_table_settings(self, settings: dict[str, dict[str, int]]) -> set[str]:
        """Each table's own settings, those the engine knows (18.16 knows none of them);
        returns the names it took."""
        names = sorted({name for table_settings in settings.values() for name in table_settings})
        known = {
            str(name)
            for (name,) in self._select(
                "SELECT name FROM system.merge_tree_settings"
                f" WHERE name IN ({', '.join(sql_string(name) for name in names)})"
            )
        }
        for table, table_settings in settings.items():
            assignments = [
                f"{name} = {sql_int(value)}" for name, value in table_settings.items() if name in known
            ]
            if assignments:
                self._command(f"ALTER TABLE {table} MODIFY SETTING {', '.join(assignments)}")
        return known

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
        """Months (``YYYYMM``) each tenant has data in (every leg is in ``calls_by_linkedid``,
        which retention empties last): a scan of two columns, for the retention pass."""
        rows = self._select("SELECT DISTINCT tenant_id, toYYYYMM(start) FROM calls_by_linkedid")
        found_months: dict[str, set[int]] = {}
        for tenant_id, month in rows:
            found_months.setdefault(str(tenant_id), set()).add(int(month))
        return found_months

    def tenant_months(self, tenant_id: str) -> list[int]:
        """Months (``YYYYMM``) the tenant has data in (a primary-key range read)."""
        rows = self._select(
            f"SELECT DISTINCT toYYYYMM(start) FROM calls_by_linkedid WHERE tenant_id = {sql_tenant(tenant_id)}"
        )
        return sorted(int(month) for (month,) in rows)

    def drop_tenant_before(self, tenant_id: str, month: date) -> list[int]:
        """Partitions hold every tenant's rows, so this is a DELETE mutation of the tenant's
        rows before the month on each table, waited for (``system.mutations``, which 18.16 has
        too). A mutation rewrites the parts holding such rows: run it rarely (whole months), and
        for many tenants at once (``drop_tenants_before``)."""
        limit = month.year * 100 + month.month
        dropped = [m for m in self.tenant_months(tenant_id) if m < limit]
        if dropped:
            self._delete_before([tenant_id], month)
        return dropped

    def drop_tenants_before(self, tenant_ids: Sequence[str], month: date) -> dict[str, list[int]]:
        """One DELETE per table for all the tenants (each mutation rewrites the parts it
        touches once, whatever the number of tenants)."""
        limit = month.year * 100 + month.month
        for tenant_id in tenant_ids:
            sql_tenant(tenant_id)  # validates every id before anything is deleted
        wanted = set(tenant_ids)
        dropped = {
            tenant_id: sorted(m for m in months if m < limit)
            for tenant_id, months in self.partitions().items()
            if tenant_id in wanted
        }
        dropped = {tenant_id: months for tenant_id, months in dropped.items() if months}
        if dropped:
            self._delete_before(sorted(dropped), month)
        return dropped

    def _delete_before(self, tenant_ids: Sequence[str], month: date) -> None:
        before = sql_datetime(datetime(month.year, month.month, 1, tzinfo=UTC))
        for table in DROP_ORDER:
            for start in range(0, len(tenant_ids), 1000):
                tenants = ", ".join(sql_tenant(tenant_id) for tenant_id in tenant_ids[start : start + 1000])
                self._command(
                    f"ALTER TABLE {table} DELETE WHERE tenant_id IN ({tenants}) AND start < {before}"
                )
            self._wait_for_mutations(table)

    def _wait_for_mutations(self, table: str, timeout: float = MUTATION_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        pause = 0.01
        while True:
            (pending,) = self._select(
                "SELECT count() FROM system.mutations"
                f" WHERE database = currentDatabase() AND table = {sql_string(table)} AND is_done = 0"
            )[0]
            if not int(pending):
                return
            if time.monotonic() > deadline:
                raise StoreError(f"retention: the DELETE on {table} is still running after {timeout:.0f} s")
            time.sleep(pause)
            pause = min(pause * 2, 1.0)

    def ping(self) -> bool:
        try:
            return [list(row) for row in self._select("SELECT 1")] == [[1]]
        except Exception:
            return False


INSERT_COLUMNS = ", ".join(INSERT_COLUMN_NAMES)
