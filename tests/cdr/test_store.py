"""The call store contract, run against both backends: embedded chDB and a ClickHouse server
(Debian's 18.16). Every test uses its own tenants, so the session-wide stores are shared."""

from __future__ import annotations

import random
import uuid
from concurrent.futures import ThreadPoolExecutor, wait
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any

import pytest
from switchboard_cdr.store import queries
from switchboard_cdr.store.base import DROP_ORDER, SqlCallStore
from switchboard_cdr.store.chdb_backend import ChdbCallStore
from switchboard_cdr.store.queries import Cursor, sql_string
from switchboard_cdr.store.schema import TABLES
from switchboard_cdr.store.server_backend import ServerCallStore
from switchboard_contracts.cdr import CallRecord, CallSearchPage, ParsedQuery, QueryKind, parse_call_query

T0 = datetime(2024, 3, 14, 9, 0, tzinfo=UTC)
DAY = timedelta(days=1)


def new_tenant() -> str:
    return "t" + uuid.uuid4().hex[:10]


class Calls:
    """Builds call records for one tenant."""

    def __init__(self, tenant_id: str) -> None:
        self.tenant_id = tenant_id
        self.records: list[CallRecord] = []
        self._seq = 0

    def leg(
        self,
        linkedid: str,
        caller: str,
        called: str,
        *,
        at: datetime = T0,
        answered: bool = True,
        billsec: int = 30,
        **fields: Any,
    ) -> CallRecord:
        self._seq += 1
        record = CallRecord(
            tenant_id=self.tenant_id,
            linkedid=linkedid,
            leg_id=fields.pop("leg_id", f"{linkedid}-{self._seq}"),
            start=at,
            answer=at + timedelta(seconds=5) if answered else None,
            end=at + timedelta(seconds=5 + billsec if answered else 20),
            caller_number=caller,
            called_number=called,
            disposition="answered" if answered else fields.pop("disposition", "no_answer"),
            duration=5 + billsec if answered else 20,
            billsec=billsec if answered else 0,
            **fields,
        )
        self.records.append(record)
        return record


def search(
    store: SqlCallStore,
    tenant_id: str,
    query: str = "",
    date_from: datetime = T0 - DAY,
    date_to: datetime = T0 + DAY,
    **kwargs: Any,
) -> CallSearchPage:
    return store.search(tenant_id, parse_call_query(query), date_from, date_to, **kwargs)


def linkedids(page: CallSearchPage) -> list[str]:
    return [group.linkedid for group in page.items]


def leg_ids(page: CallSearchPage) -> list[list[str]]:
    return [[leg.leg_id for leg in group.legs] for group in page.items]


