"""The call-history schema: one DDL text for both backends.

It stays within what ClickHouse 18.16 (Debian 12's ``clickhouse-server``) runs and what chDB
(ClickHouse 26.x) runs: (Replacing)MergeTree with PARTITION BY / ORDER BY, DateTime('UTC'),
Nullable, Enum8, the Null engine, ``CREATE MATERIALIZED VIEW ... TO``, ARRAY JOIN. No
LowCardinality, DateTime64, TTL, skip indexes or server-side query parameters.

Writes go to ``calls_in`` (engine Null: it keeps nothing); materialized views fan each insert
out to four tables, keyed by tenant first (partitions: ``PARTITION``, ``LOOKUP_PARTITION``):

- ``calls``: one row per leg with every field as a column (for Grafana and the date-only
  search), ordered by ``(tenant_id, start, linkedid, leg_id)``.
- ``calls_by_number``: one row per distinct number on a leg (caller and called number, and the
  employee accounts on each side), without the leading ``+``; ordered by
  ``(tenant_id, number, start, linkedid, leg_id)``.
- ``calls_by_pair``: answered legs only, one row per distinct (caller side, called side) pair of
  those numbers, normalised so that ``number_a < number_b``; ordered by
  ``(tenant_id, number_a, number_b, start, linkedid, leg_id)``.
- ``calls_by_linkedid``: every leg again, ordered by ``(tenant_id, linkedid, start, leg_id)``,
  with the leg's fields in one ``payload`` column (a JSON array, see ``base.record_payload``).
  The searches read the legs of the calls on a page from it, and the linkedid search, so
  fetching legs is a point lookup whatever the calls' dates. One payload column instead of
  twenty: in chDB each column read costs about 0.2 ms per lookup (measured 5 ms vs 9 ms).

Duplicates: ``calls`` and ``calls_by_linkedid`` are ReplacingMergeTrees on ``version`` (the
insert time), so a redelivered leg (same leg_id, same start) collapses when parts merge; until
then the queries dedup themselves (legs keep the newest version of a leg_id, calls by grouping on
linkedid), see ``queries.py``. The lookups collapse exact duplicates the same way.
"""

from __future__ import annotations

# The DDL is assembled from constants of this module only: no outside value reaches it.
# ruff: noqa: S608

#: Columns of ``calls`` in insert order, with their ClickHouse types.
CALL_COLUMNS: tuple[tuple[str, str], ...] = (
    ("tenant_id", "String"),
    ("start", "DateTime('UTC')"),
    ("linkedid", "String"),
    ("leg_id", "String"),
    ("answer", "Nullable(DateTime('UTC'))"),
    ("end", "DateTime('UTC')"),
    ("caller_number", "String"),
    ("caller_name", "String"),
    ("called_number", "String"),
    ("called_name", "String"),
    ("caller_account", "String"),
    ("called_account", "String"),
    ("disposition", "Enum8('answered' = 1, 'no_answer' = 2, 'busy' = 3, 'failed' = 4)"),
    ("duration", "UInt32"),
    ("billsec", "UInt32"),
    ("queue_number", "String"),
    ("ivr_number", "String"),
    ("ivr_digits", "String"),
    ("transfer", "Enum8('none' = 0, 'blind' = 1, 'attended' = 2)"),
    ("transferred_to", "String"),
    ("recording_id", "String"),
    ("version", "UInt64"),
)
CALL_COLUMN_NAMES: tuple[str, ...] = tuple(name for name, _ in CALL_COLUMNS)
#: Columns of an insert into ``calls_in``: the call columns and the payload.
INSERT_COLUMN_NAMES: tuple[str, ...] = (*CALL_COLUMN_NAMES, "payload")

#: Every table that holds rows of a tenant.
TABLES: tuple[str, ...] = ("calls", "calls_by_number", "calls_by_pair", "calls_by_linkedid")

