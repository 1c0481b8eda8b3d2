"""Device registrations: whether an employee's phone is registered (SPEC section 1, the green or
grey dot of the employee list). The call-flow service knows it (Asterisk tells it) and
publishes changes; the gateway asks it for the current state when it lists employees."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from faststream.nats import NatsBroker
from pydantic import Field, StringConstraints

from .common import InternalNumber, Message, Reply, utcnow
from .subjects import DEVICE_EVENTS_STREAM

ContactUri = Annotated[str, StringConstraints(min_length=1, max_length=512)]


class DeviceRegistration(Message):
    """Published on ``pbx.<tenant>.device.registration.changed`` (stream PBX_DEVICES) when an
    employee's registration state changes: the first contact arrives or the last one leaves."""

    number: InternalNumber = Field(description="The employee's number (its SIP login).")
    registered: bool
    contacts: list[ContactUri] = Field(
        default_factory=list, max_length=32, description="Contact URIs now registered."
    )
    user_agent: Annotated[str, StringConstraints(max_length=256)] | None = None
    occurred_at: datetime = Field(default_factory=utcnow)


class RegistrationsRequest(Message):
    """Asked on ``rpc.callflow.<tenant>.registrations``; the answer is the usual envelope
    ``{ok: true, result: RegistrationsReply}``."""

    numbers: list[InternalNumber] | None = Field(
        default=None, max_length=1000, description="Only these employees (none: every one)."
    )


class RegistrationsReply(Message):
    registered: dict[str, bool] = Field(
        default_factory=dict,
        description="Employee number -> registered; a number left out is unknown (shown as null).",
    )


#: The reply envelope on the wire: ``{version, ok, result | error}``.
RegistrationsAnswer = Reply[RegistrationsReply]


def document(broker: NatsBroker) -> None:
    """Declare, for the AsyncAPI document, the device subjects: the call-flow service publishes
    the events and answers the query, the gateway asks it."""
    broker.publisher(
        "pbx.{tenant_id}.device.registration.changed",
        title="device registration changed",
        description=f"An employee's phone registered or unregistered (published by callflow on "
        f"stream {DEVICE_EVENTS_STREAM}).",
        schema=DeviceRegistration,
    )
    broker.publisher(
        "rpc.callflow.{tenant_id}.registrations",
        title="ask device registrations",
        description="The gateway asks (0.5 s deadline) which employees' phones are registered; "
        "callflow answers {ok: true, result: RegistrationsReply} (see 'device registrations "
        "answer'). No answer: the status is shown as unknown (null).",
        schema=RegistrationsRequest,
    )
    broker.publisher(
        "_INBOX.{reply}",
        title="device registrations answer",
        description="callflow's reply to rpc.callflow.<tenant>.registrations.",
        schema=RegistrationsAnswer,
    )
