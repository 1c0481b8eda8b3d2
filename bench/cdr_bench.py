#!/usr/bin/env python
"""Call-history benchmark: generate realistic history, load it into the embedded store, publish
it through NATS to the cdr service, search it directly, over the bus and through the gateway,
and run the same searches on PostgreSQL 15 for comparison. Prints one JSON document on stdout;
progress goes to stderr.

    .venv/bin/python bench/cdr_bench.py 1000000
    .venv/bin/python bench/cdr_bench.py 10000000 --phases store,postgres

Phases (``--phases``, default all four):

- ``store``: ``ChdbCallStore.insert`` in batches of ``--batch`` records (rows/s, counting only
  the insert calls), then each search kind ``--searches`` times (p50/p95/p99 in ms); then
  (``--compact-wait``) every partition compacted to one part and the searches again; then
  (``--later-pages``) the next pages of each search, as the store reads them (the window read)
  and through the grouped read alone, compared.
- ``ingest``: its own nats-server and the cdr service (``switchboard-cdr``, chDB in a temp
  folder). The records are encoded to JSON beforehand (not timed), then published to JetStream
  in windows of ``--window`` concurrent publishes. With ``--ingest-mode both`` (the default) the
  first half is published while the service consumes (end to end: first publish until the
  durable consumer has everything acknowledged), then the service is stopped, the second half
  published as a backlog, and the service restarted (drain rate: from its start until every
  record is acknowledged). The service acknowledges only after the insert is committed.
- ``gateway``: the config service and the gateway on top, the searched tenants created through
  the API (time zone UTC), each search kind through ``GET /v1/tenants/{t}/calls`` (httpx,
  keep-alive) and over the bus (``rpc.cdr.<tenant>.calls.search``). Needs ``ingest``. Then
  (``--compact-wait``) the service stopped, its store compacted, the service started again and
  the searches again over the bus and through the gateway.
- ``postgres``: PostgreSQL 15 (Debian's package, installed with apt when missing) in a temp
  folder, the same rows loaded with COPY, b-tree indexes built, then the same searches in SQL
  (grouped by linkedid, newest first, 50 a page, total count) and the ratios postgres/store.

The data is deterministic for a seed (``--seed``) and an end date (``--end-date``, default
today UTC) and is generated again, chunk by chunk, for each phase: never all in memory.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import math
import os
import random
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent

# Leg tuple layout (what the generator yields) ------------------------------------------------
(
    F_TENANT,
    F_START,
    F_LINKEDID,
    F_LEG_ID,
    F_ANSWER,
    F_END,
    F_CALLER,
    F_CALLER_NAME,
    F_CALLED,
    F_CALLED_NAME,
    F_CALLER_ACC,
    F_CALLED_ACC,
    F_DISP,
    F_DURATION,
    F_BILLSEC,
    F_QUEUE,
    F_IVR,
    F_DIGITS,
    F_TRANSFER,
    F_TRANSFER_TO,
    F_RECORDING,
) = range(21)
FIELD_NAMES = (
    "tenant_id",
    "start",
    "linkedid",
    "leg_id",
    "answer",
    "end",
    "caller_number",
    "caller_name",
    "called_number",
    "called_name",
    "caller_account",
    "called_account",
    "disposition",
    "duration",
    "billsec",
    "queue_number",
    "ivr_number",
    "ivr_digits",
    "transfer",
    "transferred_to",
    "recording_id",
)

SEARCH_KINDS = ("number_popular", "number_rare", "pair", "date_today", "date_30d", "linkedid")
PAGE_LIMIT = 50
PERCENTILES = (50, 95, 99)


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# Data generation -----------------------------------------------------------------------------

FIRST_M = ("Иван", "Алексей", "Дмитрий", "Сергей", "Андрей", "Михаил", "Николай", "Павел", "Артём", "Олег")
FIRST_F = ("Анна", "Мария", "Ольга", "Елена", "Наталья", "Татьяна", "Екатерина", "Юлия", "Ирина", "Светлана")
LAST = (
    "Петров",
    "Смирнов",
    "Кузнецов",
    "Попов",
    "Васильев",
    "Соколов",
    "Михайлов",
    "Новиков",
    "Фёдоров",
    "Морозов",
    "Волков",
    "Лебедев",
    "Белкин",
    "Зайцев",
    "Орлов",
    "Киселёв",
)
IVR_DIGITS = ("1", "2", "3", "1", "2", "1", "0", "t", "12", "21", "9", "31")
#: Hour-of-day weights (office hours).
HOUR_WEIGHTS = (
    0.02,
    0.01,
    0.01,
    0.01,
    0.01,
    0.02,
    0.05,
    0.2,
    0.5,
    1.0,
    1.0,
    1.0,
    0.85,
    0.8,
    1.0,
    1.0,
    0.95,
    0.8,
    0.5,
    0.3,
    0.2,
    0.12,
    0.06,
    0.03,
)
#: Call scenarios: (name, weight, missed). Weights of the answered and the missed ones are
#: scaled so that missed calls are MISSED_SHARE of all calls.
SCENARIOS = (
    ("ivr_employee", 0.25, False),  # IVR (answered, no talk time) then an employee
    ("ivr_queue", 0.20, False),  # IVR, then 0-2 queue agents not answering, then one answering
    ("direct", 0.15, False),  # external caller straight to an employee's number
    ("outbound", 0.22, False),  # employee calls out
    ("internal", 0.08, False),  # employee to employee
    ("blind_transfer", 0.06, False),  # A answers, blind-transfers to B
    ("attended_transfer", 0.04, False),  # (IVR,) A answers, consults B, transfers: 3-4 legs
    ("missed_direct", 0.40, True),  # nobody answers
    ("missed_queue", 0.35, True),  # 1-3 agents ring, nobody answers
    ("missed_outbound", 0.25, True),  # no answer / busy / failed
)
MISSED_SHARE = 0.20
EXTERNAL_MULT = 387_420_489  # 3**18: coprime with 10**9, so rank -> number is a bijection
EXTERNAL_MOD = 10**9
EXTERNAL_INV = pow(EXTERNAL_MULT, -1, EXTERNAL_MOD)


@contextlib.contextmanager
def no_gc() -> Iterator[None]:
    """The cyclic collector off while building many acyclic objects (it would otherwise scan the
    growing heap again and again; the generator's own cost, not the store's)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def bounded_powerlaw(u: np.ndarray, n: np.ndarray, s: float) -> np.ndarray:
    """Ranks 0..n-1 with P(rank k) ~ (k+1)^-s (continuous approximation of a bounded Zipf)."""
    n1 = n.astype(np.float64) + 1.0
    if abs(s - 1.0) < 1e-9:
        ranks = np.floor(np.exp(u * np.log(n1))) - 1
    else:
        e = 1.0 - s
        ranks = np.floor(((n1**e - 1.0) * u + 1.0) ** (1.0 / e)) - 1
    bounded: np.ndarray = np.minimum(np.maximum(ranks, 0), n - 1).astype(np.int64)
    return bounded


