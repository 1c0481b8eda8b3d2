"""What a caller waiting in a queue hears (SPEC section 2): ringback or the queue's music, and
the position, estimated-wait and all-busy announcements every ``announce_period`` seconds."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING, Any

from switchboard_contracts.queues import CallQueue, WaitingSound

from .adapters.ari import AriError
from .channels import Watch, is_hangup
from .dialing import new_id
from .queue_strategy import all_busy, position_prompts, ringback_tone, wait_prompts

if TYPE_CHECKING:
    from .queues import Queues, Waiter

#: Channel variable: the caller's current background playback (ringback or music), so a
#: restarted service can stop it.
SB_QUEUE_PLAYBACK = "SB_QUEUE_PLAYBACK"
#: Longest single announcement prompt.
PROMPT_TIMEOUT = 30.0

log = logging.getLogger("switchboard.callflow.queues")


class Waiting:
    """What a waiting caller hears: ringback or music, and the announcements every
    ``announce_period`` seconds (the first right away when no agent is free). Runs beside the
    offers; stopped before the caller talks or goes elsewhere.

    Stopping is cooperative (a marker event, never a cancel in the middle of a request): a
    playback whose ``play`` request was on its way when the task was cancelled would start
    after the ``DELETE`` and, being the never-ending ringback, block every later channel
    operation that Asterisk queues behind playbacks (variables, ring, bridging)."""

    STOP = "SbQueueSoundsStop"

    def __init__(self, queues: Queues, waiter: Waiter, queue: CallQueue) -> None:
        self.q = queues
        self.s = queues.s
        self.waiter = waiter
        self.queue = queue
        self.channel_id = waiter.call.channel_id
        self.task: asyncio.Task[None] | None = None
        self.watch: Watch | None = None
        self.background: str | None = None  # the ringback or music playback
        self.moh = False
        self.playing: set[str] = set()
        self.first = 0.0
        self.music_failed = False

    def start(self) -> None:
        """Start at once; the first announcement comes right away when no agent is free now
        (decided before the first offer reserves anyone)."""
        state = self.q.snapshot(self.waiter, self.q._current(self.waiter.call, self.queue))
        self.first = 0.0 if not state.available else float(self.queue.announce_period)
        self.watch = Watch(self.s.events, (self.channel_id,))
        self.task = asyncio.create_task(self._run(self.watch))

    def cancel(self) -> None:
        """Only for a service that stops: nothing is sent to Asterisk."""
        if self.task is not None and not self.task.done():
            self.task.cancel()
        if self.watch is not None:
            self.watch.close()

    async def stop(self, quiet: bool) -> None:
        """End the sounds; ``quiet``: also stop what is playing on the caller's channel."""
        if self.task is not None and self.watch is not None:
            self.watch.queue.put_nowait({"type": self.STOP})
            try:
                await asyncio.wait_for(asyncio.shield(self.task), 10)
            except Exception as exc:
                log.warning("call %s: queue sounds did not stop: %r", self.channel_id, exc)
                self.task.cancel()
        if quiet:
            await self._silence()

    @staticmethod
    async def clear_left_over(queues: Queues, channel_id: str) -> None:
        """Stop the ringback or music a previous run left playing for a resumed caller."""
        playback = await queues.s.variable(channel_id, SB_QUEUE_PLAYBACK)
        with contextlib.suppress(AriError):
            if playback:
                await queues.s.ari.request("DELETE", f"/playbacks/{playback}")
        with contextlib.suppress(AriError):
            await queues.s.ari.request("DELETE", f"/channels/{channel_id}/moh")

    async def _silence(self) -> None:
        """Stop what plays; never raises (the caller may be talking to an agent next)."""
        for playback in list(self.playing):
            with contextlib.suppress(Exception):  # finished already, or ARI gone
                await self.s.ari.request("DELETE", f"/playbacks/{playback}")
        self.playing.clear()
        self.background = None
        if self.moh:
            with contextlib.suppress(Exception):
                await self.s.ari.request("DELETE", f"/channels/{self.channel_id}/moh")
            self.moh = False

    def _ends(self, event: dict[str, Any]) -> bool:
        return event.get("type") == self.STOP or is_hangup(event, self.channel_id)

    async def _run(self, watch: Watch) -> None:
        try:
            await self._loop(watch)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the caller's sounds must never end the call
            log.warning("call %s: queue sounds: %r", self.channel_id, exc)
        finally:
            watch.close()

    async def _loop(self, watch: Watch) -> None:
        loop = asyncio.get_running_loop()
        next_announcement = loop.time() + self.first
        while True:
            queue = self.q._current(self.waiter.call, self.queue)
            if loop.time() < next_announcement:  # (an announcement due now goes first)
                await self._background(queue, watch)
            while loop.time() < next_announcement:
                event = await watch.next(next_announcement - loop.time())
                if event is None:
                    break
                if self._ends(event):
                    return
                if (
                    event.get("type") == "PlaybackFinished"
                    and event.get("playback", {}).get("id") == self.background
                ):
                    self.playing.discard(self.background)
                    self.background = None  # the music file ended: again from the start
                    if event.get("playback", {}).get("state") == "failed":
                        log.warning("call %s: the waiting sound failed; default music", self.channel_id)
                        self.music_failed = True
                    await self._background(queue, watch)
            queue = self.q._current(self.waiter.call, self.queue)
            prompts = await self._announcements(queue)
            if prompts:
                await self._silence()
                for media in prompts:
                    if not await self._play(media, watch):
                        return
            next_announcement = loop.time() + queue.announce_period

    async def _announcements(self, queue: CallQueue) -> list[str]:
        state = self.q.snapshot(self.waiter, queue)
        prompts: list[str] = []
        if queue.announce_position:
            prompts += position_prompts(state.position)
        if queue.announce_estimated_wait:
            prompts += wait_prompts(self.q._memory(self.waiter.key).average_wait)
        if queue.all_busy_sound_id and all_busy(state.registered, state.available):
            media = await self.s.sounds.media_uri(self.waiter.call.tenant_id, queue.all_busy_sound_id)
            if media:
                prompts.append(media)
        return prompts

    async def _background(self, queue: CallQueue, watch: Watch) -> None:
        """Ringback or music, unless already on."""
        if self.background is not None or self.moh:
            return
        tenant_id = self.waiter.call.tenant_id
        media: str | None = None
        if self.music_failed:
            pass  # the file or tone did not play: the default music instead
        elif queue.waiting_sound == WaitingSound.MUSIC_ON_HOLD:
            media = await self.s.sounds.media_uri(tenant_id, queue.music_on_hold_sound_id)
        else:
            media = ringback_tone()
        if media is None:
            await self.s.ari.request("POST", f"/channels/{self.channel_id}/moh", {"mohClass": "default"})
            self.moh = True
            return
        playback = new_id()
        watch.add(playback)
        self.playing.add(playback)
        self.background = playback
        await self.q._set_variable(self.channel_id, SB_QUEUE_PLAYBACK, playback)
        await self.s.ari.request(
            "POST", f"/channels/{self.channel_id}/play/{playback}", body={"media": [media]}
        )

    async def _play(self, media: str, watch: Watch) -> bool:
        """One prompt to its end; False when the caller hung up or the sounds stop."""
        playback = new_id()
        watch.add(playback)
        self.playing.add(playback)
        await self.s.ari.request(
            "POST",
            f"/channels/{self.channel_id}/play/{playback}",
            {"lang": self._language()},
            body={"media": [media]},
        )

        def finished(event: dict[str, Any]) -> bool:
            return self._ends(event) or (
                event.get("type") == "PlaybackFinished" and event.get("playback", {}).get("id") == playback
            )

        event = await watch.until(finished, PROMPT_TIMEOUT)
        if event is not None and self._ends(event):
            return False
        self.playing.discard(playback)
        return True

    def _language(self) -> str:
        return str(self.q._tenant(self.waiter.call).tenant.settings.prompt_language.value)
