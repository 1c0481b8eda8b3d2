"""Pure decisions of a call queue (SPEC section 2), no I/O: which agents are available, whose
turn it is, which agent(s) the next offer rings under each strategy, what the announcements
say, and the queue's memory (round-robin position and per-agent statistics) as JSON.

Strategy semantics (close to Asterisk's app_queue, which MikoPBX users know):

- ringall: every available agent at once;
- linear: the agents in the configured order; every caller starts at the first, and after a
  missed offer the caller goes on with the next one in the list;
- rrmemory: like linear, but a new caller starts after the agent who last answered a call of
  this queue (remembered across calls and restarts);
- leastrecent: the available agent whose last answered call of this queue ended longest ago
  (never answered = first); ties in configured order;
- fewestcalls: the available agent who answered the fewest calls of this queue; ties in
  configured order;
- random: any available agent.

For leastrecent, fewestcalls and random, one caller's offers go through the available agents
not tried yet; once all were tried a new round starts.
"""

from __future__ import annotations

import math
import secrets
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from typing import Any

from switchboard_contracts.queues import QueueStrategy

#: Ringback after the caller was answered, as Asterisk's tone list (indications.conf.sample,
#: Russia: 425 Hz, 0.8 s on, 3.2 s off); played as ``tone:<list>`` since the Asterisk
#: configuration has no tone zones.
RINGBACK_TONE = "425/800,0/3200"

Chooser = Callable[[Sequence[str]], str]


@dataclass
class AgentStats:
    """One agent in one queue: answered calls and when the last one ended (unix time)."""

    calls: int = 0
    last_end: float | None = None


