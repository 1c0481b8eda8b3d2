"""Routing of ARI events to the coroutines that wait for them: by channel, bridge and
playback id. A watcher subscribes to its ids before it acts, so no event is lost to a race."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

Event = dict[str, Any]
HANGUP_EVENTS = frozenset({"ChannelDestroyed", "StasisEnd", "ChannelHangupRequest"})


def event_keys(event: Event) -> Iterator[str]:
    for name in ("channel", "peer", "bridge", "playback", "recording"):
        item = event.get(name)
        if isinstance(item, dict):
            key = item.get("id") or item.get("name")
            if key:
                yield str(key)


class Watch:
    def __init__(self, hub: CallEvents, ids: tuple[str, ...]) -> None:
        self.hub = hub
        self.ids: set[str] = set()
        self.queue: asyncio.Queue[Event] = asyncio.Queue()
        for key in ids:
            self.add(key)

    def add(self, key: str) -> None:
        if key not in self.ids:
            self.ids.add(key)
            self.hub._watchers.setdefault(key, []).append(self)

    def close(self) -> None:
        for key in self.ids:
            watchers = self.hub._watchers.get(key, [])
            if self in watchers:
                watchers.remove(self)
            if not watchers:
                self.hub._watchers.pop(key, None)
        self.ids.clear()

    async def next(self, timeout: float | None) -> Event | None:
        try:
            return await asyncio.wait_for(self.queue.get(), timeout)
        except TimeoutError:
            return None

    async def until(self, predicate: Callable[[Event], bool], timeout: float) -> Event | None:
        """The first event that satisfies ``predicate`` within ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            event = await self.next(left)
            if event is not None and predicate(event):
                return event


class CallEvents:
    def __init__(self) -> None:
        self._watchers: dict[str, list[Watch]] = {}

    def dispatch(self, event: Event) -> None:
        seen: set[int] = set()
        for key in event_keys(event):
            for watcher in self._watchers.get(key, ()):
                if id(watcher) not in seen:
                    seen.add(id(watcher))
                    watcher.queue.put_nowait(event)

    @contextmanager
    def watch(self, *ids: str) -> Iterator[Watch]:
        watcher = Watch(self, ids)
        try:
            yield watcher
        finally:
            watcher.close()


def is_hangup(event: Event, channel_id: str) -> bool:
    return event.get("type") in HANGUP_EVENTS and event.get("channel", {}).get("id") == channel_id
