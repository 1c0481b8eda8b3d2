#!/usr/bin/env python
"""Call-flow benchmark: how fast the call-flow service routes a call, how many call set-ups per
second go through its Stasis application compared with plain dialplan, and how many callers it
can hold in IVR menus. Prints one JSON document on stdout (progress goes to stderr) and writes it
to ``--out``.

    .venv/bin/python bench/callflow_bench.py                 # about a minute on 2 idle cores
    .venv/bin/python bench/callflow_bench.py --calls 500 --concurrency 20 --hold 1500 --out /tmp/x.json

It starts its own Asterisk 22 (``scripts/asterisk.py``, needs root and the built root in
``.cache/asterisk/root``) and a private platform (``tests.support.Platform``: nats-server,
config, cdr, callflow, gateway), like the telephony tests, and creates a tenant with one
employee (``101``) and one IVR menu (``500``: no greeting of its own, so the built-in prompt
is played; timeout 60 s, 10 repeats: a caller stays about ten minutes). Callers are Local
channels ``Local/<number>@<context>`` originated through ARI into the benchmark's own
application ``benchprobe`` with ``__SB_ORIGIN_ENDPOINT=101@<tenant domain>``, so the call-flow
service takes the ``;2`` half as employee 101 calling. ``benchprobe`` is subscribed to all
events (``subscribeAll=true``, with an event filter) and watches both halves of every call.

Phases:

1. ``routing_latency``: ``--calls`` calls to the IVR, one after the other (after 10 warm-ups).
   For each ``;2`` channel, the time from its entry into the call-flow service's application to
   the first thing (by Asterisk's clock) the service does to it (``ChannelStateChange``,
   ``PlaybackStarted``, ``ChannelDialplan``, ``ChannelHangupRequest``, ``ChannelEnteredBridge``
   or ``Dial``; for the IVR it is the answer), both from Asterisk's event ``timestamp`` fields
   (millisecond resolution). Asterisk sends ``StasisStart`` only to the application the channel enters, so
   the entry is the ``ChannelDialplan`` event of ``Stasis(switchboard,...)`` on ``;2`` (the
   ``StasisStart`` follows in the same thread); a ``StasisStart`` is used when one arrives.
   ``reference_event`` says which. The same figure is given for the Stasis calls of phase 2.
2. ``setup_rate``: ``--calls`` calls through plain dialplan (``Local/100@sb-bench-plain``:
   ``Answer()``, ``Hangup()``), then ``--calls`` through Stasis (``Local/500@sb-internal``: the
   service answers and plays the prompt), ``--concurrency`` at a time, each after 10 warm-ups
   and a wait until the call records of before are consumed by the cdr service (``quiet``).
   Each call is hung up as soon as its ``;1`` half is answered; a slot is free again when both
   halves are destroyed. Calls/s = answered calls / (first originate to last call gone).
   ``cpu_ms_per_call``: CPU time of each process (Asterisk, the services, nats-server, the
   benchmark itself, and ``others``: the rest of the machine) over the run, per call;
   ``others_cpu_share`` is the part of the machine's CPU that other jobs took (above about 0.1
   the figures are disturbed: run it again on an idle machine).
3. ``hold``: callers into the IVR in steps of ``--step``, ``--concurrency`` at a time, kept.
   After each step and ``--settle`` seconds: both halves of every held call are still Up
   (``GET /channels``), the service's ``/readyz`` answers 200 within 1 s, and a new caller is
   answered within 2 s. It stops at the first failed check, at ``--hold`` callers, or (checked
   before each step) when the 1-minute load average is above ``--max-load`` or less than
   ``--min-free-mb`` memory is available; ``max_held_passed`` is the last step that passed.
   ``held_greetings`` counts the playback events of the held calls' greetings. Every call is
   hung up at the end.

Asterisk, the platform and the temp folder are removed at the end, also on Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import platform as platform_info
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import aiohttp  # noqa: E402
import httpx  # noqa: E402
import nats  # noqa: E402
from switchboard_contracts.employees import generate_sip_password  # noqa: E402
from switchboard_contracts.subjects import CALL_RECORDS_STREAM  # noqa: E402

from scripts.asterisk import Instance, asterisk_version, build, why_not_runnable  # noqa: E402
from tests.support import Platform, free_port  # noqa: E402

Event = dict[str, Any]

PROBE_APP = "benchprobe"
CALLFLOW_APP = "switchboard"
EMPLOYEE = "101"
IVR_NUMBER = "500"
INTERNAL_CONTEXT = "sb-internal"
PLAIN_CONTEXT = "sb-bench-plain"
PLAIN_NUMBER = "100"
#: What the call-flow service may do first to a call (for the routing latency).
ACTIONS = (
    "ChannelStateChange",
    "PlaybackStarted",
    "ChannelDialplan",
    "ChannelHangupRequest",
    "ChannelEnteredBridge",
    "Dial",
)
#: The probe asks Asterisk for these only (fewer events to encode, send and parse).
PROBE_EVENTS = ("StasisStart", "StasisEnd", "ChannelDestroyed", "PlaybackFinished", *ACTIONS)
#: The cdr service's durable consumer of call records (waited for between phases).
CDR_CONSUMER = "cdr-ingest"
ANSWER_TIMEOUT = 10.0
GONE_TIMEOUT = 10.0
NEW_CALL_LIMIT = 2.0
READYZ_LIMIT = 1.0
WARMUP_CALLS = 10


def say(message: str) -> None:
    print(f"[callflow_bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


class BenchError(RuntimeError):
    pass


def percentile(values: Sequence[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def distribution(values: Sequence[float], digits: int = 1) -> dict[str, Any]:
    if not values:
        return {"n": 0}
    return {
        "n": len(values),
        "p50": round(percentile(values, 0.50), digits),
        "p95": round(percentile(values, 0.95), digits),
        "max": round(max(values), digits),
        "mean": round(statistics.fmean(values), digits),
    }


def asterisk_time(event: Event) -> float:
    """Seconds since the epoch from an event's ``timestamp`` (``2025-01-01T10:00:00.123+0000``)."""
    return datetime.strptime(str(event["timestamp"]), "%Y-%m-%dT%H:%M:%S.%f%z").timestamp()


