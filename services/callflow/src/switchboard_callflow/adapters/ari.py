"""Asterisk REST Interface: the event socket through aioari, REST calls over one aiohttp
session. Reconnects forever; the service hears about every (re)connection."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import aioari
import aiohttp

log = logging.getLogger("switchboard.callflow.ari")

Event = dict[str, Any]


class AriError(Exception):
    def __init__(self, status: int, method: str, path: str, text: str) -> None:
        super().__init__(f"ARI {method} {path}: {status} {text.strip()[:200]}")
        self.status = status


class Ari:
    """``request`` for REST calls; ``run`` keeps the event socket open and hands every event
    to ``on_event`` in the order Asterisk sent them."""

    def __init__(self, url: str, user: str, password: str, app: str) -> None:
        self.url = url.rstrip("/")
        self.app = app
        self._auth = aiohttp.BasicAuth(user, password)
        self._session: aiohttp.ClientSession | None = None
        self.connected = False
        self.asterisk_started: str | None = None

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                auth=self._auth, timeout=aiohttp.ClientTimeout(total=10, connect=3)
            )
        return self._session

    async def request(
        self, method: str, path: str, params: dict[str, Any] | None = None, body: Any = None
    ) -> Any:
        query = {k: _param(v) for k, v in (params or {}).items() if v is not None}
        async with self._http().request(method, f"{self.url}/ari{path}", params=query, json=body) as response:
            text = await response.text()
            if response.status >= 300:
                raise AriError(response.status, method, path, text)
            if not text:
                return None
            return await response.json(content_type=None)

    async def run(
        self,
        on_event: Callable[[Event], Awaitable[None]],
        on_connected: Callable[[], Awaitable[None]],
        on_disconnected: Callable[[], None],
    ) -> None:
        delay = 0.5
        while True:
            client = None
            try:
                client = await aioari.connect(self.url, self._auth.login, self._auth.password)
                client.on_event("*", on_event)
                info = await self.request("GET", "/asterisk/info")
                self.asterisk_started = str(info.get("status", {}).get("startup_time", ""))
                runner = asyncio.ensure_future(client.run(apps=self.app))
                await asyncio.sleep(0.2)  # the socket is open once run() got going
                if runner.done():
                    runner.result()
                self.connected = True
                delay = 0.5
                log.info("ARI connected (Asterisk started %s)", self.asterisk_started)
                await on_connected()
                await runner
                log.warning("ARI event socket closed")
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("ARI not reachable (%s: %s); retrying", type(exc).__name__, exc)
            finally:
                if self.connected:
                    self.connected = False
                    on_disconnected()
                if client is not None:
                    with contextlib.suppress(Exception):  # closing a dead socket
                        await client.close()
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()


def _param(value: Any) -> Any:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | tuple):
        return ",".join(str(v) for v in value)
    return value
