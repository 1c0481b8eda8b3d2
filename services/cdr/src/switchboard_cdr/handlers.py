"""Thin bus subscribers of the cdr service: the search request."""

from typing import Any

from faststream.nats import NatsBroker
from faststream.nats.annotations import NatsMessage
from switchboard_contracts.cdr import CallSearchRequest
from switchboard_contracts.common import ErrorCode, ServiceError
from switchboard_contracts.errors import error_reply, ok_reply
from switchboard_contracts.subjects import CDR_SEARCH_PATTERN

from .service import CallHistoryService


def register(broker: NatsBroker, service: CallHistoryService) -> None:
    @broker.subscriber(CDR_SEARCH_PATTERN, queue="cdr", title="search call history")
    async def search(body: CallSearchRequest, msg: NatsMessage) -> dict[str, Any]:
        try:
            if msg.raw_message.subject.split(".")[2] != body.tenant_id:
                raise ServiceError(
                    ErrorCode.FORBIDDEN, "the subject's tenant differs from the message's", "tenant_id"
                )
            page = await service.search(body)
            return ok_reply(page.model_dump(mode="json"))
        except Exception as exc:
            return error_reply(exc)
