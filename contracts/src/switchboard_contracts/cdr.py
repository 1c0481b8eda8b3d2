"""Call history (SPEC section 7): call-record messages, one per call leg, and the search over them.

A call is the set of legs that share a ``linkedid``. Times are timezone-aware and normalised to
UTC (whole seconds are what the store keeps). The search box takes one of four shapes; see
:func:`parse_call_query` for the exact rules.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, time, timedelta
from enum import StrEnum
from typing import Annotated, Self
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import AwareDatetime, BeforeValidator, ConfigDict, Field, field_validator, model_validator

from .common import InternalNumber, Matches, Message, Model

#: linkedid and leg id: what Asterisk produces (``1732612345.42``), uuids, and similar ids.
CALL_ID_PATTERN = r"^[A-Za-z0-9._-]{1,64}$"
#: A number as it appears on a leg: digits with an optional leading +, internal (2-8 digits)
#: or external, at most 32 characters.
CALL_NUMBER_PATTERN = r"^\+?[0-9]{1,31}$"
#: Digits typed in IVR menus, in order: 0-9 * # A-D; ``t`` marks a menu that timed out.
IVR_DIGITS_PATTERN = r"^[0-9A-D*#t]{0,64}$"
RECORDING_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,199}$"

CallId = Annotated[
    str,
    Matches(
        CALL_ID_PATTERN, "must be 1 to 64 letters, digits, dots, underscores or dashes", ("1732612345.42",)
    ),
]
CallNumber = Annotated[
    str,
    Matches(
        CALL_NUMBER_PATTERN,
        "must be a phone number: digits with an optional leading +, at most 32 characters",
        ("+79255283744", "101"),
    ),
]
#: The caller's number may be withheld or unknown: then it is the empty string.
CallerNumber = Annotated[
    str,
    Matches(
        r"^(\+?[0-9]{1,31})?$",
        "must be a phone number (digits with an optional leading +, at most 32 characters) "
        "or empty when withheld",
        ("+79255283744", ""),
    ),
]
IvrDigits = Annotated[
    str,
    Matches(
        IVR_DIGITS_PATTERN, "must be at most 64 of the keys 0-9 * # A-D, with t marking a timeout", ("12t",)
    ),
]
RecordingId = Annotated[
    str,
    Matches(
        RECORDING_ID_PATTERN,
        "must be 1 to 200 letters, digits, dots, underscores, dashes or slashes",
        ("acme/2024/11/26/1732612345.42.mp3",),
    ),
]
CallName = Annotated[str, Field(max_length=128)]


def _date_or_datetime(value: object) -> object:
    """``YYYY-MM-DD`` is a date (a whole day); anything longer is a datetime. Without this,
    pydantic would turn ``2024-01-05T00:00:00`` into a date, or a date into a datetime."""
    if isinstance(value, str):
        text = value.strip()
        if re.fullmatch(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", text):
            try:
                return date.fromisoformat(text)
            except ValueError:
                raise ValueError(f"{text!r} is not a valid date (YYYY-MM-DD)") from None
        try:
            return datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            raise ValueError(
                f"{text[:40]!r} is not a date (YYYY-MM-DD) or a datetime (YYYY-MM-DDTHH:MM[:SS][+HH:MM])"
            ) from None
    return value


DateOrDatetime = Annotated[date | datetime, BeforeValidator(_date_or_datetime)]

#: Longest date range a search may cover.
MAX_SEARCH_DAYS = 366
MAX_QUERY_LENGTH = 200


class Disposition(StrEnum):
    ANSWERED = "answered"
    NO_ANSWER = "no_answer"
    BUSY = "busy"
    FAILED = "failed"


class TransferKind(StrEnum):
    BLIND = "blind"
    ATTENDED = "attended"


def _to_utc(value: datetime) -> datetime:
    return value.astimezone(UTC)


class CallLeg(Model):
    """One leg of a call as stored and shown (a :class:`CallRecord` without the envelope).

    ``duration`` is the whole leg in seconds; ``billsec`` its talk time, without greeting, IVR
    or queue waiting. ``caller_account`` / ``called_account`` are the employees' internal
    numbers on each side, when an employee is on that side."""

    linkedid: CallId
    leg_id: CallId = Field(description="Unique id of the leg; a redelivered record has the same one.")
    start: AwareDatetime
    answer: AwareDatetime | None = None
    end: AwareDatetime
    caller_number: CallerNumber
    caller_name: CallName = ""
    called_number: CallNumber
    called_name: CallName = ""
    caller_account: InternalNumber | None = None
    called_account: InternalNumber | None = None
    disposition: Disposition
    duration: int = Field(ge=0, le=7 * 24 * 3600)
    billsec: int = Field(ge=0, le=7 * 24 * 3600)
    queue_number: InternalNumber | None = None
    ivr_number: InternalNumber | None = None
    ivr_digits: IvrDigits = ""
    transfer: TransferKind | None = None
    transferred_to: CallNumber | None = None
    recording_id: RecordingId | None = None

    @field_validator("start", "answer", "end")
    @classmethod
    def _utc(cls, value: datetime | None) -> datetime | None:
        return None if value is None else _to_utc(value)

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.end < self.start:
            raise ValueError("end must not be before start")
        if self.answer is not None and not (self.start <= self.answer <= self.end):
            raise ValueError("answer must lie between start and end")
        if self.billsec > self.duration:
            raise ValueError("billsec (talk time) must not exceed duration")
        if self.disposition == Disposition.ANSWERED:
            if self.answer is None:
                raise ValueError("an answered leg needs its answer time")
        else:
            if self.answer is not None:
                raise ValueError(f"a leg with disposition {self.disposition.value} has no answer time")
            if self.billsec != 0:
                raise ValueError("a leg that was not answered has billsec 0")
            if self.recording_id is not None:
                raise ValueError("a leg that was not answered has no recording")
        if self.transferred_to is not None and self.transfer is None:
            raise ValueError("transferred_to needs a transfer kind (blind or attended)")
        return self


class CallRecord(Message, CallLeg):
    """Published by the call-flow service for every finished call leg."""


# Search ---------------------------------------------------------------------------------------


class QueryKind(StrEnum):
    ALL = "all"  # empty box: every call in the date range
    NUMBER = "number"  # one number on either side of a leg
    PAIR = "pair"  # answered legs between two numbers, either direction
    LINKEDID = "linkedid"  # the legs of one call, whatever the dates


class ParsedQuery(Model):
    """The search box, parsed. Numbers are normalised: no leading +, no - ( ) separators; a pair
    is sorted so that ``numbers[0] < numbers[1]``."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True, frozen=True)

    kind: QueryKind
    numbers: tuple[str, ...] = ()
    linkedid: str | None = None


