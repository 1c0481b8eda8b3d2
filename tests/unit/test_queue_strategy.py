"""Call queue decisions without Asterisk (SPEC section 2): each strategy's choice over a series
of calls, wrap-up, agents on a call, whose turn it is, the announcements, and the memory kept
across restarts."""

from __future__ import annotations

from collections.abc import Sequence

from switchboard_callflow.adapters.queue_memory import memory_key
from switchboard_callflow.queue_strategy import (
    AgentStats,
    CallerRound,
    QueueMemory,
    all_busy,
    available_agents,
    choose,
    deadline,
    offered,
    our_turn,
    position_prompts,
    ringback_tone,
    round_done,
    wait_prompts,
)
from switchboard_callflow.settings import Settings
from switchboard_contracts.queues import DEFAULT_QUEUE_CALL_LIMIT, QueueStrategy

AGENTS = ["201", "202", "203"]


def series(
    strategy: QueueStrategy,
    calls: int,
    memory: QueueMemory | None = None,
    available: Sequence[str] = AGENTS,
    talk: float = 10.0,
) -> list[str]:
    """Who answers each of ``calls`` calls in a row when the first offer is always answered;
    every call lasts ``talk`` seconds, one after the other."""
    memory = memory or QueueMemory()
    now = 1000.0
    answered: list[str] = []
    for _ in range(calls):
        chosen = choose(strategy, AGENTS, list(available), memory, CallerRound(), pick=lambda c: c[-1])
        agent = chosen[0]
        memory.answered(agent, 5.0)
        now += talk
        memory.call_ended(agent, now)
        answered.append(agent)
    return answered


def test_linear_always_starts_with_the_first_agent() -> None:
    assert series(QueueStrategy.LINEAR, 4) == ["201", "201", "201", "201"]
    assert series(QueueStrategy.LINEAR, 2, available=["202", "203"]) == ["202", "202"]


def test_linear_goes_on_in_order_after_a_missed_offer_and_wraps_around() -> None:
    memory, caller = QueueMemory(), CallerRound()
    rung = []
    for _ in range(4):
        chosen = choose(QueueStrategy.LINEAR, AGENTS, AGENTS, memory, caller)
        rung += chosen
        offered(AGENTS, caller, chosen)
    assert rung == ["201", "202", "203", "201"]
    # an unavailable agent is skipped, the order stays
    caller = CallerRound()
    assert choose(QueueStrategy.LINEAR, AGENTS, ["201", "203"], memory, caller) == ["201"]
    offered(AGENTS, caller, ["201"])
    assert choose(QueueStrategy.LINEAR, AGENTS, ["201", "203"], memory, caller) == ["203"]


def test_rrmemory_continues_after_the_agent_who_answered_last() -> None:
    memory = QueueMemory()
    assert series(QueueStrategy.RRMEMORY, 5, memory) == ["201", "202", "203", "201", "202"]
    assert memory.last_answered == "202"
    # a busy agent is skipped, the round goes on from there
    assert choose(QueueStrategy.RRMEMORY, AGENTS, ["201", "202"], memory, CallerRound()) == ["201"]
    # a caller whose offer was missed goes on with the next agent
    caller = CallerRound()
    first = choose(QueueStrategy.RRMEMORY, AGENTS, AGENTS, memory, caller)
    offered(AGENTS, caller, first)
    assert (first, choose(QueueStrategy.RRMEMORY, AGENTS, AGENTS, memory, caller)) == (["203"], ["201"])


def test_rrmemory_position_survives_a_restart_through_json() -> None:
    memory = QueueMemory()
    series(QueueStrategy.RRMEMORY, 2, memory)
    restored = QueueMemory.from_json(memory.to_json())
    assert restored == memory
    assert choose(QueueStrategy.RRMEMORY, AGENTS, AGENTS, restored, CallerRound()) == ["203"]
    assert QueueMemory.from_json({}) == QueueMemory()


def test_rrmemory_after_an_agent_left_the_queue_starts_at_the_top() -> None:
    memory = QueueMemory(last_answered="299")
    assert choose(QueueStrategy.RRMEMORY, AGENTS, AGENTS, memory, CallerRound()) == ["201"]


def test_leastrecent_picks_who_finished_longest_ago() -> None:
    assert series(QueueStrategy.LEASTRECENT, 4) == ["201", "202", "203", "201"]
    memory = QueueMemory(agents={"201": AgentStats(3, 500.0), "202": AgentStats(1, 900.0)})
    # 203 never answered a call of this queue: first
    assert choose(QueueStrategy.LEASTRECENT, AGENTS, AGENTS, memory, CallerRound()) == ["203"]
    assert choose(QueueStrategy.LEASTRECENT, AGENTS, ["201", "202"], memory, CallerRound()) == ["201"]
    memory.call_ended("201", 950.0)
    assert choose(QueueStrategy.LEASTRECENT, AGENTS, ["201", "202"], memory, CallerRound()) == ["202"]


def test_fewestcalls_picks_who_took_the_fewest_calls() -> None:
    memory = QueueMemory(agents={"201": AgentStats(2, 10.0), "202": AgentStats(0, None)})
    assert series(QueueStrategy.FEWESTCALLS, 4, memory) == ["202", "203", "202", "203"]
    assert [memory.agents[a].calls for a in AGENTS] == [2, 2, 2]
    assert choose(QueueStrategy.FEWESTCALLS, AGENTS, AGENTS, memory, CallerRound()) == ["201"]  # tie


