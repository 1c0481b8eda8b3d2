"""Test-side tools for the telephony tests: an ARI event probe subscribed to everything,
simulated callers (Local channels originated through ARI), and the platform's REST client."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import Callable
from typing import Any

import aiohttp
import httpx

from scripts.asterisk import Instance

Event = dict[str, Any]
PROBE_APP = "sbprobe"


class AriProbe:
    """One ARI event socket for the test session (app ``sbprobe``, subscribed to all events),
    reconnecting by itself after an Asterisk restart; and REST calls."""

    def __init__(self, instance: Instance) -> None:
        self.instance = instance
        self.base = f"http://127.0.0.1:{instance.ari_port}/ari"
        self.auth = aiohttp.BasicAuth(instance.ari_user, instance.ari_password)
        self.events: list[Event] = []
        self._new = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._connected = asyncio.Event()
        self.session: aiohttp.ClientSession | None = None

    async def start(self) -> AriProbe:
        self.session = aiohttp.ClientSession(auth=self.auth, timeout=aiohttp.ClientTimeout(total=10))
        self._task = asyncio.create_task(self._run())
        await asyncio.wait_for(self._connected.wait(), 20)
        return self

    async def _run(self) -> None:
        url = (
            f"ws://127.0.0.1:{self.instance.ari_port}/ari/events?app={PROBE_APP}&subscribeAll=true"
            f"&api_key={self.instance.ari_user}:{self.instance.ari_password}"
        )
        assert self.session is not None
        while True:
            try:
                async with self.session.ws_connect(
                    url, heartbeat=5, timeout=aiohttp.ClientWSTimeout(ws_close=3)
                ) as ws:
                    self._connected.set()
                    async for message in ws:
                        if message.type == aiohttp.WSMsgType.TEXT:
                            self.events.append(json.loads(message.data))
                            self._new.set()
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: S110 - Asterisk restarting; connect again
                pass
            self._connected.clear()
            await asyncio.sleep(0.3)

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        if self.session:
            await self.session.close()

    async def rest(self, method: str, path: str, **params: Any) -> Any:
        assert self.session is not None
        body = params.pop("json", None)
        query = {k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in params.items()}
        async with self.session.request(method, f"{self.base}{path}", params=query, json=body) as response:
            text = await response.text()
            if response.status >= 300:
                raise AssertionError(f"ARI {method} {path}: {response.status} {text}")
            return json.loads(text) if text else None

    def mark(self) -> int:
        return len(self.events)

    async def wait(self, predicate: Callable[[Event], bool], timeout: float = 10, since: int = 0) -> Event:
        deadline = time.monotonic() + timeout
        index = since
        while True:
            while index < len(self.events):
                event = self.events[index]
                index += 1
                if predicate(event):
                    return event
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no matching ARI event in {timeout} s")
            self._new.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._new.wait(), left)

    def since(self, mark: int, kind: str | None = None) -> list[Event]:
        return [e for e in self.events[mark:] if kind is None or e.get("type") == kind]


def legs_of(groups: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every leg of the call-history groups a search returned."""
    return [leg for group in groups for leg in group["legs"]]


def channel_of(event: Event) -> dict[str, Any]:
    channel: dict[str, Any] = event.get("channel", {})
    return channel


class Caller:
    """A simulated phone: ``Local/<number>@sb-internal`` originated through ARI. Its ``;1``
    side stays in the probe's application (DTMF, hang-up); the ``;2`` side runs the dialplan
    into Switchboard as if endpoint ``origin`` had dialled."""

    def __init__(
        self, probe: AriProbe, origin: str, caller_number: str, context: str = "sb-internal"
    ) -> None:
        self.probe = probe
        self.origin = origin
        self.caller_number = caller_number
        self.context = context
        self.channel_id = str(uuid.uuid4())
        self.mark = 0

    async def call(self, number: str) -> Caller:
        self.mark = self.probe.mark()
        await self.probe.rest(
            "POST",
            "/channels",
            endpoint=f"Local/{number}@{self.context}",
            app=PROBE_APP,
            appArgs="caller",
            channelId=self.channel_id,
            otherChannelId=str(uuid.uuid4()),
            callerId=f'"{self.caller_number}" <{self.caller_number}>',
            json={"variables": {"__SB_ORIGIN_ENDPOINT": self.origin}},
        )
        return self

    async def wait_answered(self, timeout: float = 10) -> None:
        await self.probe.wait(
            lambda e: e.get("type") == "StasisStart" and channel_of(e).get("id") == self.channel_id,
            timeout,
            self.mark,
        )

    async def dtmf(self, digits: str) -> None:
        await self.probe.rest(
            "POST", f"/channels/{self.channel_id}/dtmf", dtmf=digits, between=150, duration=120
        )

    async def hangup(self) -> None:
        with contextlib.suppress(AssertionError):
            await self.probe.rest("DELETE", f"/channels/{self.channel_id}")

    async def wait_hung_up(self, timeout: float = 15) -> Event:
        return await self.probe.wait(
            lambda e: e.get("type") == "ChannelDestroyed" and channel_of(e).get("id") == self.channel_id,
            timeout,
            self.mark,
        )


async def wait_ready(callflow_url: str, timeout: float = 30) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    body: dict[str, Any] = {}
    async with httpx.AsyncClient() as client:
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError):
                response = await client.get(f"{callflow_url}/readyz")
                try:
                    body = response.json()
                except ValueError:
                    body = {"status": response.status_code, "text": response.text[:300]}
                if response.status_code == 200:
                    return body
            await asyncio.sleep(0.2)
    raise AssertionError(f"callflow not ready: {body}")