#: Asterisk linkedids are ``<epoch seconds>.<sequence>``, optionally prefixed by the system
#: name (``pbx1-1732612345.42``) when Asterisk's ``systemname`` is set.
_ASTERISK_LINKEDID = re.compile(r"^(?:[A-Za-z0-9_]{1,32}-)?[0-9]{1,20}\.[0-9]{1,20}$")
_UUID_LINKEDID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
_NUMBER_SEPARATORS = re.compile(r"[-()]")
_MAX_NUMBER_DIGITS = 31


def is_linkedid(token: str) -> bool:
    """The linkedid rule of the search box: ``digits.digits`` (Asterisk's
    ``<epoch>.<sequence>``, optionally ``name-`` prefixed) or a dashed uuid
    (``8-4-4-4-12`` hex digits). A phone number never contains a dot, and a dashed uuid has
    dashes at fixed places, so neither shape is ambiguous with a number."""
    return bool(_ASTERISK_LINKEDID.fullmatch(token) or _UUID_LINKEDID.fullmatch(token))


def normalize_number(token: str) -> str:
    """A number typed in the search box, as the lookup tables keep it: separators ``- ( )``
    dropped, the leading ``+`` dropped. Raises ValueError naming what is wrong."""
    shown = token if len(token) <= 40 else token[:40] + "..."
    digits = _NUMBER_SEPARATORS.sub("", token)
    if digits.startswith("+"):
        digits = digits[1:]
    if any(ch.isalpha() for ch in digits):
        raise ValueError(f"{shown!r} is not a phone number: letters are not allowed in a number")
    if not digits:
        raise ValueError(f"{shown!r} is not a phone number: it has no digits")
    if not digits.isascii() or not digits.isdigit():
        raise ValueError(
            f"{shown!r} is not a phone number: use digits, an optional leading + and the separators - ( )"
        )
    if len(digits) > _MAX_NUMBER_DIGITS:
        raise ValueError(f"{shown!r} is too long for a phone number (at most {_MAX_NUMBER_DIGITS} digits)")
    return digits


