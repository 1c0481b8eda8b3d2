"""The FastAPI application: routers, error bodies, health; the bus connects in the background."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI
from fastapi.responses import JSONResponse
from switchboard_contracts.runtime import make_broker
from switchboard_contracts.subjects import EntityKind

from . import errors
from .auth import Authenticator
from .bus import Bus
from .keys import ApiKeys
from .routes import calls, entities, sounds, tenants
from .routes.common import Deps
from .settings import Settings

log = logging.getLogger("switchboard.gateway")


def create_app(settings: Settings) -> FastAPI:
    broker = make_broker(settings.nats_url)
    bus = Bus(broker, settings.request_timeout)
    keys = ApiKeys(settings.keys_bucket, settings.kv_replicas)
    deps = Deps(bus, keys, Authenticator(settings.operator_key.get_secret_value(), keys))

    async def connect() -> None:
        while True:
            await bus.connect_forever()
            try:
                await keys.open(broker.connection.jetstream())
                log.info("gateway connected to NATS")
                return
            except Exception:
                log.warning("opening the key bucket failed; retrying", exc_info=True)
                await asyncio.sleep(1)

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        task = asyncio.create_task(connect())
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            await broker.stop()

    app = FastAPI(
        title="Switchboard API",
        version="0.1.0",
        description="Hosted PBX: tenants, employees, call queues, IVR menus, conference rooms, sound files.",
        lifespan=lifespan,
    )
    errors.install(app)
    app.include_router(tenants.build(deps))
    for kind in EntityKind:
        app.include_router(entities.build(deps, kind))
    app.include_router(calls.build(deps))
    for router in sounds.build(deps, settings):
        app.include_router(router)

    @app.get("/healthz", tags=["health"], summary="Liveness")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", tags=["health"], summary="Readiness: bus connected and key store open")
    async def readyz() -> Any:
        checks = {"nats": bus.connected, "key_store": keys.ready}
        status = 200 if all(checks.values()) else 503
        return JSONResponse({"ready": status == 200, "checks": checks}, status)

    return app
