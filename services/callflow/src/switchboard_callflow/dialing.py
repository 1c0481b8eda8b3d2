"""Dialling one or more destinations at once for a caller and bridging the one that answers.
Channels are created into the Stasis application (``/channels/create``) and dialled
(``/channels/{id}/dial``) so every state change reaches us as an event of a known channel."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from dataclasses import dataclass, field

from .adapters.ari import Ari, AriError
from .channels import CallEvents, Event, Watch, is_hangup

log = logging.getLogger("switchboard.callflow.dialing")

BUSY_CAUSES = {17, 21}  # user busy, call rejected
FINAL_DIAL_STATUSES = {"ANSWER", "BUSY", "NOANSWER", "CHANUNAVAIL", "CONGESTION", "CANCEL"}


@dataclass
class Attempt:
    destination: str  # e.g. PJSIP/101@acme.pbx/sip:101@127.0.0.1:5062
    channel_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    status: str = ""  # the final dial status
    in_stasis: bool = False


@dataclass
class DialResult:
    answered: Attempt | None
    attempts: list[Attempt]
    caller_gone: bool = False

    @property
    def busy(self) -> bool:
        return self.answered is None and any(a.status == "BUSY" for a in self.attempts)


def new_id() -> str:
    return str(uuid.uuid4())


async def hangup(ari: Ari, channel_id: str, reason: str = "normal") -> None:
    try:
        await ari.request("DELETE", f"/channels/{channel_id}", {"reason": reason})
    except AriError as exc:
        if exc.status not in (404, 400):
            log.warning("hangup %s: %s", channel_id, exc)


async def dial_many(
    ari: Ari,
    events: CallEvents,
    app: str,
    caller_id: str,
    destinations: list[str],
    ring_time: float,
    caller_name: str | None = None,
    caller_number: str | None = None,
    variables: dict[str, str] | None = None,
) -> DialResult:
    """Ring every destination at once for ``ring_time`` seconds; the first to answer wins
    and the others are hung up. Returns when someone answered, everyone failed, the time ran
    out, or the caller hung up."""
    attempts = [Attempt(d) for d in destinations]
    variables = dict(variables or {})
    if caller_name is not None or caller_number is not None:
        variables["CALLERID(all)"] = f'"{caller_name or ""}" <{caller_number or ""}>'
    with events.watch(caller_id, *(a.channel_id for a in attempts)) as watch:
        started: list[Attempt] = []
        for attempt in attempts:
            try:
                await ari.request(
                    "POST",
                    "/channels/create",
                    {
                        "endpoint": attempt.destination,
                        "app": app,
                        "appArgs": "dialled",
                        "channelId": attempt.channel_id,
                        "otherChannelId": new_id(),
                        "originator": caller_id,
                    },
                    body={"variables": variables} if variables else None,
                )
                await _dial(ari, attempt.channel_id, caller_id, ring_time)
                started.append(attempt)
            except AriError as exc:
                log.info("cannot dial %s: %s", attempt.destination, exc)
                attempt.status = "CHANUNAVAIL"
                await hangup(ari, attempt.channel_id)
        try:
            result = await _wait_for_answer(watch, caller_id, started, ring_time + 5)
        except asyncio.CancelledError:  # picked up elsewhere: stop ringing
            for attempt in started:
                await hangup(ari, attempt.channel_id)
            raise
        result.attempts = attempts
        for attempt in started:
            if attempt is not result.answered and attempt.status != "ANSWER":
                await hangup(ari, attempt.channel_id)
        answered = result.answered
        if answered is not None and not answered.in_stasis:
            # the answered channel enters the application right after the Dial event
            def entered_app(e: Event) -> bool:
                return (
                    e.get("type") == "StasisStart" and e.get("channel", {}).get("id") == answered.channel_id
                )

            if await watch.until(entered_app, 5) is None:
                await hangup(ari, answered.channel_id)
                result.answered = None
        return result


async def _dial(ari: Ari, channel_id: str, caller_id: str, ring_time: float) -> None:
    """Dial a created channel. It enters the application a moment after ``create``
    returned; until then Asterisk answers 409 ("not in Stasis")."""
    for _ in range(100):
        try:
            await ari.request(
                "POST",
                f"/channels/{channel_id}/dial",
                {"caller": caller_id, "timeout": max(1, round(ring_time))},
            )
            return
        except AriError as exc:
            if exc.status != 409:
                raise
            await asyncio.sleep(0.02)
    raise AriError(409, "POST", f"/channels/{channel_id}/dial", "never entered the application")


async def _wait_for_answer(
    watch: Watch, caller_id: str, started: list[Attempt], timeout: float
) -> DialResult:
    by_id = {a.channel_id: a for a in started}
    pending = set(by_id)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while pending:
        event = await watch.next(max(0.0, deadline - loop.time()))
        if event is None:
            for channel_id in pending:
                by_id[channel_id].status = by_id[channel_id].status or "NOANSWER"
            break
        kind = event.get("type")
        if is_hangup(event, caller_id):
            return DialResult(None, started, caller_gone=True)
        attempt = by_id.get(_subject(event) or "")
        if attempt is None:
            continue
        if kind == "StasisStart":
            attempt.in_stasis = True
        elif kind == "Dial" and event.get("dialstatus") in FINAL_DIAL_STATUSES:
            attempt.status = str(event["dialstatus"])
            if attempt.status == "ANSWER":
                return DialResult(attempt, started)
            pending.discard(attempt.channel_id)
        elif kind == "ChannelDestroyed":
            if not attempt.status:
                attempt.status = "BUSY" if int(event.get("cause", 0)) in BUSY_CAUSES else "NOANSWER"
            pending.discard(attempt.channel_id)
    return DialResult(None, started)


def _subject(event: Event) -> str | None:
    """The dialled channel an event is about (Dial events name it ``peer``)."""
    if event.get("type") == "Dial":
        return str(event.get("peer", {}).get("id") or "") or None
    return str(event.get("channel", {}).get("id") or "") or None


async def bridge_and_wait(ari: Ari, events: CallEvents, a: str, b: str) -> str | None:
    """Put two channels in one mixing bridge and wait until one leaves; hang up the other.
    Returns the id of the channel that left first."""
    bridge_id = new_id()
    with events.watch(a, b, bridge_id) as watch:
        await ari.request("POST", f"/bridges/{bridge_id}", {"type": "mixing,dtmf_events"})
        try:
            for channel in (a, b):
                await ari.request("POST", f"/bridges/{bridge_id}/addChannel", {"channel": channel})
        except AriError as exc:
            log.warning("bridging %s and %s failed at %s: %s", a, b, channel, exc)
            await ari.request("DELETE", f"/bridges/{bridge_id}")
            await hangup(ari, a)
            await hangup(ari, b)
            raise
        event = await watch.until(lambda e: is_hangup(e, a) or is_hangup(e, b), 7 * 24 * 3600)
        left = event["channel"]["id"] if event else None
        other = b if left == a else a
        await hangup(ari, other)
        with contextlib.suppress(AriError):
            await ari.request("DELETE", f"/bridges/{bridge_id}")
        return left
