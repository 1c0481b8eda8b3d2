"""Call queues on real Asterisk (SPEC section 2): each strategy's choice of agent over a series
of calls with real phones (baresip) as agents, wrap-up, failure routing (scenarios 1 and 2, the
call limit), announcements, what the caller hears, missed offers in call history, and waiting
callers and round robin through a restart of the call-flow service."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import numpy as np
import pytest

from tests.telephony.baresip import Phone, PhoneFactory
from tests.telephony.conftest import PASSWORD, QUEUE_CALL_LIMIT, Telephony, TenantApi
from tests.telephony.helpers import AriProbe, Caller, legs_of, wait_ready

pytestmark = pytest.mark.timeout(60)


async def make_queue(
    tenant: TenantApi, agents: list[str], number: str = "500", **fields: Any
) -> dict[str, Any]:
    body = {"name": f"Queue {number}", "number": number, "agents": agents, "agent_ring_time": 3,
            "wrapup_time": 0, **fields}  # fmt: skip
    return await tenant.create("queues", body)


async def agents(
    tenant: TenantApi, phones: PhoneFactory, probe: AriProbe, *numbers: str, auto_answer: bool = True
) -> list[Phone]:
    """Employees with a registered phone each (answering by itself or not)."""
    for number in numbers:
        await tenant.employee(number)
    result = []
    for number in numbers:
        await wait_endpoint(probe, f"{number}@{tenant.domain}")
        result.append(await phones.phone(number, tenant.domain, PASSWORD, auto_answer=auto_answer))
    return result


async def wait_endpoint(probe: AriProbe, endpoint: str) -> None:
    """Until callflow has put ``endpoint`` on Asterisk (a phone can register then)."""
    for _ in range(100):
        try:
            await probe.rest("GET", f"/endpoints/PJSIP/{endpoint}")
            return
        except AssertionError:
            await asyncio.sleep(0.1)
    raise AssertionError(f"endpoint {endpoint} missing")


async def answered_by(candidates: list[Phone], timeout: float = 15) -> Phone:
    """The phone that takes the next call (CALL_ESTABLISHED), among ``candidates``."""
    waits = {asyncio.ensure_future(p.wait_established(timeout)): p for p in candidates}
    done, pending = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    winner = done.pop()
    winner.result()
    return waits[winner]


async def queue_call(probe: AriProbe, tenant: TenantApi, number: str = "500", caller: str = "101") -> Caller:
    return await Caller(probe, f"{caller}@{tenant.domain}", caller).call(number)


async def one_call(probe: AriProbe, tenant: TenantApi, team: list[Phone]) -> str:
    """A call to the queue; returns the number of the agent who answered it, once hung up."""
    caller = await queue_call(probe, tenant)
    agent = await answered_by(team)
    await caller.hangup()
    await agent.wait_closed(10)
    return agent.number


async def wait_registered(tenant: TenantApi, number: str, registered: bool = True) -> None:
    for _ in range(100):
        listed = (await tenant.client.get(f"/v1/tenants/{tenant.tenant_id}/employees")).json()["items"]
        if any(e["number"] == number and e["registered"] is registered for e in listed):
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"{number} registered is not {registered}")


def played_per_channel(probe: AriProbe, mark: int) -> dict[str, list[str]]:
    """The media of every playback started since ``mark``, per channel, in order."""
    played: dict[str, list[str]] = {}
    for event in probe.since(mark, "PlaybackStarted"):
        playback = event.get("playback", {})
        played.setdefault(str(playback.get("target_uri")), []).append(str(playback.get("media_uri")))
    return played


# strategies -----------------------------------------------------------------------------------


async def test_linear_rings_agents_in_order_and_missed_offers_are_in_call_history(
    tenant: TenantApi, phones: PhoneFactory, probe: AriProbe
) -> None:
    await tenant.employee("101")
    (first,) = await agents(tenant, phones, probe, "201", auto_answer=False)
    team = await agents(tenant, phones, probe, "202", "203")
    await make_queue(tenant, ["201", "202", "203"], strategy="linear", agent_ring_time=2)
    for _ in range(2):
        assert await one_call(probe, tenant, team) == "202"  # after 201's missed offer, every time
        await first.wait_incoming(1)
    assert not any(e.get("type") == "CALL_INCOMING" for e in team[1].events)
    legs = legs_of(await tenant.calls("500", legs=6))
    missed = [leg for leg in legs if leg["called_account"] == "201"]
    assert len(missed) == 2
    assert all(leg["disposition"] == "no_answer" and leg["queue_number"] == "500" for leg in missed)
    answered = [leg for leg in legs if leg["called_account"] == "202" and leg["caller_account"] == "101"]
    assert len(answered) >= 2
    assert all(leg["queue_number"] == "500" for leg in answered)
    assert any(leg["disposition"] == "answered" for leg in answered)


async def test_rrmemory_goes_round_after_the_last_agent_who_answered(
    tenant: TenantApi, phones: PhoneFactory, probe: AriProbe
) -> None:
    await tenant.employee("101")
    team = await agents(tenant, phones, probe, "201", "202", "203")
    await make_queue(tenant, ["201", "202", "203"], strategy="rrmemory")
    assert [await one_call(probe, tenant, team) for _ in range(4)] == ["201", "202", "203", "201"]


async def test_leastrecent_offers_the_agent_whose_last_call_ended_longest_ago(
    tenant: TenantApi, phones: PhoneFactory, probe: AriProbe
) -> None:
    await tenant.employee("101")
    team = await agents(tenant, phones, probe, "201", "202", "203")
    await make_queue(tenant, ["201", "202", "203"], strategy="leastrecent")
    first = await queue_call(probe, tenant)
    a201 = await answered_by(team)
    assert a201.number == "201"  # nobody called yet: the list's order
    assert await one_call(probe, tenant, team) == "202"  # 201 is on the first call
    await first.hangup()
    await a201.wait_closed(10)  # 202's call ended before 201's
    assert await one_call(probe, tenant, team) == "203"  # never called
    assert await one_call(probe, tenant, team) == "202"  # rrmemory or linear would take 201


async def test_fewestcalls_offers_the_agent_with_the_fewest_calls(
    tenant: TenantApi, phones: PhoneFactory, probe: AriProbe
) -> None:
    await tenant.employee("101")
    await tenant.employee("202")
    team = await agents(tenant, phones, probe, "201")
    await make_queue(tenant, ["201", "202"], strategy="fewestcalls")
    assert [await one_call(probe, tenant, team) for _ in range(2)] == ["201", "201"]  # 202 logged out
    await wait_endpoint(probe, f"202@{tenant.domain}")
    team.append(await phones.phone("202", tenant.domain, PASSWORD, auto_answer=True))
    await wait_registered(tenant, "202")
    assert [await one_call(probe, tenant, team) for _ in range(3)] == ["202", "202", "201"]


async def test_ringall_rings_every_free_agent_and_the_first_to_answer_takes_it(
    tenant: TenantApi, phones: PhoneFactory, probe: AriProbe
) -> None:
    await tenant.employee("101")
    a201, a202, a203 = await agents(tenant, phones, probe, "201", "202", "203", auto_answer=False)
    await make_queue(tenant, ["201", "202", "203"], strategy="ringall", agent_ring_time=10,
                     caller_id_prefix="sales:")  # fmt: skip
    caller = await queue_call(probe, tenant)
    incoming = [await phone.wait_incoming(8) for phone in (a201, a202, a203)]
    await a202.answer()
    await a202.wait_established()
    await a201.wait_closed(5)
    await a203.wait_closed(5)
    assert all(event.get("peerdisplayname") == "sales:101" for event in incoming), incoming
    await caller.hangup()
    await a202.wait_closed()
    legs = legs_of(await tenant.calls("500", legs=2))
    agent_legs = [leg for leg in legs if leg["called_number"] != "500"]  # no missed legs: 202 took it
    assert [(leg["called_account"], leg["disposition"]) for leg in agent_legs] == [("202", "answered")]
    (caller_leg,) = [leg for leg in legs if leg["called_number"] == "500"]
    assert caller_leg["called_account"] == "202" and caller_leg["queue_number"] == "500"


async def test_random_gives_the_call_to_one_of_the_agents(
    tenant: TenantApi, phones: PhoneFactory, probe: AriProbe
) -> None:
    await tenant.employee("101")
    team = await agents(tenant, phones, probe, "201", "202")
    await make_queue(tenant, ["201", "202"], strategy="random")
    assert await one_call(probe, tenant, team) in ("201", "202")


async def test_an_agent_gets_no_offer_during_wrapup(
    tenant: TenantApi, phones: PhoneFactory, probe: AriProbe
) -> None:
    await tenant.employee("101")
    a201, a202 = team = await agents(tenant, phones, probe, "201", "202")
    await make_queue(tenant, ["201", "202"], strategy="linear", wrapup_time=4)
    assert await one_call(probe, tenant, team) == "201"
    ended = time.monotonic()
    assert await one_call(probe, tenant, team) == "202"  # 201 is in wrap-up
    caller = await queue_call(probe, tenant)  # both in wrap-up: the caller waits for 201's end
    assert await answered_by(team) is a201
    assert time.monotonic() - ended >= 3.5
    await caller.hangup()
    assert sum(1 for e in a202.events if e.get("type") == "CALL_INCOMING") == 1


# failure routing --------------------------------------------------------------------------------


async def test_scenario_2_no_agent_registered_goes_to_the_target(
    tenant: TenantApi, phones: PhoneFactory, probe: AriProbe
) -> None:
    for number in ("101", "201", "202"):
        await tenant.employee(number)
    (target,) = await agents(tenant, phones, probe, "301")
    await make_queue(tenant, ["201", "202"], no_agents_target="301")
    started = time.monotonic()
    caller = await queue_call(probe, tenant)
    await target.wait_established(8)
    assert time.monotonic() - started < 6
    await caller.hangup()
    legs = legs_of(await tenant.calls("500", legs=2))
    assert any(leg["called_account"] == "301" and leg["disposition"] == "answered" for leg in legs)
    assert all(leg["queue_number"] == "500" for leg in legs)


async def test_scenario_1_after_the_maximum_wait_the_call_goes_to_the_target(
    tenant: TenantApi, phones: PhoneFactory, probe: AriProbe
) -> None:
    await tenant.employee("101")
    (agent,) = await agents(tenant, phones, probe, "201", auto_answer=False)
    (target,) = await agents(tenant, phones, probe, "301")
    await make_queue(tenant, ["201"], agent_ring_time=10, max_wait_time=3, max_wait_target="301")
    started = time.monotonic()
    caller = await queue_call(probe, tenant)
    await agent.wait_incoming(5)
    await target.wait_established(10)
    assert 2.5 <= time.monotonic() - started < 8
    await agent.wait_closed(3)  # its offer was cut at the maximum wait
    await caller.hangup()
    legs = legs_of(await tenant.calls("500", legs=3))
    assert any(leg["called_account"] == "201" and leg["disposition"] == "no_answer" for leg in legs)
    assert any(leg["called_account"] == "301" and leg["disposition"] == "answered" for leg in legs)


async def test_without_scenario_1_the_call_ends_at_the_queue_call_limit(
    tenant: TenantApi, probe: AriProbe
) -> None:
    for number in ("101", "201"):
        await tenant.employee(number)
    await make_queue(tenant, ["201"])  # nobody logged in, no scenario 2: the caller waits
    started = time.monotonic()
    caller = await queue_call(probe, tenant)
    await caller.wait_answered()
    await caller.wait_hung_up(QUEUE_CALL_LIMIT + 6)
    assert QUEUE_CALL_LIMIT - 1 <= time.monotonic() - started <= QUEUE_CALL_LIMIT + 4
    (leg,) = legs_of(await tenant.calls("500", legs=1))
    assert leg["queue_number"] == "500" and leg["caller_account"] == "101"
    assert leg["disposition"] == "no_answer" and leg["billsec"] == 0  # a missed call
    assert leg["duration"] >= QUEUE_CALL_LIMIT - 1  # the waiting time


# what the caller hears ------------------------------------------------------------------------


async def test_position_and_estimated_wait_are_announced(tenant: TenantApi, probe: AriProbe) -> None:
    for number in ("101", "102", "201"):
        await tenant.employee(number)
    await make_queue(  # scenario 1 far away: no call limit while the prompts play
        tenant, ["201"], announce_position=True, announce_estimated_wait=True, max_wait_time=60,
        max_wait_target="201",
    )  # fmt: skip
    mark = probe.mark()
    first = await queue_call(probe, tenant)
    await first.wait_answered()
    await started(probe, "sound:queue-holdtime", mark)
    second = await queue_call(probe, tenant, caller="102")
    await second.wait_answered()
    wait = ["sound:queue-holdtime", "sound:queue-less-than", "number:1", "sound:queue-minute"]
    expected = [
        ["sound:queue-thereare", "number:2", "sound:queue-callswaiting", *wait, "tone:425/800,0/3200"],
        ["sound:queue-youarenext", *wait, "tone:425/800,0/3200"],  # then ringback till the next
    ]
    heard: list[list[str]] = []
    for _ in range(60):  # both callers' first announcements, whole
        heard = sorted(played_per_channel(probe, mark).values())
        if [media[: len(want)] for media, want in zip(heard, expected, strict=False)] == expected:
            break
        await asyncio.sleep(0.25)
    assert [media[: len(want)] for media, want in zip(heard, expected, strict=False)] == expected, heard
    await first.hangup()
    await second.hangup()


async def started(probe: AriProbe, media: str, mark: int, timeout: float = 12) -> None:
    await probe.wait(
        lambda e: e.get("type") == "PlaybackStarted" and e.get("playback", {}).get("media_uri") == media,
        timeout,
        mark,
    )


def heard(phone: Phone) -> np.ndarray:
    data = phone.speaker_wav.read_bytes()[44:]
    return np.frombuffer(data[: len(data) // 2 * 2], dtype="<i2").astype(np.float64)


def share_near(samples: np.ndarray, hz: float, rate: int = 8000) -> float:
    """The share of the signal's energy within 20 Hz of ``hz``."""
    spectrum = np.abs(np.fft.rfft(samples)) ** 2
    freqs = np.fft.rfftfreq(len(samples), 1 / rate)
    return float(spectrum[np.abs(freqs - hz) < 20].sum() / max(spectrum.sum(), 1e-9))


