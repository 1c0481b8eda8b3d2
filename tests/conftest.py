"""Fixtures shared by the whole suite: one nats-server, the config service and the gateway
as real processes on free loopback ports."""

from __future__ import annotations

import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support import NatsServer, Platform, ServiceProcess


@pytest.fixture(scope="session")
def platform() -> Iterator[Platform]:
    work = Path(tempfile.mkdtemp(prefix="sb-test-"))
    platform = Platform(work, request_timeout="1.5").start()
    yield platform
    platform.stop()


@pytest.fixture(scope="session")
def nats_server(platform: Platform) -> NatsServer:
    return platform.nats


@pytest.fixture(scope="session")
def config_service(platform: Platform) -> ServiceProcess:
    return platform.services["config"]


@pytest.fixture(scope="session")
def gateway(platform: Platform) -> ServiceProcess:
    return platform.services["gateway"]


@pytest.fixture(scope="session")
def operator_key(platform: Platform) -> str:
    return platform.operator_key


@pytest.fixture
async def operator(gateway: ServiceProcess, operator_key: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(
        base_url=gateway.base_url,
        headers={"Authorization": f"Bearer {operator_key}"},
        timeout=10,
    ) as client:
        yield client


def unique_tenant() -> str:
    return "t" + uuid.uuid4().hex[:10]


async def make_tenant(operator: httpx.AsyncClient, **overrides: Any) -> tuple[str, str]:
    """Create a tenant and a key for it; returns (tenant id, key)."""
    tenant_id = overrides.pop("id", unique_tenant())
    body = {
        "id": tenant_id,
        "name": f"Tenant {tenant_id}",
        "sip_domain": f"{tenant_id}.pbx.test",
        **overrides,
    }
    response = await operator.post("/v1/tenants", json=body)
    assert response.status_code == 201, response.text
    key = await operator.post(f"/v1/tenants/{tenant_id}/api-keys", json={"name": "admin"})
    assert key.status_code == 201, key.text
    return tenant_id, key.json()["key"]


@pytest.fixture
async def tenant_client(
    gateway: ServiceProcess, operator: httpx.AsyncClient
) -> AsyncIterator[tuple[str, httpx.AsyncClient]]:
    tenant_id, key = await make_tenant(operator)
    async with httpx.AsyncClient(
        base_url=gateway.base_url,
        headers={"Authorization": f"Bearer {key}"},
        timeout=10,
    ) as client:
        yield tenant_id, client
