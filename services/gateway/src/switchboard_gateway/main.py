"""Composition root of the gateway; nothing happens at import."""

from __future__ import annotations

import logging

import uvicorn

from .app import create_app
from .settings import Settings


def run() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    settings = Settings()  # operator_key comes from the environment
    uvicorn.run(create_app(settings), host=settings.http_host, port=settings.http_port, log_level="info")


if __name__ == "__main__":
    run()