async def test_the_caller_hears_ringback_or_music_on_hold(
    tenant: TenantApi, phones: PhoneFactory, probe: AriProbe
) -> None:
    for number in ("101", "201"):
        await tenant.employee(number)
    await make_queue(tenant, ["201"], number="500")
    await make_queue(tenant, ["201"], number="501", waiting_sound="music_on_hold")
    await wait_endpoint(probe, f"101@{tenant.domain}")
    phone = await phones.phone("101", tenant.domain, PASSWORD)
    sounds = {}
    for number in ("500", "501"):
        await phone.dial(number)
        await phone.wait_established(5)
        await asyncio.sleep(4.5)
        await phone.hangup()
        await phone.wait_closed()
        await asyncio.sleep(0.3)
        sounds[number] = heard(phone)
    ringback, music = sounds["500"], sounds["501"]
    assert np.sqrt(np.mean(ringback**2)) > 100 and np.sqrt(np.mean(music**2)) > 100, "silence"
    assert share_near(ringback, 425) > 0.8  # the Russian ringback tone, 425 Hz
    assert share_near(music, 425) < 0.3  # music, not a tone


# restarts -------------------------------------------------------------------------------------


async def restart_callflow(telephony: Telephony) -> None:
    await asyncio.to_thread(telephony.callflow.restart)
    await wait_ready(telephony.callflow.base_url)


