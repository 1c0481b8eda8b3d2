"""The SQL of the call-history searches, shared by both backends, and the search itself.

ClickHouse 18.16 has no server-side query parameters, so values are rendered into the SQL by
:func:`sql_string` / :func:`sql_datetime` / :func:`sql_int`, and only values that were
validated first (tenant id, normalised numbers, linkedids, datetimes, integers) are rendered.
The string renderer escapes anyway, so that nothing can break out of a literal.

A search runs as at most two primary-key range reads:

1. the page of calls: the lookup table of the query kind (``calls_by_number``, ``calls_by_pair``,
   or ``calls`` itself for a date-only search), read by ``(tenant_id, key, start range)`` and
   grouped by linkedid; the group's sort key is ``(first matching leg's start, linkedid)``,
   newest first. The number of matching calls (the total) is the number of groups before the
   LIMIT, which both servers report with the result (``rows_before_limit``), so counting costs
   no second read; without that figure a ``uniqExact(linkedid)`` query counts. Later pages
   carry the first page's total in the cursor.
2. the legs of those calls: ``calls_by_linkedid`` by ``(tenant_id, linkedid IN page)``, deduped
   in Python (newest version of each leg_id), so a redelivered leg never shows twice.

A linkedid search is the second read alone.

A later page (a cursor) does not group every older call again: it reads the newest matching
rows before the cursor (``window_sql``: the end of a primary-key range, in key order, with a
LIMIT), fetches the legs of the calls they belong to and orders those calls by their exact
first matching leg, computed from the legs (``leg_matcher``, the views' matching in Python). A
call is placed on the page only when no call outside what was read can come before it; when the
window cannot prove that for a whole page (a call reaching back further than the window), the
page comes from the grouped read above. See ``window_page``. Searches of few calls
(``WINDOW_MIN_TOTAL``) page with the grouped read, which costs them less.
"""

# Every value in this module's SQL goes through the sql_* renderers below (validated, escaped).
# ruff: noqa: S608

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from switchboard_contracts.cdr import (
    CALL_ID_PATTERN,
    CallGroup,
    CallLeg,
    CallSearchPage,
    Disposition,
    ParsedQuery,
    QueryKind,
    TransferKind,
)
from switchboard_contracts.common import TENANT_ID_PATTERN

#: Runs one SELECT and returns its rows as sequences of plain values (ints, strings, None).
Select = Callable[[str], Sequence[Sequence[Any]]]
#: Runs one SELECT with a LIMIT and returns its rows and the number of rows before the LIMIT
#: (None when the server did not report it).
SelectCounted = Callable[[str], tuple[Sequence[Sequence[Any]], int | None]]

_TENANT = re.compile(TENANT_ID_PATTERN)
_CALL_ID = re.compile(CALL_ID_PATTERN)
_NUMBER = re.compile(r"^[0-9]{1,31}$")


# Literals ---------------------------------------------------------------------------------


def sql_string(value: str) -> str:
    """A ClickHouse string literal for ``value``: backslash and quote escaped, and every
    character outside printable ASCII written as ``\\xHH`` bytes of its UTF-8 encoding, so the
    literal is plain ASCII and cannot end early, whatever the value holds."""
    out = ["'"]
    for ch in value:
        if ch in ("\\", "'"):
            out.append("\\" + ch)
        elif " " <= ch <= "~":
            out.append(ch)
        else:
            out.extend(f"\\x{byte:02X}" for byte in ch.encode("utf-8"))
    out.append("'")
    return "".join(out)


def sql_int(value: int) -> str:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"not an int: {value!r}")
    return str(value)


def sql_datetime(value: datetime) -> str:
    """``toDateTime('YYYY-MM-DD hh:mm:ss', 'UTC')`` of an aware datetime (whole seconds)."""
    if value.tzinfo is None:
        raise ValueError("datetimes given to the store must be timezone-aware")
    return f"toDateTime('{value.astimezone(UTC):%Y-%m-%d %H:%M:%S}', 'UTC')"


