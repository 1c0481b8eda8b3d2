"""Composition root of the media service: settings, broker, metadata and object stores, the
service, subscribers. Nothing happens at import."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import uvicorn
from faststream.asgi import AsgiFastStream
from faststream.middlewares import ExceptionMiddleware
from faststream.nats import NatsBroker
from nats.js.api import ObjectStoreConfig, StorageType
from nats.js.errors import BucketNotFoundError
from pydantic import ValidationError
from switchboard_contracts.common import ErrorCode, ServiceError
from switchboard_contracts.errors import error_reply
from switchboard_contracts.runtime import broker_connected, connect_with_retry, health_routes, make_broker
from switchboard_contracts.sounds import UPLOADS_BUCKET
from switchboard_contracts.subjects import config_sound_usages

from . import audio, events, handlers
from .events import JetStreamEvents, ensure_stream
from .service import MediaService
from .settings import Settings
from .storage import ObjectStore
from .store import MetadataStore

log = logging.getLogger("switchboard.media")


def build(settings: Settings | None = None) -> tuple[AsgiFastStream, NatsBroker]:
    settings = settings or Settings()
    broker = make_broker(
        settings.nats_url,
        middlewares=[ExceptionMiddleware(publish_handlers={ValidationError: lambda exc: error_reply(exc)})],
    )
    metadata = MetadataStore(settings.kv_bucket)
    objects = ObjectStore(
        settings.s3_endpoint,
        access_key=settings.s3_access_key.get_secret_value(),
        secret_key=settings.s3_secret_key.get_secret_value(),
        bucket=settings.s3_bucket,
        secure=settings.s3_secure,
        region=settings.s3_region,
    )

    async def usages(tenant_id: str, sound_id: str) -> list[dict[str, Any]]:
        """Ask the config service (it owns IVR menus and queues) who uses a sound file."""
        try:
            reply = await broker.request(
                {"tenant_id": tenant_id, "id": sound_id}, config_sound_usages(tenant_id), timeout=3
            )
        except Exception:
            raise ServiceError(
                ErrorCode.UNAVAILABLE, "cannot check who uses the sound file: config service not answering"
            ) from None
        answer = json.loads(reply.body)
        if not answer.get("ok"):
            raise ServiceError(ErrorCode.UNAVAILABLE, f"config service: {answer['error']['message']}")
        users: list[dict[str, Any]] = answer["result"]
        return users

    limits = audio.Limits(max_bytes=settings.max_upload_bytes, max_duration_s=settings.max_duration_s)
    service = MediaService(metadata, objects, JetStreamEvents(broker), usages, limits, settings.work_dir)
    handlers.register(broker, service, settings.work_dir)
    events.document(broker)
    state = {"ready": False}

    async def startup() -> None:
        while True:
            try:
                await asyncio.to_thread(objects.ensure_bucket)
                break
            except Exception as exc:
                log.warning("object storage not ready (%s); retrying", exc)
                await asyncio.sleep(2)
        await connect_with_retry(broker, settings.nats_url)
        js = broker.connection.jetstream()
        await ensure_stream(js)
        await metadata.open(js)
        try:
            await js.object_store(UPLOADS_BUCKET)
        except BucketNotFoundError:
            await js.create_object_store(
                UPLOADS_BUCKET,
                ObjectStoreConfig(ttl=3600, storage=StorageType.FILE, description="Uploads in transit"),
            )
        state["ready"] = True
        log.info("media service ready")

    async def probe() -> tuple[dict[str, bool], dict[str, Any]]:
        checks = {
            "nats": broker_connected(broker),
            "object_storage": await asyncio.to_thread(objects.ping),
            "metadata": state["ready"],
        }
        return checks, {}

    app = AsgiFastStream(broker, on_startup=[startup], asgi_routes=health_routes(probe))
    return app, broker


def run() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    settings = Settings()
    app, _ = build(settings)
    uvicorn.run(app, host=settings.http_host, port=settings.http_port, log_level="warning")


if __name__ == "__main__":
    run()