#: Partitioning: never by tenant, the tenant leading every ORDER BY instead. Partitions by
#: (tenant, month) would let retention drop a tenant's months, but an insert batch then writes
#: one part per (tenant, month) per table and each table holds at least tenants x months parts,
#: which every query pays for: measured in chDB at 1M rows and 200 tenants, about 1,830 parts
#: per table instead of 13, ingest 2.5x slower and searches 20-30 % slower. Retention is a
#: DELETE mutation of the tenant's old rows instead (``base.SqlCallStore.drop_tenant_before``).
#:
#: ``calls`` (date searches, Grafana) by month, so that a date range reads its months only.
PARTITION = "PARTITION BY toYYYYMM(start)"
#: The lookup tables by year: their searches cover up to a year whatever the month, and each
#: part costs every lookup about 0.25 ms in chDB (a part per month and insert left 13-20 parts
#: per table at 1M rows; by year 3-5): measured at 1M rows, number and pair searches 25-30 %
#: faster, the linkedid search 30 %. A retention DELETE rewrites only the parts holding expired rows.
LOOKUP_PARTITION = "PARTITION BY toYear(start)"
#: Index granule of every table: the searches read short key ranges, and with the default 8192
#: rows a granule mostly holds other numbers' or other tenants' rows (measured 10-30 % faster
#: key-range reads in chDB with 1024).
SETTINGS = "SETTINGS index_granularity = 1024"
#: ``calls_by_linkedid`` is read a call at a time (the legs of a page, spread over the search's
#: dates): 128-row granules, with small compressed blocks where the engine allows them
#: (``base.TABLE_SETTINGS``). Measured at 10M rows, the legs of 25 scattered calls: 12.8 ms
#: with 1024 and default blocks, 9.4 ms with 128, 4.8 ms with 128 and 4 KiB blocks; a page
#: of neighbouring calls 3.5 ms either way.
LEG_SETTINGS = "SETTINGS index_granularity = 128"

_calls_columns = ",\n    ".join(f"{name} {kind}" for name, kind in CALL_COLUMNS)

#: The numbers of a leg as the lookups keep them: '' dropped, the leading + dropped
#: (numbers are validated, so a + can only lead).
_a1, _a2 = "replaceOne(caller_number, '+', '')", "caller_account"
_b1, _b2 = "replaceOne(called_number, '+', '')", "called_account"

DDL: tuple[str, ...] = (
    f"""CREATE TABLE IF NOT EXISTS calls_in (
    {_calls_columns},
    payload String
) ENGINE = Null""",
    f"""CREATE TABLE IF NOT EXISTS calls (
    {_calls_columns}
) ENGINE = ReplacingMergeTree(version)
{PARTITION}
ORDER BY (tenant_id, start, linkedid, leg_id)
{SETTINGS}""",
    f"""CREATE TABLE IF NOT EXISTS calls_by_number (
    tenant_id String,
    number String,
    start DateTime('UTC'),
    linkedid String,
    leg_id String
) ENGINE = ReplacingMergeTree
{LOOKUP_PARTITION}
ORDER BY (tenant_id, number, start, linkedid, leg_id)
{SETTINGS}""",
    f"""CREATE TABLE IF NOT EXISTS calls_by_pair (
    tenant_id String,
    number_a String,
    number_b String,
    start DateTime('UTC'),
    linkedid String,
    leg_id String
) ENGINE = ReplacingMergeTree
{LOOKUP_PARTITION}
ORDER BY (tenant_id, number_a, number_b, start, linkedid, leg_id)
{SETTINGS}""",
    f"""CREATE TABLE IF NOT EXISTS calls_by_linkedid (
    tenant_id String,
    linkedid String,
    start DateTime('UTC'),
    leg_id String,
    version UInt64,
    payload String
) ENGINE = ReplacingMergeTree(version)
{LOOKUP_PARTITION}
ORDER BY (tenant_id, linkedid, start, leg_id)
{LEG_SETTINGS}""",
    f"""CREATE MATERIALIZED VIEW IF NOT EXISTS calls_mv TO calls AS
SELECT {", ".join(CALL_COLUMN_NAMES)}
FROM calls_in""",
    f"""CREATE MATERIALIZED VIEW IF NOT EXISTS calls_by_number_mv TO calls_by_number AS
SELECT tenant_id, number, start, linkedid, leg_id
FROM calls_in
ARRAY JOIN arrayDistinct(arrayFilter(x -> x != '', [{_a1}, {_a2}, {_b1}, {_b2}])) AS number""",
    f"""CREATE MATERIALIZED VIEW IF NOT EXISTS calls_by_pair_mv TO calls_by_pair AS
SELECT tenant_id, pair.1 AS number_a, pair.2 AS number_b, start, linkedid, leg_id
FROM calls_in
ARRAY JOIN arrayDistinct(arrayMap(p -> if(p.1 < p.2, p, (p.2, p.1)), arrayFilter(
    p -> p.1 != '' AND p.2 != '' AND p.1 != p.2,
    [({_a1}, {_b1}), ({_a1}, {_b2}), ({_a2}, {_b1}), ({_a2}, {_b2})]
))
) AS pair
WHERE disposition = 'answered'""",
    """CREATE MATERIALIZED VIEW IF NOT EXISTS calls_by_linkedid_mv TO calls_by_linkedid AS
SELECT tenant_id, linkedid, start, leg_id, version, payload
FROM calls_in""",
)
