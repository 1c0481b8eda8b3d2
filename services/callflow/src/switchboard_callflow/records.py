"""Call records: one per leg (the caller's leg, and every channel dialled for it), in the
call history contract. Billsec counts only time talking to a person, never a greeting, an
IVR menu or queue waiting."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from switchboard_contracts.cdr import CallRecord, Disposition, TransferKind
from switchboard_contracts.common import utcnow


@dataclass
class Leg:
    tenant_id: str
    linkedid: str
    leg_id: str
    caller_number: str
    called_number: str
    caller_name: str = ""
    called_name: str = ""
    caller_account: str | None = None
    called_account: str | None = None
    queue_number: str | None = None
    ivr_number: str | None = None
    ivr_digits: str = ""
    transfer: TransferKind | None = None
    transferred_to: str | None = None
    recording_id: str | None = None
    start: datetime | None = None
    answer: datetime | None = None
    talk_from: datetime | None = None
    talk_seconds: float = 0.0
    disposition: Disposition | None = None
    #: its record went out already (a transfer ends a leg before the call ends)
    published: bool = False

    def __post_init__(self) -> None:
        self.start = self.start or utcnow()

    def answered(self) -> None:
        if self.answer is None:
            self.answer = utcnow()

    def talking(self) -> None:
        """A person is on the other side from now on (bridged)."""
        self.answered()
        if self.talk_from is None:
            self.talk_from = utcnow()

    def silent(self) -> None:
        """Talk ended (the leg goes on: a transfer, an IVR after a call)."""
        if self.talk_from is not None:
            self.talk_seconds += (utcnow() - self.talk_from).total_seconds()
            self.talk_from = None

    def record(self, disposition: Disposition | None = None) -> CallRecord:
        self.silent()
        end = utcnow()
        start = self.start or end
        if disposition is None:
            disposition = self.disposition or (Disposition.ANSWERED if self.answer else Disposition.NO_ANSWER)
        answered = disposition == Disposition.ANSWERED
        answer = self.answer if answered else None
        if answered and answer is None:
            answer = end
        duration = max(0, round((end - start).total_seconds()))
        billsec = min(duration, round(self.talk_seconds)) if answered else 0
        digits = "".join(ch for ch in self.ivr_digits if ch in "0123456789*#ABCDt")[:64]
        return CallRecord(
            tenant_id=self.tenant_id,
            linkedid=self.linkedid,
            leg_id=self.leg_id,
            start=start,
            answer=answer,
            end=end,
            caller_number=_number(self.caller_number),
            caller_name=self.caller_name[:128],
            called_number=_number(self.called_number) or "0",
            called_name=self.called_name[:128],
            caller_account=self.caller_account,
            called_account=self.called_account,
            disposition=disposition,
            duration=duration,
            billsec=billsec,
            queue_number=self.queue_number,
            ivr_number=self.ivr_number,
            ivr_digits=digits,
            transfer=self.transfer if self.transferred_to else None,
            transferred_to=_number(self.transferred_to) if self.transferred_to else None,
            recording_id=self.recording_id if answered else None,
        )


def _number(value: str | None) -> str:
    """What the record can hold of a number: digits with an optional leading +."""
    if not value:
        return ""
    plus = "+" if value.startswith("+") else ""
    digits = "".join(ch for ch in value if ch.isdigit())[:31]
    return plus + digits if digits else ""
