"""The call-history service end to end, once per backend: records published on JetStream,
batched into the store, searched through the gateway; dead letters; redelivery; an outage of
the store (records wait in JetStream and drain)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import nats
import pytest
from nats.js.api import ConsumerConfig, DeliverPolicy
from switchboard_contracts.subjects import CALL_RECORDS_DEAD_STREAM, call_leg_ended

from tests.support import ROOT, Platform, free_port, http_ok, wait_for

SCRIPT = ROOT / "scripts" / "clickhouse-server.sh"
NOW = datetime.now(UTC).replace(microsecond=0)


def leg(tenant: str, linkedid: str, leg_id: str, caller: str, called: str, *, minutes_ago: int = 5,
        answered: bool = True, talk: int = 60, **extra: Any) -> dict[str, Any]:  # fmt: skip
    start = NOW - timedelta(minutes=minutes_ago)
    end = start + timedelta(seconds=talk + 10)
    return {
        "tenant_id": tenant, "linkedid": linkedid, "leg_id": leg_id,
        "start": start.isoformat(), "answer": (start + timedelta(seconds=10)).isoformat() if answered else None,
        "end": end.isoformat(), "caller_number": caller, "called_number": called,
        "disposition": "answered" if answered else "no_answer",
        "duration": talk + 10, "billsec": talk if answered else 0, **extra,
    }  # fmt: skip


def start_clickhouse(data_dir: Path, tcp: int, http: int) -> None:
    done = subprocess.run([str(SCRIPT), "start", str(data_dir), str(tcp), str(http)],
                          capture_output=True, text=True, timeout=600, check=False)  # fmt: skip
    if done.returncode != 0:
        pytest.fail(f"clickhouse-server.sh start failed: {done.stderr}{done.stdout}")


def stop_clickhouse(data_dir: Path) -> None:
    subprocess.run([str(SCRIPT), "stop", str(data_dir)], capture_output=True, timeout=60, check=False)


def parsing_workers(platform: Platform) -> list[int]:
    """Process ids of the cdr service's parsing processes (spawned children running
    ``multiprocessing.spawn``; the resource tracker is not one)."""
    proc = platform.services["cdr"].proc
    assert proc is not None
    children: list[int] = []
    for task in Path(f"/proc/{proc.pid}/task").iterdir():
        with contextlib.suppress(OSError):
            children += [int(pid) for pid in (task / "children").read_text().split()]
    workers = []
    for pid in children:
        with contextlib.suppress(OSError):
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            if b"spawn_main" in cmdline:
                workers.append(pid)
    return workers


class ServiceContract:
    """Cases every backend must pass; subclasses provide the ``platform`` fixture."""

    backend = ""

    @pytest.fixture
    async def js(self, platform: Platform) -> AsyncIterator[Any]:
        nc = await nats.connect(platform.nats.url)
        yield nc.jetstream()
        await nc.close()

    async def tenant(self, platform: Platform) -> tuple[str, httpx.AsyncClient]:
        async with httpx.AsyncClient(base_url=platform.url,
                                     headers={"Authorization": f"Bearer {Platform.OPERATOR_KEY}"}) as op:  # fmt: skip
            tenant_id = f"{self.backend}{int(time.time() * 1000) % 10**9}"
            created = await op.post("/v1/tenants", json={"id": tenant_id, "name": "T",
                                                         "sip_domain": f"{tenant_id}.pbx.test",
                                                         "settings": {"timezone": "UTC"}})  # fmt: skip
            assert created.status_code == 201, created.text
            key = (await op.post(f"/v1/tenants/{tenant_id}/api-keys")).json()["key"]
        return tenant_id, httpx.AsyncClient(base_url=platform.url, headers={"Authorization": f"Bearer {key}"})

    async def publish(
        self, js: Any, records: list[dict[str, Any]], subject_tenant: str | None = None
    ) -> None:
        await asyncio.gather(*[
            js.publish(call_leg_ended(subject_tenant or r["tenant_id"]), json.dumps(r).encode())
            for r in records
        ])  # fmt: skip

    async def search_until(
        self, api: httpx.AsyncClient, tenant: str, expect_total: int, **params: Any
    ) -> dict[str, Any]:
        deadline = time.monotonic() + 20
        while True:
            response = await api.get(f"/v1/tenants/{tenant}/calls", params=params)
            assert response.status_code == 200, response.text
            page: dict[str, Any] = response.json()
            if page["total"] >= expect_total or time.monotonic() > deadline:
                return page
            await asyncio.sleep(0.3)

    async def test_each_search_kind_through_the_gateway(self, platform: Platform, js: Any) -> None:
        tenant_a, api_a = await self.tenant(platform)
        tenant_b, api_b = await self.tenant(platform)
        await self.publish(js, [
            # call 1: outside caller -> IVR -> Anna (101), transferred to Oleg (102)
            leg(tenant_a, "1700000001.1", "a1", "+79255283744", "300", ivr_number="300", ivr_digits="1",
                minutes_ago=50, talk=20),
            leg(tenant_a, "1700000001.1", "a2", "+79255283744", "101", caller_account=None, called_account="101",
                minutes_ago=49, transfer="attended", transferred_to="102"),
            leg(tenant_a, "1700000001.1", "a3", "+79255283744", "102", called_account="102", minutes_ago=47),
            # call 2: missed call to 101
            leg(tenant_a, "1700000002.7", "b1", "+74951112233", "101", answered=False, minutes_ago=30),
            # call 3: 101 calls 102 internally
            leg(tenant_a, "1700000003.9", "c1", "101", "102", caller_account="101", called_account="102",
                minutes_ago=10),
            # tenant B uses the same numbers
            leg(tenant_b, "1700000004.2", "d1", "101", "102", minutes_ago=5),
        ])  # fmt: skip
        page = await self.search_until(api_a, tenant_a, 3)
        assert page["total"] == 3
        assert [c["linkedid"] for c in page["items"]] == ["1700000003.9", "1700000002.7", "1700000001.1"]
        assert [c["missed"] for c in page["items"]] == [False, True, False]
        assert [leg_["leg_id"] for leg_ in page["items"][2]["legs"]] == ["a1", "a2", "a3"]

        one = (await api_a.get(f"/v1/tenants/{tenant_a}/calls", params={"q": "101"})).json()
        assert {c["linkedid"] for c in one["items"]} == {"1700000001.1", "1700000002.7", "1700000003.9"}
        external = (await api_a.get(f"/v1/tenants/{tenant_a}/calls", params={"q": "+79255283744"})).json()
        assert [c["linkedid"] for c in external["items"]] == ["1700000001.1"]
        pair = (await api_a.get(f"/v1/tenants/{tenant_a}/calls", params={"q": "102 101"})).json()
        assert [c["linkedid"] for c in pair["items"]] == ["1700000003.9"]
        missed_pair = (
            await api_a.get(f"/v1/tenants/{tenant_a}/calls", params={"q": "101 +74951112233"})
        ).json()
        assert missed_pair["items"] == []  # a pair search lists answered calls only
        by_id = (await api_a.get(f"/v1/tenants/{tenant_a}/calls",
                                 params={"q": "1700000001.1", "date_from": "2001-01-01", "date_to": "2001-01-02"})).json()  # fmt: skip
        assert [leg_["leg_id"] for leg_ in by_id["items"][0]["legs"]] == ["a1", "a2", "a3"]
        assert by_id["items"][0]["legs"][1]["transfer"] == "attended"
        # pagination walks every call once
        first = (await api_a.get(f"/v1/tenants/{tenant_a}/calls", params={"limit": 2})).json()
        second = (await api_a.get(f"/v1/tenants/{tenant_a}/calls",
                                  params={"limit": 2, "cursor": first["next_cursor"]})).json()  # fmt: skip
        assert [c["linkedid"] for c in first["items"] + second["items"]] == [
            c["linkedid"] for c in page["items"]
        ]
        assert second["next_cursor"] is None
        # tenant B sees only its call, and cannot read A's history
        page_b = await self.search_until(api_b, tenant_b, 1)
        assert [c["linkedid"] for c in page_b["items"]] == ["1700000004.2"]
        assert (await api_b.get(f"/v1/tenants/{tenant_b}/calls", params={"q": "1700000001.1"})).json()[
            "items"
        ] == []
        assert (await api_b.get(f"/v1/tenants/{tenant_a}/calls")).status_code == 403
        await api_a.aclose()
        await api_b.aclose()

    async def test_bad_search_input(self, platform: Platform) -> None:
        tenant, api = await self.tenant(platform)
        for params, field in [
            ({"q": "10l"}, "q"),
            ({"q": "101 102 103"}, "q"),
            ({"date_from": "2026-13-01"}, "date_from"),
            ({"date_from": "2026-05-10", "date_to": "2026-05-01"}, "date_from"),
            ({"date_from": "2020-01-01", "date_to": "2026-01-01"}, "date_from"),
            ({"cursor": "garbage"}, "cursor"),
        ]:
            response = await api.get(f"/v1/tenants/{tenant}/calls", params=params)
            assert response.status_code == 422, (params, response.text)
            assert response.json()["error"]["field"] == field, (params, response.text)
        await api.aclose()

    async def test_redelivery_and_dead_letters(self, platform: Platform, js: Any) -> None:
        tenant, api = await self.tenant(platform)
        good = leg(tenant, "1700000010.1", "r1", "201", "202", minutes_ago=3)
        await self.publish(js, [good, good])  # the same leg twice
        await js.publish(call_leg_ended(tenant), b"{not json")
        await js.publish(
            call_leg_ended(tenant), json.dumps({**good, "leg_id": "r2", "billsec": 999}).encode()
        )
        await self.publish(js, [leg("someoneelse", "1700000010.2", "r3", "1", "2")], subject_tenant=tenant)
        after = leg(tenant, "1700000011.1", "r4", "203", "204", minutes_ago=2)
        await self.publish(js, [after])  # the stream is not blocked by the bad ones
        page = await self.search_until(api, tenant, 2)
        assert page["total"] == 2
        assert [len(c["legs"]) for c in page["items"]] == [1, 1]
        dead = await js.subscribe(f"deadletter.cdr.{tenant}", stream=CALL_RECORDS_DEAD_STREAM,
                                  ordered_consumer=True, config=ConsumerConfig(deliver_policy=DeliverPolicy.ALL))  # fmt: skip
        reasons = []
        for _ in range(3):
            msg = await dead.next_msg(timeout=5)
            reasons.append(json.loads(msg.data)["reason"])
        await dead.unsubscribe()
        assert any("JSON" in r for r in reasons)
        assert any("billsec" in r for r in reasons)
        assert any("differs from the subject's tenant" in r for r in reasons)
        await api.aclose()


class TestChdbService(ServiceContract):
    backend = "chdb"

    @pytest.fixture(scope="class")
    @classmethod
    def platform(cls) -> Iterator[Platform]:
        work = Path(tempfile.mkdtemp(prefix="sb-cdr-svc-"))
        platform = Platform(work, {"SB_CDR_BACKEND": "chdb", "SB_CDR_CHDB_PATH": str(work / "chdb"),
                                   "SB_CDR_BATCH_MAX_WAIT": "0.2"}).start()  # fmt: skip
        yield platform
        platform.stop()
        shutil.rmtree(work, ignore_errors=True)

    async def test_nothing_lost_when_the_parsing_process_dies(self, platform: Platform, js: Any) -> None:
        """With chDB the service parses batches in a child process: when it is killed, the
        batch comes back, a new process parses it, and every record is stored once."""
        tenant, api = await self.tenant(platform)
        (worker,) = parsing_workers(platform)
        os.kill(worker, signal.SIGKILL)
        records = [
            leg(tenant, f"1700000020.{i}", f"p{i}", "301", f"{400 + i}", minutes_ago=4) for i in range(20)
        ]
        await self.publish(js, records)
        page = await self.search_until(api, tenant, 20, limit=100)
        assert page["total"] == 20
        assert sorted(c["legs"][0]["leg_id"] for c in page["items"]) == sorted(r["leg_id"] for r in records)
        assert all(len(c["legs"]) == 1 for c in page["items"])
        assert parsing_workers(platform) not in ([], [worker])
        await api.aclose()

    def test_parsing_processes_end_with_the_service(self, platform: Platform) -> None:
        """Killed outright (SIGKILL, no shutdown), the service leaves no parsing process
        behind."""
        cdr = platform.services["cdr"]
        workers = parsing_workers(platform)
        assert workers
        assert cdr.proc is not None
        cdr.proc.kill()
        cdr.proc.wait(10)
        try:
            wait_for(
                lambda: not any(Path(f"/proc/{pid}").exists() for pid in workers),
                10,
                "parsing processes to end",
            )
        finally:
            cdr.proc = None
            cdr.start()

    async def test_503_when_cdr_is_down(self, platform: Platform) -> None:
        tenant, api = await self.tenant(platform)
        cdr = platform.services["cdr"]
        cdr.stop()
        try:
            response = await api.get(f"/v1/tenants/{tenant}/calls")
            assert response.status_code == 503
            assert "call history service did not answer" in response.json()["error"]["message"]
        finally:
            cdr.start()
            await api.aclose()


class TestServerService(ServiceContract):
    backend = "srv"

    @pytest.fixture(scope="class")
    @classmethod
    def clickhouse(cls) -> Iterator[tuple[Path, int, int]]:
        data_dir = Path(tempfile.mkdtemp(prefix="sb-cdr-svc-ch-"))
        tcp, http = free_port(), free_port()
        start_clickhouse(data_dir, tcp, http)
        yield data_dir, tcp, http
        stop_clickhouse(data_dir)
        shutil.rmtree(data_dir, ignore_errors=True)

    @pytest.fixture(scope="class")
    @classmethod
    def platform(cls, clickhouse: tuple[Path, int, int]) -> Iterator[Platform]:
        work = Path(tempfile.mkdtemp(prefix="sb-cdr-svc-"))
        platform = Platform(work, {"SB_CDR_BACKEND": "server", "SB_CDR_CLICKHOUSE_PORT": str(clickhouse[1]),
                                   "SB_CDR_CLICKHOUSE_DATABASE": "sb_service", "SB_CDR_BATCH_MAX_WAIT": "0.2"}).start()  # fmt: skip
        yield platform
        platform.stop()
        shutil.rmtree(work, ignore_errors=True)

    async def test_records_wait_while_clickhouse_is_down(
        self, platform: Platform, js: Any, clickhouse: tuple[Path, int, int]
    ) -> None:
        tenant, api = await self.tenant(platform)
        data_dir, tcp, http = clickhouse
        stop_clickhouse(data_dir)
        try:
            await self.publish(js, [leg(tenant, f"1700000020.{i}", f"w{i}", "301", "302", minutes_ago=4)
                                    for i in range(50)])  # fmt: skip
            ready = platform.services["cdr"].health_url
            wait_for(lambda: not http_ok(ready), 15, "cdr to notice the outage")
            down = await api.get(f"/v1/tenants/{tenant}/calls")
            assert down.status_code == 503
        finally:
            start_clickhouse(data_dir, tcp, http)
        page = await self.search_until(api, tenant, 50)
        assert page["total"] == 50  # none lost, none doubled
        await api.aclose()
