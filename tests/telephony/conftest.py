"""The telephony test bed: one Asterisk 22 (scripts/asterisk.py, its own namespaces) and one
private platform with the call-flow and call-history services for the whole session; real
SIP phones (baresip) and simulated callers per test."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from scripts.asterisk import Instance, build, why_not_runnable
from tests.media.conftest import media_platform
from tests.support import Platform, free_port
from tests.telephony.baresip import PhoneFactory
from tests.telephony.helpers import AriProbe, wait_ready

QUEUE_CALL_LIMIT = 8


@pytest.fixture(scope="session")
def asterisk() -> Iterator[Instance]:
    reason = why_not_runnable()
    assert reason is None, f"the telephony tests need Asterisk here: {reason}"
    build()
    instance = Instance(
        f"test-{uuid.uuid4().hex[:8]}",
        sip_port=free_port(),
        tls_port=free_port(),
        ari_port=free_port(),
        ami_port=free_port(),
        language="en",
    )
    instance.start()
    yield instance
    instance.remove()


@dataclass
class Telephony:
    platform: Platform
    asterisk: Instance
    work: Path

    @property
    def callflow(self) -> Any:
        return self.platform.services["callflow"]


@pytest.fixture(scope="session")
def telephony(asterisk: Instance) -> Iterator[Telephony]:
    work = Path(tempfile.mkdtemp(prefix="sb-telephony-"))
    sounds = asterisk.home / "sounds"
    sounds.mkdir(parents=True, exist_ok=True)
    callflow_env = {
        "SB_CALLFLOW_ARI_URL": f"http://127.0.0.1:{asterisk.ari_port}",
        "SB_CALLFLOW_ARI_USER": asterisk.ari_user,
        "SB_CALLFLOW_ARI_PASSWORD": asterisk.ari_password,
        "SB_CALLFLOW_AMI_PORT": str(asterisk.ami_port),
        "SB_CALLFLOW_AMI_USER": asterisk.ami_user,
        "SB_CALLFLOW_AMI_PASSWORD": asterisk.ami_password,
        "SB_CALLFLOW_REGISTRATION_POLL_INTERVAL": "1",
        "SB_CALLFLOW_QUEUE_CALL_LIMIT": str(QUEUE_CALL_LIMIT),
        "SB_CALLFLOW_SOUNDS_DIR": str(sounds),
        "SB_CALLFLOW_ASTERISK_SOUNDS_DIR": f"{asterisk.home_in_root}/sounds",
    }
    callflow_env["SB_CALLFLOW_RECORDINGS_DIR"] = str(asterisk.home / "state/spool/recording")
    with media_platform(work, "sb-tel", request_timeout="5", callflow_env=callflow_env) as platform:
        yield Telephony(platform, asterisk, work)
    shutil.rmtree(work, ignore_errors=True)


@pytest.fixture(scope="session")
async def probe(asterisk: Instance) -> AsyncIterator[AriProbe]:
    probe = await AriProbe(asterisk).start()
    yield probe
    await probe.stop()


@pytest.fixture
async def phones(asterisk: Instance) -> AsyncIterator[PhoneFactory]:
    factory = PhoneFactory(asterisk)
    yield factory
    await factory.stop_all()


@dataclass
class TenantApi:
    tenant_id: str
    domain: str
    client: httpx.AsyncClient

    async def employee(self, number: str, **fields: Any) -> dict[str, Any]:
        body = {"name": f"Employee {number}", "number": number, "sip_password": PASSWORD, **fields}
        response = await self.client.post(f"/v1/tenants/{self.tenant_id}/employees", json=body)
        assert response.status_code == 201, response.text
        result: dict[str, Any] = response.json()
        return result

    async def create(self, kind: str, body: dict[str, Any]) -> dict[str, Any]:
        response = await self.client.post(f"/v1/tenants/{self.tenant_id}/{kind}", json=body)
        assert response.status_code == 201, response.text
        result: dict[str, Any] = response.json()
        return result

    async def update(self, kind: str, entity: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
        response = await self.client.patch(
            f"/v1/tenants/{self.tenant_id}/{kind}/{entity['id']}",
            json={"revision": entity["revision"], **changes},
        )
        assert response.status_code == 200, response.text
        result: dict[str, Any] = response.json()
        return result

    async def calls(self, query: str, legs: int = 1, timeout: float = 15) -> list[dict[str, Any]]:
        """Call history groups matching ``query`` once at least ``legs`` legs arrived."""
        deadline = time.monotonic() + timeout
        items: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            response = await self.client.get(f"/v1/tenants/{self.tenant_id}/calls", params={"q": query})
            assert response.status_code == 200, response.text
            items = response.json()["items"]
            if sum(len(group["legs"]) for group in items) >= legs:
                return items
            await asyncio.sleep(0.3)
        raise AssertionError(f"call history for {query!r}: {items}")


PASSWORD = "Sw1tch-board_Pass"


@pytest.fixture
async def tenant(telephony: Telephony) -> AsyncIterator[TenantApi]:
    async with tenant_api(telephony) as api:
        yield api


class tenant_api:
    """A new tenant with its own SIP domain and an admin key, as an async context."""

    def __init__(self, telephony: Telephony, **settings: Any) -> None:
        self.telephony = telephony
        self.settings = settings

    async def __aenter__(self) -> TenantApi:
        platform = self.telephony.platform
        try:
            await wait_ready(self.telephony.callflow.base_url)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{self.telephony.callflow.log()[-3000:]}") from None
        tenant_id = "t" + uuid.uuid4().hex[:10]
        domain = f"{tenant_id}.pbx.test"
        async with httpx.AsyncClient(
            base_url=platform.url, headers={"Authorization": f"Bearer {platform.operator_key}"}, timeout=10
        ) as operator:
            body = {
                "id": tenant_id,
                "name": tenant_id,
                "sip_domain": domain,
                "settings": {"prompt_language": "en", **self.settings},
            }
            response = await operator.post("/v1/tenants", json=body)
            assert response.status_code == 201, response.text
            key = await operator.post(f"/v1/tenants/{tenant_id}/api-keys", json={"name": "admin"})
            assert key.status_code == 201, key.text
        self.client = httpx.AsyncClient(
            base_url=platform.url, headers={"Authorization": f"Bearer {key.json()['key']}"}, timeout=15
        )
        return TenantApi(tenant_id, domain, self.client)

    async def __aexit__(self, *exc: object) -> None:
        await self.client.aclose()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """A failed telephony test shows the end of the call-flow service's and Asterisk's logs."""
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    if report.failed and "telephony" in getattr(item, "funcargs", {}):
        bed: Telephony = item.funcargs["telephony"]  # type: ignore[attr-defined]
        report.sections.append(("callflow log", bed.callflow.log()[-6000:]))
        report.sections.append(("asterisk log", bed.asterisk.tail(60)))
