"""Two parties talking in one mixing bridge until one hangs up, with the in-call star codes
of SPEC section 6 (per tenant): blind transfer ``**<number>``, attended transfer
``##<number>`` (the other party hears music meanwhile) and its cancel ``*0``. A number is
complete after ``#`` or when no digit follows for a moment."""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from switchboard_contracts.cdr import Disposition, TransferKind

from .adapters.ari import AriError
from .calls import Call
from .channels import Event, Watch, is_hangup
from .dialing import dial_many, hangup, new_id
from .records import Leg

if TYPE_CHECKING:
    from .service import CallService

log = logging.getLogger("switchboard.callflow.conversation")
#: Seconds after the last digit of a transfer number before it counts as complete.
NUMBER_TIMEOUT = 3.0
#: Seconds the transfer target rings during an attended transfer.
CONSULT_RING_TIME = 30


@dataclass
class Pair:
    """Who talks in the bridge now: ``a`` and ``b``, with the leg of the dialled party."""

    bridge_id: str
    a: str
    b: str
    leg: Leg
    recording: str | None = None

    def other(self, channel_id: str) -> str:
        return self.b if channel_id == self.a else self.a


class Conversations:
    def __init__(self, service: CallService) -> None:
        self.s = service

    async def run(self, call: Call, peer_id: str, leg: Leg) -> bool:
        """True when the conversation ended with a hang-up; False when a blind transfer took
        the call elsewhere (routed and finished there)."""
        ari = self.s.ari
        pair = Pair(new_id(), call.channel_id, peer_id, leg)
        with self.s.events.watch(call.channel_id, peer_id, pair.bridge_id) as watch:
            await ari.request("POST", f"/bridges/{pair.bridge_id}", {"type": "mixing,dtmf_events"})
            try:
                for channel in (pair.a, pair.b):
                    await ari.request("POST", f"/bridges/{pair.bridge_id}/addChannel", {"channel": channel})
            except AriError:
                await self._end(pair)
                raise
            await self.s.recorder.start(call, pair)
            typed: dict[str, str] = {}
            pending: tuple[str, str] | None = None  # (channel, kind) collecting a number
            while True:
                event = await watch.next(NUMBER_TIMEOUT if pending else None)
                if event is None and pending is not None:
                    channel, kind = pending
                    pending = None
                    outcome = await self._transfer(call, pair, watch, channel, kind, typed.pop(channel, ""))
                    if outcome is not None:
                        return outcome
                    continue
                if event is None:
                    continue
                left = _hung_up(event, pair)
                if left is not None:
                    await self._end(pair, left)
                    self._publish(pair.leg)
                    return True
                if event.get("type") != "ChannelDtmfReceived":
                    continue
                channel = str(event["channel"]["id"])
                digit = str(event.get("digit", ""))
                if channel not in (pair.a, pair.b):
                    continue
                codes = call.tenant.tenant.settings.star_codes
                if pending is not None and pending[0] == channel:
                    if digit == "#":
                        kind = pending[1]
                        pending = None
                        outcome = await self._transfer(
                            call, pair, watch, channel, kind, typed.pop(channel, "")
                        )
                        if outcome is not None:
                            return outcome
                    else:
                        typed[channel] = typed.get(channel, "") + digit
                    continue
                recent = (typed.get(channel, "") + digit)[-4:]
                typed[channel] = recent
                if recent.endswith(codes.blind_transfer):
                    pending, typed[channel] = (channel, "blind"), ""
                elif recent.endswith(codes.attended_transfer):
                    pending, typed[channel] = (channel, "attended"), ""

    async def _transfer(
        self, call: Call, pair: Pair, watch: Watch, channel: str, kind: str, number: str
    ) -> bool | None:
        """None: the conversation goes on; True/False as ``run`` returns."""
        if not number:
            return None
        if kind == "blind":
            return await self._blind(call, pair, channel, number)
        return await self._attended(call, pair, watch, channel, number)

    async def _blind(self, call: Call, pair: Pair, presser: str, number: str) -> bool:
        """The presser leaves; the other party goes to ``number`` (a conference number
        moves them into the room)."""
        remaining = pair.other(presser)
        log.info("call %s: blind transfer of %s to %s", call.channel_id, remaining, number)
        pair.leg.transfer = TransferKind.BLIND
        pair.leg.transferred_to = number
        await self._end(pair, hang_up=False)
        await hangup(self.s.ari, presser)
        self._publish_legs(pair)
        if remaining == call.channel_id:
            call.leg.silent()
            await self.s.router.route(call, number)
            return False
        # the caller pressed: the dialled party continues as a call of its own
        transferred = self.s.router.continued_call(call, remaining, pair.leg)
        await self.s.router.finish(call, Disposition.ANSWERED)
        await self.s.router.route(transferred, number)
        return False

    async def _attended(self, call: Call, pair: Pair, watch: Watch, presser: str, number: str) -> bool | None:
        ari = self.s.ari
        held = pair.other(presser)
        destinations = await self.s.router.destinations(call.tenant, number)
        if not destinations:
            log.info("call %s: attended transfer to %s: nothing to ring", call.channel_id, number)
            return None
        await ari.request("POST", f"/bridges/{pair.bridge_id}/removeChannel", {"channel": presser})
        await ari.request("POST", f"/bridges/{pair.bridge_id}/moh", {"mohClass": "default"})
        entity = call.tenant.employee(number)
        consult_leg = Leg(
            call.tenant_id,
            call.leg.linkedid,
            f"{call.channel_id}-consult-{number}",
            caller_number=pair.leg.called_number if presser == pair.b else call.leg.caller_number,
            called_number=number,
            called_name=entity.name if entity else "",
            called_account=entity.number if entity else None,
        )
        result = await dial_many(
            ari, self.s.events, self.s.settings.ari_app, presser, destinations, CONSULT_RING_TIME
        )
        if result.caller_gone:  # the presser hung up while it rang: nothing to hand over
            await self._resume(pair, None)
            return None
        if result.answered is None:
            self.s.publish(consult_leg.record(Disposition.BUSY if result.busy else Disposition.NO_ANSWER))
            await self._resume(pair, presser)
            return None
        target = result.answered.channel_id
        consult_leg.leg_id = target
        consult_leg.talking()
        consult_bridge = new_id()
        watch.add(target)
        watch.add(consult_bridge)
        await ari.request("POST", f"/bridges/{consult_bridge}", {"type": "mixing,dtmf_events"})
        try:
            await ari.request(
                "POST", f"/bridges/{consult_bridge}/addChannel", {"channel": f"{presser},{target}"}
            )
        except AriError as exc:
            # One of them hung up between the answer and this request (a presser who hangs up
            # as soon as the target answers completes the transfer): the hang-up is already on
            # the watch, and the loop below acts on it.
            log.info("call %s: consultation bridge not joined (%s); a party left", call.channel_id, exc)
        codes = call.tenant.tenant.settings.star_codes
        typed = ""
        while True:
            event = await watch.next(None)
            if event is None:
                continue
            if is_hangup(event, presser):  # completes the transfer: held and target talk
                log.info("call %s: attended transfer of %s to %s completed", call.channel_id, held, number)
                await self._drop_bridge(consult_bridge)
                pair.leg.transfer = TransferKind.ATTENDED
                pair.leg.transferred_to = number
                self._publish_legs(pair)
                with contextlib.suppress(AriError):
                    await ari.request("DELETE", f"/bridges/{pair.bridge_id}/moh")
                await ari.request("POST", f"/bridges/{pair.bridge_id}/addChannel", {"channel": target})
                if presser == pair.a:
                    pair.a = target
                else:
                    pair.b = target
                consult_leg.recording_id = pair.recording
                pair.leg = consult_leg
                return None
            if is_hangup(event, target):
                self._publish(consult_leg)
                await self._drop_bridge(consult_bridge)
                await self._resume(pair, presser)
                return None
            if is_hangup(event, held):
                await self._drop_bridge(consult_bridge)
                await hangup(ari, target)
                await hangup(ari, presser)
                self._publish(consult_leg)
                await self._end(pair)
                self._publish(pair.leg)
                return True
            if event.get("type") == "ChannelDtmfReceived" and event["channel"]["id"] == presser:
                typed = (typed + str(event.get("digit", "")))[-4:]
                if typed.endswith(codes.transfer_cancel):
                    log.info("call %s: attended transfer cancelled", call.channel_id)
                    await hangup(ari, target)
                    self._publish(consult_leg)
                    await self._drop_bridge(consult_bridge)
                    await self._resume(pair, presser)
                    return None

    async def _resume(self, pair: Pair, presser: str | None) -> None:
        with contextlib.suppress(AriError):
            await self.s.ari.request("DELETE", f"/bridges/{pair.bridge_id}/moh")
        if presser is not None:
            with contextlib.suppress(AriError):
                await self.s.ari.request(
                    "POST", f"/bridges/{pair.bridge_id}/addChannel", {"channel": presser}
                )

    async def _drop_bridge(self, bridge_id: str) -> None:
        with contextlib.suppress(AriError):
            await self.s.ari.request("DELETE", f"/bridges/{bridge_id}")

    async def _end(self, pair: Pair, left: str | None = None, hang_up: bool = True) -> None:
        await self.s.recorder.stop(pair)
        if hang_up:
            for channel in (pair.a, pair.b):
                if channel != left:
                    await hangup(self.s.ari, channel)
        await self._drop_bridge(pair.bridge_id)

    def _publish_legs(self, pair: Pair) -> None:
        """A transfer ends the presser's leg now; the new party's leg goes on."""
        self._publish(pair.leg)

    def _publish(self, leg: Leg) -> None:
        if not leg.published:
            leg.published = True
            self.s.publish(leg.record(Disposition.ANSWERED))


def _hung_up(event: Event, pair: Pair) -> str | None:
    for channel in (pair.a, pair.b):
        if is_hangup(event, channel):
            return channel
    return None
