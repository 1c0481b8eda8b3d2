"""Fast paths: the ingest's validation accepts exactly what CallRecord accepts, with the same
values, or refuses (and then the full validation decides); the search reply as bytes."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import ValidationError
from switchboard_cdr.service import fast_record, parse_batch
from switchboard_contracts.cdr import CallRecord

GOOD: dict[str, Any] = {
    "version": 1,
    "tenant_id": "acme",
    "linkedid": "1700000000.1",
    "leg_id": "1700000000.1",
    "start": "2023-11-14T22:13:20Z",
    "answer": "2023-11-14T22:13:25Z",
    "end": "2023-11-14T22:14:20Z",
    "caller_number": "+79161234567",
    "caller_name": "Иван",
    "called_number": "101",
    "called_name": "",
    "caller_account": None,
    "called_account": "101",
    "disposition": "answered",
    "duration": 60,
    "billsec": 55,
    "queue_number": "800",
    "ivr_number": None,
    "ivr_digits": "1#",
    "transfer": "blind",
    "transferred_to": "102",
    "recording_id": "acme/1.mp3",
}

VARIANTS: list[dict[str, Any]] = [
    {},
    {"start": "2023-11-15T01:13:20+03:00", "answer": "2023-11-15T01:13:25.999+03:00"},
    {"start": 1700000000},
    {"start": "1700000000"},
    {"caller_name": "  padded  ", "called_number": " 101 ", "ivr_digits": " 1 "},
    {"caller_number": ""},
    {"caller_number": "+7916\n"},
    {"called_number": "\u0661\u0660\u0661"},  # Arabic-Indic digits
    {"called_number": "1" * 32},
    {"caller_name": "x" * 129},
    {"caller_name": " " + "x" * 128},
    {"duration": "60"},
    {"duration": 60.0},
    {"duration": 60.5},
    {"duration": -1},
    {"billsec": 61},
    {"disposition": "no_answer"},
    {"disposition": "no_answer", "answer": None, "billsec": 0, "recording_id": None},
    {"disposition": "ANSWERED"},
    {"transfer": None},
    {"transfer": None, "transferred_to": None},
    {"extra": 1},
    {"tenant_id": "Acme"},
    {"linkedid": "a" * 65},
    {"linkedid": "a b"},
    {"caller_account": "1"},
    {"caller_account": "12345678"},
    {"recording_id": "/abs"},
    {"end": "2023-11-14T22:13:19Z"},
    {"start": "2023-11-14T22:13:20"},
    {"version": "1"},
    {"ivr_digits": "12t*#AD"},
    {"ivr_digits": "e"},
]


@pytest.mark.parametrize("changes", VARIANTS, ids=[json.dumps(v, ensure_ascii=True)[:60] for v in VARIANTS])
def test_fast_path_agrees_with_the_model(changes: dict[str, Any]) -> None:
    payload = json.dumps({**GOOD, **changes}).encode()
    try:
        expected: CallRecord | None = CallRecord.model_validate_json(payload)
    except ValidationError:
        expected = None
    try:
        fast: CallRecord | None = fast_record(payload)
    except Exception:
        fast = None  # refused: the full validation decides
    if fast is not None:
        assert expected is not None, "the fast path accepted what the model refuses"
        assert fast.model_dump() == expected.model_dump()
        assert fast.__pydantic_fields_set__ == expected.__pydantic_fields_set__
        assert [d.tzinfo for d in (fast.start, fast.end)] == [
            d.tzinfo for d in (expected.start, expected.end)
        ]
    parsed = parse_batch([("pbx.acme.call.leg.ended", payload)])
    assert (parsed.records[0] if parsed.records else None) == expected


def test_missing_optional_fields() -> None:
    payload = {k: v for k, v in GOOD.items() if k not in ("caller_name", "queue_number", "version")}
    record = fast_record(json.dumps(payload).encode())
    assert record == CallRecord.model_validate(payload)
    assert record.__pydantic_fields_set__ == set(payload)


def test_search_reply_is_the_ok_reply() -> None:
    from datetime import UTC, datetime

    from switchboard_cdr.handlers import ok_page_reply
    from switchboard_cdr.store.queries import group_legs
    from switchboard_contracts.cdr import CallLeg, CallSearchPage
    from switchboard_contracts.errors import ok_reply

    leg = CallLeg.model_validate({k: v for k, v in GOOD.items() if k not in ("version", "tenant_id")})
    page = CallSearchPage.model_construct(items=[group_legs(leg.linkedid, [leg])], total=1, next_cursor="abc")
    assert json.loads(ok_page_reply(page)) == json.loads(json.dumps(ok_reply(page.model_dump(mode="json"))))
    assert leg.start.tzinfo == UTC and datetime.now(UTC) > leg.start