def channels_of(event: Event) -> list[str]:
    kind = event.get("type")
    if kind in ("PlaybackStarted", "PlaybackFinished"):
        target = str(event.get("playback", {}).get("target_uri", ""))
        return [target.removeprefix("channel:")] if target.startswith("channel:") else []
    if kind == "Dial":
        return [
            c["id"] for c in (event.get("caller"), event.get("peer")) if isinstance(c, dict) and "id" in c
        ]
    channel = event.get("channel")
    return [channel["id"]] if isinstance(channel, dict) and "id" in channel else []


# --------------------------------------------------------------------------------------------
# machine


def meminfo_mb() -> dict[str, int]:
    values: dict[str, int] = {}
    with open("/proc/meminfo") as meminfo:
        for line in meminfo:
            key, _, rest = line.partition(":")
            if key in ("MemTotal", "MemAvailable"):
                values[key] = int(rest.split()[0]) // 1024
    return values


def process_stats(pid: int | None) -> dict[str, Any] | None:
    """RSS, threads, open files and CPU seconds (user + system, all threads) of a process."""
    if pid is None:
        return None
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    ticks = os.sysconf("SC_CLK_TCK")
    after_name = stat.rsplit(")", 1)[1].split()
    fds: int | None = None
    with contextlib.suppress(OSError):
        fds = len(os.listdir(f"/proc/{pid}/fd"))
    return {
        "rss_mb": round(int(fields["VmRSS"].split()[0]) / 1024, 1),
        "threads": int(fields["Threads"]),
        "fds": fds,
        "cpu_s": (int(after_name[11]) + int(after_name[12])) / ticks,
    }


def asterisk_pid(instance: Instance) -> int | None:
    """The asterisk process: the child of ``unshare`` (chroot execs it)."""
    if instance.proc is None:
        return None
    pending = [instance.proc.pid]
    while pending:
        pid = pending.pop()
        with contextlib.suppress(OSError):
            if Path(f"/proc/{pid}/comm").read_text().strip() == "asterisk":
                return pid
            children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
            pending.extend(int(c) for c in children)
    return None


@dataclass
class Watched:
    """The processes whose CPU time is counted per phase; ``others``: the rest of the machine's
    busy CPU time (another job running at the same time makes the figures incomparable)."""

    pids: dict[str, int | None]

    def cpu(self) -> dict[str, float]:
        out = {"bench": sum(os.times()[:2])}
        for name, pid in self.pids.items():
            stats = process_stats(pid)
            out[name] = stats["cpu_s"] if stats else 0.0
        with open("/proc/stat") as stat:
            ticks = [int(v) for v in stat.readline().split()[1:]]
        busy = sum(ticks[:8]) - ticks[3] - ticks[4]  # all but idle and iowait; no guest twice
        out["others"] = busy / os.sysconf("SC_CLK_TCK") - sum(out.values())
        return out

    def per_call_ms(self, before: dict[str, float], calls: int) -> dict[str, float]:
        after = self.cpu()
        return {k: round((after[k] - before[k]) * 1000 / max(1, calls), 2) for k in after}


def others_share(cpu_ms_per_call: dict[str, float], calls: int, seconds: float) -> float:
    """The part of the machine's CPU capacity other processes used during a run (above about
    0.1 the run was disturbed by another job)."""
    share = cpu_ms_per_call["others"] * calls / 1000 / (seconds * (os.cpu_count() or 1))
    return round(max(0.0, share), 3)  # clock ticks: a short run can come out a bit below 0


# --------------------------------------------------------------------------------------------
# ARI probe


class Track:
    """The events of one channel the benchmark watches."""

    __slots__ = ("changed", "events")

    def __init__(self) -> None:
        self.events: list[Event] = []
        self.changed = asyncio.Event()

    def add(self, event: Event) -> None:
        self.events.append(event)
        self.changed.set()

    async def wait(self, predicate: Callable[[Event], bool], timeout: float) -> Event | None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        index = 0
        while True:
            while index < len(self.events):
                event = self.events[index]
                index += 1
                if predicate(event):
                    return event
            left = deadline - loop.time()
            if left <= 0:
                return None
            self.changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.changed.wait(), left)