@dataclass
class QueueMemory:
    """What a queue remembers across calls (and, stored, across restarts)."""

    last_answered: str | None = None  # rrmemory: the agent who answered last
    agents: dict[str, AgentStats] = field(default_factory=dict)
    #: average wait of answered callers in seconds (app_queue's running average), 0: unknown
    average_wait: float = 0.0

    def stats(self, agent: str) -> AgentStats:
        return self.agents.setdefault(agent, AgentStats())

    def answered(self, agent: str, waited: float) -> None:
        """``agent`` answered a caller who had waited ``waited`` seconds."""
        self.last_answered = agent
        self.stats(agent).calls += 1
        waited = max(0.0, waited)
        self.average_wait = waited if self.average_wait <= 0 else (self.average_wait * 3 + waited) / 4

    def call_ended(self, agent: str, now: float) -> None:
        """``agent``'s call from this queue ended: wrap-up starts, leastrecent counts from now."""
        self.stats(agent).last_end = now

    def to_json(self) -> dict[str, Any]:
        return {
            "last_answered": self.last_answered,
            "average_wait": self.average_wait,
            "agents": {n: {"calls": s.calls, "last_end": s.last_end} for n, s in self.agents.items()},
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> QueueMemory:
        agents: dict[str, AgentStats] = {}
        for number, item in dict(data.get("agents") or {}).items():
            last_end = item.get("last_end")
            agents[str(number)] = AgentStats(
                int(item.get("calls") or 0), float(last_end) if last_end is not None else None
            )
        last = data.get("last_answered")
        return cls(
            last_answered=str(last) if last else None,
            agents=agents,
            average_wait=float(data.get("average_wait") or 0.0),
        )


@dataclass
class CallerRound:
    """One caller's progress through the agents: where linear/rrmemory go on, and who was
    offered already in this round (leastrecent, fewestcalls, random)."""

    next_index: int | None = None
    tried: set[str] = field(default_factory=set)


def in_wrapup(stats: AgentStats | None, wrapup_time: float, now: float) -> bool:
    return stats is not None and stats.last_end is not None and now < stats.last_end + wrapup_time


def available_agents(
    agents: Sequence[str],
    registered: Collection[str],
    on_call: Collection[str],
    memory: QueueMemory,
    wrapup_time: float,
    now: float,
    ring_agents_on_call: bool = False,
    offering: Collection[str] = (),
) -> list[str]:
    """Agents (in configured order) that may get an offer now: registered, not in wrap-up,
    not already being offered a call of this queue, and (unless the queue rings agents on a
    call) not on a call."""
    return [
        agent
        for agent in agents
        if agent in registered
        and agent not in offering
        and (ring_agents_on_call or agent not in on_call)
        and not in_wrapup(memory.agents.get(agent), wrapup_time, now)
    ]


def all_busy(registered: Collection[str], available: Collection[str]) -> bool:
    """Every logged-in (registered) agent is busy: on calls, in wrap-up or being rung. Not
    when nobody is logged in at all (that is scenario 2)."""
    return bool(registered) and not available


def our_turn(offering_ahead: Sequence[bool], available: int) -> bool:
    """app_queue's autofill: a caller may ring agents when the callers ahead of it that are
    not ringing an agent already are fewer than the available agents."""
    waiting_ahead = sum(1 for offering in offering_ahead if not offering)
    return waiting_ahead < available


def choose(
    strategy: QueueStrategy,
    agents: Sequence[str],
    available: Sequence[str],
    memory: QueueMemory,
    caller: CallerRound,
    pick: Chooser = secrets.choice,
) -> list[str]:
    """The agent(s) the caller's next offer rings; empty when nobody is available."""
    if not available or not agents:
        return []
    free = set(available)
    if strategy == QueueStrategy.RINGALL:
        return [agent for agent in agents if agent in free]
    if strategy in (QueueStrategy.LINEAR, QueueStrategy.RRMEMORY):
        start = caller.next_index
        if start is None:
            start = 0
            if strategy == QueueStrategy.RRMEMORY and memory.last_answered in agents:
                start = agents.index(memory.last_answered) + 1
        for step in range(len(agents)):
            agent = agents[(start + step) % len(agents)]
            if agent in free:
                return [agent]
        return []
    candidates = [agent for agent in agents if agent in free and agent not in caller.tried]
    if not candidates:  # everyone available was offered: a new round
        caller.tried.clear()
        candidates = [agent for agent in agents if agent in free]
    order = {agent: index for index, agent in enumerate(agents)}
    if strategy == QueueStrategy.LEASTRECENT:

        def ended(agent: str) -> float:
            stats = memory.agents.get(agent)
            return -math.inf if stats is None or stats.last_end is None else stats.last_end

        return [min(candidates, key=lambda a: (ended(a), order[a]))]
    if strategy == QueueStrategy.FEWESTCALLS:

        def taken(agent: str) -> int:
            stats = memory.agents.get(agent)
            return 0 if stats is None else stats.calls

        return [min(candidates, key=lambda a: (taken(a), order[a]))]
    return [pick(candidates)]


def offered(agents: Sequence[str], caller: CallerRound, rung: Sequence[str]) -> None:
    """The caller's offer to ``rung`` was missed: the next offer goes on after it."""
    caller.tried.update(rung)
    if len(rung) == 1 and rung[0] in agents:
        caller.next_index = agents.index(rung[0]) + 1


def round_done(strategy: QueueStrategy, available: Sequence[str], caller: CallerRound) -> bool:
    """Every available agent was offered once in this round (time for a short pause)."""
    if strategy == QueueStrategy.RINGALL:
        return True
    return set(available) <= caller.tried


def position_prompts(position: int) -> list[str]:
    """app_queue's position announcement: first in line, or "there are N calls waiting"."""
    if position <= 1:
        return ["sound:queue-youarenext"]
    return ["sound:queue-thereare", f"number:{position}", "sound:queue-callswaiting"]


def wait_prompts(average_wait: float) -> list[str]:
    """The estimated wait in whole minutes (rounded up; "less than one minute" when short or
    not known yet)."""
    minutes = math.ceil(max(0.0, average_wait) / 60)
    if minutes <= 1:
        return ["sound:queue-holdtime", "sound:queue-less-than", "number:1", "sound:queue-minute"]
    return ["sound:queue-holdtime", f"number:{minutes}", "sound:queue-minutes"]


def ringback_tone() -> str:
    return f"tone:{RINGBACK_TONE}"


def deadline(entered: float, max_wait_time: int | None, call_limit: float) -> tuple[float, bool]:
    """When the caller's wait ends, and whether that is scenario 1 (else the call limit)."""
    if max_wait_time is not None:
        return entered + max_wait_time, True
    return entered + call_limit, False