def parse_call_query(query: str) -> ParsedQuery:
    """Parse the one search box of the call history.

    - empty (or only spaces): every call in the date range (``all``);
    - one number, internal or external (``+7 916 ...`` is not one number: spaces separate
      numbers; write ``+7-916-...`` or ``+7916...``): legs where it is on either side;
    - two numbers separated by spaces: answered legs between them, either direction;
    - a linkedid (see :func:`is_linkedid`), alone: that call's legs, whatever the dates.

    Raises ValueError with a message for the user: letters in a number, more than two numbers,
    a linkedid together with something else, the same number twice, an over-long query."""
    if len(query) > MAX_QUERY_LENGTH:
        raise ValueError(f"the search is too long (at most {MAX_QUERY_LENGTH} characters)")
    tokens = query.split()
    if not tokens:
        return ParsedQuery(kind=QueryKind.ALL)
    linkedids = [token for token in tokens if is_linkedid(token)]
    if linkedids:
        if len(tokens) > 1:
            raise ValueError("search a linkedid alone, without numbers or a second linkedid")
        return ParsedQuery(kind=QueryKind.LINKEDID, linkedid=linkedids[0])
    if len(tokens) > 2:
        raise ValueError(
            f"search at most two numbers separated by a space (got {len(tokens)} words); "
            "write one number without spaces, e.g. +79161234567"
        )
    numbers = [normalize_number(token) for token in tokens]
    if len(numbers) == 1:
        return ParsedQuery(kind=QueryKind.NUMBER, numbers=(numbers[0],))
    if numbers[0] == numbers[1]:
        raise ValueError("the two numbers are the same: search one number, or two different ones")
    return ParsedQuery(kind=QueryKind.PAIR, numbers=tuple(sorted(numbers)))


def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {name!r}") from None


class CallSearchRequest(Message):
    """A search of one tenant's call history (bus request ``rpc.cdr.<tenant>.search``).

    ``date_from`` / ``date_to`` are dates or datetimes. A date means the whole day in
    ``timezone`` (``date_to`` inclusive); a naive datetime is read in ``timezone``;
    ``date_to`` as a datetime is exclusive. Defaults: today in ``timezone``; only ``date_to``
    given: that one day; only ``date_from`` given: up to the end of today (or of that day, if
    later). A linkedid search ignores the dates."""

    query: str = Field(default="", max_length=MAX_QUERY_LENGTH)
    date_from: DateOrDatetime | None = None
    date_to: DateOrDatetime | None = None
    timezone: str = Field(default="UTC", description="The tenant's time zone (IANA name).")
    cursor: str | None = Field(default=None, max_length=512)
    limit: int = Field(default=50, ge=1, le=200)

    @field_validator("query")
    @classmethod
    def _query(cls, value: str) -> str:
        parse_call_query(value)
        return value

    @field_validator("timezone")
    @classmethod
    def _timezone(cls, value: str) -> str:
        _zone(value)
        return value

    @model_validator(mode="after")
    def _range(self) -> Self:
        self.utc_range()
        return self

    def parsed(self) -> ParsedQuery:
        return parse_call_query(self.query)

    def utc_range(self, now: datetime | None = None) -> tuple[datetime, datetime]:
        """The half-open UTC range ``[from, to)`` this request covers. Raises ValueError for a
        reversed or over-long range."""
        zone = _zone(self.timezone)
        today = (now or datetime.now(UTC)).astimezone(zone).date()

        def day_start(day: date) -> datetime:
            return datetime.combine(day, time(0), tzinfo=zone).astimezone(UTC)

        def moment(value: date | datetime, *, end: bool) -> datetime:
            if isinstance(value, datetime):
                return (value if value.tzinfo else value.replace(tzinfo=zone)).astimezone(UTC)
            return day_start(value + timedelta(days=1)) if end else day_start(value)

        def day_of(value: date | datetime) -> date:
            return (
                value.astimezone(zone).date()
                if isinstance(value, datetime) and value.tzinfo
                else (value.date() if isinstance(value, datetime) else value)
            )

        if self.date_from is None and self.date_to is None:
            start, stop = day_start(today), day_start(today + timedelta(days=1))
        elif self.date_from is None:
            assert self.date_to is not None
            stop = moment(self.date_to, end=True)
            start = day_start(day_of(self.date_to))
            if isinstance(self.date_to, datetime) and start == stop:
                start = day_start(day_of(self.date_to) - timedelta(days=1))
        elif self.date_to is None:
            start = moment(self.date_from, end=False)
            stop = day_start(max(today, day_of(self.date_from)) + timedelta(days=1))
        else:
            start, stop = moment(self.date_from, end=False), moment(self.date_to, end=True)
        if stop <= start:
            raise ValueError("date_from must be before date_to (the range is reversed or empty)")
        if stop - start > timedelta(days=MAX_SEARCH_DAYS + 1):
            raise ValueError(f"the date range is too long (at most {MAX_SEARCH_DAYS} days)")
        return start, stop


class CallGroup(Model):
    """One call: its legs in chronological order (by start, then leg id). ``start`` is the
    earliest leg's start, ``end`` the latest leg's end. ``missed``: no leg was answered (shown
    red). ``talk_time``: the sum of the legs' billsec (0 when missed)."""

    linkedid: str
    start: datetime
    end: datetime
    missed: bool
    talk_time: int
    legs: list[CallLeg]


class CallSearchPage(Model):
    """Calls newest first. ``total`` counts the calls (linkedids) that match in the whole range;
    ``next_cursor`` is given back to get the next page (none on the last page)."""

    items: list[CallGroup]
    total: int
    next_cursor: str | None = None