@dataclass
class Call:
    """A simulated caller: ``;1`` (``outer``, in benchprobe) and ``;2`` (``inner``, the one
    that runs the dialplan and, through sb-internal, enters the call-flow service)."""

    outer: str
    inner: str
    outer_track: Track
    inner_track: Track
    started: float
    answered_after: float | None = None
    error: str | None = None


class Probe:
    """The benchmark's ARI application: one event socket subscribed to all events, and REST."""

    def __init__(self, instance: Instance, origin: str, rest_limit: int, formats: str) -> None:
        self.instance = instance
        self.origin = origin
        self.formats = formats
        self.base = f"http://127.0.0.1:{instance.ari_port}/ari"
        self.rest_limit = rest_limit
        self.tracks: dict[str, Track] = {}
        self.received: Counter[str] = Counter()
        self.session: aiohttp.ClientSession | None = None
        self.ws: aiohttp.ClientWebSocketResponse | None = None
        self.reader: asyncio.Task[None] | None = None
        self.event_filter: Any = None
        self.closing = False

    async def start(self) -> Probe:
        credentials = f"{self.instance.ari_user}:{self.instance.ari_password}".encode()
        self.session = aiohttp.ClientSession(
            headers={"Authorization": "Basic " + base64.b64encode(credentials).decode()},
            timeout=aiohttp.ClientTimeout(total=15),
            connector=aiohttp.TCPConnector(limit=self.rest_limit),
        )
        url = (
            f"ws://127.0.0.1:{self.instance.ari_port}/ari/events?app={PROBE_APP}&subscribeAll=true"
            f"&api_key={self.instance.ari_user}:{self.instance.ari_password}"
        )
        self.ws = await self.session.ws_connect(url, heartbeat=10, max_msg_size=0)
        self.reader = asyncio.create_task(self._read())
        try:
            app = await self.rest(
                "PUT",
                f"/applications/{PROBE_APP}/eventFilter",
                body={"allowed": [{"type": kind} for kind in PROBE_EVENTS]},
            )
            self.event_filter = sorted(e["type"] for e in app.get("events_allowed", []))
        except BenchError as exc:  # an Asterisk without event filters: everything comes
            self.event_filter = f"not set: {exc}"
        return self

    async def _read(self) -> None:
        assert self.ws is not None
        async for message in self.ws:
            if message.type != aiohttp.WSMsgType.TEXT:
                continue
            event = json.loads(message.data)
            self.received[str(event.get("type"))] += 1
            for channel_id in channels_of(event):
                track = self.tracks.get(channel_id)
                if track is not None:
                    track.add(event)
        if not self.closing:
            say("the probe's event socket closed")

    async def stop(self) -> None:
        self.closing = True
        if self.ws is not None:
            await self.ws.close()
        if self.reader is not None:
            self.reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self.reader
        if self.session is not None:
            await self.session.close()

    async def rest(self, method: str, path: str, body: Any = None, **params: Any) -> Any:
        assert self.session is not None
        query = {k: str(v) for k, v in params.items()}
        async with self.session.request(method, f"{self.base}{path}", params=query, json=body) as response:
            text = await response.text()
            if response.status >= 300:
                raise BenchError(f"ARI {method} {path}: {response.status} {text.strip()[:200]}")
            return json.loads(text) if text else None

    # calls ---------------------------------------------------------------------------------

    async def originate(self, number: str, context: str) -> Call:
        outer, inner = str(uuid.uuid4()), str(uuid.uuid4())
        call = Call(outer, inner, Track(), Track(), time.perf_counter())
        self.tracks[outer] = call.outer_track
        self.tracks[inner] = call.inner_track
        params = {"formats": self.formats} if self.formats else {}
        try:
            await self.rest(
                "POST",
                "/channels",
                endpoint=f"Local/{number}@{context}",
                app=PROBE_APP,
                appArgs="caller",
                channelId=outer,
                otherChannelId=inner,
                callerId=f'"{EMPLOYEE}" <{EMPLOYEE}>',
                body={"variables": {"__SB_ORIGIN_ENDPOINT": self.origin}},
                **params,
            )
        except (BenchError, aiohttp.ClientError, TimeoutError) as exc:
            call.error = f"originate: {exc}"
        return call

    async def answered(self, call: Call, timeout: float = ANSWER_TIMEOUT) -> bool:
        """The ``;1`` half is answered (it is Up or entered benchprobe) within ``timeout``."""
        if call.error:
            return False

        def up_or_gone(e: Event) -> bool:
            kind = e.get("type")
            if kind == "ChannelStateChange":
                return bool(e["channel"].get("state") == "Up")
            return kind in ("StasisStart", "ChannelDestroyed")

        left = timeout - (time.perf_counter() - call.started)
        event = await call.outer_track.wait(up_or_gone, max(0.0, left))
        if event is None:
            call.error = f"not answered within {timeout} s"
            return False
        if event.get("type") == "ChannelDestroyed":
            call.error = f"gone before answer ({event.get('cause_txt')})"
            return False
        call.answered_after = time.perf_counter() - call.started
        return True

    async def hangup(self, call: Call) -> None:
        with contextlib.suppress(BenchError, aiohttp.ClientError, TimeoutError):  # already gone
            await self.rest("DELETE", f"/channels/{call.outer}")

    async def gone(self, call: Call, timeout: float = GONE_TIMEOUT) -> bool:
        """Both halves destroyed; the call's tracks are dropped."""
        if call.error and call.error.startswith("originate"):  # there never was a channel
            self.tracks.pop(call.outer, None)
            self.tracks.pop(call.inner, None)
            return True
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        ok = True
        for track in (call.outer_track, call.inner_track):
            event = await track.wait(
                lambda e: e.get("type") == "ChannelDestroyed", max(0.0, deadline - loop.time())
            )
            ok = ok and event is not None
        self.tracks.pop(call.outer, None)
        self.tracks.pop(call.inner, None)
        return ok

    async def channel_states(self) -> dict[str, str]:
        channels = await self.rest("GET", "/channels")
        return {c["id"]: c.get("state", "") for c in channels}


