"""Conference rooms (SPEC section 4): PIN asked (wrong: asked again, then hung up), music on
hold while alone, everyone hears everyone, no participant limit. One mixing bridge per room."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from switchboard_contracts.cdr import Disposition
from switchboard_contracts.conferences import ConferenceRoom

from .adapters.ari import AriError
from .channels import Watch, is_hangup
from .dialing import new_id

if TYPE_CHECKING:
    from .calls import Call
    from .service import CallService

log = logging.getLogger("switchboard.callflow.conferences")
PIN_ATTEMPTS = 2
PIN_TIMEOUT = 8.0


@dataclass
class Room:
    bridge_id: str
    members: set[str] = field(default_factory=set)
    moh: bool = False


class Conferences:
    def __init__(self, service: CallService) -> None:
        self.s = service
        self.rooms: dict[tuple[str, str], Room] = {}
        self._lock = asyncio.Lock()

    async def join(self, call: Call, room: ConferenceRoom) -> None:
        if not call.answered:
            await self.s.ari.request("POST", f"/channels/{call.channel_id}/answer")
            call.answered = True
        call.leg.called_name = room.name
        with self.s.events.watch(call.channel_id) as watch:
            if room.pin and not await self._pin_ok(call, room.pin, watch):
                await self.s.router.finish(call, Disposition.ANSWERED)
                return
            key = (call.tenant_id, room.number)
            await self._enter(key, call.channel_id)
            call.leg.talking()
            try:
                await watch.until(lambda e: is_hangup(e, call.channel_id), 7 * 24 * 3600)
            finally:
                await self._leave(key, call.channel_id)
                await self.s.router.finish(call, Disposition.ANSWERED)

    async def _pin_ok(self, call: Call, pin: str, watch: Watch) -> bool:
        for attempt in range(PIN_ATTEMPTS):
            prompt = "sound:conf-getpin" if attempt == 0 else "sound:conf-invalidpin"
            playback_id = new_id()
            watch.add(playback_id)
            await self.s.ari.request(
                "POST", f"/channels/{call.channel_id}/play/{playback_id}", {"media": prompt}
            )
            typed = ""
            while True:
                event = await watch.next(PIN_TIMEOUT)
                if event is None:
                    break
                if is_hangup(event, call.channel_id):
                    return False
                if event.get("type") == "ChannelDtmfReceived":
                    digit = str(event.get("digit", ""))
                    if digit == "#":
                        break
                    typed += digit
                    if len(typed) >= len(pin):
                        break
            await self._stop(playback_id)
            if typed == pin:
                return True
            log.info("call %s: wrong conference PIN", call.channel_id)
        playback_id = new_id()
        await self.s.ari.request(
            "POST", f"/channels/{call.channel_id}/play/{playback_id}", {"media": "sound:conf-invalidpin"}
        )
        await watch.until(lambda e: e.get("type") == "PlaybackFinished" or is_hangup(e, call.channel_id), 5)
        return False

    async def _stop(self, playback_id: str) -> None:
        with contextlib.suppress(AriError):
            await self.s.ari.request("DELETE", f"/playbacks/{playback_id}")

    async def _enter(self, key: tuple[str, str], channel_id: str) -> None:
        async with self._lock:
            room = self.rooms.get(key)
            if room is None:
                room = Room(new_id())
                await self.s.ari.request(
                    "POST",
                    f"/bridges/{room.bridge_id}",
                    {"type": "mixing,dtmf_events", "name": f"conf-{key[0]}-{key[1]}"},
                )
                self.rooms[key] = room
            await self.s.ari.request("POST", f"/bridges/{room.bridge_id}/addChannel", {"channel": channel_id})
            room.members.add(channel_id)
            await self._music(room)

    async def _leave(self, key: tuple[str, str], channel_id: str) -> None:
        async with self._lock:
            room = self.rooms.get(key)
            if room is None:
                return
            room.members.discard(channel_id)
            if not room.members:
                self.rooms.pop(key, None)
                with contextlib.suppress(AriError):
                    await self.s.ari.request("DELETE", f"/bridges/{room.bridge_id}")
                return
            await self._music(room)

    async def _music(self, room: Room) -> None:
        """Music on hold for a lone participant; off as soon as someone else is there."""
        alone = len(room.members) == 1
        try:
            if alone and not room.moh:
                await self.s.ari.request("POST", f"/bridges/{room.bridge_id}/moh", {"mohClass": "default"})
            elif not alone and room.moh:
                await self.s.ari.request("DELETE", f"/bridges/{room.bridge_id}/moh")
            room.moh = alone
        except AriError as exc:
            log.warning("conference music: %s", exc)
