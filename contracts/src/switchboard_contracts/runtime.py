"""What every service does the same way with its NATS connection: wait for NATS at start,
reconnect forever, and stop cleanly even when nats-server went away first."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from faststream.asgi import AsgiResponse, get
from faststream.nats import NatsBroker
from nats.js import JetStreamContext
from nats.js.api import KeyValueConfig, StreamConfig
from nats.js.errors import BadRequestError, BucketNotFoundError
from nats.js.kv import KeyValue

log = logging.getLogger(__name__)


class ResilientNatsBroker(NatsBroker):
    """A NatsBroker whose stop does not fail when nats-server is already gone (Ctrl-C stops
    every process at once): there is nothing left to unsubscribe or drain."""

    async def stop(self, *args: Any, **kwargs: Any) -> None:
        try:
            await super().stop(*args, **kwargs)
        except Exception as exc:
            if self._connection is not None and self._connection.is_connected:
                raise
            log.info("bus connection gone at shutdown (%s); nothing to drain", type(exc).__name__)
            self._connection = None


def make_broker(url: str, **kwargs: Any) -> ResilientNatsBroker:
    """Reconnects forever, quiet per-message logging."""
    return ResilientNatsBroker(
        url,
        max_reconnect_attempts=-1,
        reconnect_time_wait=1,
        connect_timeout=2,
        log_level=logging.DEBUG,
        **kwargs,
    )


async def connect_with_retry(broker: NatsBroker, url: str) -> None:
    """Wait for NATS at start; later drops are handled by the client's reconnects."""
    delay = 0.2
    while True:
        try:
            await broker.connect()
            return
        except Exception as exc:  # any failure means "not yet"
            log.warning("NATS at %s not reachable (%s); retrying", url, exc)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)


def broker_connected(broker: NatsBroker) -> bool:
    connection = broker._connection
    return connection is not None and connection.is_connected


async def ensure_stream(js: JetStreamContext, config: StreamConfig) -> None:
    """Create a JetStream stream, or bring an existing one to ``config``."""
    try:
        await js.add_stream(config=config)
    except BadRequestError:
        await js.update_stream(config=config)


async def open_key_value(js: JetStreamContext, config: KeyValueConfig) -> KeyValue:
    """Open a key-value bucket, creating it (with ``config``) the first time."""
    try:
        return await js.key_value(config.bucket)
    except BucketNotFoundError:
        return await js.create_key_value(config)


Probe = Callable[[], Awaitable[tuple[dict[str, bool], dict[str, Any]]]]


def health_routes(probe: Probe) -> list[tuple[str, Any]]:
    """``/healthz`` (the process answers) and ``/readyz``: JSON ``{"ready", "checks", ...}``,
    200 when every check holds, else 503. ``probe`` returns the checks and extra figures."""

    @get(include_in_schema=False)
    async def liveness(scope: Any) -> AsgiResponse:
        return AsgiResponse(b"ok", 200)

    @get(include_in_schema=False)
    async def readiness(scope: Any) -> AsgiResponse:
        checks, extra = await probe()
        body = {"ready": all(checks.values()), "checks": checks, **extra}
        return AsgiResponse(json.dumps(body).encode(), 200 if body["ready"] else 503)

    return [("/healthz", liveness), ("/readyz", readiness)]