def sql_tenant(tenant_id: str) -> str:
    if not _TENANT.fullmatch(tenant_id):
        raise ValueError(f"invalid tenant id {tenant_id!r}")
    return sql_string(tenant_id)


def sql_call_id(value: str) -> str:
    if not _CALL_ID.fullmatch(value):
        raise ValueError(f"invalid linkedid {value!r}")
    return sql_string(value)


def sql_number(value: str) -> str:
    if not _NUMBER.fullmatch(value):
        raise ValueError(f"invalid number {value!r}")
    return sql_string(value)


def epoch(value: datetime) -> int:
    return int(value.timestamp())


def from_epoch(value: int) -> datetime:
    return datetime.fromtimestamp(value, UTC)


# Cursor -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Cursor:
    """Position after the last call of a page: its sort key (start of its first matching leg,
    linkedid) and the total counted on the first page. Opaque to clients: base64url of
    ``v1:<epoch seconds>:<total>:<linkedid>``."""

    start: int
    linkedid: str
    total: int

    def encode(self) -> str:
        raw = f"v1:{self.start}:{self.total}:{self.linkedid}".encode()
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    @classmethod
    def decode(cls, text: str) -> Cursor:
        try:
            raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)).decode("ascii")
            version, start, total, linkedid = raw.split(":", 3)
            if version != "v1" or not _CALL_ID.fullmatch(linkedid):
                raise ValueError
            cursor = cls(int(start), linkedid, int(total))
        except (ValueError, UnicodeDecodeError, binascii.Error):
            raise ValueError("the cursor is not valid: pass back next_cursor of the previous page") from None
        if not (0 <= cursor.start < 2**32 and cursor.total >= 0):
            raise ValueError("the cursor is not valid: pass back next_cursor of the previous page")
        return cursor


# SQL ----------------------------------------------------------------------------------------


def match_source(tenant_id: str, query: ParsedQuery, date_from: datetime, date_to: datetime) -> str:
    """``FROM <table> WHERE <primary-key prefix and start range>`` of the rows that match."""
    where = [f"tenant_id = {sql_tenant(tenant_id)}"]
    if query.kind == QueryKind.NUMBER:
        table = "calls_by_number"
        where.append(f"number = {sql_number(query.numbers[0])}")
    elif query.kind == QueryKind.PAIR:
        table = "calls_by_pair"
        number_a, number_b = sorted(query.numbers)
        where.append(f"number_a = {sql_number(number_a)}")
        where.append(f"number_b = {sql_number(number_b)}")
    elif query.kind == QueryKind.ALL:
        table = "calls"
    else:
        raise ValueError(f"no match table for a {query.kind.value} search")
    where.append(f"start >= {sql_datetime(date_from)}")
    where.append(f"start < {sql_datetime(date_to)}")
    return f"FROM {table} WHERE " + " AND ".join(where)


def page_sql(source: str, cursor: Cursor | None, limit: int) -> str:
    """The calls of one page, newest first, and one more to tell whether a page follows:
    ``linkedid, start of its first matching leg`` (epoch seconds)."""
    where = ""
    having = ""
    if cursor is not None:
        # Rows after the cursor cannot make a group's first leg earlier than the cursor.
        where = f" AND start <= {sql_datetime(from_epoch(cursor.start))}"
        having = (
            f" HAVING first_start < {sql_int(cursor.start)}"
            f" OR (first_start = {sql_int(cursor.start)} AND linkedid < {sql_call_id(cursor.linkedid)})"
        )
    return (
        f"SELECT linkedid, toUInt32(min(start)) AS first_start {source}{where}"
        f" GROUP BY linkedid{having}"
        f" ORDER BY first_start DESC, linkedid DESC LIMIT {sql_int(limit + 1)}"
    )


def count_sql(source: str) -> str:
    return f"SELECT uniqExact(linkedid) {source}"