def entered_callflow(event: Event) -> str | None:
    """What an event on ``;2`` says about its entry into the call-flow service's application:
    ``StasisStart`` when the probe gets it, else the dialplan starting ``Stasis(switchboard,...)``
    (Asterisk sends StasisStart only to the application the channel enters)."""
    kind = event.get("type")
    if kind == "StasisStart" and event.get("application") == CALLFLOW_APP:
        return "StasisStart"
    if (
        kind == "ChannelDialplan"
        and event.get("dialplan_app") == "Stasis"
        and str(event.get("dialplan_app_data", "")).split(",")[0] == CALLFLOW_APP
    ):
        return "ChannelDialplan:Stasis"
    return None


def routing_latency(call: Call) -> tuple[float, str, str] | None:
    """Milliseconds from the ``;2`` half's entry into the call-flow service's application to the
    first action on it, from Asterisk's timestamps; the reference event and the action."""
    started: Event | None = None
    reference = ""
    actions: list[Event] = []
    for event in call.inner_track.events:
        entry = entered_callflow(event)
        if entry == "StasisStart" or (entry and started is None):
            started, reference, actions = event, entry, []
        elif started is not None and event.get("type") in ACTIONS:
            actions.append(event)
    if started is None or not actions:
        return None
    # the earliest by Asterisk's clock: events of different kinds may arrive out of order
    first = min(actions, key=asterisk_time)
    what = str(first.get("type"))
    if what == "ChannelStateChange":
        what += ":" + str(first["channel"].get("state"))
    return (asterisk_time(first) - asterisk_time(started)) * 1000, reference, what


def describe(events: list[Event]) -> list[str]:
    """A call's events in short, for the output."""
    out = []
    for event in events:
        kind = str(event.get("type"))
        detail = ""
        if kind == "ChannelStateChange":
            detail = str(event["channel"].get("state"))
        elif kind == "ChannelDialplan":
            detail = f"{event.get('dialplan_app')}({event.get('dialplan_app_data')})"
        elif kind in ("StasisStart", "StasisEnd"):
            detail = str(event.get("application"))
        elif kind == "PlaybackStarted":
            detail = str(event.get("playback", {}).get("media_uri"))
        out.append(f"{event.get('timestamp')} {kind} {detail}".rstrip())
    return out


# --------------------------------------------------------------------------------------------
# platform and tenant


async def wait_ready(url: str, timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    body: dict[str, Any] = {}
    async with httpx.AsyncClient(timeout=2) as client:
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError, ValueError):
                response = await client.get(f"{url}/readyz")
                body = response.json()
                if response.status_code == 200:
                    return body
            await asyncio.sleep(0.2)
    raise BenchError(f"callflow not ready after {timeout} s: {body}")


async def create_tenant(platform: Platform) -> tuple[str, str]:
    """A tenant with employee 101 and IVR menu 500; its id and SIP domain."""
    tenant_id = "bench" + uuid.uuid4().hex[:8]
    domain = f"{tenant_id}.pbx.test"
    headers = {"Authorization": f"Bearer {platform.operator_key}"}
    async with httpx.AsyncClient(base_url=platform.url, headers=headers, timeout=15) as operator:
        body = {
            "id": tenant_id,
            "name": tenant_id,
            "sip_domain": domain,
            "settings": {"prompt_language": "en"},
        }
        response = await operator.post("/v1/tenants", json=body)
        if response.status_code != 201:
            raise BenchError(f"tenant: {response.status_code} {response.text}")
        key = await operator.post(f"/v1/tenants/{tenant_id}/api-keys", json={"name": "bench"})
        if key.status_code != 201:
            raise BenchError(f"api key: {key.status_code} {key.text}")
    headers = {"Authorization": f"Bearer {key.json()['key']}"}
    entities: list[tuple[str, dict[str, Any]]] = [
        ("employees", {"name": "Bench caller", "number": EMPLOYEE, "sip_password": generate_sip_password()}),
        (
            "ivr-menus",
            {
                "name": "Bench menu",
                "number": IVR_NUMBER,
                "timeout": 60,
                "repeats": 10,
                "default_target": EMPLOYEE,
            },
        ),
    ]
    async with httpx.AsyncClient(base_url=platform.url, headers=headers, timeout=15) as admin:
        for kind, body in entities:
            response = await admin.post(f"/v1/tenants/{tenant_id}/{kind}", json=body)
            if response.status_code != 201:
                raise BenchError(f"{kind}: {response.status_code} {response.text}")
    return tenant_id, domain