class StoreContract:
    """The tests every backend must pass; subclasses provide the ``store`` fixture."""

    @pytest.fixture
    def store(self) -> SqlCallStore:
        raise NotImplementedError

    def test_migrate_is_idempotent(self, store: SqlCallStore) -> None:
        store.migrate()
        store.migrate()
        calls = Calls(new_tenant())
        calls.leg("1710406800.1", "+79161234567", "101")
        store.insert(calls.records)
        assert search(store, calls.tenant_id).total == 1
        assert store.ping()

    def test_insert_nothing(self, store: SqlCallStore) -> None:
        store.insert([])

    def test_number_on_either_side(self, store: SqlCallStore) -> None:
        calls = Calls(new_tenant())
        calls.leg("1710406800.1", "+79161234567", "101", at=T0)  # 101 called
        calls.leg("1710406900.2", "101", "+79169999999", at=T0 + timedelta(minutes=5))  # 101 calls
        calls.leg("1710407000.3", "102", "103", at=T0 + timedelta(minutes=10))
        # 101 only as the employee account of the called side (answered on a mobile)
        calls.leg(
            "1710407100.4",
            "+74950000000",
            "+79260000000",
            called_account="101",
            at=T0 + timedelta(minutes=15),
        )
        store.insert(calls.records)

        page = search(store, calls.tenant_id, "101")
        assert linkedids(page) == ["1710407100.4", "1710406900.2", "1710406800.1"]
        assert page.total == 3
        # with or without the leading +, with separators
        for query in ("+79161234567", "79161234567", "+7-916-123-45-67", "(7916)1234567"):
            assert linkedids(search(store, calls.tenant_id, query)) == ["1710406800.1"], query
        assert linkedids(search(store, calls.tenant_id, "103")) == ["1710407000.3"]
        assert search(store, calls.tenant_id, "104").total == 0

    def test_whole_call_is_returned_with_its_legs(self, store: SqlCallStore) -> None:
        """SPEC 7's example: a call to a number, Belkina answered, attended transfer to
        Shevchenko, who continued; a search for Shevchenko's number shows the whole call."""
        calls = Calls(new_tenant())
        lid = "1710406800.7"
        calls.leg(
            lid, "+79255283744", "500", at=T0, answered=False, ivr_number="600", ivr_digits="1", leg_id="a"
        )
        calls.leg(
            lid,
            "+79255283744",
            "101",
            at=T0 + timedelta(seconds=20),
            called_name="Belkina",
            called_account="101",
            queue_number="500",
            transfer="attended",
            transferred_to="102",
            recording_id="rec/a.mp3",
            billsec=40,
            leg_id="b",
        )
        calls.leg(
            lid,
            "+79255283744",
            "102",
            at=T0 + timedelta(seconds=70),
            called_name="Shevchenko",
            called_account="102",
            billsec=100,
            leg_id="c",
        )
        store.insert(list(reversed(calls.records)))

        page = search(store, calls.tenant_id, "102")
        assert page.total == 1
        (group,) = page.items
        assert [leg.leg_id for leg in group.legs] == ["a", "b", "c"]  # chronological
        assert group.start == T0
        assert group.end == T0 + timedelta(seconds=70 + 105)
        assert group.talk_time == 140
        assert not group.missed
        assert {leg.leg_id: leg.model_dump() for leg in group.legs} == {
            record.leg_id: record.model_dump(exclude={"version", "tenant_id"}) for record in calls.records
        }

    def test_times_are_kept_in_utc_to_the_second(self, store: SqlCallStore) -> None:
        """A record may carry any UTC offset and fractions of a second: the store keeps whole
        seconds in UTC, in the legs it returns and in the columns it searches."""
        calls = Calls(new_tenant())
        moscow = timezone(timedelta(hours=3))
        start = datetime(2024, 3, 14, 12, 0, 1, 750_000, tzinfo=moscow)  # 09:00:01.75 UTC
        calls.records.append(
            CallRecord(
                tenant_id=calls.tenant_id,
                linkedid="1710406801.5",
                leg_id="1710406801.5",
                start=start,
                answer=start + timedelta(seconds=4, microseconds=300_000),
                end=start + timedelta(seconds=64),
                caller_number="+79161234567",
                called_number="101",
                disposition="answered",
                duration=64,
                billsec=59,
            )
        )
        calls.leg("1710406900.1", "102", "+79161234567", answered=False, at=T0 + timedelta(minutes=5))
        store.insert(calls.records)

        first_second = T0 + timedelta(seconds=1)
        page = search(
            store, calls.tenant_id, "+79161234567", first_second, first_second + timedelta(seconds=1)
        )
        assert linkedids(page) == ["1710406801.5"]
        (leg,) = page.items[0].legs
        assert (leg.start, leg.answer, leg.end) == (
            first_second,
            datetime(2024, 3, 14, 9, 0, 6, tzinfo=UTC),
            datetime(2024, 3, 14, 9, 1, 5, tzinfo=UTC),
        )
        assert leg.start.utcoffset() == timedelta(0)
        missed = search(store, calls.tenant_id, "102").items[0].legs[0]
        assert (missed.answer, missed.end) == (None, T0 + timedelta(minutes=5, seconds=20))

    def test_pair_both_directions_answered_only(self, store: SqlCallStore) -> None:
        calls = Calls(new_tenant())
        calls.leg("1710406800.1", "101", "+79161234567", at=T0)
        calls.leg("1710406900.2", "+79161234567", "101", at=T0 + timedelta(minutes=1))
        calls.leg("1710407000.3", "101", "+79161234567", at=T0 + timedelta(minutes=2), answered=False)
        calls.leg("1710407100.4", "101", "102", at=T0 + timedelta(minutes=3))
        calls.leg("1710407200.5", "+79161234567", "102", at=T0 + timedelta(minutes=4))
        # the pair through the employee account of the answering side
        calls.leg(
            "1710407300.6", "+79161234567", "+79260000000", called_account="101", at=T0 + timedelta(minutes=5)
        )
        store.insert(calls.records)

        expected = ["1710407300.6", "1710406900.2", "1710406800.1"]
        for query in ("101 +79161234567", "+79161234567 101", "79161234567   101"):
            page = search(store, calls.tenant_id, query)
            assert linkedids(page) == expected, query
            assert page.total == 3
        assert linkedids(search(store, calls.tenant_id, "101 102")) == ["1710407100.4"]
        assert search(store, calls.tenant_id, "102 103").total == 0

    def test_date_range_is_half_open_and_given_by_the_caller(self, store: SqlCallStore) -> None:
        calls = Calls(new_tenant())
        day1, day2, day3 = T0.replace(hour=0), T0.replace(hour=0) + DAY, T0.replace(hour=0) + 2 * DAY
        calls.leg("1.1", "101", "102", at=day1 + timedelta(hours=23, minutes=59, seconds=59))
        calls.leg("2.1", "101", "102", at=day2)
        calls.leg("2.2", "101", "102", at=day2 + timedelta(hours=12))
        calls.leg("3.1", "101", "102", at=day3)
        store.insert(calls.records)

        for query in ("", "101", "101 102"):
            page = search(store, calls.tenant_id, query, day2, day3)
            assert linkedids(page) == ["2.2", "2.1"], query
            assert page.total == 2
        assert linkedids(search(store, calls.tenant_id, "", day1, day3 + DAY)) == ["3.1", "2.2", "2.1", "1.1"]
        # a tenant-local day (UTC+3) is a different UTC range: the caller converts it
        msk = timedelta(hours=3)
        assert linkedids(search(store, calls.tenant_id, "", day2 - msk, day3 - msk)) == ["2.2", "2.1", "1.1"]
        with pytest.raises(ValueError, match="before"):
            search(store, calls.tenant_id, "", day3, day2)

    def test_linkedid_whatever_the_dates(self, store: SqlCallStore) -> None:
        calls = Calls(new_tenant())
        old = T0 - timedelta(days=400)
        calls.leg("1675000000.5", "101", "102", at=old, leg_id="x1")
        calls.leg("1675000000.5", "102", "103", at=old + DAY + timedelta(hours=1), leg_id="x2")  # next day
        calls.leg("1675000000.6", "101", "102", at=old)
        store.insert(calls.records)

        page = search(store, calls.tenant_id, "1675000000.5", T0, T0 + DAY)
        assert page.total == 1
        assert leg_ids(page) == [["x1", "x2"]]
        assert page.next_cursor is None
        assert search(store, calls.tenant_id, "1675000000.9").total == 0
        uuid_id = str(uuid.uuid4())
        calls.records.clear()
        calls.leg(uuid_id, "101", "102")
        store.insert(calls.records)
        assert linkedids(search(store, calls.tenant_id, uuid_id)) == [uuid_id]

    def test_tenant_isolation(self, store: SqlCallStore) -> None:
        first, second = Calls(new_tenant()), Calls(new_tenant())
        for calls, minutes in ((first, 0), (second, 1)):
            # same numbers, even the same linkedid
            calls.leg("1710406800.1", "101", "+79161234567", at=T0 + timedelta(minutes=minutes))
            calls.leg("1710406800.1", "+79161234567", "102", at=T0 + timedelta(minutes=minutes + 1))
        second.leg("1710406999.9", "101", "102", at=T0 + timedelta(minutes=10))
        store.insert(first.records + second.records)

        for query in ("", "101", "+79161234567", "101 79161234567", "1710406800.1"):
            mine = search(store, first.tenant_id, query)
            assert mine.total == 1, query
            assert {leg.leg_id for group in mine.items for leg in group.legs} <= {
                record.leg_id for record in first.records
            }, query
            assert mine.items[0].legs[0].start == T0, query
        assert search(store, second.tenant_id, "101").total == 2
        assert search(store, first.tenant_id, "1710406999.9").total == 0
        assert search(store, first.tenant_id, "102").total == 1

    def test_redelivered_legs_count_once(self, store: SqlCallStore) -> None:
        calls = Calls(new_tenant())
        calls.leg("5.1", "101", "+79161234567", at=T0, billsec=60)
        calls.leg("5.1", "101", "102", at=T0 + timedelta(seconds=70), billsec=10)
        calls.leg("5.2", "+79161234567", "101", at=T0 + timedelta(minutes=5), answered=False)
        store.insert(calls.records)
        store.insert(calls.records)  # the whole batch redelivered
        store.insert(calls.records[:1] * 3)  # and one leg again, several times in one batch

        for query in ("", "101", "101 79161234567", "5.1"):
            page = search(store, calls.tenant_id, query)
            groups = {group.linkedid: group for group in page.items}
            assert page.total == len(groups), query
            assert all(len({leg.leg_id for leg in g.legs}) == len(g.legs) for g in page.items), query
        page = search(store, calls.tenant_id, "101")
        assert page.total == 2
        assert leg_ids(page) == [["5.2-3"], ["5.1-1", "5.1-2"]]
        assert page.items[1].talk_time == 70

    def test_cursor_walks_every_call_once_newest_first(self, store: SqlCallStore) -> None:
        calls = Calls(new_tenant())
        expected: list[tuple[datetime, str]] = []
        for i in range(23):
            at = T0 + timedelta(minutes=(i // 3))  # three calls share each start second
            lid = f"{1710406800 + i}.{i}"
            calls.leg(lid, "101", f"+7916000{i:04d}", at=at)
            if i % 4 == 0:
                calls.leg(lid, f"+7916000{i:04d}", "102", at=at + timedelta(seconds=30), answered=False)
            expected.append((at, lid))
        calls.leg("9.9", "103", "104", at=T0)  # does not match "101"
        store.insert(calls.records)
        store.insert(calls.records[:5])  # redelivered: must not duplicate a call across pages
        expected.sort(reverse=True)

        for query, want in (("101", [lid for _, lid in expected]), ("", None)):
            seen: list[str] = []
            cursor = None
            pages = 0
            while True:
                page = search(store, calls.tenant_id, query, cursor=cursor, limit=5)
                pages += 1
                assert page.total == (23 if query else 24)
                seen += linkedids(page)
                cursor = page.next_cursor
                if cursor is None:
                    break
                assert len(page.items) == 5
            assert len(seen) == len(set(seen)) == page.total
            if want is not None:
                assert seen == want
                assert pages == 5
            starts = [g.start for g in search(store, calls.tenant_id, query, limit=200).items]
            assert starts == sorted(starts, reverse=True)

        exact = search(store, calls.tenant_id, "101", limit=23)
        assert exact.next_cursor is None and len(exact.items) == 23

    @pytest.mark.parametrize("window", ["default", "tight"])
    def test_every_page_matches_a_model_of_the_search(
        self, store: SqlCallStore, window: str, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Random calls of several legs (a number on one or more of them, legs on both sides of
        the range's ends, redelivered legs), every page of every search kind walked with small
        pages, against a model written from the search's definition: calls with a matching leg in
        the range, ordered by their first such leg's start, then linkedid, newest first. Later
        pages come from the window read (``window_page``) where it can place them, else from the
        grouped read: both must give the model's calls, and the window must have been used."""
        monkeypatch.setattr(queries, "WINDOW_MIN_TOTAL", 0)  # the window read for every later page
        if window == "tight":  # windows too small to place a page often: the fallback runs
            monkeypatch.setattr(queries, "WINDOW_ROWS_PER_CALL", 1)
            monkeypatch.setattr(queries, "WINDOW_EXTRA_CALLS", 0)
        placed = {"window": 0, "grouped": 0}
        window_page = queries.window_page

        def counted(*args: Any, **kwargs: Any) -> Any:
            found = window_page(*args, **kwargs)
            placed["window" if found is not None else "grouped"] += 1
            return found

        monkeypatch.setattr(queries, "window_page", counted)
        rng = random.Random(7)
        calls = Calls(new_tenant())
        externals = ["+79160000001", "+79160000002", "+74950000003"]
        extensions = ["101", "102", "103"]
        for i in range(30):
            linkedid = f"{1710400000 + i}.{i}"
            start = T0 + timedelta(minutes=rng.randrange(0, 48 * 60))
            outside = rng.choice(externals)
            for j in range(rng.randint(1, 4)):
                at = start + timedelta(minutes=rng.choice([0, 1, 5, 90, 600]) * j)
                inside = rng.choice(extensions)
                caller, called = (outside, inside) if rng.random() < 0.7 else (inside, outside)
                account = {"called_account": rng.choice(extensions)} if rng.random() < 0.2 else {}
                calls.leg(linkedid, caller, called, at=at, answered=rng.random() < 0.6, **account)
        store.insert(calls.records)
        store.insert(rng.sample(calls.records, 10))  # redelivered

        def numbers(value: str | None) -> str:
            return (value or "").lstrip("+")

        def matches(query: ParsedQuery, leg: CallRecord) -> bool:
            sides = [numbers(leg.caller_number), leg.caller_account or ""]
            other = [numbers(leg.called_number), leg.called_account or ""]
            if query.kind == QueryKind.NUMBER:
                return query.numbers[0] in sides + other
            if query.kind == QueryKind.PAIR:
                return leg.disposition == "answered" and any(
                    {a, b} == set(query.numbers) for a in sides for b in other
                )
            return True

        def model(query: ParsedQuery, low: datetime, high: datetime) -> list[str]:
            first: dict[str, tuple[datetime, str]] = {}
            for leg in calls.records:
                if matches(query, leg) and low <= leg.start < high:
                    key = (leg.start, leg.linkedid)
                    first[leg.linkedid] = min(first.get(leg.linkedid, key), key)
            return [linkedid for _, linkedid in sorted(first.values(), reverse=True)]

        legs_of: dict[str, set[str]] = {}
        for leg in calls.records:
            legs_of.setdefault(leg.linkedid, set()).add(leg.leg_id)
        ranges = [(T0 - DAY, T0 + 4 * DAY), (T0 + timedelta(hours=10), T0 + timedelta(hours=30))]
        for text in ("", "101", "79160000001", "101 79160000001", "102 74950000003"):
            query = parse_call_query(text)
            for low, high in ranges:
                want = model(query, low, high)
                for limit in (1, 3, 7):
                    seen: list[str] = []
                    cursor = None
                    for _ in range(len(want) + 2):
                        page = store.search(calls.tenant_id, query, low, high, cursor=cursor, limit=limit)
                        assert page.total == len(want), (text, low, limit)
                        assert all({leg.leg_id for leg in g.legs} == legs_of[g.linkedid] for g in page.items)
                        seen += linkedids(page)
                        cursor = page.next_cursor
                        if cursor is None:
                            break
                        assert len(page.items) == limit
                    assert cursor is None and seen == want, (text, low, limit)
        assert placed["window"] > 0
        if window == "tight":
            assert placed["grouped"] > 0

    def test_later_pages_of_few_calls_come_from_the_grouped_read(
        self, store: SqlCallStore, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Searches of at most WINDOW_MIN_TOTAL calls page with the grouped read; above it, later
        pages try the window read. Either way the pages are the same."""
        window_page = queries.window_page
        tried: list[int] = []

        def counted(*args: Any, **kwargs: Any) -> Any:
            tried.append(1)
            return window_page(*args, **kwargs)

        monkeypatch.setattr(queries, "window_page", counted)
        calls = Calls(new_tenant())
        for i in range(12):
            calls.leg(f"{1710500000 + i}.{i}", "+79160000001", "101", at=T0 + timedelta(minutes=7 * i))
        store.insert(calls.records)
        want = [f"{1710500000 + i}.{i}" for i in reversed(range(12))]

        def walk() -> list[str]:
            seen: list[str] = []
            cursor = None
            while True:
                page = search(store, calls.tenant_id, "101", limit=5, cursor=cursor)
                assert page.total == 12
                seen += linkedids(page)
                cursor = page.next_cursor
                if cursor is None:
                    return seen

        assert walk() == want and not tried  # 12 calls: at most WINDOW_MIN_TOTAL (the default)
        monkeypatch.setattr(queries, "WINDOW_MIN_TOTAL", 11)
        assert walk() == want and len(tried) == 2  # pages 2 and 3 tried the window

    def test_later_pages_wait_for_calls_that_reach_back_past_the_window(
        self, store: SqlCallStore, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Calls whose newest legs fill the window but whose first leg is older than calls the
        window did not read must not be placed before those calls; an unanswered leg between the
        two numbers of a pair does not count for the pair's order."""
        monkeypatch.setattr(queries, "WINDOW_MIN_TOTAL", 0)
        calls = Calls(new_tenant())
        for i in range(2):  # the first page
            calls.leg(f"1.{i}", "+79160000001", "101", at=T0 + timedelta(hours=20, minutes=i))
        for i in range(15):  # first leg at T0, the last one just before the first page
            calls.leg(f"2.{i}", "+79160000002", "101", at=T0 + timedelta(seconds=i))
            calls.leg(f"2.{i}", "101", "102", at=T0 + timedelta(hours=19, minutes=59, seconds=i))
        for i in range(3):  # older than the long calls' last legs, newer than their first
            calls.leg(f"3.{i}", "+79160000003", "101", at=T0 + timedelta(hours=5 + i))
        # pair 101 / +79160000004: P rang unanswered at 1 h and was answered at 3 h; Q at 2 h
        calls.leg("4.1", "101", "+79160000004", at=T0 + timedelta(hours=1), answered=False)
        calls.leg("4.1", "101", "+79160000004", at=T0 + timedelta(hours=3))
        calls.leg("4.2", "+79160000004", "101", at=T0 + timedelta(hours=2))
        for i in range(2):
            calls.leg(f"5.{i}", "101", "+79160000004", at=T0 + timedelta(hours=10 + i))
        store.insert(calls.records)

        def walk(query: str, limit: int) -> list[str]:
            seen: list[str] = []
            cursor = None
            for _ in range(40):
                page = search(store, calls.tenant_id, query, T0 - DAY, T0 + DAY, cursor=cursor, limit=limit)
                seen += linkedids(page)
                cursor = page.next_cursor
                if cursor is None:
                    return seen
            raise AssertionError(f"more pages than calls: {seen}")

        longs = [f"2.{i}" for i in reversed(range(15))]
        expected = ["1.1", "1.0", "5.1", "5.0", "3.2", "3.1", "3.0", "4.2", "4.1", *longs]
        for limit in (1, 2, 3, 5):
            assert walk("101", limit) == expected, limit
        assert walk("101 79160000004", 1) == ["5.1", "5.0", "4.1", "4.2"]

    def test_leg_matching_in_python_agrees_with_the_views(self, store: SqlCallStore) -> None:
        """``queries.leg_matcher`` (used to order later pages) decides as the materialized views
        that fill the lookup tables: numbers with and without +, employee accounts on either
        side, unanswered legs, a number calling itself."""
        rng = random.Random(11)
        calls = Calls(new_tenant())
        pool = ["101", "102", "+79160000001", "79160000001", "+74950000002"]
        for i in range(80):
            account = {}
            if rng.random() < 0.4:
                account[rng.choice(["caller_account", "called_account"])] = rng.choice(["101", "102"])
            calls.leg(f"7.{i}", rng.choice(pool), rng.choice(pool), answered=rng.random() < 0.5, **account)
        store.insert(calls.records)
        tenant = sql_string(calls.tenant_id)
        for number in ("101", "102", "79160000001", "74950000002"):
            query = ParsedQuery(kind=QueryKind.NUMBER, numbers=(number,))
            stored = {
                leg_id
                for (leg_id,) in store._select(
                    f"SELECT leg_id FROM calls_by_number WHERE tenant_id = {tenant} AND number = '{number}'"  # noqa: S608
                )
            }
            assert stored == {leg.leg_id for leg in calls.records if queries.leg_matcher(query)(leg)}, number
        for pair in (("101", "102"), ("101", "79160000001"), ("74950000002", "79160000001")):
            query = ParsedQuery(kind=QueryKind.PAIR, numbers=pair)
            stored = {
                leg_id
                for (leg_id,) in store._select(
                    f"SELECT leg_id FROM calls_by_pair WHERE tenant_id = {tenant}"  # noqa: S608
                    f" AND number_a = '{pair[0]}' AND number_b = '{pair[1]}'"
                )
            }
            assert stored == {leg.leg_id for leg in calls.records if queries.leg_matcher(query)(leg)}, pair
            assert stored, pair

    def test_bad_cursor(self, store: SqlCallStore) -> None:
        tenant = new_tenant()
        for bad in ("nonsense", "", "djE6eDp5Ono", Cursor(1, "a'b", 0).encode()):
            with pytest.raises(ValueError, match="cursor"):
                search(store, tenant, "", cursor=bad)

    def test_missed_calls_are_marked(self, store: SqlCallStore) -> None:
        calls = Calls(new_tenant())
        calls.leg("7.1", "+79161234567", "101", at=T0, answered=False)
        calls.leg("7.1", "+79161234567", "102", at=T0, answered=False, disposition="busy")
        calls.leg("7.2", "+79161234567", "101", at=T0 + timedelta(minutes=1), answered=False)
        calls.leg("7.2", "+79161234567", "102", at=T0 + timedelta(minutes=1, seconds=10), billsec=12)
        calls.leg(
            "7.3", "+79161234567", "103", at=T0 + timedelta(minutes=2), answered=False, disposition="failed"
        )
        store.insert(calls.records)

        page = search(store, calls.tenant_id, "+79161234567")
        marks = {g.linkedid: (g.missed, g.talk_time) for g in page.items}
        assert marks == {"7.1": (True, 0), "7.2": (False, 12), "7.3": (True, 0)}
        assert all(leg.recording_id is None for g in page.items if g.missed for leg in g.legs)

    def test_retention_drops_only_that_tenants_old_months(self, store: SqlCallStore) -> None:
        kept, other = Calls(new_tenant()), Calls(new_tenant())
        jan, feb, mar = (datetime(2024, m, 10, 12, 0, tzinfo=UTC) for m in (1, 2, 3))
        for month in (jan, feb, mar):
            kept.leg(f"{int(month.timestamp())}.1", "101", "102", at=month)
            other.leg(f"{int(month.timestamp())}.1", "101", "102", at=month)
        # a month with only a missed call: calls_by_pair has no partition for it
        kept.leg("1702000000.1", "101", "102", at=datetime(2023, 12, 8, tzinfo=UTC), answered=False)
        store.insert(kept.records + other.records)
        whole = (datetime(2024, 1, 1, tzinfo=UTC), datetime(2024, 4, 1, tzinfo=UTC))

        assert store.drop_tenant_before(kept.tenant_id, date(2024, 3, 1)) == [202312, 202401, 202402]
        assert store.drop_tenant_before(kept.tenant_id, date(2024, 3, 31)) == []
        for query in ("", "101", "101 102"):
            assert search(store, kept.tenant_id, query, *whole).total == 1, query
            assert search(store, other.tenant_id, query, *whole).total == 3, query
        assert search(store, kept.tenant_id, kept.records[0].linkedid).total == 0
        assert search(store, other.tenant_id, other.records[0].linkedid).total == 1
        assert store.tenant_months(kept.tenant_id) == [202403]
        assert store.tenant_months(other.tenant_id) == [202401, 202402, 202403]

    def test_retention_of_several_tenants_at_once(self, store: SqlCallStore) -> None:
        first, second, untouched = Calls(new_tenant()), Calls(new_tenant()), Calls(new_tenant())
        jan, mar = datetime(2023, 1, 10, 12, 0, tzinfo=UTC), datetime(2023, 3, 10, 12, 0, tzinfo=UTC)
        for calls in (first, second, untouched):
            for month in (jan, mar):
                calls.leg(f"{int(month.timestamp())}.1", "101", "102", at=month)
        store.insert(first.records + second.records + untouched.records)
        dropped = store.drop_tenants_before(
            [first.tenant_id, second.tenant_id, new_tenant()], date(2023, 2, 1)
        )
        assert dropped == {first.tenant_id: [202301], second.tenant_id: [202301]}
        assert store.tenant_months(first.tenant_id) == store.tenant_months(second.tenant_id) == [202303]
        assert store.tenant_months(untouched.tenant_id) == [202301, 202303]
        whole = (datetime(2023, 1, 1, tzinfo=UTC), datetime(2023, 4, 1, tzinfo=UTC))
        assert search(store, first.tenant_id, "101", *whole).total == 1
        assert search(store, untouched.tenant_id, "101 102", *whole).total == 2
        with pytest.raises(ValueError, match="tenant"):
            store.drop_tenants_before(["x' OR 1=1 --"], date(2023, 2, 1))

    @pytest.mark.parametrize(
        "hostile",
        [
            "'",
            "\\",
            "\\'",
            "'; DROP TABLE calls; --",
            "x' OR 1=1 OR 'x",
            "\\' OR 1=1 --",
            "a\nb\r\tc\x00d\x1b",
            "Иван Петров 😀 \u2028",
            "\\x27\\0\\\\",
            '`"$(){}',
        ],
    )
    def test_literals_cannot_break_out(self, store: SqlCallStore, hostile: str) -> None:
        (row,) = store._select(f"SELECT {sql_string(hostile)}")
        assert row[0] == hostile
        (row,) = store._select(f"SELECT length({sql_string(hostile)})")
        assert row[0] == len(hostile.encode())

    def test_hostile_values_are_refused_or_stored_verbatim(self, store: SqlCallStore) -> None:
        calls = Calls(new_tenant())
        name = "O'Brien \\'; DROP TABLE calls; -- Иван"
        calls.leg("8.1", "101", "102", caller_name=name, called_name="\\", at=T0)
        store.insert(calls.records)
        (group,) = search(store, calls.tenant_id, "101").items
        assert (group.legs[0].caller_name, group.legs[0].called_name) == (name, "\\")

        for query in ("101' OR '1'='1", "1.1'; DROP TABLE calls", "101 --", "\\'"):
            with pytest.raises(ValueError, match=r"number"):
                search(store, calls.tenant_id, query)
        # the store re-checks what it renders, even when a caller skips the parser
        for parsed in (
            ParsedQuery(kind=QueryKind.NUMBER, numbers=("1' OR 1=1 --",)),
            ParsedQuery(kind=QueryKind.PAIR, numbers=("101", "x'")),
            ParsedQuery(kind=QueryKind.LINKEDID, linkedid="1.1' OR 1=1"),
        ):
            with pytest.raises(ValueError, match="invalid"):
                store.search(calls.tenant_id, parsed, T0 - DAY, T0 + DAY)
        with pytest.raises(ValueError, match="tenant"):
            store.search("acme' OR 1=1 --", parse_call_query(""), T0 - DAY, T0 + DAY)
        for table in TABLES:
            assert store._select(f"SELECT count() FROM {table}")[0][0] > 0  # noqa: S608
        assert search(store, calls.tenant_id, "101").total == 1


class TestChdbStore(StoreContract):
    @pytest.fixture
    def store(self, chdb_store: ChdbCallStore) -> SqlCallStore:
        return chdb_store

    def test_searches_do_not_wait_for_the_writer(self, store: ChdbCallStore) -> None:
        """Searches have connections of their own: while the writer connection is busy (an
        insert of a whole batch holds it for hundreds of milliseconds), two searches run side
        by side and answer."""
        calls = Calls(new_tenant())
        calls.leg("1710406800.1", "101", "+79161234567")
        calls.leg("1710406800.2", "102", "+79161234567", at=T0 + timedelta(minutes=1))
        store.insert(calls.records)
        with store._writer._lock, ThreadPoolExecutor(2) as pool:  # the writer is busy
            pages = [pool.submit(search, store, calls.tenant_id, number) for number in ("101", "102")]
            done, _ = wait(pages, timeout=30)
            assert len(done) == 2, "a search waited for the writer connection"
            assert [linkedids(page.result()) for page in pages] == [["1710406800.1"], ["1710406800.2"]]


def table_settings(store: SqlCallStore) -> dict[str, str]:
    """Each table's CREATE statement as the engine keeps it (with its settings)."""
    rows = store._select(
        "SELECT name, create_table_query FROM system.tables WHERE database = currentDatabase()"
    )
    return {str(name): str(create) for name, create in rows if name in TABLES}


class TestChdbStoreCompaction:
    def test_compaction_is_set_on_every_table_and_can_be_turned_off(self, chdb_store: ChdbCallStore) -> None:
        """``compact_after`` reaches the engine as each table's own setting, and 0 takes it
        off again (the migration runs at every start, with the current setting)."""
        assert chdb_store.compacts is False
        try:
            chdb_store.compact_after = 7
            chdb_store.migrate()
            assert chdb_store.compacts is True
            created = table_settings(chdb_store)
            assert sorted(created) == sorted(TABLES)
            for create in created.values():
                assert "min_age_to_force_merge_seconds = 7" in create
        finally:
            chdb_store.compact_after = 0
            chdb_store.migrate()
        assert chdb_store.compacts is False
        for create in table_settings(chdb_store).values():
            assert "min_age_to_force_merge_seconds = 7" not in create

    def test_legs_are_kept_in_small_granules_and_blocks(self, chdb_store: ChdbCallStore) -> None:
        created = table_settings(chdb_store)
        assert "index_granularity = 128" in created["calls_by_linkedid"]
        assert "min_compress_block_size = 4096" in created["calls_by_linkedid"]
        assert "max_compress_block_size = 65536" in created["calls_by_linkedid"]
        assert "min_compress_block_size" not in created["calls_by_number"]


class TestServerStore(StoreContract):
    @pytest.fixture
    def store(self, server_store: ServerCallStore) -> SqlCallStore:
        return server_store

    def test_reconnects_after_the_connection_drops(self, store: ServerCallStore) -> None:
        assert store.ping()
        assert store._client is not None
        store._client.disconnect()
        assert store.ping()
        calls = Calls(new_tenant())
        calls.leg("1.1", "101", "102")
        store._client.disconnect()
        store.insert(calls.records)
        assert search(store, calls.tenant_id, "101").total == 1

    def test_a_server_without_forced_merges_runs_without_compaction(self, store: ServerCallStore) -> None:
        """ClickHouse 18.16 knows no ``min_age_to_force_merge_seconds``: the migration leaves
        it out (and says so) instead of failing the start."""
        try:
            store.compact_after = 7
            store.migrate()
            assert store.compacts is False
            assert all(
                "min_age_to_force_merge_seconds" not in create for create in table_settings(store).values()
            )
            assert "index_granularity = 128" in table_settings(store)["calls_by_linkedid"]
        finally:
            store.compact_after = 0


def test_sql_string_renders_plain_ascii() -> None:
    assert sql_string("a'b\\c") == "'a\\'b\\\\c'"
    assert sql_string("й\n") == "'\\xD0\\xB9\\x0A'"
    for value in ("'; DROP TABLE calls; --", "\\", "😀"):
        rendered = sql_string(value)
        assert rendered.isascii() and "\n" not in rendered
        inner = rendered[1:-1].replace("\\\\", "").replace("\\'", "")
        assert "'" not in inner


def test_retention_drops_every_table() -> None:
    assert sorted(DROP_ORDER) == sorted(TABLES)


def test_cursor_round_trip() -> None:
    cursor = Cursor(1710406800, "1710406800.42", 17)
    assert Cursor.decode(cursor.encode()) == cursor
    assert queries.from_epoch(queries.epoch(T0)) == T0