async def test_a_waiting_caller_gets_an_agent_after_a_callflow_restart(
    tenant: TenantApi, phones: PhoneFactory, probe: AriProbe, telephony: Telephony
) -> None:
    for number in ("101", "301"):
        await tenant.employee(number)
    (agent,) = await agents(tenant, phones, probe, "201", auto_answer=False)
    await make_queue(tenant, ["201"], agent_ring_time=30, max_wait_time=120, max_wait_target="301")
    caller = await queue_call(probe, tenant)
    await caller.wait_answered()
    await agent.wait_incoming(5)
    agent.auto_answer = True  # from the next offer on
    await restart_callflow(telephony)
    await agent.wait_closed(10)  # the offer the stopped service left ringing ends
    await agent.wait_established(15)  # offered again by the new service
    await caller.hangup()
    await agent.wait_closed()
    assert "resumed in queue 500" in telephony.callflow.log()
    legs = legs_of(await tenant.calls("500", legs=2))
    callers = [leg for leg in legs if leg["called_number"] == "500" and leg["caller_account"] == "101"]
    assert len(callers) == 1 and callers[0]["disposition"] == "answered"
    assert callers[0]["called_account"] == "201"


async def test_round_robin_is_remembered_through_a_restart(
    tenant: TenantApi, phones: PhoneFactory, probe: AriProbe, telephony: Telephony
) -> None:
    await tenant.employee("101")
    team = await agents(tenant, phones, probe, "201", "202", "203")
    await make_queue(tenant, ["201", "202", "203"], strategy="rrmemory")
    assert await one_call(probe, tenant, team) == "201"
    await asyncio.sleep(1)  # the memory is written
    await restart_callflow(telephony)
    assert await one_call(probe, tenant, team) == "202"
