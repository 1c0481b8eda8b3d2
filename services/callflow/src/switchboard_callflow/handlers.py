"""Thin bus subscribers: the gateway asks which employees' phones are registered."""

from __future__ import annotations

from typing import Any

from faststream.nats import NatsBroker, NatsMessage
from switchboard_contracts.common import ErrorCode, ServiceError
from switchboard_contracts.devices import RegistrationsReply, RegistrationsRequest
from switchboard_contracts.errors import error_reply, ok_reply
from switchboard_contracts.subjects import callflow_registrations

from .service import CallService


def register(broker: NatsBroker, service: CallService) -> None:
    @broker.subscriber(callflow_registrations("*"), queue="callflow", title="registration status")
    async def registrations(body: RegistrationsRequest, msg: NatsMessage) -> dict[str, Any]:
        try:
            if msg.raw_message.subject.split(".")[2] != body.tenant_id:
                raise ServiceError(
                    ErrorCode.FORBIDDEN, "tenant of the subject and the body differ", "tenant_id"
                )
            known = service.registry.registered(body.tenant_id)
            if body.numbers is not None:
                known = {n: known[n] for n in body.numbers if n in known}
            reply = RegistrationsReply(tenant_id=body.tenant_id, registered=known)
            answer: dict[str, Any] = ok_reply(reply.model_dump(mode="json"))
        except Exception as exc:
            answer = error_reply(exc)
        return answer
