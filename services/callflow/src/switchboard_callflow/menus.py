"""IVR menus, exactly as SPEC section 3 says: the greeting accepts digits while it plays, the
timeout starts after it, no or wrong input plays it again, and after the repeats the call goes
to the default number. What was typed (``t`` for a timeout) goes on the call's record."""

from __future__ import annotations

import contextlib
import logging
from typing import TYPE_CHECKING

from switchboard_contracts.cdr import Disposition
from switchboard_contracts.common import is_internal_number
from switchboard_contracts.ivr import IvrMenu

from .channels import Watch, is_hangup
from .dialing import new_id

if TYPE_CHECKING:
    from .calls import Call
    from .service import CallService

log = logging.getLogger("switchboard.callflow.menus")

#: Seconds to wait for the next digit once the caller started typing.
INTER_DIGIT_TIMEOUT = 3.0
#: Played when a menu has no greeting of its own.
DEFAULT_GREETING = "sound:vm-enter-num-to-call"


class CallerLeft(Exception):
    pass


def decide(menu: IvrMenu, typed: str, known_number: bool, complete: bool) -> str | None:
    """``target`` for a matching entry, ``""`` for wrong input, None to wait for more digits.
    ``complete``: the caller stopped typing (timeout)."""
    actions = {a.digits: a.target for a in menu.actions}
    longer = any(d.startswith(typed) and d != typed for d in actions)
    internal = menu.allow_internal_dialing and is_internal_number(typed) and known_number
    could_be_number = menu.allow_internal_dialing and typed.isdigit() and len(typed) < 8
    if typed in actions and (complete or not (longer or could_be_number)):
        return str(actions[typed])
    if internal and complete:
        return typed
    if complete or (not longer and not could_be_number and typed not in actions):
        return ""
    return None


class Menus:
    def __init__(self, service: CallService) -> None:
        self.s = service

    async def run(self, call: Call, menu: IvrMenu) -> None:
        call.leg.ivr_number = menu.number
        if not call.answered:
            await self.s.ari.request("POST", f"/channels/{call.channel_id}/answer")
            call.answered = True
            call.leg.answered()
        attempts = max(1, menu.repeats)
        try:
            with self.s.events.watch(call.channel_id) as watch:
                for _ in range(attempts):
                    target = await self._attempt(call, menu, watch)
                    if target:
                        await self.s.router.route(call, target)
                        return
        except CallerLeft:
            await self.s.router.finish(call, Disposition.ANSWERED)
            return
        await self.s.router.route(call, menu.default_target)

    async def _attempt(self, call: Call, menu: IvrMenu, watch: Watch) -> str | None:
        typed = ""
        playback_id = new_id()
        media = await self.s.sounds.media_uri(call.tenant_id, menu.greeting_sound_id) or DEFAULT_GREETING
        watch.add(playback_id)
        await self.s.ari.request("POST", f"/channels/{call.channel_id}/play/{playback_id}", {"media": media})
        playing = True
        timeout: float | None = None  # while the greeting plays there is no deadline
        while True:
            event = await watch.next(timeout if not playing else 600)
            if event is None:  # the caller stopped typing, or typed nothing
                if not typed:
                    call.leg.ivr_digits += "t"
                    return None
                target = decide(menu, typed, call.tenant.by_number(typed) is not None, complete=True)
                return target or None
            kind = event.get("type")
            if is_hangup(event, call.channel_id):
                raise CallerLeft
            if kind == "PlaybackFinished" and event.get("playback", {}).get("id") == playback_id:
                playing = False
                timeout = float(menu.timeout) if not typed else INTER_DIGIT_TIMEOUT
            elif kind == "ChannelDtmfReceived":
                digit = str(event.get("digit", ""))
                typed += digit
                call.leg.ivr_digits += digit
                if playing:
                    await self._stop(playback_id)
                    playing = False
                timeout = INTER_DIGIT_TIMEOUT
                target = decide(menu, typed, call.tenant.by_number(typed) is not None, complete=False)
                if target is not None:
                    return target or None

    async def _stop(self, playback_id: str) -> None:
        with contextlib.suppress(Exception):  # it may have just finished
            await self.s.ari.request("DELETE", f"/playbacks/{playback_id}")