async def one_call(probe: Probe, number: str, context: str, timeout: float = ANSWER_TIMEOUT) -> Call:
    """Originate, wait for the answer, hang up, wait until both halves are gone."""
    call = await probe.originate(number, context)
    await probe.answered(call, timeout)
    await probe.hangup(call)
    if not await probe.gone(call) and call.error is None:
        call.error = "not gone after hang-up"
    return call


async def wait_routed(probe: Probe, timeout: float = 30) -> int:
    """Calls to the IVR until one is answered: the service has the tenant's configuration."""
    deadline = time.monotonic() + timeout
    attempts = 0
    while True:
        attempts += 1
        call = await one_call(probe, IVR_NUMBER, INTERNAL_CONTEXT, timeout=3)
        if call.error is None:
            return attempts
        if time.monotonic() > deadline:
            raise BenchError(f"the IVR never answered: {call.error}")
        await asyncio.sleep(0.5)


async def quiet(platform: Platform, callflow_url: str, timeout: float = 60) -> dict[str, Any]:
    """Wait until the previous phase's call records are published by the call-flow service and
    consumed by the cdr service, so that a phase does not pay for the one before."""
    began = time.perf_counter()
    pending: int | None = None
    waiting: int | None = None
    nc = await nats.connect(platform.nats.url)
    try:
        js = nc.jetstream()
        async with httpx.AsyncClient(timeout=2) as client:
            while time.perf_counter() - began < timeout:
                with contextlib.suppress(httpx.HTTPError, ValueError):
                    waiting = int(
                        (await client.get(f"{callflow_url}/readyz")).json().get("records_waiting", 0)
                    )
                with contextlib.suppress(Exception):
                    info = await js.consumer_info(CALL_RECORDS_STREAM, CDR_CONSUMER)
                    pending = int(info.num_pending or 0) + int(info.num_ack_pending or 0)
                if waiting == 0 and pending == 0:
                    break
                await asyncio.sleep(0.2)
            stream = await js.stream_info(CALL_RECORDS_STREAM)
    finally:
        await nc.close()
    return {
        "waited_s": round(time.perf_counter() - began, 2),
        "records_in_stream": stream.state.messages,
        "cdr_pending": pending,
        "callflow_records_waiting": waiting,
    }


# --------------------------------------------------------------------------------------------
# phases


async def phase_latency(probe: Probe, calls: int, watched: Watched) -> dict[str, Any]:
    say(f"routing latency: {calls} calls to the IVR, one at a time")
    latencies: list[float] = []
    references: Counter[str] = Counter()
    first: Counter[str] = Counter()
    errors: Counter[str] = Counter()
    example: list[str] = []
    cpu = watched.cpu()
    began = time.perf_counter()
    for _ in range(calls):
        call = await one_call(probe, IVR_NUMBER, INTERNAL_CONTEXT)
        measured = routing_latency(call)
        if measured is None:
            errors[call.error or "no StasisStart or action seen on ;2"] += 1
            continue
        latencies.append(measured[0])
        references[measured[1]] += 1
        first[measured[2]] += 1
        example = example or describe(call.inner_track.events)
        if call.error:
            errors[call.error] += 1
    seconds = time.perf_counter() - began
    cpu_ms = watched.per_call_ms(cpu, calls)
    result: dict[str, Any] = {
        "what": "entry of ;2 into Stasis(switchboard) to the first action on it, Asterisk timestamps",
        "calls": calls,
        "measured": len(latencies),
        "ms": distribution(latencies),
        "reference_event": dict(references),
        "first_action": dict(first),
        "example_inner_events": example,
        "errors": dict(errors),
        "seconds": round(seconds, 2),
        "cpu_ms_per_call": cpu_ms,
        "others_cpu_share": others_share(cpu_ms, calls, seconds),
    }
    say(f"routing latency: {result['ms']}")
    return result


async def run_calls(
    probe: Probe, calls: int, concurrency: int, number: str, context: str, watched: Watched
) -> dict[str, Any]:
    """``calls`` calls, ``concurrency`` at a time, each hung up as soon as it is answered."""
    remaining = iter(range(calls))
    done: list[Call] = []

    async def worker() -> None:
        for _ in remaining:
            done.append(await one_call(probe, number, context))

    cpu = watched.cpu()
    began = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    seconds = time.perf_counter() - began
    answered = [c for c in done if c.answered_after is not None]
    setup_ms = [c.answered_after * 1000 for c in done if c.answered_after is not None]
    result: dict[str, Any] = {
        "calls": calls,
        "answered": len(answered),
        "errors": dict(Counter(c.error for c in done if c.error)),
        "seconds": round(seconds, 3),
        "calls_per_s": round(len(answered) / seconds, 1),
        "originate_to_answer_ms": distribution(setup_ms),
        "cpu_ms_per_call": watched.per_call_ms(cpu, calls),
    }
    result["others_cpu_share"] = others_share(result["cpu_ms_per_call"], calls, seconds)
    routed = [m for m in (routing_latency(c) for c in done) if m is not None]
    if routed:
        result["routing_latency_ms"] = distribution([m[0] for m in routed])
        result["reference_event"] = dict(Counter(m[1] for m in routed))
        result["first_action"] = dict(Counter(m[2] for m in routed))
    return result