def window_sql(source: str, cursor: Cursor, rows: int) -> str:
    """The newest ``rows`` matching rows at or before the cursor's start, newest first (the
    lookup tables' key order read backwards: ``start, linkedid, leg_id`` follow the key prefix
    of ``match_source``)."""
    return (
        f"SELECT linkedid, toUInt32(start) {source}"
        f" AND start <= {sql_datetime(from_epoch(cursor.start))}"
        f" ORDER BY start DESC, linkedid DESC, leg_id DESC LIMIT {sql_int(rows)}"
    )


def legs_sql(tenant_id: str, linkedids: Sequence[str]) -> str:
    """All legs of the given calls, whatever their dates, every stored copy of a redelivered leg
    with its version (``fetch_groups`` keeps the newest: deduplicating here, with ORDER BY and
    LIMIT BY, adds about 0.5 ms a search in chDB)."""
    ids = ", ".join(sql_call_id(linkedid) for linkedid in linkedids)
    return (
        "SELECT linkedid, leg_id, version, payload FROM calls_by_linkedid"
        f" WHERE tenant_id = {sql_tenant(tenant_id)} AND linkedid IN ({ids})"
    )


# Rows -> models -------------------------------------------------------------------------------


#: Version of the payload format, its first element.
PAYLOAD_V1 = 1


def leg_payload(leg: CallLeg) -> str:
    """A leg's fields (but linkedid and leg_id, which are columns) as the ``payload`` column
    keeps them: a compact JSON array, times as epoch seconds, absent values as null."""
    return json.dumps(
        [
            PAYLOAD_V1,
            epoch(leg.start),
            None if leg.answer is None else epoch(leg.answer),
            epoch(leg.end),
            leg.caller_number,
            leg.caller_name,
            leg.called_number,
            leg.called_name,
            leg.caller_account,
            leg.called_account,
            leg.disposition.value,
            leg.duration,
            leg.billsec,
            leg.queue_number,
            leg.ivr_number,
            leg.ivr_digits,
            None if leg.transfer is None else leg.transfer.value,
            leg.transferred_to,
            leg.recording_id,
        ],
        ensure_ascii=False,
        separators=(",", ":"),
    )


def leg_from_payload(linkedid: str, leg_id: str, payload: str) -> CallLeg:
    """A stored leg (validated when it was inserted): built without validating it again."""
    (
        version, start, answer, end, caller_number, caller_name, called_number, called_name,
        caller_account, called_account, disposition, duration, billsec, queue_number,
        ivr_number, ivr_digits, transfer, transferred_to, recording_id,
    ) = json.loads(payload)  # fmt: skip
    if version != PAYLOAD_V1:
        raise ValueError(f"unknown payload version {version!r}")
    return CallLeg.model_construct(
        linkedid=linkedid,
        leg_id=leg_id,
        start=from_epoch(start),
        answer=None if answer is None else from_epoch(answer),
        end=from_epoch(end),
        caller_number=caller_number,
        caller_name=caller_name,
        called_number=called_number,
        called_name=called_name,
        caller_account=caller_account,
        called_account=called_account,
        disposition=Disposition(disposition),
        duration=duration,
        billsec=billsec,
        queue_number=queue_number,
        ivr_number=ivr_number,
        ivr_digits=ivr_digits,
        transfer=None if transfer is None else TransferKind(transfer),
        transferred_to=transferred_to,
        recording_id=recording_id,
    )


def group_legs(linkedid: str, legs: list[CallLeg]) -> CallGroup:
    legs.sort(key=lambda leg: (leg.start, leg.leg_id))
    return CallGroup.model_construct(
        linkedid=linkedid,
        start=legs[0].start,
        end=max(leg.end for leg in legs),
        missed=not any(leg.disposition == Disposition.ANSWERED for leg in legs),
        talk_time=sum(leg.billsec for leg in legs),
        legs=legs,
    )


