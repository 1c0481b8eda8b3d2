"""Call queues (SPEC section 2) in the Stasis application.

A caller in a queue is answered and hears ringback or music on hold (the queue's own file in a
loop, else the ``default`` class) with announcements every ``announce_period`` seconds. The
caller's task offers the call to agents (employees) by the queue's strategy
(``queue_strategy``), ``agent_ring_time`` seconds per offer; a missed offer is a call-history
leg, then the next offer follows. Who may be offered: registered, not in wrap-up, not on a
call (unless the queue rings agents on calls), not being offered another call of the queue.
Callers are served first come, first served (app_queue's autofill: as many callers ring at
once as there are available agents).

Failure routing: scenario 1 (``max_wait_time`` -> ``max_wait_target``), scenario 2 (no agent
registered -> ``no_agents_target``), else the call ends after ``settings.queue_call_limit``.

Restarts: the caller channel carries ``SB_QUEUE=<tenant>:<queue number>:<entered unix time>``;
after every ARI (re)connection ``reconnected`` lists the channels and resumes each waiting
caller that no task of this process serves (and hangs up offers to agents that the previous
process left ringing). The queues' memory (round-robin position, agents' answered calls and
last call end, average wait) is kept in a NATS key-value bucket (``adapters.queue_memory``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from switchboard_contracts.cdr import Disposition
from switchboard_contracts.employees import Employee
from switchboard_contracts.queues import CallQueue

from .adapters.ari import AriError
from .adapters.queue_memory import NoQueueMemoryStore, QueueMemoryStore, memory_key
from .channels import Watch, is_hangup
from .dialing import Attempt, dial_many, hangup, new_id
from .provisioning import endpoint_id
from .queue_strategy import (
    CallerRound,
    QueueMemory,
    available_agents,
    choose,
    deadline,
    offered,
    our_turn,
    round_done,
)
from .queue_waiting import Waiting
from .records import Leg

if TYPE_CHECKING:
    from .calls import Call
    from .directory import TenantConfig
    from .service import CallService

log = logging.getLogger("switchboard.callflow.queues")

#: Channel variables: the waiting caller and an offer's agent channel (value: the caller's
#: channel id); the background playback's is in queue_waiting.
SB_QUEUE = "SB_QUEUE"
SB_QUEUE_AGENT = "SB_QUEUE_AGENT"

#: Seconds between two checks for an available agent while a caller waits.
POLL_INTERVAL = 0.5
#: Seconds of pause after every available agent missed an offer (app_queue's ``retry``).
RETRY_PAUSE = 2.0
#: An agent's phone found on a call (e.g. an outgoing one) counts as busy this long.
BUSY_MEMORY = 2.0
#: Seconds between two fresh reads of the registrations for a caller seeing none.
REGISTRATION_RECHECK = 3.0
#: A resumed caller waits this long for the configuration and the queues' memory.
CONFIG_WAIT = 30.0
MEMORY_WAIT = 5.0


class CallerGone(Exception):
    pass


@dataclass
class Waiter:
    call: Call
    key: str  # memory key of the queue: tenant and queue id
    entered: float  # unix time
    offering: bool = False
    #: the caller's caller-ID name on its channel, and what the agents are shown instead
    original_name: str = ""
    shown_name: str | None = None


@dataclass
class Outcome:
    kind: str  # "answered", "route", "limit", "gone"
    target: str | None = None
    agent: str | None = None
    peer_id: str | None = None
    leg: Leg | None = None


@dataclass
class Snapshot:
    position: int
    registered: list[str]
    available: list[str]


@dataclass
class Offer:
    agents: list[str]
    by_destination: dict[str, str] = field(default_factory=dict)
    legs: dict[str, Leg] = field(default_factory=dict)


class Queues:
    def __init__(self, service: CallService) -> None:
        self.s = service
        #: where the memory is kept across restarts; set by the composition root
        self.store: QueueMemoryStore = NoQueueMemoryStore()
        self.memory: dict[str, QueueMemory] = {}
        self.loaded = asyncio.Event()
        self.lines: dict[str, list[Waiter]] = {}  # waiting callers per queue, first come first
        self.ringing: dict[str, set[str]] = {}  # agents being offered a call, per queue
        self._active: set[str] = set()  # caller channels served by this process
        self._busy_seen: dict[tuple[str, str], float] = {}  # (tenant, agent) -> until
        self._tasks: set[asyncio.Task[Any]] = set()

    # memory --------------------------------------------------------------------------------

    async def load(self, attempts: int = 10) -> None:
        """Read the queues' memory (at startup, once the bus is connected)."""
        for attempt in range(attempts):
            try:
                stored = await self.store.load()
            except Exception as exc:
                log.warning("queue memory not loaded (%r); attempt %d", exc, attempt + 1)
                await asyncio.sleep(1)
                continue
            for key, value in stored.items():
                if key not in self.memory:  # a queue busy before the load keeps what it has
                    self.memory[key] = QueueMemory.from_json(value)
            log.info("queue memory loaded: %d queues", len(stored))
            break
        self.loaded.set()

    def _memory(self, key: str) -> QueueMemory:
        return self.memory.setdefault(key, QueueMemory())

    def _save(self, key: str) -> None:
        value = self._memory(key).to_json()

        async def save() -> None:
            try:
                await self.store.save(key, value)
            except Exception as exc:
                log.warning("queue memory %s not saved: %r", key, exc)

        self._spawn(save())

    def _spawn(self, coroutine: Any) -> asyncio.Task[Any]:
        task = asyncio.create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # entry ---------------------------------------------------------------------------------

    async def enter(self, call: Call, queue: CallQueue) -> None:
        call.leg.queue_number = queue.number
        if call.leg.called_number == queue.number and not call.leg.called_name:
            call.leg.called_name = queue.name
        if not call.answered:
            await self.s.ari.request("POST", f"/channels/{call.channel_id}/answer")
            call.answered = True
        call.leg.answered()
        entered = time.time()
        await self._set_variable(call.channel_id, SB_QUEUE, f"{call.tenant_id}:{queue.number}:{int(entered)}")
        await self._serve(call, queue, entered)

    async def _serve(self, call: Call, queue: CallQueue, entered: float) -> None:
        key = memory_key(call.tenant_id, queue.id)
        waiter = Waiter(call, key, entered)
        line = self.lines.setdefault(key, [])
        line.append(waiter)
        line.sort(key=lambda w: w.entered)  # a resumed caller keeps its place
        self._active.add(call.channel_id)
        sound = Waiting(self, waiter, queue)
        outcome = Outcome("gone")
        try:
            with self.s.events.watch(call.channel_id) as watch:
                await self._caller_name(waiter, queue)  # before any sound: see _caller_name
                sound.start()
                try:
                    outcome = await self._wait(waiter, queue, watch)
                except CallerGone:
                    outcome = Outcome("gone")
                except AriError as exc:
                    if exc.status != 404:
                        raise
                    outcome = Outcome("gone")  # the caller's channel is no more
                await sound.stop(outcome.kind != "gone")
        finally:
            sound.cancel()
            if waiter in line:
                line.remove(waiter)
            if not line:
                self.lines.pop(key, None)
            self._active.discard(call.channel_id)
        if outcome.kind != "gone":
            await self._set_variable(call.channel_id, SB_QUEUE, "")
        if outcome.kind == "answered" and outcome.agent and outcome.peer_id and outcome.leg:
            await self._talk(waiter, queue, outcome.agent, outcome.peer_id, outcome.leg)
        elif outcome.kind == "route" and outcome.target:
            if waiter.shown_name is not None and waiter.shown_name != waiter.original_name:
                await self._set_variable(call.channel_id, "CALLERID(name)", waiter.original_name)
            log.info("call %s: queue %s -> %s", call.channel_id, queue.number, outcome.target)
            await self.s.router.route(call, outcome.target)
        else:
            if outcome.kind == "limit":
                log.info("call %s: queue %s call limit reached", call.channel_id, queue.number)
            await self._unanswered(call)

    async def _unanswered(self, call: Call) -> None:
        """Nobody answered the caller: the call is a missed one (the PBX's own answer so that
        the caller heard the queue does not count as answered)."""
        call.answered = False
        await self.s.router.finish(call, Disposition.NO_ANSWER)

    async def _talk(self, waiter: Waiter, queue: CallQueue, agent: str, peer_id: str, leg: Leg) -> None:
        """The agent answered: talk; the agent is on this call (presence) until it ends, then
        wrap-up starts."""
        call = waiter.call
        memory = self._memory(waiter.key)
        memory.answered(agent, time.time() - waiter.entered)
        self._save(waiter.key)
        try:
            await self.s.router.talk(call, peer_id, leg)
        finally:
            self.s.presence.remove(call.tenant_id, agent)
            memory.call_ended(agent, time.time())
            self._save(waiter.key)

    # waiting -------------------------------------------------------------------------------

    def _tenant(self, call: Call) -> TenantConfig:
        return self.s.directory.get(call.tenant_id) or call.tenant

    def _current(self, call: Call, queue: CallQueue) -> CallQueue:
        """The queue as configured now (live changes apply to waiting callers)."""
        fresh = self._tenant(call).queues.get(queue.id)
        return fresh if isinstance(fresh, CallQueue) else queue

    def _agents(self, config: TenantConfig, queue: CallQueue) -> list[Employee]:
        agents = [config.employee(number) for number in queue.agents]
        return [agent for agent in agents if agent is not None]

    def _registered(self, config: TenantConfig, queue: CallQueue) -> list[str]:
        domain = config.tenant.sip_domain
        return [
            agent.number
            for agent in self._agents(config, queue)
            if self.s.registry.contacts(endpoint_id(agent.number, domain))
        ]

    def _on_call(self, config: TenantConfig, queue: CallQueue, now: float) -> set[str]:
        tenant_id = config.tenant.id
        return {
            number
            for number in queue.agents
            if self.s.presence.calls(tenant_id, number) > 0
            or self._busy_seen.get((tenant_id, number), 0.0) > now
        }

    def snapshot(self, waiter: Waiter, queue: CallQueue) -> Snapshot:
        """Where the caller is and which agents could take a call now (no I/O)."""
        config = self._tenant(waiter.call)
        now = time.time()
        line = self.lines.get(waiter.key, [])
        position = line.index(waiter) + 1 if waiter in line else 1
        registered = self._registered(config, queue)
        available = available_agents(
            queue.agents,
            registered,
            self._on_call(config, queue, now),
            self._memory(waiter.key),
            queue.wrapup_time,
            now,
            queue.ring_agents_on_call,
            self.ringing.get(waiter.key, set()),
        )
        return Snapshot(position, registered, available)

    async def _wait(self, waiter: Waiter, queue: CallQueue, watch: Watch) -> Outcome:
        call = waiter.call
        caller = CallerRound()
        checked = 0.0
        while True:
            _check_caller(watch, call.channel_id)
            queue = self._current(call, queue)
            now = time.time()
            end, scenario_one = deadline(
                waiter.entered, queue.max_wait_time, self.s.settings.queue_call_limit
            )
            if now >= end:
                if scenario_one and queue.max_wait_target:
                    return Outcome("route", queue.max_wait_target)
                return Outcome("limit")
            state = self.snapshot(waiter, queue)
            if not state.registered and now - checked >= REGISTRATION_RECHECK:
                checked = now  # a phone that registered a moment ago: read the contacts again
                config = self._tenant(call)
                agents = self._agents(config, queue)
                if agents:
                    await self.s.contacts_of(endpoint_id(agents[0].number, config.tenant.sip_domain))
                state = self.snapshot(waiter, queue)
                if not state.registered and self.s.registry.known and queue.no_agents_target:
                    return Outcome("route", queue.no_agents_target)
            line = self.lines.get(waiter.key, [])
            ahead = [w.offering for w in line[: line.index(waiter)]] if waiter in line else []
            if state.available and our_turn(ahead, len(state.available)):
                memory = self._memory(waiter.key)
                chosen = choose(queue.strategy, queue.agents, state.available, memory, caller)
                if chosen:
                    outcome = await self._offer(waiter, queue, chosen, caller, state.available, end, watch)
                    if outcome is not None:
                        return outcome
                    continue
            await _pause(watch, call.channel_id, POLL_INTERVAL)

    async def _offer(
        self,
        waiter: Waiter,
        queue: CallQueue,
        chosen: list[str],
        caller: CallerRound,
        available: list[str],
        end: float,
        watch: Watch,
    ) -> Outcome | None:
        """Ring ``chosen`` for the queue's ring time; the outcome when an agent answered,
        None to go on waiting. Raises CallerGone."""
        call = waiter.call
        config = self._tenant(call)
        tenant_id = config.tenant.id
        ringing = self.ringing.setdefault(waiter.key, set())
        for agent in chosen:  # reserved before anything is awaited
            ringing.add(agent)
            self.s.presence.add(tenant_id, agent)
        answered_agent: str | None = None
        offer = Offer(list(chosen))
        waiter.offering = True
        try:
            ring_time = min(float(queue.agent_ring_time), end - time.time())
            if ring_time < 1:  # too short to ring: the wait ends in a moment
                await _pause(watch, call.channel_id, max(0.0, end - time.time()))
                return None
            if not queue.ring_agents_on_call:
                offer.agents = await self._idle(config, offer.agents)
            for agent in offer.agents:
                employee = config.employee(agent)
                if employee is None:
                    continue
                object_id = endpoint_id(agent, config.tenant.sip_domain)
                for uri in self.s.registry.contacts(object_id):
                    offer.by_destination[f"PJSIP/{object_id}/{uri}"] = agent
                offer.legs[agent] = self._agent_leg(call, queue, employee)
            if not offer.by_destination:
                return None
            shown = waiter.shown_name if waiter.shown_name is not None else call.leg.caller_name
            result = await dial_many(
                self.s.ari,
                self.s.events,
                self.s.settings.ari_app,
                call.channel_id,
                list(offer.by_destination),
                ring_time,
                caller_name=shown,
                caller_number=call.leg.caller_number,
                variables={SB_QUEUE_AGENT: call.channel_id},
            )
            if result.answered is not None and not result.caller_gone:
                answered_agent = offer.by_destination[result.answered.destination]
                leg = offer.legs[answered_agent]
                leg.leg_id = result.answered.channel_id
                return Outcome("answered", agent=answered_agent, peer_id=result.answered.channel_id, leg=leg)
            self._missed(offer, result.attempts)
            if result.caller_gone:
                raise CallerGone
            offered(queue.agents, caller, list(offer.legs))
            if round_done(queue.strategy, available, caller):
                caller.tried.clear()
                await _pause(watch, call.channel_id, RETRY_PAUSE)
            return None
        finally:
            waiter.offering = False
            for agent in chosen:
                ringing.discard(agent)
                if agent != answered_agent:  # the one who answered stays on this call
                    self.s.presence.remove(tenant_id, agent)

    async def _caller_name(self, waiter: Waiter, queue: CallQueue) -> None:
        """Show agents the queue's short name before the caller's (``consult:Anna``). A dial
        shows the caller channel's caller ID, so it is set there, once on entry: setting a
        channel variable waits until the channel's current playback ends, and the ringback
        never ends by itself."""
        call = waiter.call
        name = await self.s.variable(call.channel_id, "CALLERID(name)") or ""
        prefix = queue.caller_id_prefix
        if prefix and name.startswith(prefix):  # put by a previous run of the service
            name = name[len(prefix) :]
        waiter.original_name = name
        if prefix:
            waiter.shown_name = f"{prefix}{name or call.leg.caller_name or call.leg.caller_number}"
            await self._set_variable(call.channel_id, "CALLERID(name)", waiter.shown_name)

    async def _idle(self, config: TenantConfig, agents: list[str]) -> list[str]:
        """The agents whose phones are on no call at all (an outgoing call included)."""
        idle: list[str] = []
        for agent in agents:
            object_id = endpoint_id(agent, config.tenant.sip_domain)
            try:
                endpoint = await self.s.ari.request("GET", f"/endpoints/PJSIP/{object_id}")
            except AriError:
                endpoint = None
            if endpoint and endpoint.get("channel_ids"):
                self._busy_seen[(config.tenant.id, agent)] = time.time() + BUSY_MEMORY
                continue
            idle.append(agent)
        now = time.time()
        for key in [k for k, until in self._busy_seen.items() if until <= now]:
            self._busy_seen.pop(key, None)
        return idle

    def _agent_leg(self, call: Call, queue: CallQueue, agent: Employee) -> Leg:
        return Leg(
            call.tenant_id,
            call.leg.linkedid,
            new_id(),
            caller_number=call.leg.caller_number,
            caller_name=call.leg.caller_name,
            caller_account=call.leg.caller_account,
            called_number=agent.number,
            called_name=agent.name,
            called_account=agent.number,
            queue_number=queue.number,
            ivr_number=call.leg.ivr_number,
            ivr_digits=call.leg.ivr_digits,
        )

    def _missed(self, offer: Offer, attempts: list[Attempt]) -> None:
        """One call-history leg per agent who did not answer the offer."""
        statuses: dict[str, list[str]] = {}
        for attempt in attempts:
            agent = offer.by_destination.get(attempt.destination)
            if agent is not None:
                statuses.setdefault(agent, []).append(attempt.status)
                offer.legs[agent].leg_id = attempt.channel_id
        for agent, leg in offer.legs.items():
            if agent not in statuses:
                continue
            busy = all(status == "BUSY" for status in statuses[agent])
            self.s.publish(leg.record(Disposition.BUSY if busy else Disposition.NO_ANSWER))

    # restarts ------------------------------------------------------------------------------

    def reconnected(self) -> None:
        """After every ARI (re)connection: resume the callers left waiting (in the background)."""
        self._spawn(self._resume_listed())

    async def _resume_listed(self) -> None:
        try:
            channels = await self.s.ari.request("GET", "/channels")
        except Exception as exc:
            log.warning("channels not listed for the queues: %r", exc)
            return
        await self.resume(list(channels or []))

    async def resume(self, channels: list[dict[str, Any]]) -> None:
        """Serve again every caller in ``channels`` (``GET /channels``) that waits in a queue
        (``SB_QUEUE``), is not bridged and is not served by this process; hang up offers to
        agents whose caller nobody serves."""
        try:
            bridges = await self.s.ari.request("GET", "/bridges") or []
        except AriError as exc:
            log.warning("bridges not listed: %s", exc)
            return
        bridged = {channel for bridge in bridges for channel in bridge.get("channels", [])}
        for channel in channels:
            channel_id = str(channel.get("id", ""))
            dialplan = channel.get("dialplan") or {}
            app, _, kind = str(dialplan.get("app_data", "")).partition(",")
            if (
                not channel_id
                or dialplan.get("app_name") != "Stasis"
                or app != self.s.settings.ari_app
                or channel_id in bridged
                or channel_id in self._active
            ):
                continue
            if kind == "dialled":
                caller = await self.s.variable(channel_id, SB_QUEUE_AGENT)
                if caller and caller not in self._active:
                    log.info("queue offer %s left by a previous run: hung up", channel_id)
                    await hangup(self.s.ari, channel_id)
                continue
            waiting = await self.s.variable(channel_id, SB_QUEUE)
            if waiting:
                self._active.add(channel_id)  # from now on: one resume at a time
                task = asyncio.create_task(self._resume_one(channel, waiting))
                self.s.calls.add(task)
                task.add_done_callback(self.s.calls.discard)

    async def _resume_one(self, channel: dict[str, Any], waiting: str) -> None:
        channel_id = str(channel["id"])
        call: Call | None = None
        try:
            tenant_id, number, entered_text = waiting.split(":", 2)
            entered = float(entered_text)
            queue = await self._queue_when_known(tenant_id, number)
            if queue is None:
                log.warning("call %s: queue %s of %s is unknown; hung up", channel_id, number, tenant_id)
                await hangup(self.s.ari, channel_id)
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.loaded.wait(), MEMORY_WAIT)
            data = channel.get("dialplan", {}) or {}
            args = str(data.get("app_data", "")).split(",")
            origin = args[1] if len(args) > 1 and args[1] else "internal"
            call = await self.s.router._identify(channel, origin)
            if call is None or call.tenant_id != tenant_id:
                log.warning("call %s: the caller of queue %s is not known; hung up", channel_id, number)
                await hangup(self.s.ari, channel_id)
                return
            call.leg.start = _channel_time(channel) or call.leg.start
            call.leg.called_number = str(data.get("exten", "")) or number
            answered = datetime.fromtimestamp(entered, UTC)  # whole seconds: not before the start
            call.leg.answer = max(answered, call.leg.start) if call.leg.start else answered
            call.leg.queue_number = number
            call.answered = True
            call.visited.append(number)
            if call.leg.called_number == number:
                call.leg.called_name = queue.name
            await Waiting.clear_left_over(self, channel_id)
            log.info("call %s: resumed in queue %s", channel_id, number)
            await self._serve(call, queue, entered)
        except Exception:
            log.exception("call %s: resuming the queue failed", channel_id)
            if call is not None:
                await self.s.router.finish(call, Disposition.FAILED, "congestion")
            else:
                await hangup(self.s.ari, channel_id, "congestion")
        finally:
            if all(w.call.channel_id != channel_id for line in self.lines.values() for w in line):
                self._active.discard(channel_id)

    async def _queue_when_known(self, tenant_id: str, number: str) -> CallQueue | None:
        loop = asyncio.get_running_loop()
        until = loop.time() + CONFIG_WAIT
        while True:
            config = self.s.directory.get(tenant_id)
            if config is not None:
                entity = config.by_number(number)
                return entity if isinstance(entity, CallQueue) else None
            if loop.time() >= until:
                return None
            await asyncio.sleep(0.5)

    # helpers -------------------------------------------------------------------------------

    async def _set_variable(self, channel_id: str, name: str, value: str) -> None:
        """Never raises: a lost variable costs the resume after a restart, not the call."""
        try:
            await self.s.ari.request(
                "POST", f"/channels/{channel_id}/variable", {"variable": name, "value": value}
            )
        except Exception as exc:
            if not (isinstance(exc, AriError) and exc.status == 404):
                log.warning("call %s: %s not set: %r", channel_id, name, exc)


def _check_caller(watch: Watch, channel_id: str) -> None:
    """Raises CallerGone when the caller's hang-up is among the events seen so far."""
    while not watch.queue.empty():
        if is_hangup(watch.queue.get_nowait(), channel_id):
            raise CallerGone


async def _pause(watch: Watch, channel_id: str, seconds: float) -> None:
    """Wait ``seconds``; raises CallerGone when the caller hangs up meanwhile."""
    if await watch.until(lambda e: is_hangup(e, channel_id), seconds) is not None:
        raise CallerGone


def _channel_time(channel: dict[str, Any]) -> datetime | None:
    text = str(channel.get("creationtime", ""))
    try:
        return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%f%z").astimezone(UTC)
    except ValueError:
        return None
