"""Fixtures shared by the whole suite: one nats-server, the config service and the gateway
as real processes on free loopback ports."""

from __future__ import annotations

import secrets
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.fernet import Fernet

from tests.support import NatsServer, ServiceProcess, free_port


@pytest.fixture(scope="session")
def workdir() -> Path:
    return Path(tempfile.mkdtemp(prefix="sb-test-"))


@pytest.fixture(scope="session")
def nats_server() -> Iterator[NatsServer]:
    server = NatsServer().start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def config_secret_key() -> str:
    return Fernet.generate_key().decode()


@pytest.fixture(scope="session")
def config_service(
    nats_server: NatsServer, workdir: Path, config_secret_key: str
) -> Iterator[ServiceProcess]:
    port = free_port()
    service = ServiceProcess(
        "switchboard-config",
        {
            "SB_CONFIG_NATS_URL": nats_server.url,
            "SB_CONFIG_HTTP_PORT": str(port),
            "SB_CONFIG_SECRET_KEY": config_secret_key,
        },
        f"http://127.0.0.1:{port}/readyz",
        workdir / "config.log",
    ).start()
    yield service
    service.stop()


@pytest.fixture(scope="session")
def operator_key() -> str:
    return "op_" + secrets.token_urlsafe(24)


@pytest.fixture(scope="session")
def gateway(
    nats_server: NatsServer, config_service: ServiceProcess, workdir: Path, operator_key: str
) -> Iterator[ServiceProcess]:
    port = free_port()
    service = ServiceProcess(
        "switchboard-gateway",
        {
            "SB_GATEWAY_NATS_URL": nats_server.url,
            "SB_GATEWAY_HTTP_PORT": str(port),
            "SB_GATEWAY_OPERATOR_KEY": operator_key,
            "SB_GATEWAY_REQUEST_TIMEOUT": "1.5",
        },
        f"http://127.0.0.1:{port}/readyz",
        workdir / "gateway.log",
    ).start()
    service.base_url = f"http://127.0.0.1:{port}"  # type: ignore[attr-defined]
    yield service
    service.stop()


@pytest.fixture
async def operator(gateway: ServiceProcess, operator_key: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(
        base_url=gateway.base_url,  # type: ignore[attr-defined]
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
        base_url=gateway.base_url,  # type: ignore[attr-defined]
        headers={"Authorization": f"Bearer {key}"},
        timeout=10,
    ) as client:
        yield tenant_id, client