def fetch_groups(select: Select, tenant_id: str, linkedids: Sequence[str]) -> list[CallGroup]:
    """The calls with these linkedids, in the order given (calls without legs left out)."""
    if not linkedids:
        return []
    newest: dict[str, tuple[int, str, str]] = {}  # leg_id -> (version, linkedid, payload)
    for linkedid, leg_id, version, payload in select(legs_sql(tenant_id, linkedids)):
        seen = newest.get(leg_id)
        if seen is None or int(version) > seen[0]:
            newest[str(leg_id)] = (int(version), str(linkedid), str(payload))
    by_call: dict[str, list[CallLeg]] = {linkedid: [] for linkedid in linkedids}
    for leg_id, (_, linkedid, payload) in newest.items():
        if linkedid in by_call:
            by_call[linkedid].append(leg_from_payload(linkedid, leg_id, payload))
    return [group_legs(linkedid, legs) for linkedid, legs in by_call.items() if legs]


# Later pages ----------------------------------------------------------------------------------

#: Rows read per call of a later page (``window_page``): calls have a few legs each, and a number
#: is on one to three of them.
WINDOW_ROWS_PER_CALL = 4
#: Calls of the window whose legs are fetched beyond the page and the call after it: the call at
#: the cursor itself is read again (its row is at the cursor's start), and a call may start before
#: the window. Measured at 10M rows, pair searches' second and third pages: with 0, 113 of 120
#: fell back to the grouped read (p50 24 ms); with 1 or 2, none (12 ms); 8 cost 0.8 ms more legs.
WINDOW_EXTRA_CALLS = 2
#: Later pages of searches with at most this many calls come from the grouped read: grouping a
#: few hundred calls costs less than the window read and its legs (measured at 100M rows, compacted,
#: later pages of rare numbers with 50-200 calls over a year: 13.6 / 14.6 ms p50 / p95 grouped,
#: 14.6 / 16.1 by the window, read just before; of pairs with about 400 calls, equal). The window
#: read's cost does not grow with the result, the grouped read's does (popular numbers, 380,000
#: calls at 100M rows: 9.3 against 36.3 ms p50).
WINDOW_MIN_TOTAL = 1000


def _lookup_number(value: str | None) -> str:
    """A number as the lookup tables keep it (``schema``): the leading + dropped."""
    return (value or "").replace("+", "", 1)


def leg_matcher(query: ParsedQuery) -> Callable[[CallLeg], bool]:
    """Whether a leg is one of the rows ``match_source`` reads (the materialized views' rules in
    ``schema``): a number on either side (numbers and employee accounts), an answered leg between
    the two numbers of a pair, or any leg."""
    if query.kind == QueryKind.ALL:
        return lambda leg: True
    if query.kind == QueryKind.NUMBER:
        number = query.numbers[0]

        def has_number(leg: CallLeg) -> bool:
            sides = (leg.caller_number, leg.called_number)
            return number in {_lookup_number(value) for value in sides} or number in (
                leg.caller_account,
                leg.called_account,
            )

        return has_number
    if query.kind == QueryKind.PAIR:
        pair = tuple(sorted(query.numbers))  # two different numbers (``parse_call_query``)

        def between(leg: CallLeg) -> bool:
            if leg.disposition != Disposition.ANSWERED:
                return False
            calling = (_lookup_number(leg.caller_number), leg.caller_account or "")
            called = (_lookup_number(leg.called_number), leg.called_account or "")
            return any(tuple(sorted((a, b))) == pair for a in calling for b in called if a and b)

        return between
    raise ValueError(f"no leg matching for a {query.kind.value} search")


