"""Composition root of the config service: settings, broker, store, service, subscribers.
Nothing happens at import; ``run()`` (the console script) or an ASGI server starts it."""

from __future__ import annotations

import json
import logging
from typing import Any

import uvicorn
from faststream.asgi import AsgiFastStream
from faststream.middlewares import ExceptionMiddleware
from faststream.nats import NatsBroker
from pydantic import ValidationError
from switchboard_contracts.errors import error_reply
from switchboard_contracts.runtime import broker_connected, connect_with_retry, health_routes, make_broker
from switchboard_contracts.subjects import media_rpc

from . import events, handlers
from .events import JetStreamEvents, ensure_stream
from .sealing import Sealer
from .service import ConfigService
from .settings import Settings
from .store import KvStore

log = logging.getLogger("switchboard.config")


def build_broker(settings: Settings) -> NatsBroker:
    return make_broker(
        settings.nats_url,
        middlewares=[ExceptionMiddleware(publish_handlers={ValidationError: lambda exc: error_reply(exc)})],
    )


def build_app(settings: Settings | None = None) -> AsgiFastStream:
    return build(settings)[0]


def build(settings: Settings | None = None) -> tuple[AsgiFastStream, NatsBroker]:
    """Wire the service without connecting anything (the AsyncAPI generator uses this too)."""
    settings = settings or Settings()
    broker = build_broker(settings)
    store = KvStore(settings.kv_bucket, settings.kv_replicas)

    async def sound_exists(tenant_id: str, sound_id: str) -> bool | None:
        """Ask the media service (it owns the sound files)."""
        try:
            reply = await broker.request(
                {"tenant_id": tenant_id, "id": sound_id}, media_rpc(tenant_id, "get"), timeout=3
            )
        except Exception:
            return None
        answer = json.loads(reply.body)
        if answer.get("ok"):
            return True
        return False if answer["error"]["code"] == "not_found" else None

    service = ConfigService(
        store, JetStreamEvents(broker), Sealer(settings.secret_key.get_secret_value()), sound_exists
    )
    handlers.register(broker, service)
    events.document(broker)

    async def startup() -> None:
        await connect_with_retry(broker, settings.nats_url)
        await ensure_stream(broker)
        await store.open(broker.connection.jetstream())
        await service.load()
        log.info("config service ready")

    async def probe() -> tuple[dict[str, bool], dict[str, Any]]:
        return {"nats": broker_connected(broker), "configuration_loaded": service.ready}, {}

    app = AsgiFastStream(
        broker,
        on_startup=[startup],
        asgi_routes=health_routes(probe),
    )
    return app, broker


def run() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    settings = Settings()
    uvicorn.run(build_app(settings), host=settings.http_host, port=settings.http_port, log_level="warning")


if __name__ == "__main__":
    run()
