"""Composition root of the call-history service: settings, broker, store, service, ingestion
and search subscribers. Nothing happens at import."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import uvicorn
from faststream.asgi import AsgiFastStream
from faststream.middlewares import ExceptionMiddleware
from faststream.nats import NatsBroker
from pydantic import ValidationError
from switchboard_contracts.errors import error_reply
from switchboard_contracts.runtime import broker_connected, connect_with_retry, health_routes, make_broker

from . import events, handlers
from .events import DeadLetters, ensure_streams
from .ingest import Ingestor
from .prepare import PreparePool
from .service import CallHistoryService
from .settings import Settings
from .store import CallStore

log = logging.getLogger("switchboard.cdr")


def build_store(settings: Settings) -> CallStore:
    if settings.backend == "server":
        from .store.server_backend import ServerCallStore

        return ServerCallStore(
            host=settings.clickhouse_host,
            port=settings.clickhouse_port,
            database=settings.clickhouse_database,
            user=settings.clickhouse_user,
            password=settings.clickhouse_password.get_secret_value(),
            compact_after=settings.compact_after,
        )
    from .store.chdb_backend import ChdbCallStore

    return ChdbCallStore(
        settings.chdb_path, readers=settings.chdb_readers, compact_after=settings.compact_after
    )


def build(
    settings: Settings | None = None, store: CallStore | None = None
) -> tuple[AsgiFastStream, NatsBroker]:
    settings = settings or Settings()
    broker = make_broker(
        settings.nats_url,
        middlewares=[ExceptionMiddleware(publish_handlers={ValidationError: lambda exc: error_reply(exc)})],
    )
    service = CallHistoryService(lambda: store or build_store(settings))
    handlers.register(broker, service)
    events.document(broker)
    background: list[asyncio.Task[None]] = []
    ingesting: list[asyncio.Task[None]] = []
    ingestors: list[Ingestor] = []
    pools: list[PreparePool] = []

    async def startup() -> None:
        while True:
            try:
                await service.start()
                break
            except Exception as exc:
                log.warning("call history store not ready (%s); retrying", exc)
                await asyncio.sleep(2)
        await connect_with_retry(broker, settings.nats_url)
        js = broker.connection.jetstream()
        await ensure_streams(js)
        pool = None
        if settings.parse_workers and service.accepts_arrow:
            pool = PreparePool(settings.parse_workers)
            pools.append(pool)
            await pool.start()
        ingestor = Ingestor(
            broker.connection,
            js,
            service,
            DeadLetters(js),
            settings.consumer_name,
            settings.batch_size,
            settings.batch_max_wait,
            pool=pool,
        )
        ingestors.append(ingestor)
        ingesting.append(asyncio.create_task(_forever(ingestor.run, "ingestion")))
        if settings.retention_months > 0:
            background.append(asyncio.create_task(_retention(service, settings)))
        log.info("cdr service ready (%s backend)", settings.backend)

    async def shutdown() -> None:
        for ingestor in ingestors:
            ingestor.stop()
        if ingesting:  # let the batch being written commit and the rest go back to JetStream
            await asyncio.wait(ingesting, timeout=30)
        for task in [*ingesting, *background]:
            task.cancel()
        if background:
            await asyncio.wait(background, timeout=5)

    async def after_shutdown() -> None:
        for pool in pools:
            await asyncio.to_thread(pool.close)
        await service.close()

    async def probe() -> tuple[dict[str, bool], dict[str, Any]]:
        ingestor = ingestors[0] if ingestors else None
        checks = {
            "nats": broker_connected(broker),
            "store": await service.ping(),
            "ingesting": ingestor is not None and ingestor.running,
        }
        counts = {
            "committed": ingestor.committed if ingestor else 0,
            "rejected": ingestor.rejected if ingestor else 0,
            "compaction": service.store.compacts if service.store else None,
        }
        return checks, counts

    app = AsgiFastStream(
        broker,
        on_startup=[startup],
        on_shutdown=[shutdown],
        after_shutdown=[after_shutdown],
        asgi_routes=health_routes(probe),
    )
    return app, broker


async def _forever(run: Any, what: str) -> None:
    """Restart a background loop after an unexpected error (the bus may be reconnecting);
    return when it returns (asked to stop)."""
    while True:
        try:
            await run()
            return
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("%s loop failed; restarting in 2 s", what)
            await asyncio.sleep(2)


async def _retention(service: CallHistoryService, settings: Settings) -> None:
    while True:
        try:
            tenants = await service.tenants_with_history()
            dropped = await service.apply_retention_all(tenants, settings.retention_months)
            for tenant_id, months in dropped.items():
                log.info("retention: dropped %s of tenant %s", months, tenant_id)
        except Exception:
            log.exception("retention pass failed")
        await asyncio.sleep(settings.retention_check_interval)


def run() -> None:
    import sys

    sys.setswitchinterval(0.0005)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    settings = Settings()
    app, _ = build(settings)
    uvicorn.run(app, host=settings.http_host, port=settings.http_port, log_level="warning")


if __name__ == "__main__":
    run()