def test_random_chooses_among_available_agents_not_tried_yet() -> None:
    caller, memory = CallerRound(), QueueMemory()
    seen: list[list[str]] = []

    def pick(candidates: Sequence[str]) -> str:
        seen.append(list(candidates))
        return candidates[0]

    for _ in range(3):
        chosen = choose(QueueStrategy.RANDOM, AGENTS, ["202", "203"], memory, caller, pick)
        offered(AGENTS, caller, chosen)
    assert seen == [["202", "203"], ["203"], ["202", "203"]]  # a new round once both were tried


def test_ringall_rings_every_available_agent() -> None:
    assert choose(QueueStrategy.RINGALL, AGENTS, ["203", "201"], QueueMemory(), CallerRound()) == [
        "201",
        "203",
    ]
    assert choose(QueueStrategy.RINGALL, AGENTS, [], QueueMemory(), CallerRound()) == []
    assert round_done(QueueStrategy.RINGALL, ["201"], CallerRound())


def test_nobody_available_nobody_chosen() -> None:
    for strategy in QueueStrategy:
        assert choose(strategy, AGENTS, [], QueueMemory(), CallerRound()) == []


def test_a_round_is_done_when_every_available_agent_missed() -> None:
    caller = CallerRound()
    offered(AGENTS, caller, ["201"])
    assert not round_done(QueueStrategy.LINEAR, ["201", "202"], caller)
    offered(AGENTS, caller, ["202"])
    assert round_done(QueueStrategy.LINEAR, ["201", "202"], caller)


def test_wrapup_keeps_an_agent_from_offers_for_its_time() -> None:
    memory = QueueMemory()
    memory.answered("201", 3)
    memory.call_ended("201", 100.0)
    during = available_agents(AGENTS, AGENTS, (), memory, wrapup_time=15, now=114.0)
    after = available_agents(AGENTS, AGENTS, (), memory, wrapup_time=15, now=115.0)
    assert during == ["202", "203"]
    assert after == AGENTS
    assert available_agents(AGENTS, AGENTS, (), memory, wrapup_time=0, now=100.0) == AGENTS
    # linear skips the agent in wrap-up
    assert choose(QueueStrategy.LINEAR, AGENTS, during, memory, CallerRound()) == ["202"]


def test_agents_on_a_call_unregistered_or_being_offered_are_left_out() -> None:
    memory = QueueMemory()
    registered = ["201", "202", "203"]
    assert available_agents(AGENTS, registered, {"202"}, memory, 0, 0.0) == ["201", "203"]
    assert available_agents(AGENTS, registered, {"202"}, memory, 0, 0.0, ring_agents_on_call=True) == AGENTS
    assert available_agents(AGENTS, ["203"], (), memory, 0, 0.0) == ["203"]
    offering = {"201"}
    assert available_agents(AGENTS, registered, (), memory, 0, 0.0, True, offering) == ["202", "203"]


def test_all_busy_only_when_every_registered_agent_is_busy() -> None:
    assert all_busy(["201", "202"], [])
    assert not all_busy(["201", "202"], ["202"])
    assert not all_busy([], [])  # nobody logged in: scenario 2, not "busy"


def test_callers_take_turns_first_come_first_served() -> None:
    assert our_turn([], 1)
    assert not our_turn([False], 1)  # one caller ahead waits for the one free agent
    assert our_turn([True], 1)  # the caller ahead is ringing an agent already
    assert our_turn([False], 2)
    assert not our_turn([], 0)


def test_announcements() -> None:
    assert position_prompts(1) == ["sound:queue-youarenext"]
    assert position_prompts(3) == ["sound:queue-thereare", "number:3", "sound:queue-callswaiting"]
    assert wait_prompts(0) == [
        "sound:queue-holdtime",
        "sound:queue-less-than",
        "number:1",
        "sound:queue-minute",
    ]
    assert wait_prompts(150) == ["sound:queue-holdtime", "number:3", "sound:queue-minutes"]


def test_average_wait_is_a_running_average() -> None:
    memory = QueueMemory()
    memory.answered("201", 60)
    assert memory.average_wait == 60
    memory.answered("202", 180)
    assert memory.average_wait == 90
    assert memory.last_answered == "202"
    assert [memory.agents["201"].calls, memory.agents["202"].calls] == [1, 1]


def test_wait_ends_at_scenario_one_or_the_call_limit() -> None:
    assert deadline(100.0, 30, 300) == (130.0, True)
    assert deadline(100.0, None, 300) == (400.0, False)


def test_the_default_queue_call_limit_is_300_seconds() -> None:
    assert Settings.model_fields["queue_call_limit"].default == 300 == DEFAULT_QUEUE_CALL_LIMIT


def test_ringback_is_the_russian_tone() -> None:
    assert ringback_tone() == "tone:425/800,0/3200"


def test_memory_keys_are_valid_kv_keys() -> None:
    assert memory_key("acme", "3f2a9c0d") == "acme.3f2a9c0d"
    assert memory_key("a.b", "c d") == "a_b.c_d"