async def phase_rate(
    probe: Probe, calls: int, concurrency: int, watched: Watched, platform: Platform, callflow_url: str
) -> dict[str, Any]:
    modes = {
        "plain": (PLAIN_NUMBER, PLAIN_CONTEXT, "Local/100@sb-bench-plain: Answer(), Hangup()"),
        "stasis": (IVR_NUMBER, INTERNAL_CONTEXT, "Local/500@sb-internal: callflow answers, plays"),
    }
    result: dict[str, Any] = {"concurrency": concurrency}
    for mode, (number, context, what) in modes.items():
        await run_calls(probe, WARMUP_CALLS, min(concurrency, WARMUP_CALLS), number, context, watched)
        before = await quiet(platform, callflow_url)
        say(f"set-up rate, {mode}: {calls} calls, {concurrency} at a time (waited {before['waited_s']} s)")
        measured = await run_calls(probe, calls, concurrency, number, context, watched)
        result[mode] = {"what": what, **measured, "quiet_before": before}
        say(
            f"set-up rate, {mode}: {result[mode]['calls_per_s']} calls/s "
            f"(other processes: {result[mode]['others_cpu_share']:.0%} of the CPU)"
        )
    plain, stasis = result["plain"]["calls_per_s"], result["stasis"]["calls_per_s"]
    result["ratio_stasis_over_plain"] = round(stasis / plain, 3) if plain else None
    return result


async def readyz(client: httpx.AsyncClient, url: str) -> dict[str, Any]:
    began = time.perf_counter()
    try:
        response = await client.get(f"{url}/readyz", timeout=READYZ_LIMIT)
        elapsed = time.perf_counter() - began
        body = response.json()
        ok = response.status_code == 200 and elapsed <= READYZ_LIMIT
        return {
            "ok": ok,
            "ms": round(elapsed * 1000, 1),
            "status": response.status_code,
            "calls": body.get("calls"),
        }
    except (httpx.HTTPError, ValueError) as exc:
        return {"ok": False, "ms": round((time.perf_counter() - began) * 1000, 1), "error": repr(exc)}


async def phase_hold(
    probe: Probe, args: argparse.Namespace, callflow_url: str, watched: Watched
) -> dict[str, Any]:
    held: list[Call] = []
    steps: list[dict[str, Any]] = []
    stopped = f"reached --hold {args.hold}"
    passed = 0
    semaphore = asyncio.Semaphore(args.concurrency)

    async def add_caller() -> Call:
        async with semaphore:
            call = await probe.originate(IVR_NUMBER, INTERNAL_CONTEXT)
            held.append(call)  # at once: hung up at the end even when interrupted now
            await probe.answered(call)
            return call

    began = time.perf_counter()
    try:
        async with httpx.AsyncClient() as client:
            target = 0
            while target < args.hold:
                load = os.getloadavg()[0]
                memory = meminfo_mb()
                if load > args.max_load:
                    stopped = f"1-minute load average {load:.2f} > --max-load {args.max_load}"
                    break
                if memory["MemAvailable"] < args.min_free_mb:
                    stopped = f"{memory['MemAvailable']} MB available < --min-free-mb {args.min_free_mb}"
                    break
                target = min(args.hold, target + args.step)
                step_began = time.perf_counter()
                new = await asyncio.gather(*(add_caller() for _ in range(target - len(held))))
                ramp_s = time.perf_counter() - step_began
                not_answered = Counter(c.error for c in new if c.error)
                await asyncio.sleep(args.settle)

                try:
                    states = await probe.channel_states()
                except (BenchError, aiohttp.ClientError, TimeoutError) as exc:
                    say(f"channels not listed: {exc!r}")
                    states = {}
                down = [
                    c
                    for c in held
                    if c.answered_after is not None
                    and (states.get(c.outer) != "Up" or states.get(c.inner) != "Up")
                ]
                health = await readyz(client, callflow_url)
                fresh = await probe.originate(IVR_NUMBER, INTERNAL_CONTEXT)
                fresh_ok = await probe.answered(fresh, NEW_CALL_LIMIT)
                fresh_ms = round(fresh.answered_after * 1000, 1) if fresh.answered_after else None
                await probe.hangup(fresh)
                await probe.gone(fresh)
                step = {
                    "held": target,
                    "ramp_s": round(ramp_s, 2),
                    "ramp_answer_ms": distribution(
                        [c.answered_after * 1000 for c in new if c.answered_after is not None]
                    ),
                    "not_answered": dict(not_answered),
                    "held_down": len(down),
                    "held_greetings": dict(
                        Counter(
                            f"{e['type']}:{e.get('playback', {}).get('state')}"
                            for c in held
                            for e in c.inner_track.events
                            if e.get("type") in ("PlaybackStarted", "PlaybackFinished")
                        )
                    ),
                    "channels_on_asterisk": len(states),
                    "readyz": health,
                    "new_call_answer_ms": fresh_ms,
                    "new_call_error": fresh.error,
                    "load_1m": round(os.getloadavg()[0], 2),
                    "mem_available_mb": meminfo_mb()["MemAvailable"],
                    "processes": {name: process_stats(pid) for name, pid in watched.pids.items()},
                }
                failed = [
                    what
                    for what, bad in (
                        ("some new callers not answered", bool(not_answered)),
                        (f"{len(down)} answered held calls not up", bool(down)),
                        ("readyz not 200 within 1 s", not health["ok"]),
                        ("new call not answered within 2 s", not fresh_ok),
                    )
                    if bad
                ]
                step["passed"] = not failed
                steps.append(step)
                say(
                    f"hold {target}: {'passed' if not failed else 'FAILED: ' + ', '.join(failed)}; "
                    f"readyz {health['ms']} ms, new call {fresh_ms} ms, load {step['load_1m']}"
                )
                if failed:
                    stopped = f"step {target} failed: " + ", ".join(failed)
                    break
                passed = target
    finally:
        hangup = await hang_up_all(probe, held)
    return {
        "step": args.step,
        "max_held_passed": passed,
        "stopped_because": stopped,
        "seconds": round(time.perf_counter() - began, 1),
        "steps": steps,
        "hangup": hangup,
    }