class History:
    """Deterministic synthetic call history of many tenants."""

    def __init__(self, rows: int, tenants: int, days: int, end_date: date, seed: int, zipf: float) -> None:
        self.rows = rows
        self.days = days
        self.end_date = end_date
        self.first_date = end_date - timedelta(days=days - 1)
        self.seed = seed
        self.zipf = zipf
        rng = np.random.default_rng([seed, 0])
        # Tenant sizes: Zipf over tenants (the biggest has ~1/H(T) of all calls).
        weights = 1.0 / np.arange(1, tenants + 1) ** 1.0
        self.tenant_weights = weights / weights.sum()
        self.tenant_cdf = np.cumsum(self.tenant_weights)
        self.tenant_cdf[-1] = 1.0
        self.tenant_ids = [f"bench-{i:03d}" for i in range(tenants)]
        rel = weights / weights[0]
        self.n_employees = np.clip(np.round(4 + 296 * rel), 4, 300).astype(np.int64)
        self.n_external = np.clip(np.round(300 + 200_000 * rel), 300, 200_000).astype(np.int64)
        self.external_offset = rng.integers(0, EXTERNAL_MOD, tenants, dtype=np.int64)
        self.records_calls = rng.random(tenants) < 0.5
        self.extensions: list[list[str]] = []
        self.employee_names: list[dict[str, str]] = []
        self.ivr_numbers: list[list[str]] = []
        self.queue_numbers: list[list[str]] = []
        for t in range(tenants):
            n = int(self.n_employees[t])
            # Employees: random 3-digit extensions 100-699, in popularity order (rank 0 first).
            exts = [str(x) for x in rng.choice(np.arange(100, 700), n, replace=False)]
            names = {}
            for ext in exts:
                female = rng.random() < 0.5
                first = (FIRST_F if female else FIRST_M)[int(rng.integers(0, 10))]
                last = LAST[int(rng.integers(0, len(LAST)))] + ("\u0430" if female else "")
                names[ext] = f"{first} {last}"
            self.extensions.append(exts)
            self.employee_names.append(names)
            self.ivr_numbers.append([str(700 + k) for k in range(1 + n // 100)])
            self.queue_numbers.append([str(800 + k) for k in range(1 + n // 40)])
        # Calls per day: weekdays busier than weekends; legs (rows) per day.
        day_weights = np.array(
            [1.0 if (self.first_date + timedelta(days=d)).weekday() < 5 else 0.35 for d in range(days)]
        )
        self.day_rows = rng.multinomial(rows, day_weights / day_weights.sum())
        hour = np.array(HOUR_WEIGHTS)
        self.hour_cdf = np.cumsum(hour / hour.sum())
        self.hour_cdf[-1] = 1.0
        scen_w = np.array(
            [w * ((MISSED_SHARE / 0.999999) if missed else (1 - MISSED_SHARE)) for _, w, missed in SCENARIOS]
        )
        self.scen_cdf = np.cumsum(scen_w / scen_w.sum())
        self.scen_cdf[-1] = 1.0
        # Fast time formatting: per-day prefixes and a table of every second of a day.
        self.epoch0 = int(datetime.combine(self.first_date, datetime.min.time(), UTC).timestamp())
        self.day0 = self.epoch0 // 86400 - 1
        self.iso_days = [(self.first_date + timedelta(days=d - 1)).isoformat() for d in range(days + 3)]
        self.day_paths = [s.replace("-", "/") for s in self.iso_days]
        self.hms = [f"{h:02d}:{m:02d}:{s:02d}" for h in range(24) for m in range(60) for s in range(60)]

    # Numbers -------------------------------------------------------------------------------

    def external_number(self, tenant: int, rank: int) -> str:
        return f"+79{(rank * EXTERNAL_MULT + int(self.external_offset[tenant])) % EXTERNAL_MOD:09d}"

    def external_rank(self, tenant: int, number: str) -> int | None:
        if not number.startswith("+79") or len(number) != 12:
            return None
        value = int(number[3:])
        return ((value - int(self.external_offset[tenant])) * EXTERNAL_INV) % EXTERNAL_MOD

    def tenant_index(self, tenant_id: str) -> int:
        return int(tenant_id.rsplit("-", 1)[1])

    # Time formatting -------------------------------------------------------------------------

    def iso(self, epoch: int) -> str:
        return f"{self.iso_days[epoch // 86400 - self.day0]}T{self.hms[epoch % 86400]}Z"

    def pg_time(self, epoch: int) -> str:
        return f"{self.iso_days[epoch // 86400 - self.day0]} {self.hms[epoch % 86400]}+00"

    # Generation ------------------------------------------------------------------------------

    def chunks(self, batch: int) -> Iterator[list[tuple[Any, ...]]]:
        """All legs, chronologically by call, in lists of ``batch`` legs (the last one shorter)."""
        out: list[tuple[Any, ...]] = []
        seq = 0
        for d in range(self.days):
            quota = int(self.day_rows[d])
            if quota == 0:
                continue
            with no_gc():
                seq = self._day(d, quota, seq, out)
            while len(out) >= batch:
                yield out[:batch]
                del out[:batch]
        if out:
            yield out

    def _day(self, d: int, quota: int, seq: int, out: list[tuple[Any, ...]]) -> int:
        estimate = int(quota / 1.55) + 64
        while True:
            rng = np.random.default_rng([self.seed, 1, d, estimate])
            n = estimate
            ten = np.searchsorted(self.tenant_cdf, rng.random(n))
            scen = np.searchsorted(self.scen_cdf, rng.random(n))
            att = rng.integers(0, 3, n)
            flag = rng.random(n)
            nlegs = np.ones(n, dtype=np.int64)
            nlegs[scen == 0] = 2
            nlegs[scen == 1] = 2 + att[scen == 1]
            nlegs[scen == 5] = 2
            nlegs[scen == 6] = 3 + (flag[scen == 6] < 0.5)
            nlegs[scen == 8] = 1 + att[scen == 8]
            cum = np.cumsum(nlegs)
            if cum[-1] >= quota:
                break
            estimate = int(estimate * 1.3) + 64
        last = int(np.searchsorted(cum, quota))  # first call that reaches the quota
        keep_last = quota - (int(cum[last - 1]) if last > 0 else 0)
        m = last + 1
        hours = np.searchsorted(self.hour_cdf, rng.random(m))
        tod = hours * 3600 + rng.integers(0, 3600, m)
        n_emp = self.n_employees[ten[:m]]
        rank_a = bounded_powerlaw(rng.random(m), n_emp, self.zipf)
        rank_b = bounded_powerlaw(rng.random(m), n_emp, self.zipf)
        rank_c = bounded_powerlaw(rng.random(m), n_emp, self.zipf)
        rank_x = bounded_powerlaw(rng.random(m), self.n_external[ten[:m]], self.zipf)
        ext_val = (rank_x * EXTERNAL_MULT + self.external_offset[ten[:m]]) % EXTERNAL_MOD
        ring = rng.integers(3, 26, (m, 4))
        talk = np.clip(rng.exponential(150.0, (m, 4)).astype(np.int64) + 5, 5, 3600)
        ivr_dur = rng.integers(6, 45, m)
        digits = rng.integers(0, len(IVR_DIGITS), m)
        misc = rng.random(m)
        pick = rng.integers(0, 1 << 30, m)
        order = np.argsort(tod, kind="stable")
        day_start = self.epoch0 + d * 86400
        day_path = self.day_paths[d + 1]
        L = (
            ten[:m].tolist(),
            scen[:m].tolist(),
            att[:m].tolist(),
            flag[:m].tolist(),
            tod.tolist(),
            rank_a.tolist(),
            rank_b.tolist(),
            rank_c.tolist(),
            ext_val.tolist(),
            ring.tolist(),
            talk.tolist(),
            ivr_dur.tolist(),
            digits.tolist(),
            misc.tolist(),
            pick.tolist(),
        )
        (tenl, scenl, attl, flagl, todl, ral, rbl, rcl, xvl, ringl, talkl, ivrl, digl, miscl, pickl) = L
        tenant_ids, extensions, names = self.tenant_ids, self.extensions, self.employee_names
        ivrs, queues, records = self.ivr_numbers, self.queue_numbers, self.records_calls.tolist()
        append = out.append
        for i in order.tolist():
            t = tenl[i]
            tid = tenant_ids[t]
            exts = extensions[t]
            nm = names[t]
            ne = len(exts)
            ia, ib, ic = ral[i], rbl[i], rcl[i]
            if ib == ia:
                ib = (ib + 1) % ne
            if ic in (ia, ib):
                ic = (max(ia, ib) + 1) % ne
                if ic in (ia, ib):
                    ic = (ic + 1) % ne
            a, b, c = exts[ia], exts[ib], exts[ic]
            x = f"+79{xvl[i]:09d}"
            xcaller = "" if miscl[i] < 0.02 else x  # withheld caller id
            st = day_start + todl[i]
            seq += 1
            base = seq * 10
            lid = f"{st}.{base}"
            rings, talks = ringl[i], talkl[i]
            rec = records[t]
            s = scenl[i]
            legs: list[tuple[Any, ...]] = []

            def leg(
                k: int,
                start: int,
                answer: int | None,
                end: int,
                caller: str,
                caller_name: str,
                called: str,
                called_name: str,
                caller_acc: str | None,
                called_acc: str | None,
                disp: str,
                queue: str | None = None,
                ivr: str | None = None,
                dig: str = "",
                transfer: str | None = None,
                transfer_to: str | None = None,
                human: bool = True,
                *,
                legs: list[tuple[Any, ...]] = legs,
                tid: str = tid,
                lid: str = lid,
                base: int = base,
                rec: bool = rec,
            ) -> None:
                leg_id = f"{start}.{base + k}"
                billsec = 0 if answer is None or not human else end - answer
                recording = f"{tid}/{day_path}/{leg_id}.mp3" if rec and answer is not None and human else None
                legs.append(
                    (
                        tid,
                        start,
                        lid,
                        leg_id,
                        answer,
                        end,
                        caller,
                        caller_name,
                        called,
                        called_name,
                        caller_acc,
                        called_acc,
                        disp,
                        end - start,
                        billsec,
                        queue,
                        ivr,
                        dig,
                        transfer,
                        transfer_to,
                        recording,
                    )
                )

            if s == 0 or s == 1 or (s == 6 and flagl[i] < 0.5):
                # IVR first: answered by the menu, no talk time.
                ivr_no = ivrs[t][pickl[i] % len(ivrs[t])]
                end = st + ivrl[i]
                leg(
                    0,
                    st,
                    st + 1,
                    end,
                    xcaller,
                    "",
                    ivr_no,
                    "",
                    None,
                    None,
                    "answered",
                    ivr=ivr_no,
                    dig=IVR_DIGITS[digl[i]],
                    human=False,
                )
                t0 = end
            else:
                t0 = st
            k = len(legs)
            if s == 0 or s == 2:
                ans = t0 + rings[0]
                leg(k, t0, ans, ans + talks[0], xcaller, "", a, nm[a], None, a, "answered")
            elif s == 1:
                q = queues[t][pickl[i] % len(queues[t])]
                for j, agent in enumerate((b, c)[: attl[i]]):
                    leg(
                        k + j,
                        t0,
                        None,
                        t0 + rings[j],
                        xcaller,
                        "",
                        agent,
                        nm[agent],
                        None,
                        agent,
                        "no_answer",
                        queue=q,
                    )
                    t0 += rings[j] + 1
                k += attl[i]
                ans = t0 + rings[3]
                leg(k, t0, ans, ans + talks[0], xcaller, "", a, nm[a], None, a, "answered", queue=q)
            elif s == 3:
                ans = t0 + rings[0]
                leg(k, t0, ans, ans + talks[0], a, nm[a], x, "", a, None, "answered")
            elif s == 4:
                ans = t0 + rings[0]
                leg(k, t0, ans, ans + talks[0], a, nm[a], b, nm[b], a, b, "answered")
            elif s == 5:
                ans = t0 + rings[0]
                end = ans + talks[0]
                leg(
                    k,
                    t0,
                    ans,
                    end,
                    xcaller,
                    "",
                    a,
                    nm[a],
                    None,
                    a,
                    "answered",
                    transfer="blind",
                    transfer_to=b,
                )
                ans2 = end + rings[1]
                leg(k + 1, end, ans2, ans2 + talks[1], xcaller, "", b, nm[b], None, b, "answered")
            elif s == 6:
                ans = t0 + rings[0]
                consult = ans + min(talks[0], 60)
                c_ans = consult + rings[1]
                c_end = c_ans + min(talks[1], 90)
                leg(
                    k,
                    t0,
                    ans,
                    c_end,
                    xcaller,
                    "",
                    a,
                    nm[a],
                    None,
                    a,
                    "answered",
                    transfer="attended",
                    transfer_to=b,
                )
                leg(k + 1, consult, c_ans, c_end, a, nm[a], b, nm[b], a, b, "answered")
                leg(k + 2, c_end, c_end, c_end + talks[2], xcaller, "", b, nm[b], None, b, "answered")
            elif s == 7:
                leg(k, t0, None, t0 + rings[0] + rings[1], xcaller, "", a, nm[a], None, a, "no_answer")
            elif s == 8:
                q = queues[t][pickl[i] % len(queues[t])]
                for j, agent in enumerate((a, b, c)[: 1 + attl[i]]):
                    leg(
                        k + j,
                        t0,
                        None,
                        t0 + rings[j],
                        xcaller,
                        "",
                        agent,
                        nm[agent],
                        None,
                        agent,
                        "no_answer",
                        queue=q,
                    )
                    t0 += rings[j] + 1
            else:
                u = flagl[i]
                disp = "no_answer" if u < 0.6 else ("busy" if u < 0.9 else "failed")
                leg(
                    k, t0, None, t0 + (rings[0] if disp == "no_answer" else 1), a, nm[a], x, "", a, None, disp
                )
            if i == last:
                del legs[keep_last:]
            for one in legs:
                append(one)
        return seq


# Conversions ---------------------------------------------------------------------------------

_DISPOSITIONS: dict[str, Any] = {}
_TRANSFERS: dict[str | None, Any] = {}


def record_factory() -> Callable[[tuple[Any, ...]], Any]:
    """leg tuple -> CallRecord (built with model_construct: the generator's output is valid, as
    validate_sample checks)."""
    from switchboard_contracts.cdr import CallRecord, Disposition, TransferKind

    disp = {d.value: d for d in Disposition}
    transfers: dict[str | None, Any] = {None: None, **{k.value: k for k in TransferKind}}
    fromts = datetime.fromtimestamp
    new = CallRecord.__new__
    setattr_ = object.__setattr__

    def construct(**values: Any) -> Any:
        # What CallRecord.model_construct does when every field is given, at a quarter of its
        # cost (16 us a record here): the instance dict, the fields set, no extras/privates.
        record = new(CallRecord)
        setattr_(record, "__dict__", values)
        setattr_(record, "__pydantic_fields_set__", set(values))
        setattr_(record, "__pydantic_extra__", None)
        setattr_(record, "__pydantic_private__", None)
        return record

    def make(leg: tuple[Any, ...]) -> Any:
        answer = leg[4]
        return construct(
            version=1,
            tenant_id=leg[0],
            linkedid=leg[2],
            leg_id=leg[3],
            start=fromts(leg[1], UTC),
            answer=None if answer is None else fromts(answer, UTC),
            end=fromts(leg[5], UTC),
            caller_number=leg[6],
            caller_name=leg[7],
            called_number=leg[8],
            called_name=leg[9],
            caller_account=leg[10],
            called_account=leg[11],
            disposition=disp[leg[12]],
            duration=leg[13],
            billsec=leg[14],
            queue_number=leg[15],
            ivr_number=leg[16],
            ivr_digits=leg[17],
            transfer=transfers[leg[18]],
            transferred_to=leg[19],
            recording_id=leg[20],
        )

    probe = (
        "bench-000",
        1700000000,
        "1700000000.10",
        "1700000000.10",
        1700000005,
        1700000065,
        "+79161234567",
        "",
        "101",
        "Анна",
        None,
        "101",
        "answered",
        65,
        60,
        "800",
        None,
        "",
        "blind",
        "102",
        "x/1.mp3",
    )
    fast = make(probe)
    if fast != CallRecord.model_construct(**fast.__dict__) or set(fast.__dict__) != set(
        CallRecord.model_fields
    ):
        raise RuntimeError("the fast CallRecord construction no longer matches model_construct")
    return make


def json_factory(history: History) -> Callable[[tuple[Any, ...]], bytes]:
    """leg tuple -> the CallRecord JSON the call-flow service will publish."""
    iso = history.iso
    dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode

    def make(leg: tuple[Any, ...]) -> bytes:
        answer = leg[4]
        return dumps(
            {
                "version": 1,
                "tenant_id": leg[0],
                "linkedid": leg[2],
                "leg_id": leg[3],
                "start": iso(leg[1]),
                "answer": None if answer is None else iso(answer),
                "end": iso(leg[5]),
                "caller_number": leg[6],
                "caller_name": leg[7],
                "called_number": leg[8],
                "called_name": leg[9],
                "caller_account": leg[10],
                "called_account": leg[11],
                "disposition": leg[12],
                "duration": leg[13],
                "billsec": leg[14],
                "queue_number": leg[15],
                "ivr_number": leg[16],
                "ivr_digits": leg[17],
                "transfer": leg[18],
                "transferred_to": leg[19],
                "recording_id": leg[20],
            }
        ).encode()

    return make


def validate_sample(history: History, legs: Sequence[tuple[Any, ...]]) -> None:
    """Every generated leg must pass the real contract (else the service dead-letters it)."""
    from switchboard_contracts.cdr import CallRecord

    to_json = json_factory(history)
    for leg in legs:
        CallRecord.model_validate_json(to_json(leg))


# Search parameters ---------------------------------------------------------------------------


class Sampler:
    """Keeps a uniform random sample of legs while a phase walks the data (first pass only)."""

    def __init__(self, rows: int, seed: int, target: int = 40_000) -> None:
        self.p = min(1.0, target / max(rows, 1))
        self.rng = np.random.default_rng([seed, 7])
        self.legs: list[tuple[Any, ...]] = []
        self.done = False
        self.active = False

    def feed(self, chunk: Sequence[tuple[Any, ...]]) -> None:
        if self.done:
            return
        self.active = True
        for index in np.nonzero(self.rng.random(len(chunk)) < self.p)[0].tolist():
            self.legs.append(chunk[index])

    def finish(self) -> None:
        if self.active:
            self.done = True


def build_searches(
    history: History, legs: list[tuple[Any, ...]], n: int, seed: int
) -> dict[str, list[dict[str, Any]]]:
    """Search parameters per kind, from the sampled legs (so tenants and numbers come with the
    popularity they have in the data). Number and pair searches cover the whole history
    (at most 366 days); date searches one tenant's today / last 30 days."""
    rng = random.Random(seed)
    end = history.end_date
    full_from = max(history.first_date, end - timedelta(days=365))
    out: dict[str, list[dict[str, Any]]] = {kind: [] for kind in SEARCH_KINDS}

    def spec(kind: str, tenant: str, q: str, date_from: date | None, date_to: date | None) -> dict[str, Any]:
        return {
            "kind": kind,
            "tenant": tenant,
            "q": q,
            "date_from": date_from.isoformat() if date_from else None,
            "date_to": date_to.isoformat() if date_to else None,
        }

    rare = []
    for leg in legs:
        t = history.tenant_index(leg[F_TENANT])
        for number in (leg[F_CALLER], leg[F_CALLED]):
            rank = history.external_rank(t, number)
            if rank is not None and rank >= 1000:
                rare.append((leg[F_TENANT], number))
    if len(rare) < 10:  # tiny data sets: any external number
        rare = [(leg[F_TENANT], leg[F_CALLED]) for leg in legs if leg[F_CALLED].startswith("+")]
    pairs = [
        (leg[F_TENANT], f"{leg[F_CALLER]} {leg[F_CALLED]}")
        for leg in legs
        if leg[F_DISP] == "answered" and leg[F_CALLER] and leg[F_CALLER] != leg[F_CALLED]
    ]
    for _ in range(n):
        leg = rng.choice(legs)
        tenant = leg[F_TENANT]
        t = history.tenant_index(tenant)
        popular = rng.choice(
            [
                history.ivr_numbers[t][0],
                history.extensions[t][0],
                history.external_number(t, 0),
                history.queue_numbers[t][0] if rng.random() < 0.5 else history.extensions[t][1],
            ]
        )
        out["number_popular"].append(spec("number_popular", tenant, popular, full_from, end))
        tenant_r, number = rng.choice(rare)
        out["number_rare"].append(spec("number_rare", tenant_r, number, full_from, end))
        tenant_p, pair = rng.choice(pairs)
        out["pair"].append(spec("pair", tenant_p, pair, full_from, end))
        out["date_today"].append(spec("date_today", rng.choice(legs)[F_TENANT], "", end, end))
        out["date_30d"].append(
            spec("date_30d", rng.choice(legs)[F_TENANT], "", end - timedelta(days=29), end)
        )
        leg = rng.choice(legs)
        out["linkedid"].append(spec("linkedid", leg[F_TENANT], leg[F_LINKEDID], None, None))
    return out


def search_request(item: dict[str, Any]) -> Any:
    from switchboard_contracts.cdr import CallSearchRequest

    return CallSearchRequest(
        tenant_id=item["tenant"],
        query=item["q"],
        date_from=item["date_from"],
        date_to=item["date_to"],
        timezone="UTC",
        limit=PAGE_LIMIT,
    )


def stats(latencies: Sequence[float]) -> dict[str, Any]:
    """Milliseconds."""
    if not latencies:
        return {"n": 0}
    values = np.array(latencies) * 1000.0
    result: dict[str, Any] = {"n": len(values)}
    for p in PERCENTILES:
        result[f"p{p}_ms"] = round(float(np.percentile(values, p)), 3)
    result["mean_ms"] = round(float(values.mean()), 3)
    result["max_ms"] = round(float(values.max()), 3)
    return result


def run_searches(
    searches: dict[str, list[dict[str, Any]]],
    run_one: Callable[[dict[str, Any]], tuple[int, int]],
    warmup: int = 5,
) -> tuple[dict[str, Any], dict[str, list[int]]]:
    """Runs every search; returns per-kind stats and the totals found (for cross-checks)."""
    result: dict[str, Any] = {}
    totals: dict[str, list[int]] = {}
    for kind in SEARCH_KINDS:
        items = searches[kind]
        for item in items[:warmup]:
            run_one(item)
        latencies = []
        kind_totals = []
        legs_seen = 0
        for item in items:
            t0 = time.perf_counter()
            total, legs = run_one(item)
            latencies.append(time.perf_counter() - t0)
            kind_totals.append(total)
            legs_seen += legs
        result[kind] = stats(latencies)
        result[kind]["mean_total_calls"] = round(sum(kind_totals) / max(len(kind_totals), 1), 1)
        result[kind]["mean_legs_on_page"] = round(legs_seen / max(len(items), 1), 1)
        totals[kind] = kind_totals
        log(f"  {kind}: {result[kind]}")
    return result, totals


def later_pages(
    store: Any, prepared: dict[str, list[tuple[dict[str, Any], Any]]], pages: int
) -> dict[str, Any]:
    """Pages 2 to ``pages + 1`` of each search (following ``next_cursor``), each timed three
    times: as the store reads it (``shipped``: the window read, ``queries.window_page``, for
    searches of more than ``queries.WINDOW_MIN_TOTAL`` calls), by the window read whatever the
    total (``window``), and by the grouped read alone (``grouped``); the pages compared. The
    first read of a page finds its data colder than the next two, so the order of the three
    turns from page to page."""
    from switchboard_cdr.store import queries

    windowed = queries.window_page
    min_total = queries.WINDOW_MIN_TOTAL
    result: dict[str, Any] = {}
    for kind in SEARCH_KINDS:
        if kind == "linkedid":
            continue
        timings: dict[str, list[float]] = {"shipped": [], "window": [], "grouped": []}
        mismatches = 0
        for item, request in prepared[kind]:
            date_from, date_to = request.utc_range()
            parsed = request.parsed()
            cursor = store.search(item["tenant"], parsed, date_from, date_to, None, PAGE_LIMIT).next_cursor
            for _ in range(pages):
                if cursor is None:
                    break
                found: dict[str, Any] = {}
                ways = list(timings)
                turn = sum(len(values) for values in timings.values()) // len(ways) % len(ways)
                for way in ways[turn:] + ways[:turn]:  # the first way reads cold data: rotate
                    if way == "window":
                        queries.WINDOW_MIN_TOTAL = 0
                    elif way == "grouped":
                        queries.window_page = lambda *args, **kwargs: None
                    try:
                        t0 = time.perf_counter()
                        found[way] = store.search(
                            item["tenant"], parsed, date_from, date_to, cursor, PAGE_LIMIT
                        )
                        timings[way].append(time.perf_counter() - t0)
                    finally:
                        queries.window_page = windowed
                        queries.WINDOW_MIN_TOTAL = min_total
                pages_seen = {
                    (tuple(g.linkedid for g in page.items), page.next_cursor) for page in found.values()
                }
                mismatches += len(pages_seen) != 1
                cursor = found["shipped"].next_cursor
        result[kind] = {way: stats(values) for way, values in timings.items()}
        result[kind]["mismatches"] = mismatches
        log(f"  later pages {kind}: {result[kind]}")
    return result


def compare_totals(reference: dict[str, list[int]], other: dict[str, list[int]]) -> dict[str, int]:
    return {
        kind: sum(1 for a, b in zip(reference[kind], other.get(kind, []), strict=False) if a != b)
        for kind in reference
    }


# Processes -----------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:  # noqa: S310 - loopback health URL
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def wait_for(
    predicate: Callable[[], bool], timeout: float, what: str, proc: subprocess.Popen[bytes] | None = None
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{what} exited with code {proc.returncode}")
        time.sleep(0.05)
    raise TimeoutError(f"{what} not ready after {timeout} s")


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process (from /proc)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return float("nan")


def descendants(pid: int) -> list[int]:
    """The processes below ``pid`` (the cdr service's parsing workers), from /proc."""
    found: list[int] = []
    stack = [pid]
    while stack:
        parent = stack.pop()
        for children in Path(f"/proc/{parent}/task").glob("*/children"):
            with contextlib.suppress(OSError, ValueError):
                kids = [int(child) for child in children.read_text().split()]
                found.extend(kids)
                stack.extend(kids)
    return found


def tree_cpu(pid: int) -> tuple[float, dict[int, float]]:
    """CPU seconds of a process and of each process below it, alive now. A process's own
    figure leaves out its children until it has waited for them: the cdr service's parsing
    workers live as long as it does, so they must be read one by one."""
    return cpu_seconds(pid), {child: cpu_seconds(child) for child in descendants(pid)}


def tree_cpu_delta(
    before: tuple[float, dict[int, float]], after: tuple[float, dict[int, float]]
) -> dict[str, float]:
    """The process's and its children's CPU seconds between two ``tree_cpu`` readings (a child
    started in between counts from 0; one that ended in between, or could not be read, is
    left out)."""
    children = sum(cpu - before[1].get(child, 0.0) for child, cpu in after[1].items() if not math.isnan(cpu))
    return {"main": round(after[0] - before[0], 1), "children": round(children, 1)}


def own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def dir_size(path: Path) -> int:
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                total += (Path(root) / name).lstat().st_size
    return total


class Proc:
    """A child process with its log in a file; stopped with SIGTERM (then SIGKILL)."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str] | None, log_path: Path) -> None:
        self.name, self.argv, self.env, self.log_path = name, argv, env, log_path
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Proc:
        logf = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            self.argv, env={**os.environ, **(self.env or {})}, stdout=logf, stderr=subprocess.STDOUT
        )
        logf.close()
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def stop(self, timeout: float = 20) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def tail(self, lines: int = 20) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return ""


def script(name: str) -> str:
    """A console script of the workspace; waits a little when the venv is being re-synced."""
    deadline = time.monotonic() + 60
    while True:
        found = shutil.which(name, path=str(BIN)) or shutil.which(name)
        if found:
            return found
        if time.monotonic() > deadline:
            raise RuntimeError(f"{name} not found next to {sys.executable} or on PATH")
        time.sleep(1)


# Phase: store --------------------------------------------------------------------------------


def store_parts(store: Any) -> dict[str, int]:
    """Active parts per table of a chDB store."""
    found = store._select(
        "SELECT table, count() FROM system.parts WHERE database = currentDatabase() AND active GROUP BY table"
    )
    return {str(t): int(c) for t, c in found}


def active_bytes(store: Any) -> int:
    """Bytes on disk of the active parts (the folder also holds parts that merges replaced,
    until the engine deletes them, minutes later)."""
    found = store._select(
        "SELECT sum(bytes_on_disk) FROM system.parts WHERE database = currentDatabase() AND active"
    )
    return int(found[0][0])


def compact(store: Any, wait: float) -> dict[str, Any]:
    """The service's compaction (SB_CDR_COMPACT_AFTER) with a short age: the engine merges each
    partition's old parts into one, as it does to a running store's older data. Waits until
    every partition is one part, at most ``wait`` seconds; then sets the age back to 0."""
    t0 = time.perf_counter()
    store.compact_after = 1
    store.migrate()
    while time.perf_counter() - t0 < wait:
        found = store._select(
            "SELECT max(c) FROM (SELECT count() AS c FROM system.parts"
            " WHERE database = currentDatabase() AND active GROUP BY table, partition)"
        )
        if int(found[0][0]) <= 1:
            break
        time.sleep(2)
    done = {
        "seconds": round(time.perf_counter() - t0, 1),
        "parts": store_parts(store),
        "active_parts_bytes": active_bytes(store),
    }
    store.compact_after = 0
    store.migrate()
    return done


def phase_store(
    args: argparse.Namespace,
    history: History,
    sampler: Sampler,
    work: Path,
    searches_ready: Callable[[], dict[str, list[dict[str, Any]]]],
) -> tuple[dict[str, Any], dict[str, list[int]]]:
    from switchboard_cdr.store.chdb_backend import ChdbCallStore

    path = work / "store-chdb"
    store = ChdbCallStore(path)
    store.migrate()
    engine = {"seconds": 0.0}
    command = store._command  # inserts run as a statement on the store's writer connection

    def timed_command(sql: str) -> None:
        t0 = time.perf_counter()
        try:
            command(sql)
        finally:
            engine["seconds"] += time.perf_counter() - t0

    store._command = timed_command  # type: ignore[method-assign]
    make = record_factory()
    gen_s = convert_s = insert_s = 0.0
    rows = 0
    batches = 0
    first = True
    log(f"store: inserting {args.rows:,} rows in batches of {args.batch:,} into {path}")
    wall0 = time.perf_counter()
    t_gen = time.perf_counter()
    for chunk in history.chunks(args.batch):
        t0 = time.perf_counter()
        gen_s += t0 - t_gen
        if first:
            validate_sample(history, chunk[:3000])
            first = False
        sampler.feed(chunk)
        t1 = time.perf_counter()
        with no_gc():
            records = [make(leg) for leg in chunk]
        t2 = time.perf_counter()
        store.insert(records)
        t3 = time.perf_counter()
        convert_s += t2 - t1
        insert_s += t3 - t2
        rows += len(chunk)
        batches += 1
        if batches % 10 == 0:
            log(f"store: {rows:,} rows, insert {rows / insert_s:,.0f} rows/s")
        t_gen = time.perf_counter()
    wall = time.perf_counter() - wall0
    sampler.finish()
    engine_insert_s = engine["seconds"]

    def parts() -> dict[str, int]:
        return store_parts(store)

    parts_after_insert = parts()
    # Let background merges run as they would in production before searching (bounded wait).
    t0 = time.perf_counter()
    previous = sum(parts_after_insert.values())
    while time.perf_counter() - t0 < args.settle:
        time.sleep(5)
        now = sum(parts().values())
        if now == previous:
            break
        previous = now
    parts_at_search = parts()
    counted = store._select("SELECT count(), uniqExact(linkedid) FROM calls")[0]
    result: dict[str, Any] = {
        "rows": rows,
        "calls": int(counted[1]),
        "rows_in_calls_table": int(counted[0]),
        "batches": batches,
        "batch_size": args.batch,
        "insert_seconds": round(insert_s, 2),
        "insert_rows_per_s": round(rows / insert_s),
        "insert_engine_seconds": round(engine_insert_s, 2),
        "insert_python_seconds": round(insert_s - engine_insert_s, 2),
        "generate_seconds": round(gen_s, 2),
        "to_callrecord_seconds": round(convert_s, 2),
        "wall_seconds": round(wall, 2),
        "parts_after_insert": parts_after_insert,
        "parts_at_search": parts_at_search,
        "settle_seconds": round(time.perf_counter() - t0, 1),
        "disk_bytes": dir_size(path),
        "active_parts_bytes": active_bytes(store),
    }
    log(f"store: {result}")
    searches = searches_ready()
    prepared = {kind: [(item, search_request(item)) for item in items] for kind, items in searches.items()}
    by_id = {id(item): req for items in prepared.values() for item, req in items}

    def run_one(item: dict[str, Any]) -> tuple[int, int]:
        request = by_id[id(item)]
        date_from, date_to = request.utc_range()
        page = store.search(item["tenant"], request.parsed(), date_from, date_to, None, PAGE_LIMIT)
        return page.total, sum(len(group.legs) for group in page.items)

    log("store: searching")
    result["search"], totals = run_searches(searches, run_one)
    if args.compact_wait > 0:
        result["compaction"] = compact(store, args.compact_wait)
        log(f"store: compacted {result['compaction']}; searching again")
        result["search_compacted"], compacted_totals = run_searches(searches, run_one)
        result["compacted_total_mismatches"] = compare_totals(totals, compacted_totals)
    if args.later_pages > 0:
        log("store: later pages")
        result["later_pages"] = later_pages(store, prepared, args.later_pages)
    store.close()
    if not args.keep and "served" not in args.phase_list:
        shutil.rmtree(path, ignore_errors=True)
    return result, totals


def phase_served(
    args: argparse.Namespace, work: Path, searches: dict[str, list[dict[str, Any]]]
) -> tuple[dict[str, Any], dict[str, dict[str, list[int]]]]:
    """The bus and the gateway over the store phase's store: the cdr service started on that
    folder (compacted when the store phase compacted it), config and gateway beside it, and the
    same searches over the bus and through the gateway. The whole platform's search figures at
    sizes whose ingest phase needs more disk than there is (the records file and the stream)."""
    store_path = work / "store-chdb"
    platform = Platform(work / "served", cdr_store=store_path)
    platform.work.mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {"store": str(store_path), "compacted": args.compact_wait > 0}
    totals: dict[str, dict[str, list[int]]] = {}
    try:
        platform.start_nats()
        result["service_ready_seconds"] = round(platform.start_cdr(timeout=900), 2)
        log("served: searching over the bus")
        result["bus"], totals["served_bus"] = asyncio.run(bus_searches(platform, searches))
        platform.start_gateway()
        log("served: searching through the gateway")
        result["gateway"], totals["served_gateway"] = gateway_searches(platform, searches)
    finally:
        platform.stop()
        shutil.rmtree(platform.work, ignore_errors=True)
        if not args.keep:
            shutil.rmtree(store_path, ignore_errors=True)
    return result, totals


# Phase: ingest (and gateway) -----------------------------------------------------------------


class Platform:
    """nats-server, the cdr service, and (for the gateway phase) config and gateway."""

    def __init__(self, work: Path, cdr_store: Path | None = None) -> None:
        self.work = work
        self.nats_port = free_port()
        self.url = f"nats://127.0.0.1:{self.nats_port}"
        self.nats = Proc(
            "nats-server",
            [
                script("nats-server"),
                "-js",
                "-sd",
                str(work / "nats"),
                "-a",
                "127.0.0.1",
                "-p",
                str(self.nats_port),
            ],
            None,
            work / "nats.log",
        )
        self.cdr_port = free_port()
        self.cdr = Proc(
            "switchboard-cdr",
            [script("switchboard-cdr")],
            {
                "SB_CDR_NATS_URL": self.url,
                "SB_CDR_HTTP_PORT": str(self.cdr_port),
                "SB_CDR_BACKEND": "chdb",
                "SB_CDR_CHDB_PATH": str(cdr_store or work / "cdr-chdb"),
            },
            work / "cdr.log",
        )
        self.config: Proc | None = None
        self.gateway: Proc | None = None
        self.gateway_port = 0
        self.operator_key = "bench-operator-" + os.urandom(8).hex()

    def start_nats(self) -> None:
        self.nats.start()
        wait_for(lambda: port_open(self.nats_port), 15, "nats-server", self.nats.proc)

    def start_cdr(self, timeout: float = 120) -> float:
        """Starts the cdr service; returns the seconds until /readyz answered 200."""
        t0 = time.perf_counter()
        self.cdr.start()
        try:
            wait_for(
                lambda: http_ok(f"http://127.0.0.1:{self.cdr_port}/readyz"),
                timeout,
                "switchboard-cdr",
                self.cdr.proc,
            )
        except Exception as exc:
            raise RuntimeError(f"{exc}; log tail:\n{self.cdr.tail()}") from exc
        return time.perf_counter() - t0

    def start_gateway(self) -> None:
        config_port = free_port()
        self.config = Proc(
            "switchboard-config",
            [script("switchboard-config")],
            {
                "SB_CONFIG_NATS_URL": self.url,
                "SB_CONFIG_HTTP_PORT": str(config_port),
            },
            self.work / "config.log",
        ).start()
        wait_for(
            lambda: http_ok(f"http://127.0.0.1:{config_port}/readyz"),
            60,
            "switchboard-config",
            self.config.proc,
        )
        self.gateway_port = free_port()
        self.gateway = Proc(
            "switchboard-gateway",
            [script("switchboard-gateway")],
            {
                "SB_GATEWAY_NATS_URL": self.url,
                "SB_GATEWAY_HTTP_PORT": str(self.gateway_port),
                "SB_GATEWAY_OPERATOR_KEY": self.operator_key,
            },
            self.work / "gateway.log",
        ).start()
        wait_for(
            lambda: http_ok(f"http://127.0.0.1:{self.gateway_port}/readyz"),
            60,
            "switchboard-gateway",
            self.gateway.proc,
        )

    def stop(self) -> None:
        for proc in (self.gateway, self.config, self.cdr, self.nats):
            if proc is not None:
                proc.stop()


def write_payloads(
    args: argparse.Namespace, history: History, sampler: Sampler, path: Path
) -> dict[str, Any]:
    """Encodes every record as the JSON the call-flow service publishes, one per line after its
    tenant id (not timed as ingest)."""
    to_json = json_factory(history)
    t0 = time.perf_counter()
    rows = 0
    size = 0
    with path.open("wb") as out:
        first = True
        for chunk in history.chunks(args.batch):
            if first:
                validate_sample(history, chunk[:3000])
                first = False
            sampler.feed(chunk)
            with no_gc():
                block = b"".join(leg[0].encode() + b" " + to_json(leg) + b"\n" for leg in chunk)
            out.write(block)
            size += len(block)
            rows += len(chunk)
    sampler.finish()
    return {
        "rows": rows,
        "bytes": size,
        "mean_record_bytes": round(size / max(rows, 1)),
        "seconds": round(time.perf_counter() - t0, 2),
    }


def read_payloads(path: Path, start: int, stop: int) -> Iterator[tuple[str, bytes]]:
    with path.open("rb") as lines:
        for index, line in enumerate(lines):
            if index < start:
                continue
            if index >= stop:
                return
            tenant, payload = line.rstrip(b"\n").split(b" ", 1)
            yield tenant.decode(), payload


async def publish(nc: Any, js: Any, path: Path, start: int, stop: int, mode: str, window: int) -> float:
    """Publishes records [start, stop) to the stream; returns the seconds taken.

    ``async`` (default): JetStream publishes with ``publish_async``, at most ``window`` awaiting
    their acknowledgement (every record acknowledged as stored when it returns). ``gather``:
    ``js.publish`` in windows of ``window`` awaited with gather (slower in nats-py). ``core``:
    plain NATS publishes the stream captures, unacknowledged (then flush): the fastest producer,
    for when the publisher must not be the bottleneck. Nothing slows it down when the stream
    falls behind, and nats-server then drops publishes: 5M at once into a stopped consumer's
    stream kept 4.12M (10M rows, ``--ingest-mode both``); the 500k of a 1M run all arrived. The
    caller checks the stream's count and fails the run."""
    from switchboard_contracts.subjects import call_leg_ended

    subjects: dict[str, str] = {}
    t0 = time.perf_counter()
    pending: list[Any] = []
    for sent, (tenant, payload) in enumerate(read_payloads(path, start, stop), 1):
        subject = subjects.get(tenant)
        if subject is None:
            subject = subjects[tenant] = call_leg_ended(tenant)
        if mode == "async":
            await js.publish_async(subject, payload)
        elif mode == "core":
            await nc.publish(subject, payload)
        else:
            pending.append(js.publish(subject, payload))
            if len(pending) >= window:
                await asyncio.gather(*pending)
                pending = []
        if sent % 200_000 == 0:
            log(f"ingest: published {sent:,}")
    if pending:
        await asyncio.gather(*pending)
    if mode == "async":
        await js.publish_async_completed()
    await nc.flush()
    return time.perf_counter() - t0


def cpu_report(records: int, cdr: dict[str, float], nats: float, publisher: float | None) -> dict[str, Any]:
    """CPU seconds of each process while ``records`` went in, and the microseconds of CPU a
    record cost them all together (two cores give 2 s of CPU a second: at most
    2e6 / ``us_per_record`` records/s)."""
    report: dict[str, Any] = {
        "cdr": cdr["main"],
        "cdr_parse_workers": cdr["children"],
        "nats_server": round(nats, 1),
    }
    if publisher is not None:
        report["publisher"] = round(publisher, 1)
    total = cdr["main"] + cdr["children"] + nats + (publisher or 0.0)
    report["us_per_record"] = round(total / records * 1e6, 1)
    report["ceiling_records_per_s_on_2_cores"] = round(2 * records / total) if total else None
    return report


async def published_up_to(js: Any, stream: str, expected: int, wait_s: float = 60) -> int:
    """The stream's last sequence once it holds ``expected`` (core publishes land a little
    after the flush); raises when records went missing."""
    deadline = time.monotonic() + wait_s
    while True:
        state = (await js.stream_info(stream)).state
        if int(state.last_seq) >= expected or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.1)
    if int(state.last_seq) != expected:
        raise RuntimeError(f"stream {stream} has last sequence {state.last_seq}, expected {expected}")
    return int(state.last_seq)


async def wait_consumed(
    js: Any, stream: str, durable: str, last_seq: int, wait_s: float, progress: list[tuple[float, int]]
) -> float:
    """Polls the durable consumer until everything up to ``last_seq`` is acknowledged; appends
    (time, ack floor) samples to ``progress``; returns the time it finished (perf_counter)."""
    deadline = time.perf_counter() + wait_s
    last_log = 0.0
    while True:
        info = await js.consumer_info(stream, durable)
        now = time.perf_counter()
        floor = int(info.ack_floor.stream_seq or 0)
        progress.append((now, floor))
        if floor >= last_seq and not info.num_pending and not info.num_ack_pending:
            return now
        if now > deadline:
            raise TimeoutError(f"consumer {durable} still at {floor:,} of {last_seq:,} after {wait_s} s")
        if now - last_log > 5:
            log(
                f"ingest: acknowledged up to {floor:,} of {last_seq:,} (pending {info.num_pending}, "
                f"ack pending {info.num_ack_pending})"
            )
            last_log = now
        await asyncio.sleep(0.1)


def sustained_rate(progress: list[tuple[float, int]], base: int, count: int) -> float | None:
    """Records/s between 10 % and 90 % of ``count`` acknowledged after sequence ``base``."""
    lo, hi = base + count * 0.1, base + count * 0.9
    t_lo = next((t for t, floor in progress if floor >= lo), None)
    t_hi = next((t for t, floor in progress if floor >= hi), None)
    if t_lo is None or t_hi is None or t_hi <= t_lo:
        return None
    return round((count * 0.8) / (t_hi - t_lo))


async def ingest_async(
    args: argparse.Namespace,
    platform: Platform,
    payloads: Path,
    rows: int,
    searches: dict[str, list[dict[str, Any]]],
) -> dict[str, Any]:
    import nats
    from switchboard_contracts.subjects import CALL_RECORDS_DEAD_STREAM, CALL_RECORDS_STREAM

    durable = "cdr-ingest"
    nc = await nats.connect(platform.url, max_reconnect_attempts=-1)
    js = nc.jetstream(timeout=30, publish_async_max_pending=args.window)
    result: dict[str, Any] = {
        "window": args.window,
        "mode": args.ingest_mode,
        "publish_mode": args.publish_mode,
    }
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                await js.consumer_info(CALL_RECORDS_STREAM, durable)
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"stream {CALL_RECORDS_STREAM} / consumer {durable} not created by the service"
                    ) from None
                await asyncio.sleep(0.2)
        stream = await js.stream_info(CALL_RECORDS_STREAM)
        result["stream_config"] = {
            "storage": str(stream.config.storage),
            "max_msgs": stream.config.max_msgs,
            "max_bytes": stream.config.max_bytes,
            "max_age": stream.config.max_age,
            "discard": str(stream.config.discard),
        }
        base = int(stream.state.last_seq)
        if args.ingest_mode == "backlog":
            split = 0
        elif args.ingest_mode == "concurrent":
            split = rows
        else:
            split = rows // 2
        if split:
            log(f"ingest: publishing {split:,} records while the service consumes")
            cpu0 = (tree_cpu(platform.cdr.pid), cpu_seconds(platform.nats.pid), own_cpu())
            progress: list[tuple[float, int]] = []
            t0 = time.perf_counter()
            poller = asyncio.create_task(_poll_progress(js, CALL_RECORDS_STREAM, durable, progress))
            consumed = asyncio.Event()
            searching = asyncio.create_task(searches_while(nc, searches, consumed))
            publish_s = await publish(nc, js, payloads, 0, split, args.publish_mode, args.window)
            last_seq = await published_up_to(js, CALL_RECORDS_STREAM, base + split)
            poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await poller
            done = await wait_consumed(
                js, CALL_RECORDS_STREAM, durable, last_seq, args.ingest_timeout, progress
            )
            cpu1 = (tree_cpu(platform.cdr.pid), cpu_seconds(platform.nats.pid), own_cpu())
            consumed.set()
            searched = await searching
            e2e = done - t0
            result["concurrent"] = {
                "records": split,
                "publish_seconds": round(publish_s, 2),
                "publish_rate": round(split / publish_s),
                "end_to_end_seconds": round(e2e, 2),
                "end_to_end_rate": round(split / e2e),
                "sustained_rate_10_90": sustained_rate(progress, base, split),
                "searches_while_ingesting": searched,
                "cpu_seconds": cpu_report(
                    split, tree_cpu_delta(cpu0[0], cpu1[0]), cpu1[1] - cpu0[1], cpu1[2] - cpu0[2]
                ),
            }
            log(f"ingest: {result['concurrent']}")
            base = last_seq
        if split < rows:
            n = rows - split
            if platform.cdr.proc is not None:
                log("ingest: stopping the service to build a backlog")
                platform.cdr.stop()
            log(f"ingest: publishing {n:,} records as a backlog (service stopped)")
            publish_s = await publish(nc, js, payloads, split, rows, args.publish_mode, args.window)
            last_seq = await published_up_to(js, CALL_RECORDS_STREAM, base + n)
            log("ingest: starting the service on the backlog")
            progress = []
            t0 = time.perf_counter()
            ready_s = await asyncio.to_thread(platform.start_cdr)
            drain0 = (tree_cpu(platform.cdr.pid), cpu_seconds(platform.nats.pid))
            done = await wait_consumed(
                js, CALL_RECORDS_STREAM, durable, last_seq, args.ingest_timeout, progress
            )
            drain1 = (tree_cpu(platform.cdr.pid), cpu_seconds(platform.nats.pid))
            result["backlog"] = {
                "records": n,
                "publish_seconds_uncontended": round(publish_s, 2),
                "publish_rate_uncontended": round(n / publish_s),
                "service_ready_seconds": round(ready_s, 2),
                "drain_seconds_from_start": round(done - t0, 2),
                "drain_rate_from_start": round(n / (done - t0)),
                "drain_rate_from_ready": round(n / max(done - t0 - ready_s, 1e-9)),
                "sustained_rate_10_90": sustained_rate(progress, base, n),
                "cpu_seconds_after_ready": cpu_report(
                    n, tree_cpu_delta(drain0[0], drain1[0]), drain1[1] - drain0[1], None
                ),
            }
            log(f"ingest: {result['backlog']}")
        try:
            dead = await js.stream_info(CALL_RECORDS_DEAD_STREAM)
            result["dead_letters"] = int(dead.state.messages)
        except Exception as exc:
            result["dead_letters"] = f"unknown ({exc.__class__.__name__})"
        stream = await js.stream_info(CALL_RECORDS_STREAM)
        result["stream_messages"] = int(stream.state.messages)
        result["stream_bytes"] = int(stream.state.bytes)
    finally:
        await nc.close()
    return result


async def searches_while(
    nc: Any, searches: dict[str, list[dict[str, Any]]], stop: asyncio.Event
) -> dict[str, Any]:
    """Searches over the bus, every kind in turn, one at a time with a 50 ms pause, until
    ``stop``: what a user searching the history sees while records pour in (the records are
    still arriving, so totals are not compared)."""
    from switchboard_contracts.subjects import cdr_search

    items = [
        (item["tenant"], json.dumps(search_request(item).model_dump(mode="json")).encode())
        for batch in zip(*(searches[kind] for kind in SEARCH_KINDS), strict=False)
        for item in batch
    ]
    latencies: list[float] = []
    failures = 0
    index = 0
    while not stop.is_set() and items:
        tenant, body = items[index % len(items)]
        index += 1
        t0 = time.perf_counter()
        try:
            reply = await nc.request(cdr_search(tenant), body, timeout=30)
            if not json.loads(reply.data).get("ok"):
                failures += 1
                continue
        except Exception:
            failures += 1
            continue
        latencies.append(time.perf_counter() - t0)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.05)
    return {**stats(latencies), "failures": failures}


async def _poll_progress(js: Any, stream: str, durable: str, progress: list[tuple[float, int]]) -> None:
    """While publishing: samples the consumer's ack floor every 0.2 s."""
    while True:
        with contextlib.suppress(Exception):
            info = await js.consumer_info(stream, durable)
            progress.append((time.perf_counter(), int(info.ack_floor.stream_seq or 0)))
        await asyncio.sleep(0.2)


async def bus_searches(
    platform: Platform, searches: dict[str, list[dict[str, Any]]]
) -> tuple[dict[str, Any], dict[str, list[int]]]:
    """Each search over the bus, as the gateway asks it (request/reply, JSON)."""
    import nats
    from switchboard_contracts.subjects import cdr_search

    nc = await nats.connect(platform.url)
    loop_result: dict[str, Any] = {}
    totals: dict[str, list[int]] = {}
    try:
        bodies = {
            id(item): json.dumps(search_request(item).model_dump(mode="json")).encode()
            for items in searches.values()
            for item in items
        }
        for kind in SEARCH_KINDS:
            latencies, kind_totals, legs_seen = [], [], 0
            for index, item in enumerate([*searches[kind][:5], *searches[kind]]):
                t0 = time.perf_counter()
                reply = await nc.request(cdr_search(item["tenant"]), bodies[id(item)], timeout=30)
                elapsed = time.perf_counter() - t0
                answer = json.loads(reply.data)
                if not answer.get("ok"):
                    raise RuntimeError(f"search {item} failed: {answer}")
                if index >= 5:
                    latencies.append(elapsed)
                    kind_totals.append(int(answer["result"]["total"]))
                    legs_seen += sum(len(group["legs"]) for group in answer["result"]["items"])
            loop_result[kind] = stats(latencies)
            loop_result[kind]["mean_total_calls"] = round(sum(kind_totals) / max(len(kind_totals), 1), 1)
            loop_result[kind]["mean_legs_on_page"] = round(legs_seen / max(len(latencies), 1), 1)
            totals[kind] = kind_totals
            log(f"  bus {kind}: {loop_result[kind]}")
    finally:
        await nc.close()
    return loop_result, totals


def gateway_searches(
    platform: Platform, searches: dict[str, list[dict[str, Any]]]
) -> tuple[dict[str, Any], dict[str, list[int]]]:
    import httpx

    base = f"http://127.0.0.1:{platform.gateway_port}"
    operator = {"Authorization": f"Bearer {platform.operator_key}"}
    tenants = sorted({item["tenant"] for items in searches.values() for item in items})
    keys: dict[str, str] = {}
    with httpx.Client(base_url=base, timeout=30) as client:
        t0 = time.perf_counter()
        for tenant in tenants:
            created = client.post(
                "/v1/tenants",
                headers=operator,
                json={
                    "id": tenant,
                    "name": f"Bench {tenant}",
                    "sip_domain": f"{tenant}.bench.example",
                    "settings": {"timezone": "UTC"},
                },
            )
            if created.status_code not in (201, 409):
                raise RuntimeError(f"creating tenant {tenant}: {created.status_code} {created.text}")
            issued = client.post(f"/v1/tenants/{tenant}/api-keys", headers=operator, json={"name": "bench"})
            if issued.status_code != 201:
                raise RuntimeError(f"issuing a key for {tenant}: {issued.status_code} {issued.text}")
            keys[tenant] = issued.json()["key"]
        setup_s = time.perf_counter() - t0
        log(f"gateway: {len(tenants)} tenants created with keys in {setup_s:.1f} s")

        def run_one(item: dict[str, Any]) -> tuple[int, int]:
            params = {"q": item["q"], "limit": PAGE_LIMIT}
            if item["date_from"]:
                params["date_from"] = item["date_from"]
                params["date_to"] = item["date_to"]
            response = client.get(
                f"/v1/tenants/{item['tenant']}/calls",
                params=params,
                headers={"Authorization": f"Bearer {keys[item['tenant']]}"},
            )
            if response.status_code != 200:
                raise RuntimeError(f"GET calls {params}: {response.status_code} {response.text[:500]}")
            page = response.json()
            return int(page["total"]), sum(len(group["legs"]) for group in page["items"])

        result, totals = run_searches(searches, run_one)
    result["tenants_created"] = len(tenants)
    return result, totals


def compacted_searches(
    args: argparse.Namespace,
    platform: Platform,
    searches: dict[str, list[dict[str, Any]]],
    report: dict[str, Any],
    totals: dict[str, dict[str, list[int]]],
) -> None:
    """The service stopped, its store compacted (``compact``), the service started again, and
    the searches run again over the bus and through the gateway: the figures of a running
    platform's older history, which the service's own compaction keeps in one part."""
    from switchboard_cdr.store.chdb_backend import ChdbCallStore

    log("compacting the service's store (service stopped)")
    if platform.cdr.proc is not None:
        platform.cdr.stop()
    store = ChdbCallStore(platform.work / "cdr-chdb")
    try:
        report["ingest"]["service_compaction"] = compact(store, args.compact_wait)
    finally:
        store.close()
    log(f"compacted {report['ingest']['service_compaction']}; starting the service again")
    platform.start_cdr()
    report["bus"]["search_compacted"], totals["bus_compacted"] = asyncio.run(bus_searches(platform, searches))
    if platform.gateway is not None:
        log("gateway: searching again")
        report["gateway"]["search_compacted"], totals["gateway_compacted"] = gateway_searches(
            platform, searches
        )


def count_service_store(path: Path) -> dict[str, int]:
    """Opens the service's chDB folder after the service stopped: rows and distinct legs."""
    from switchboard_cdr.store.chdb_backend import ChdbCallStore

    store = ChdbCallStore(path)
    try:
        rows, legs = store._select("SELECT count(), uniqExact(leg_id) FROM calls_by_linkedid")[0]
        return {"rows": int(rows), "distinct_legs": int(legs)}
    finally:
        store.close()


# Phase: postgres -----------------------------------------------------------------------------

PG_BIN = Path("/usr/lib/postgresql/15/bin")
PG_COLUMNS = (
    ("tenant_id", "text NOT NULL"),
    ("start", "timestamptz NOT NULL"),
    ("linkedid", "text NOT NULL"),
    ("leg_id", "text NOT NULL"),
    ("answer", "timestamptz"),
    ('"end"', "timestamptz NOT NULL"),
    ("caller_number", "text NOT NULL"),
    ("caller_name", "text NOT NULL"),
    ("called_number", "text NOT NULL"),
    ("called_name", "text NOT NULL"),
    ("caller_account", "text"),
    ("called_account", "text"),
    ("disposition", "text NOT NULL"),
    ("duration", "integer NOT NULL"),
    ("billsec", "integer NOT NULL"),
    ("queue_number", "text"),
    ("ivr_number", "text"),
    ("ivr_digits", "text NOT NULL"),
    ("transfer", "text"),
    ("transferred_to", "text"),
    ("recording_id", "text"),
)
PG_PAIR_A = "least(ltrim(caller_number, '+'), ltrim(called_number, '+'))"
PG_PAIR_B = "greatest(ltrim(caller_number, '+'), ltrim(called_number, '+'))"
PG_INDEXES = (
    "CREATE UNIQUE INDEX calls_leg ON calls (tenant_id, leg_id)",
    "CREATE INDEX calls_start ON calls (tenant_id, start)",
    "CREATE INDEX calls_caller ON calls (tenant_id, caller_number, start)",
    "CREATE INDEX calls_called ON calls (tenant_id, called_number, start)",
    f"CREATE INDEX calls_pair ON calls (tenant_id, {PG_PAIR_A}, {PG_PAIR_B}, start)"
    " WHERE disposition = 'answered'",
    "CREATE INDEX calls_linkedid ON calls (tenant_id, linkedid)",
)
PG_SETTINGS = {
    "shared_buffers": "4GB",
    "effective_cache_size": "12GB",
    "work_mem": "64MB",
    "maintenance_work_mem": "2GB",
    "max_parallel_maintenance_workers": "2",
    "max_parallel_workers_per_gather": "2",
    "wal_level": "minimal",
    "max_wal_senders": "0",
    "max_wal_size": "16GB",
    "checkpoint_timeout": "30min",
    "synchronous_commit": "off",
    "random_page_cost": "1.1",
    "jit": "off",
    # Searches of one SQL text differ wildly in selectivity (a switchboard number vs a one-off
    # caller): a cached generic plan is slow for one of them, so plan every execution.
    "plan_cache_mode": "force_custom_plan",
    "listen_addresses": "127.0.0.1",
}
#: The page of calls, as the store does it: matching legs grouped by linkedid, the group's sort
#: key is its first matching leg's start, newest first, one more than the page; the total
#: (matching calls) comes with the page as a window count.
PG_PAGE = (
    "SELECT linkedid, first_start, count(*) OVER () AS total FROM ("
    " SELECT linkedid, min(start) AS first_start FROM calls WHERE {where} GROUP BY linkedid) m"
    " ORDER BY first_start DESC, linkedid DESC LIMIT %(limit)s"
)
PG_WHERE = {
    "number": "tenant_id = %(tenant)s AND (caller_number = ANY(%(numbers)s) OR called_number = ANY(%(numbers)s))"
    " AND start >= %(date_from)s AND start < %(date_to)s",
    "pair": f"tenant_id = %(tenant)s AND {PG_PAIR_A} = %(a)s AND {PG_PAIR_B} = %(b)s"
    " AND disposition = 'answered' AND start >= %(date_from)s AND start < %(date_to)s",
    "all": "tenant_id = %(tenant)s AND start >= %(date_from)s AND start < %(date_to)s",
}
PG_LEGS = (
    'SELECT linkedid, leg_id, start, answer, "end", caller_number, caller_name, called_number,'
    " called_name, caller_account, called_account, disposition, duration, billsec, queue_number,"
    " ivr_number, ivr_digits, transfer, transferred_to, recording_id"
    " FROM calls WHERE tenant_id = %(tenant)s AND linkedid = ANY(%(ids)s) ORDER BY linkedid, start, leg_id"
)


def ensure_postgres() -> str:
    if (PG_BIN / "postgres").exists():
        return "present"
    if os.geteuid() != 0:
        raise RuntimeError("PostgreSQL 15 missing and not root: apt-get install postgresql")
    log("postgres: installing Debian's postgresql package")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update"], check=True, env=env, stdout=subprocess.DEVNULL)
    subprocess.run(["apt-get", "install", "-y", "postgresql"], check=True, env=env, stdout=subprocess.DEVNULL)
    if not (PG_BIN / "postgres").exists():
        raise RuntimeError(f"{PG_BIN / 'postgres'} still missing after apt-get install postgresql")
    return "installed with apt-get"


def as_postgres(argv: list[str]) -> list[str]:
    return argv if os.geteuid() != 0 else ["runuser", "-u", "postgres", "--", *argv]


def pg_line_factory(history: History) -> Callable[[tuple[Any, ...]], str]:
    pg_time = history.pg_time

    def line(leg: tuple[Any, ...]) -> str:
        answer = leg[4]
        return "\t".join(
            (
                leg[0],
                pg_time(leg[1]),
                leg[2],
                leg[3],
                "\\N" if answer is None else pg_time(answer),
                pg_time(leg[5]),
                leg[6],
                leg[7],
                leg[8],
                leg[9],
                leg[10] or "\\N",
                leg[11] or "\\N",
                leg[12],
                str(leg[13]),
                str(leg[14]),
                leg[15] or "\\N",
                leg[16] or "\\N",
                leg[17],
                leg[18] or "\\N",
                leg[19] or "\\N",
                leg[20] or "\\N",
            )
        )

    return line


def phase_postgres(
    args: argparse.Namespace,
    history: History,
    sampler: Sampler,
    work: Path,
    searches_ready: Callable[[], dict[str, list[dict[str, Any]]]],
) -> tuple[dict[str, Any], dict[str, list[int]]]:
    import psycopg

    result: dict[str, Any] = {"package": ensure_postgres()}
    version = subprocess.run(
        [str(PG_BIN / "postgres"), "--version"], capture_output=True, text=True, check=True
    )
    result["version"] = version.stdout.strip()
    pgdir = work / "postgres"
    pgdir.mkdir(parents=True, exist_ok=True)
    os.chmod(work, 0o755)  # noqa: S103 - the postgres user must reach its data folder
    if os.geteuid() == 0:
        shutil.chown(pgdir, "postgres", "postgres")
    subprocess.run(
        as_postgres(
            [
                str(PG_BIN / "initdb"),
                "-D",
                str(pgdir / "data"),
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--locale=C",
            ]
        ),
        check=True,
        stdout=subprocess.DEVNULL,
    )
    port = free_port()
    argv = [str(PG_BIN / "postgres"), "-D", str(pgdir / "data"), "-p", str(port), "-k", str(pgdir)]
    for key, value in PG_SETTINGS.items():
        argv += ["-c", f"{key}={value}"]
    server = Proc("postgres", as_postgres(argv), None, work / "postgres.log").start()
    result["settings"] = PG_SETTINGS
    try:
        wait_for(lambda: port_open(port), 60, "postgres", server.proc)
        dsn = f"host=127.0.0.1 port={port} user=postgres dbname=postgres"
        deadline = time.monotonic() + 30
        while True:
            try:
                conn = psycopg.connect(dsn, autocommit=False)
                break
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        with conn:
            _pg_load(args, history, sampler, conn, result)
            searches = searches_ready()
            log("postgres: searching")
            conn.autocommit = True
            result["search"], totals = run_searches(searches, lambda item: _pg_search(conn, item))
            with conn.cursor() as cur:
                cur.execute("SELECT pg_total_relation_size('calls'), pg_relation_size('calls')")
                total_size, heap_size = cur.fetchone()  # type: ignore[misc]
            result["disk_bytes_table_and_indexes"] = int(total_size)
            result["disk_bytes_table"] = int(heap_size)
            result["explain"] = _pg_explain(conn, searches)
    finally:
        server.stop(60)
        if not args.keep:
            shutil.rmtree(pgdir, ignore_errors=True)
    return result, totals


def _pg_load(
    args: argparse.Namespace, history: History, sampler: Sampler, conn: Any, result: dict[str, Any]
) -> None:
    """COPY the first rows into a bare table (created in the same transaction: no WAL with
    wal_level minimal), build the indexes, then COPY the rest with the indexes in place."""
    line = pg_line_factory(history)
    columns = ", ".join(name for name, _ in PG_COLUMNS)
    bulk_rows = args.rows - min(args.rows // 10, 1_000_000)
    copied = 0
    copy_s = indexed_s = 0.0
    indexed_rows = 0
    cur = conn.cursor()
    cur.execute("CREATE TABLE calls (" + ", ".join(f"{n} {t}" for n, t in PG_COLUMNS) + ")")
    indexes_built = False
    log(f"postgres: COPY of {bulk_rows:,} rows, then indexes, then {args.rows - bulk_rows:,} rows indexed")
    for chunk in history.chunks(args.batch):
        sampler.feed(chunk)
        if not indexes_built and copied >= bulk_rows:
            conn.commit()
            t0 = time.perf_counter()
            for statement in PG_INDEXES:
                cur.execute(statement)
                conn.commit()
            result["index_build_seconds"] = round(time.perf_counter() - t0, 2)
            log(f"postgres: indexes built in {result['index_build_seconds']} s")
            indexes_built = True
        with no_gc():
            text = ("\n".join(line(leg) for leg in chunk) + "\n").encode()
        t0 = time.perf_counter()
        with cur.copy(f"COPY calls ({columns}) FROM STDIN") as copy:
            copy.write(text)
        if indexes_built:
            conn.commit()
            indexed_s += time.perf_counter() - t0
            indexed_rows += len(chunk)
        else:
            copy_s += time.perf_counter() - t0
        copied += len(chunk)
        if (copied // len(chunk)) % 10 == 0:
            log(f"postgres: {copied:,} rows")
    sampler.finish()
    conn.commit()
    if not indexes_built:
        t0 = time.perf_counter()
        for statement in PG_INDEXES:
            cur.execute(statement)
            conn.commit()
        result["index_build_seconds"] = round(time.perf_counter() - t0, 2)
    t0 = time.perf_counter()
    conn.autocommit = True
    cur.execute("VACUUM ANALYZE calls")
    result["vacuum_analyze_seconds"] = round(time.perf_counter() - t0, 2)
    bulk = copied - indexed_rows
    result["rows"] = copied
    result["copy_rows_no_indexes"] = bulk
    result["copy_rows_per_s_no_indexes"] = round(bulk / copy_s) if copy_s else None
    result["copy_rows_with_indexes"] = indexed_rows
    result["copy_rows_per_s_with_indexes"] = round(indexed_rows / indexed_s) if indexed_s else None
    total_s = copy_s + indexed_s + result["index_build_seconds"]
    result["load_rows_per_s_including_index_build"] = round(copied / total_s)
    result["indexes"] = list(PG_INDEXES)
    conn.autocommit = False
    log(f"postgres: {result}")


def _pg_params(item: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    request = search_request(item)
    parsed = request.parsed()
    params: dict[str, Any] = {"tenant": item["tenant"], "limit": PAGE_LIMIT + 1}
    kind = parsed.kind.value
    if kind == "linkedid":
        params["ids"] = [parsed.linkedid]
        return kind, params
    params["date_from"], params["date_to"] = request.utc_range()
    if kind == "number":
        params["numbers"] = [parsed.numbers[0], "+" + parsed.numbers[0]]
    elif kind == "pair":
        params["a"], params["b"] = parsed.numbers
    return kind, params


_PG_PREPARED: dict[int, tuple[str, dict[str, Any]]] = {}


def _pg_search(conn: Any, item: dict[str, Any]) -> tuple[int, int]:
    """One page like the store's search: the page of calls with the total, then their legs."""
    prepared = _PG_PREPARED.get(id(item))
    if prepared is None:
        prepared = _PG_PREPARED[id(item)] = _pg_params(item)
    kind, params = prepared
    with conn.cursor() as cur:
        if kind == "linkedid":
            cur.execute(PG_LEGS, params)
            legs = cur.fetchall()
            return (1 if legs else 0), len(legs)
        cur.execute(PG_PAGE.format(where=PG_WHERE[kind]), params)
        page = cur.fetchall()
        total = int(page[0][2]) if page else 0
        ids = [row[0] for row in page[:PAGE_LIMIT]]
        if not ids:
            return total, 0
        cur.execute(PG_LEGS, {"tenant": params["tenant"], "ids": ids})
        legs = cur.fetchall()
        return total, len(legs)


def _pg_explain(conn: Any, searches: dict[str, list[dict[str, Any]]]) -> dict[str, str]:
    """The plan of the first search of each kind (to show which index PostgreSQL used)."""
    plans = {}
    with conn.cursor() as cur:
        for kind in SEARCH_KINDS:
            item = searches[kind][0]
            sql_kind, params = _pg_params(item)
            sql = PG_LEGS if sql_kind == "linkedid" else PG_PAGE.format(where=PG_WHERE[sql_kind])
            cur.execute("EXPLAIN (COSTS OFF) " + sql, params)
            plans[kind] = " | ".join(row[0].strip() for row in cur.fetchall())
    return plans


# Main ----------------------------------------------------------------------------------------


def ratios(numerator: dict[str, Any], denominator: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for kind in SEARCH_KINDS:
        a, b = numerator.get(kind, {}), denominator.get(kind, {})
        out[kind] = {
            f"p{p}": round(a[f"p{p}_ms"] / b[f"p{p}_ms"], 2)
            for p in PERCENTILES
            if a.get(f"p{p}_ms") and b.get(f"p{p}_ms")
        }
    return out


def targets(report: dict[str, Any]) -> dict[str, Any]:
    """The issue's targets: ingest >= 100,000 records/s sustained; every search p95 <= 10 ms in
    the store and <= 25 ms through the gateway."""
    out: dict[str, Any] = {}
    ingest = report.get("ingest") or {}
    rates = [
        v
        for v in (
            ingest.get("concurrent", {}).get("end_to_end_rate"),
            ingest.get("backlog", {}).get("drain_rate_from_ready"),
        )
        if v
    ]
    if rates:
        out["ingest_100k_per_s"] = {"best_rate": max(rates), "met": max(rates) >= 100_000}
    if (report.get("store") or {}).get("search"):
        out["store_search_p95_10ms"] = {
            kind: report["store"]["search"][kind]["p95_ms"] <= 10 for kind in SEARCH_KINDS
        }
    if (report.get("store") or {}).get("search_compacted"):
        out["store_search_compacted_p95_10ms"] = {
            kind: report["store"]["search_compacted"][kind]["p95_ms"] <= 10 for kind in SEARCH_KINDS
        }
    if (report.get("gateway") or {}).get("search"):
        out["gateway_search_p95_25ms"] = {
            kind: report["gateway"]["search"][kind]["p95_ms"] <= 25 for kind in SEARCH_KINDS
        }
    if (report.get("gateway") or {}).get("search_compacted"):
        out["gateway_search_compacted_p95_25ms"] = {
            kind: report["gateway"]["search_compacted"][kind]["p95_ms"] <= 25 for kind in SEARCH_KINDS
        }
    served = report.get("served") or {}
    if served.get("gateway"):
        out["served_gateway_search_p95_25ms"] = {
            kind: served["gateway"][kind]["p95_ms"] <= 25 for kind in SEARCH_KINDS
        }
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("rows", type=int, help="number of call records (legs) to generate")
    parser.add_argument("--tenants", type=int, default=200)
    parser.add_argument("--days", type=int, default=90)
    parser.add_argument(
        "--end-date",
        type=date.fromisoformat,
        default=datetime.now(UTC).date(),
        help="last day of the history (default today, UTC)",
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--zipf", type=float, default=1.1, help="exponent of number popularity")
    parser.add_argument("--batch", type=int, default=100_000, help="records per store insert / COPY")
    parser.add_argument("--searches", type=int, default=200, help="searches of each kind")
    parser.add_argument(
        "--phases",
        default="store,ingest,gateway,postgres",
        help="comma-separated: store, ingest, gateway (after ingest), postgres, served (bus and"
        " gateway over the store phase's store, without ingest)",
    )
    parser.add_argument("--skip-postgres", action="store_true")
    parser.add_argument("--data-dir", type=Path, default=None, help="work folder (default: a temp folder)")
    parser.add_argument("--keep", action="store_true", help="keep the data folders")
    parser.add_argument("--window", type=int, default=4000, help="JetStream publishes in flight")
    parser.add_argument("--publish-mode", choices=("async", "gather", "core"), default="async")
    parser.add_argument("--ingest-mode", choices=("concurrent", "backlog", "both"), default="both")
    parser.add_argument("--ingest-timeout", type=float, default=1500)
    parser.add_argument("--settle", type=float, default=60, help="max seconds to wait for merges")
    parser.add_argument(
        "--compact-wait",
        type=float,
        default=900,
        help="then compact every partition to one part (at most this many seconds) and search"
        " again: the store phase its store; with ingest, the service's store (service stopped"
        " meanwhile), searched over the bus and through the gateway; 0 skips it",
    )
    parser.add_argument(
        "--later-pages",
        type=int,
        default=3,
        help="store phase, at the end: pages 2 to N+1 of each search, window read against grouped read; 0 skips it",
    )
    parser.add_argument("--generate-only", action="store_true", help="only time the generator")
    args = parser.parse_args(argv)
    phases = [p.strip() for p in args.phases.split(",") if p.strip()]
    unknown = set(phases) - {"store", "ingest", "gateway", "postgres", "served"}
    if unknown:
        parser.error(f"unknown phases: {sorted(unknown)}")
    if "served" in phases and "store" not in phases:
        parser.error("the served phase searches the store phase's store: add the store phase")
    args.phase_list = phases
    if args.skip_postgres and "postgres" in phases:
        phases.remove("postgres")
    if args.days > 366 or args.days < 30:
        parser.error("--days must be between 30 and 366")

    history = History(args.rows, args.tenants, args.days, args.end_date, args.seed, args.zipf)
    report: dict[str, Any] = {
        "params": {
            "rows": args.rows,
            "tenants": args.tenants,
            "days": args.days,
            "first_date": history.first_date.isoformat(),
            "end_date": args.end_date.isoformat(),
            "seed": args.seed,
            "zipf": args.zipf,
            "batch": args.batch,
            "searches_per_kind": args.searches,
            "page_limit": PAGE_LIMIT,
            "phases": phases,
            "cpus": os.cpu_count(),
            "python": sys.version.split()[0],
        },
        "errors": {},
    }
    if args.generate_only:
        t0 = time.perf_counter()
        n = 0
        calls = set()
        missed: dict[str, bool] = {}
        legs_by_call = 0
        for chunk in history.chunks(args.batch):
            n += len(chunk)
            if n <= 1_000_000:
                for leg in chunk:
                    calls.add(leg[F_LINKEDID])
                    missed[leg[F_LINKEDID]] = missed.get(leg[F_LINKEDID], True) and leg[F_DISP] != "answered"
                legs_by_call = n
        elapsed = time.perf_counter() - t0
        report["generation"] = {
            "rows": n,
            "seconds": round(elapsed, 2),
            "rows_per_s": round(n / elapsed),
            "legs_per_call_first_1m": round(legs_by_call / len(calls), 3),
            "missed_share_first_1m": round(sum(missed.values()) / len(missed), 3),
        }
        print(json.dumps(report, indent=2))
        return 0

    created_work = args.data_dir is None
    work = Path(tempfile.mkdtemp(prefix="sb-cdr-bench-")) if created_work else args.data_dir.resolve()
    work.mkdir(parents=True, exist_ok=True)
    report["params"]["data_dir"] = str(work)
    sampler = Sampler(args.rows, args.seed)
    cache: dict[str, dict[str, list[dict[str, Any]]]] = {}

    def searches_ready() -> dict[str, list[dict[str, Any]]]:
        if "s" not in cache:
            if not sampler.done:
                log("sampling search parameters (one generation pass)")
                for chunk in history.chunks(args.batch):
                    sampler.feed(chunk)
                sampler.finish()
            cache["s"] = build_searches(history, sampler.legs, args.searches, args.seed)
            report["params"]["sampled_legs"] = len(sampler.legs)
            report["params"]["search_examples"] = {k: v[0] for k, v in cache["s"].items()}
        return cache["s"]

    totals: dict[str, dict[str, list[int]]] = {}
    try:
        if "store" in phases:
            try:
                report["store"], totals["store"] = phase_store(args, history, sampler, work, searches_ready)
            except Exception as exc:
                report["errors"]["store"] = f"{exc.__class__.__name__}: {exc}"
                log(f"store failed: {exc!r}")
        if "served" in phases and "store" in report:
            try:
                report["served"], served_totals = phase_served(args, work, searches_ready())
                totals.update(served_totals)
            except Exception as exc:
                report["errors"]["served"] = f"{exc.__class__.__name__}: {exc}"
                log(f"served failed: {exc!r}")
        if "ingest" in phases or "gateway" in phases:
            platform = Platform(work / "platform")
            platform.work.mkdir(parents=True, exist_ok=True)
            try:
                payloads = platform.work / "records.ndjson"
                log("ingest: encoding the records as JSON (not timed)")
                encoded = write_payloads(args, history, sampler, payloads)
                log(f"ingest: encoded {encoded}")
                platform.start_nats()
                ready_s = platform.start_cdr()
                report["ingest"] = {"encoded": encoded, "service_ready_seconds": round(ready_s, 2)}
                searches = searches_ready()
                report["ingest"].update(
                    asyncio.run(ingest_async(args, platform, payloads, encoded["rows"], searches))
                )
                if not args.keep:
                    payloads.unlink(missing_ok=True)
                log("bus: searching")
                report["bus"] = {}
                report["bus"]["search"], totals["bus"] = asyncio.run(bus_searches(platform, searches))
                if "gateway" in phases:
                    try:
                        platform.start_gateway()
                        report["gateway"] = {}
                        log("gateway: searching")
                        report["gateway"]["search"], totals["gateway"] = gateway_searches(platform, searches)
                    except Exception as exc:
                        report["errors"]["gateway"] = f"{exc.__class__.__name__}: {exc}"
                        log(f"gateway failed: {exc!r}")
                if args.compact_wait > 0:
                    try:
                        compacted_searches(args, platform, searches, report, totals)
                    except Exception as exc:
                        report["errors"]["compacted"] = f"{exc.__class__.__name__}: {exc}"
                        log(f"searches after compaction failed: {exc!r}")
                platform.stop()
                try:
                    report["ingest"]["service_store_after"] = count_service_store(platform.work / "cdr-chdb")
                    report["ingest"]["service_store_disk_bytes"] = dir_size(platform.work / "cdr-chdb")
                except Exception as exc:
                    report["ingest"]["service_store_after"] = f"not counted: {exc}"
            except Exception as exc:
                report["errors"]["ingest"] = f"{exc.__class__.__name__}: {exc}"
                log(f"ingest failed: {exc!r}")
            finally:
                platform.stop()
                if not args.keep:
                    shutil.rmtree(platform.work, ignore_errors=True)
        if "postgres" in phases:
            try:
                report["postgres"], totals["postgres"] = phase_postgres(
                    args, history, sampler, work, searches_ready
                )
            except Exception as exc:
                report["errors"]["postgres"] = f"{exc.__class__.__name__}: {exc}"
                log(f"postgres failed: {exc!r}")
    finally:
        if created_work and not args.keep:
            shutil.rmtree(work, ignore_errors=True)

    if "store" in report and "postgres" in report:
        report["ratio_postgres_over_store"] = ratios(report["postgres"]["search"], report["store"]["search"])
    if "store" in report and "gateway" in report and "search" in report["gateway"]:
        report["ratio_gateway_over_store"] = ratios(report["gateway"]["search"], report["store"]["search"])
    reference = totals.get("store") or totals.get("postgres")
    if reference:
        report["total_mismatches_vs_" + ("store" if "store" in totals else "postgres")] = {
            name: compare_totals(reference, found) for name, found in totals.items() if found is not reference
        }
    report["targets"] = targets(report)
    if not report["errors"]:
        del report["errors"]
    print(json.dumps(report, indent=2, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
