"""Call-history contracts: the search box parser, call records and search requests."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any

import pytest
from pydantic import ValidationError
from switchboard_contracts.cdr import (
    CallRecord,
    CallSearchRequest,
    ParsedQuery,
    QueryKind,
    is_linkedid,
    parse_call_query,
)

T0 = datetime(2024, 3, 14, 9, 0, tzinfo=UTC)


# parse_call_query -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("", ParsedQuery(kind=QueryKind.ALL)),
        ("   ", ParsedQuery(kind=QueryKind.ALL)),
        ("101", ParsedQuery(kind=QueryKind.NUMBER, numbers=("101",))),
        (" +79255283744 ", ParsedQuery(kind=QueryKind.NUMBER, numbers=("79255283744",))),
        ("+7-925-528-37-44", ParsedQuery(kind=QueryKind.NUMBER, numbers=("79255283744",))),
        ("(495)1234567", ParsedQuery(kind=QueryKind.NUMBER, numbers=("4951234567",))),
        ("7", ParsedQuery(kind=QueryKind.NUMBER, numbers=("7",))),
        ("+79255283744 101", ParsedQuery(kind=QueryKind.PAIR, numbers=("101", "79255283744"))),
        ("101  \t +79255283744", ParsedQuery(kind=QueryKind.PAIR, numbers=("101", "79255283744"))),
        ("1732612345.42", ParsedQuery(kind=QueryKind.LINKEDID, linkedid="1732612345.42")),
        ("pbx1-1732612345.42", ParsedQuery(kind=QueryKind.LINKEDID, linkedid="pbx1-1732612345.42")),
        (
            "0f8fad5b-d9cb-469f-a165-70867728950e",
            ParsedQuery(kind=QueryKind.LINKEDID, linkedid="0f8fad5b-d9cb-469f-a165-70867728950e"),
        ),
    ],
)
def test_parse_call_query(query: str, expected: ParsedQuery) -> None:
    assert parse_call_query(query) == expected


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("abc", "letters are not allowed"),
        ("101a", "letters are not allowed"),
        ("+7916abc4567", "letters are not allowed"),
        ("101 petrov", "letters are not allowed"),
        ("101 102 103", "at most two numbers"),
        ("+7 916 123 45 67", "at most two numbers"),
        ("1732612345.42 101", "linkedid alone"),
        ("1732612345.42 1732612345.43", "linkedid alone"),
        ("101 101", "the same"),
        ("+101 101", "the same"),
        ("101#", "use digits"),
        ("10.1.1", "use digits"),
        ("1+01", "use digits"),
        ("101,102", "use digits"),
        ("'; DROP TABLE calls; --", "at most two numbers"),
        ("101';--", "use digits"),
        ("x'OR'1'='1", "letters are not allowed"),
        ("+", "no digits"),
        ("--", "no digits"),
        ("1" * 32, "too long for a phone number"),
        ("1" * 201, "too long"),
        ("١٢٣", "use digits"),  # Arabic-Indic digits are not ASCII digits
    ],
)
def test_parse_call_query_errors(query: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_call_query(query)


def test_linkedid_rule() -> None:
    assert is_linkedid("1732612345.42")
    assert is_linkedid("1.1")
    assert not is_linkedid("1732612345")
    assert not is_linkedid("1732612345.")
    assert not is_linkedid(".42")
    assert not is_linkedid("0f8fad5b-d9cb-469f-a165")
    assert not is_linkedid("0f8fad5bd9cb469fa16570867728950e")


# CallRecord -----------------------------------------------------------------------------------


def record(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "tenant_id": "acme",
        "linkedid": "1732612345.42",
        "leg_id": "1732612345.42-1",
        "start": "2024-03-14T12:00:00+03:00",
        "answer": "2024-03-14T12:00:10+03:00",
        "end": "2024-03-14T12:01:10+03:00",
        "caller_number": "+79255283744",
        "called_number": "101",
        "caller_account": None,
        "called_account": "101",
        "disposition": "answered",
        "duration": 70,
        "billsec": 60,
    }
    base.update(overrides)
    return base


def test_record_normalises_times_to_utc() -> None:
    leg = CallRecord.model_validate(record())
    assert leg.start == T0 and leg.start.tzinfo == UTC
    assert leg.answer == T0 + timedelta(seconds=10)
    assert leg.transfer is None and leg.ivr_digits == ""
    again = CallRecord.model_validate_json(leg.model_dump_json())
    assert again == leg


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            {"end": "2024-03-14T11:59:00+03:00", "answer": None, "disposition": "no_answer", "billsec": 0},
            "end",
        ),
        ({"answer": "2024-03-14T11:00:00+03:00"}, "answer must lie"),
        ({"answer": "2024-03-14T13:00:00+03:00"}, "answer must lie"),
        ({"billsec": 71}, "billsec"),
        ({"duration": -1}, "greater than or equal"),
        ({"answer": None}, "needs its answer time"),
        ({"disposition": "busy"}, "no answer time"),
        ({"disposition": "no_answer", "answer": None}, "billsec 0"),
        ({"disposition": "failed", "answer": None, "billsec": 0, "recording_id": "r.mp3"}, "no recording"),
        ({"transferred_to": "102"}, "transfer kind"),
        ({"transfer": "warm"}, "blind"),
        ({"start": "2024-03-14T12:00:00"}, "timezone"),
        ({"caller_number": "79255abc"}, "phone number"),
        ({"called_number": ""}, "phone number"),
        ({"called_number": "1" * 32}, "phone number"),
        ({"called_account": "1"}, "2 to 8 digits"),
        ({"linkedid": ""}, "1 to 64"),
        ({"linkedid": "a" * 65}, "1 to 64"),
        ({"leg_id": "x'y"}, "1 to 64"),
        ({"ivr_digits": "12x"}, "keys 0-9"),
        ({"tenant_id": "Acme!"}, "lower-case"),
        ({"disposition": "maybe"}, "answered"),
        ({"extra": 1}, "Extra inputs"),
    ],
)
def test_record_errors(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        CallRecord.model_validate(record(**overrides))


def test_record_optional_fields() -> None:
    leg = CallRecord.model_validate(
        record(
            caller_number="",  # withheld
            transfer="attended",
            transferred_to="102",
            queue_number="500",
            ivr_number="600",
            ivr_digits="1t2#",
            recording_id="acme/2024/03/14/1732612345.42.mp3",
        )
    )
    assert leg.transfer == "attended"


# CallSearchRequest ------------------------------------------------------------------------------


def request(**fields: Any) -> CallSearchRequest:
    return CallSearchRequest.model_validate({"tenant_id": "acme", **fields})


def test_request_defaults_to_today_in_the_tenants_zone() -> None:
    now = datetime(2024, 3, 14, 22, 30, tzinfo=UTC)  # already the 15th in Moscow
    moscow = request(timezone="Europe/Moscow")
    assert moscow.utc_range(now) == (
        datetime(2024, 3, 14, 21, tzinfo=UTC),
        datetime(2024, 3, 15, 21, tzinfo=UTC),
    )
    assert request().utc_range(now) == (datetime(2024, 3, 14, tzinfo=UTC), datetime(2024, 3, 15, tzinfo=UTC))
    assert moscow.limit == 50 and moscow.cursor is None
    assert moscow.parsed() == ParsedQuery(kind=QueryKind.ALL)


def test_request_dates_and_datetimes() -> None:
    days = request(date_from="2024-03-01", date_to="2024-03-02", timezone="Europe/Moscow")
    assert days.date_from == date(2024, 3, 1)
    assert days.utc_range() == (datetime(2024, 2, 29, 21, tzinfo=UTC), datetime(2024, 3, 2, 21, tzinfo=UTC))
    naive = request(date_from="2024-03-01T10:00", date_to="2024-03-01T12:00:00", timezone="Europe/Moscow")
    assert naive.utc_range() == (datetime(2024, 3, 1, 7, tzinfo=UTC), datetime(2024, 3, 1, 9, tzinfo=UTC))
    aware = request(date_from="2024-03-01T10:00:00Z", date_to="2024-03-01T12:00:00+01:00")
    assert aware.utc_range() == (datetime(2024, 3, 1, 10, tzinfo=UTC), datetime(2024, 3, 1, 11, tzinfo=UTC))
    only_to = request(date_to="2024-03-05")
    assert only_to.utc_range() == (datetime(2024, 3, 5, tzinfo=UTC), datetime(2024, 3, 6, tzinfo=UTC))
    tz = timezone(timedelta(hours=5))
    assert request(date_from=datetime(2024, 3, 1, 5, tzinfo=tz), date_to=date(2024, 3, 1)).utc_range()[0] == (
        datetime(2024, 3, 1, 0, tzinfo=UTC)
    )


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"date_from": "2024-03-05", "date_to": "2024-03-01"}, "reversed"),
        ({"date_from": "2024-03-01T12:00", "date_to": "2024-03-01T12:00"}, "reversed"),
        ({"date_from": "2024-02-30"}, "not a valid date"),
        ({"date_from": "yesterday"}, "not a date"),
        ({"date_to": "14.03.2024"}, "not a date"),
        ({"date_from": "2020-01-01", "date_to": "2024-01-01"}, "too long"),
        ({"timezone": "Mars/Olympus"}, "unknown time zone"),
        ({"timezone": "../etc/passwd"}, "unknown time zone"),
        ({"query": "101 abc"}, "letters"),
        ({"query": "1 2 3"}, "at most two numbers"),
        ({"limit": 0}, "greater than or equal"),
        ({"limit": 201}, "less than or equal"),
    ],
)
def test_request_errors(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        request(**fields)