async def hang_up_all(probe: Probe, calls: list[Call]) -> dict[str, Any]:
    say(f"hanging up {len(calls)} held calls")
    began = time.perf_counter()
    semaphore = asyncio.Semaphore(20)

    async def one(call: Call) -> bool:
        async with semaphore:
            await probe.hangup(call)
        return await probe.gone(call, 30)

    results = await asyncio.gather(*(one(c) for c in calls))
    left = await probe.channel_states()
    return {
        "calls": len(calls),
        "seconds": round(time.perf_counter() - began, 2),
        "not_gone": results.count(False),
        "channels_left": len(left),
    }


async def bench(
    args: argparse.Namespace, instance: Instance, platform: Platform, output: dict[str, Any]
) -> None:
    callflow = platform.services["callflow"]
    watched = Watched(
        {
            "asterisk": asterisk_pid(instance),
            "callflow": callflow.proc.pid if callflow.proc else None,
            "cdr": platform.services["cdr"].proc.pid if platform.services["cdr"].proc else None,
            "nats": platform.nats.proc.pid if platform.nats.proc else None,
            **{
                name: platform.services[name].proc.pid  # type: ignore[union-attr]
                for name in ("config", "gateway")
            },
        }
    )
    began = time.perf_counter()
    await wait_ready(callflow.base_url)
    _, domain = await create_tenant(platform)
    probe = Probe(instance, f"{EMPLOYEE}@{domain}", rest_limit=args.concurrency + 10, formats=args.formats)
    await probe.start()
    try:
        attempts = await wait_routed(probe)
        output["setup"]["tenant_to_first_routed_call_s"] = round(time.perf_counter() - began, 2)
        output["setup"]["attempts_until_routed"] = attempts
        output["setup"]["probe_event_filter"] = probe.event_filter
        for _ in range(WARMUP_CALLS):
            await one_call(probe, IVR_NUMBER, INTERNAL_CONTEXT)
        await quiet(platform, callflow.base_url)
        output["routing_latency"] = await phase_latency(probe, args.calls, watched)
        output["setup_rate"] = await phase_rate(
            probe, args.calls, args.concurrency, watched, platform, callflow.base_url
        )
        if args.hold > 0:
            quiet_before = await quiet(platform, callflow.base_url)
            output["hold"] = {
                **await phase_hold(probe, args, callflow.base_url, watched),
                "quiet_before": quiet_before,
            }
        output["records_after"] = await quiet(platform, callflow.base_url)
        output["processes_at_end"] = {name: process_stats(pid) for name, pid in watched.pids.items()}
        output["probe_events_received"] = dict(probe.received.most_common())
    finally:
        await probe.stop()


# --------------------------------------------------------------------------------------------
# main


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument(
        "--calls", type=int, default=2000, help="calls for latency and for each set-up rate (2000)"
    )
    parser.add_argument("--concurrency", type=int, default=10, help="calls being set up at once (10)")
    parser.add_argument(
        "--hold", type=int, default=600, help="most callers to hold in the IVR; 0: skip (600)"
    )
    parser.add_argument("--step", type=int, default=50, help="callers added per hold step (50)")
    parser.add_argument(
        "--settle", type=float, default=1.0, help="seconds after a step before the checks (1)"
    )
    parser.add_argument(
        "--max-load", type=float, default=None, help="stop holding above this 1-minute load (3 x cores)"
    )
    parser.add_argument(
        "--min-free-mb", type=int, default=1024, help="stop holding below this free memory (1024)"
    )
    parser.add_argument(
        "--formats",
        default="ulaw",
        help="media formats of the simulated callers, like a G.711 phone (ulaw); '' for Asterisk's "
        "default, which makes Local channels resample every prompt to the best signed-linear rate",
    )
    parser.add_argument(
        "--out", default=str(ROOT / "bench/results/callflow_default.json"), help="result file"
    )
    args = parser.parse_args(argv)
    if args.calls < 1 or args.concurrency < 1 or args.step < 1 or args.hold < 0:
        parser.error("--calls, --concurrency and --step must be positive, --hold not negative")
    if args.max_load is None:
        args.max_load = 3.0 * (os.cpu_count() or 1)
    return args


