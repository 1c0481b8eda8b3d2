"""The gateway's way to the services: request/reply over NATS with a deadline. A service that
does not answer in time becomes a 503 with a clear body, never a hang or a 500."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from faststream.nats import NatsBroker
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeout
from switchboard_contracts.common import CONTRACT_VERSION, ErrorCode, ErrorInfo, error_from_reply
from switchboard_contracts.runtime import connect_with_retry

from .errors import ApiError

log = logging.getLogger(__name__)

_OK_HEAD = b'{"version":%d,"ok":true,"result":' % CONTRACT_VERSION
_OK_TAIL = b',"error":null}'


class Bus:
    def __init__(self, broker: NatsBroker, timeout: float) -> None:
        self.broker = broker
        self.timeout = timeout
        self._connected = asyncio.Event()

    @property
    def connected(self) -> bool:
        return self._connected.is_set() and self.broker.connection.is_connected

    async def connect_forever(self) -> None:
        """Connect in the background; until then requests get 503."""
        await connect_with_retry(self.broker, "the gateway's NATS URL")
        self._connected.set()

    async def _send(
        self,
        subject: str,
        body: dict[str, Any],
        service: str,
        timeout: float | None,
    ) -> Any:
        if not self.connected:
            raise ApiError(503, ErrorCode.UNAVAILABLE, "the message bus is not reachable; retry shortly")
        deadline = self.timeout if timeout is None else timeout
        try:
            return await self.broker.request(body, subject, timeout=deadline)
        except (TimeoutError, NatsTimeout, NoRespondersError):
            raise ApiError(
                503,
                ErrorCode.UNAVAILABLE,
                f"the {service} service did not answer within {deadline:g} s; retry shortly",
                headers={"Retry-After": "2"},
            ) from None

    @staticmethod
    def _decode(payload: bytes, subject: str, service: str) -> dict[str, Any]:
        try:
            data = json.loads(payload)
        except ValueError:
            data = None
        if not isinstance(data, dict) or "ok" not in data:
            log.error("malformed reply on %s", subject)
            raise ApiError(502, ErrorCode.INTERNAL, f"the {service} service sent a malformed reply")
        return data

    async def request(
        self,
        subject: str,
        body: dict[str, Any],
        service: str = "config",
        timeout: float | None = None,
    ) -> Any:
        """Send a request; return the reply's result or raise its error as ServiceError.
        ``timeout`` overrides the default deadline (for slow work such as audio conversion)."""
        reply = await self._send(subject, body, service, timeout)
        data = self._decode(reply.body, subject, service)
        if not data["ok"]:
            raise error_from_reply(ErrorInfo.model_validate(data["error"]))
        return data["result"]

    async def request_result_json(
        self,
        subject: str,
        body: dict[str, Any],
        service: str = "config",
        timeout: float | None = None,
    ) -> bytes:
        """``request``, but the result as the JSON text the service sent, not decoded: for big
        results that go to the client as they are. A reply of the usual shape
        (``{"version":1,"ok":true,"result":...,"error":null}``, as ``ok_reply`` dumps it) is cut
        without parsing; any other reply is decoded (errors raised) and the result encoded."""
        reply = await self._send(subject, body, service, timeout)
        payload = bytes(reply.body)
        if payload.startswith(_OK_HEAD) and payload.endswith(_OK_TAIL):
            return payload[len(_OK_HEAD) : -len(_OK_TAIL)]
        data = self._decode(payload, subject, service)
        if not data["ok"]:
            raise error_from_reply(ErrorInfo.model_validate(data["error"]))
        return json.dumps(data["result"], ensure_ascii=False, separators=(",", ":")).encode()

    async def request_raw(
        self,
        subject: str,
        body: dict[str, Any],
        service: str = "config",
        timeout: float | None = None,
    ) -> tuple[bytes, dict[str, str]]:
        """Send a request whose successful reply is raw bytes (not the JSON envelope); return
        (body, headers). A reply with the header ``Sb-Error`` carries the JSON error reply,
        raised as ServiceError."""
        reply = await self._send(subject, body, service, timeout)
        headers: dict[str, str] = dict(reply.headers or {})
        if headers.get("Sb-Error"):
            data = self._decode(reply.body, subject, service)
            if data["ok"]:
                log.error("error reply without an error on %s", subject)
                raise ApiError(502, ErrorCode.INTERNAL, f"the {service} service sent a malformed reply")
            raise error_from_reply(ErrorInfo.model_validate(data["error"]))
        return bytes(reply.body), headers
