"""Composition root of the call-flow service: settings, broker, adapters (ARI, AMI, sound
files), the service, the configuration feed and the subscribers. Nothing happens at import."""

from __future__ import annotations

import asyncio
import logging
import os
from typing import Any

import uvicorn
from faststream.asgi import AsgiFastStream
from faststream.nats import NatsBroker
from switchboard_contracts.runtime import broker_connected, connect_with_retry, health_routes, make_broker

from . import events, handlers
from .adapters.ami import Ami
from .adapters.ari import Ari
from .adapters.media import SoundCache
from .adapters.queue_memory import KvQueueMemoryStore
from .adapters.recordings import RecordingDelivery
from .events import BusPublisher, ensure_streams
from .feed import ConfigFeed
from .service import CallService
from .settings import Settings

log = logging.getLogger("switchboard.callflow")


def build(settings: Settings | None = None) -> tuple[AsgiFastStream, NatsBroker]:
    settings = settings or Settings()
    broker = make_broker(settings.nats_url)
    ari = Ari(settings.ari_url, settings.ari_user, settings.ari_password.get_secret_value(), settings.ari_app)
    ami = Ami(
        settings.ami_host,
        settings.ami_port,
        settings.ami_user,
        settings.ami_password.get_secret_value(),
        settings.registration_poll_interval,
    )
    parts: dict[str, Any] = {}
    background: list[asyncio.Task[Any]] = []

    def publish_record(record: Any) -> None:
        parts["publisher"].record(record)

    def publish_registration(change: Any) -> None:
        parts["publisher"].registration(change)

    sounds_dir = os.path.abspath(settings.sounds_dir)
    service = CallService(
        settings,
        ari,
        SoundCache(lambda: broker.connection, sounds_dir, settings.asterisk_sounds_dir or sounds_dir),
        publish_record,
        publish_registration,
    )
    service.read_contacts = ami.contacts
    recordings = (
        RecordingDelivery(lambda: broker.connection, os.path.abspath(settings.recordings_dir))
        if settings.recordings_dir
        else None
    )
    service.recorder.delivery = recordings
    service.queues.store = KvQueueMemoryStore(lambda: broker.connection)
    handlers.register(broker, service)
    events.document(broker)
    configured = asyncio.Event()

    async def startup() -> None:
        await connect_with_retry(broker, settings.nats_url)
        nc = broker.connection
        await ensure_streams(nc)
        if recordings is not None:
            recordings.resume()
        background.append(asyncio.create_task(service.queues.load()))
        parts["publisher"] = BusPublisher(nc)
        feed = ConfigFeed(nc, service.directory, service.config_changed)
        parts["feed"] = feed
        background.append(asyncio.create_task(parts["publisher"].run()))
        background.append(asyncio.create_task(service.provision_forever(configured)))
        background.append(
            asyncio.create_task(ari.run(service.on_event, service.on_connected, service.on_disconnected))
        )
        background.append(asyncio.create_task(ami.watch(service.registrations_changed)))
        background.append(asyncio.create_task(_load(feed, configured)))
        log.info("callflow service started")

    async def shutdown() -> None:
        for task in background:
            task.cancel()
        await service.stop()
        if recordings is not None:
            await recordings.close()
        ami.close()

    async def probe() -> tuple[dict[str, bool], dict[str, Any]]:
        feed = parts.get("feed")
        checks = {
            "nats": broker_connected(broker),
            "configuration": bool(feed and feed.ready),
            "asterisk_ari": ari.connected,
            "asterisk_ami": ami.ready,
            "provisioned": service.provisioned,
        }
        publisher = parts.get("publisher")
        return checks, {
            "calls": len(service.calls),
            "records_waiting": publisher.backlog if publisher else 0,
            "recordings_waiting": recordings.pending if recordings else 0,
        }

    app = AsgiFastStream(
        broker, on_startup=[startup], on_shutdown=[shutdown], asgi_routes=health_routes(probe)
    )
    return app, broker


async def _load(feed: ConfigFeed, configured: asyncio.Event) -> None:
    while True:
        try:
            await feed.start()
            configured.set()
            return
        except Exception as exc:
            log.warning("configuration not loaded yet (%s); retrying", exc)
            await asyncio.sleep(1)


def run() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    logging.getLogger("aioari").setLevel(logging.WARNING)
    logging.getLogger("aioswagger11").setLevel(logging.WARNING)
    settings = Settings()
    app, _ = build(settings)
    uvicorn.run(app, host=settings.http_host, port=settings.http_port, log_level="warning")


if __name__ == "__main__":
    run()