def code_version() -> dict[str, Any]:
    """The commit measured and how many files differed from it."""

    def git(*args: str) -> str:
        result = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=False)
        return result.stdout.strip()

    return {
        "commit": git("rev-parse", "--short", "HEAD"),
        "changed_files": len(git("status", "--porcelain").splitlines()),
    }


def interrupted(signum: int, frame: Any) -> None:
    """SIGTERM as Ctrl-C: inside asyncio.run the main task is cancelled (held calls are hung
    up), elsewhere a KeyboardInterrupt."""
    os.kill(os.getpid(), signal.SIGINT)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    reason = why_not_runnable()
    if reason:
        say(f"cannot run Asterisk here: {reason}")
        return 2
    signal.signal(signal.SIGTERM, interrupted)
    began = time.perf_counter()
    build()
    memory = meminfo_mb()
    output: dict[str, Any] = {
        "benchmark": "callflow",
        "params": {
            "calls": args.calls,
            "concurrency": args.concurrency,
            "hold": args.hold,
            "step": args.step,
            "settle_s": args.settle,
            "max_load": args.max_load,
            "min_free_mb": args.min_free_mb,
            "caller_formats": args.formats,
            "ivr": {"number": IVR_NUMBER, "greeting": "built-in", "timeout_s": 60, "repeats": 10},
        },
        "machine": {
            "cpus": os.cpu_count(),
            "mem_total_mb": memory["MemTotal"],
            "load_1m_at_start": round(os.getloadavg()[0], 2),
            "python": platform_info.python_version(),
            "system": platform_info.platform(),
            "asterisk": asterisk_version(),
        },
        "code": code_version(),
        "setup": {},
    }
    work = Path(tempfile.mkdtemp(prefix="sb-callflow-bench-"))
    instance = Instance(
        f"bench-{uuid.uuid4().hex[:8]}",
        sip_port=free_port(),
        tls_port=free_port(),
        ari_port=free_port(),
        ami_port=free_port(),
        language="en",
    )
    platform: Platform | None = None
    try:
        started = time.perf_counter()
        instance.start()
        output["setup"]["asterisk_start_s"] = round(time.perf_counter() - started, 2)
        say(f"Asterisk {instance.name} up: ARI {instance.ari_port}, pid {asterisk_pid(instance)}")
        sounds = instance.home / "sounds"
        sounds.mkdir(parents=True, exist_ok=True)
        callflow_env = {
            "SB_CALLFLOW_ARI_URL": f"http://127.0.0.1:{instance.ari_port}",
            "SB_CALLFLOW_ARI_USER": instance.ari_user,
            "SB_CALLFLOW_ARI_PASSWORD": instance.ari_password,
            "SB_CALLFLOW_AMI_PORT": str(instance.ami_port),
            "SB_CALLFLOW_AMI_USER": instance.ami_user,
            "SB_CALLFLOW_AMI_PASSWORD": instance.ami_password,
            "SB_CALLFLOW_SOUNDS_DIR": str(sounds),
            "SB_CALLFLOW_ASTERISK_SOUNDS_DIR": f"{instance.home_in_root}/sounds",
        }
        cdr_env = {"SB_CDR_CHDB_PATH": str(work / "chdb")}
        platform = Platform(work, cdr_env=cdr_env, request_timeout="10", callflow_env=callflow_env)
        started = time.perf_counter()
        try:
            platform.start()
        except Exception:
            for name, service in platform.services.items():
                with contextlib.suppress(OSError):
                    say(f"{name} log:\n{service.log()[-2000:]}")
            raise
        output["setup"]["platform_start_s"] = round(time.perf_counter() - started, 2)
        say(f"platform up at {platform.url}")
        try:
            asyncio.run(bench(args, instance, platform, output))
        except Exception:
            with contextlib.suppress(OSError):
                say(f"callflow log:\n{platform.services['callflow'].log()[-3000:]}")
            say(f"asterisk log:\n{instance.tail(30)}")
            raise
        output["total_seconds"] = round(time.perf_counter() - began, 1)
        text = json.dumps(output, indent=2)
        print(text)
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text + "\n")
        say(f"wrote {out}")
        return 0
    except KeyboardInterrupt:
        say("interrupted; cleaning up")
        return 130
    finally:
        # a second Ctrl-C must not leave processes behind
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if platform is not None:
            for name, service in reversed(platform.services.items()):
                started = time.perf_counter()
                service.stop()
                say(f"stopped {name} in {time.perf_counter() - started:.1f} s")
            platform.stop()  # nats-server
        say(f"removing Asterisk {instance.name}")
        instance.remove()
        shutil.rmtree(work, ignore_errors=True)
        say(f"removed {work}")


if __name__ == "__main__":
    sys.exit(main())