def window_page(
    select: Select,
    tenant_id: str,
    query: ParsedQuery,
    source: str,
    date_from: datetime,
    date_to: datetime,
    cursor: Cursor,
    limit: int,
) -> list[tuple[tuple[int, str], CallGroup]] | None:
    """The calls after ``cursor`` in page order, with their sort keys (first matching leg's
    start, linkedid): at least ``limit + 1`` of them, or all that are left; None when the window
    cannot place a whole page (the caller then groups every call).

    Every call with a row in the window has its first matching start at or before its oldest
    row there (``bound``); the legs of the calls with the highest bounds give the exact start.
    A call without any row in the window has every row older than the window's last, so it comes
    after that row's call; a call whose legs were not fetched comes after the best such bound.
    A fetched call whose exact key is above both is certain."""
    wanted = WINDOW_ROWS_PER_CALL * (limit + 1)
    rows = select(window_sql(source, cursor, wanted))
    bound: dict[str, int] = {}
    for linkedid, start in rows:  # newest first: the last start seen is the call's oldest
        bound[str(linkedid)] = int(start)
    ranked = sorted(((start, linkedid) for linkedid, start in bound.items()), reverse=True)
    fetched = ranked[: limit + 1 + WINDOW_EXTRA_CALLS]
    floor: tuple[int, str] | None = None
    if len(rows) >= wanted:
        floor = (int(rows[-1][1]), str(rows[-1][0]))
    if len(ranked) > len(fetched):
        floor = max(floor, ranked[len(fetched)]) if floor else ranked[len(fetched)]
    groups = {group.linkedid: group for group in fetch_groups(select, tenant_id, [lid for _, lid in fetched])}
    matches = leg_matcher(query)
    low, high = epoch(date_from), epoch(date_to)
    placed: list[tuple[tuple[int, str], CallGroup]] = []
    for start_bound, linkedid in fetched:
        group = groups.get(linkedid)
        if group is None:
            return None  # lookup rows without legs: the grouped read decides
        first = min(
            (start for leg in group.legs if matches(leg) and low <= (start := epoch(leg.start)) < high),
            default=None,
        )
        if first is None or first > start_bound:
            return None  # lookup rows and legs disagree: the grouped read decides
        key = (first, linkedid)
        if key < (cursor.start, cursor.linkedid) and (floor is None or key > floor):
            placed.append((key, group))
    placed.sort(key=lambda item: item[0], reverse=True)
    if floor is not None and len(placed) <= limit:
        return None
    return placed


# The search -----------------------------------------------------------------------------------


def search(
    select: Select,
    select_counted: SelectCounted,
    tenant_id: str,
    query: ParsedQuery,
    date_from: datetime,
    date_to: datetime,
    cursor: str | None,
    limit: int,
) -> CallSearchPage:
    """One page of a tenant's calls matching ``query`` within ``[date_from, date_to)`` (a linkedid
    search ignores the dates), newest first. Raises ValueError for a bad cursor or range."""
    if not 1 <= limit <= 1000:
        raise ValueError("limit must be between 1 and 1000")
    if query.kind == QueryKind.LINKEDID:
        assert query.linkedid is not None
        if cursor is not None:
            return CallSearchPage.model_construct(items=[], total=0, next_cursor=None)
        groups = fetch_groups(select, tenant_id, [query.linkedid])
        return CallSearchPage.model_construct(items=groups, total=len(groups), next_cursor=None)
    if date_to <= date_from:
        raise ValueError("date_from must be before date_to")
    position = Cursor.decode(cursor) if cursor is not None else None
    source = match_source(tenant_id, query, date_from, date_to)
    if position is not None and position.total > WINDOW_MIN_TOTAL:
        placed = window_page(select, tenant_id, query, source, date_from, date_to, position, limit)
        if placed is not None:
            next_cursor = None
            if len(placed) > limit:
                (last_start, last_linkedid), _ = placed[limit - 1]
                next_cursor = Cursor(last_start, last_linkedid, position.total).encode()
            return CallSearchPage.model_construct(
                items=[group for _, group in placed[:limit]], total=position.total, next_cursor=next_cursor
            )
    rows, before_limit = select_counted(page_sql(source, position, limit))
    page = [(str(linkedid), int(first_start)) for linkedid, first_start in rows]
    if position is not None:
        total = position.total
    elif len(page) <= limit:
        total = len(page)  # every matching call is on this page
    elif before_limit is not None and before_limit >= len(page):
        total = before_limit
    else:
        total = int(select(count_sql(source))[0][0])
    more = len(page) > limit
    page = page[:limit]
    groups = fetch_groups(select, tenant_id, [linkedid for linkedid, _ in page])
    next_cursor = None
    if more:
        last_linkedid, last_start = page[-1]
        next_cursor = Cursor(last_start, last_linkedid, total).encode()
    return CallSearchPage.model_construct(items=groups, total=total, next_cursor=next_cursor)
