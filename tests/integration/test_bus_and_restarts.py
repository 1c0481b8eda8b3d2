"""Bus behaviour on a real nats-server, and what survives restarts: structured error replies
(never a timeout), request subjects outside every stream, the config service and nats-server
restarted under a running gateway, 503 while the config service is down."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import httpx
import nats
import pytest
from switchboard_contracts.subjects import CONFIG_EVENTS_STREAM

from tests.conftest import make_tenant
from tests.support import Platform, http_ok, wait_for


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    """A private platform (own nats-server, config service, gateway) that tests may restart."""
    platform = Platform(tmp_path_factory.mktemp("platform"), request_timeout="1").start()
    yield platform
    platform.stop()


def client(platform: Platform, key: str = Platform.OPERATOR_KEY) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=platform.url, headers={"Authorization": f"Bearer {key}"}, timeout=10)


async def test_bad_requests_get_structured_replies(platform: Platform) -> None:
    server = platform.nats
    nc = await nats.connect(server.url)
    try:

        async def ask(subject: str, payload: bytes) -> dict[str, object]:
            reply = await nc.request(subject, payload, timeout=2)
            return json.loads(reply.data)  # type: ignore[no-any-return]

        garbage = await ask("rpc.config.acme.employee.create", b"not json at all")
        assert garbage["ok"] is False
        assert garbage["error"]["code"] == "validation"  # type: ignore[index]
        invalid = await ask("rpc.config.acme.employee.create",
                            json.dumps({"tenant_id": "acme", "data": {"name": "x", "number": "1"}}).encode())  # fmt: skip
        assert invalid["error"]["field"] == "number"  # type: ignore[index]
        crossed = await ask("rpc.config.acme.employee.list", json.dumps({"tenant_id": "other"}).encode())
        assert crossed["error"]["code"] == "forbidden"  # type: ignore[index]
        unknown = await ask("rpc.config.nobody.employee.list", json.dumps({"tenant_id": "nobody"}).encode())
        assert unknown["error"]["code"] == "not_found"  # type: ignore[index]
        # request subjects are outside every stream, so the handler (not a PubAck) answers
        info = await nc.jetstream().stream_info(CONFIG_EVENTS_STREAM)
        assert all(not s.startswith("rpc") for s in info.config.subjects or [])
        streams = await nc.jetstream().streams_info()
        for stream in streams:
            for subject in stream.config.subjects or []:
                assert not subject.startswith(("rpc.", ">", "*")), (stream.config.name, subject)
    finally:
        await nc.close()


async def test_everything_survives_restarts(platform: Platform) -> None:
    server, config = platform.nats, platform.services["config"]
    async with client(platform) as operator:
        tenant, key = await make_tenant(operator)
    async with client(platform, key) as api:
        created = await api.post(f"/v1/tenants/{tenant}/employees", json={"name": "Ivan", "number": "101"})
        assert created.status_code == 201
        password = created.json()["sip_password"]
        await api.post(
            f"/v1/tenants/{tenant}/queues", json={"name": "Sales", "number": "200", "agents": ["101"]}
        )

        config.restart()
        listed = await api.get(f"/v1/tenants/{tenant}/queues")
        assert [q["agents"] for q in listed.json()["items"]] == [["101"]]

        server.restart()  # same port and store: the gateway and config service reconnect
        gateway_ready = platform.url + "/readyz"
        wait_for(lambda: http_ok(gateway_ready) and http_ok(config.health_url), 20, "reconnect")
        deadline = time.monotonic() + 20
        while True:
            again = await api.get(f"/v1/tenants/{tenant}/employees/{created.json()['id']}/sip-password")
            if again.status_code == 200 or time.monotonic() > deadline:
                break
        assert again.status_code == 200, again.text
        assert again.json()["sip_password"] == password
        duplicate = await api.post(
            f"/v1/tenants/{tenant}/conference-rooms", json={"name": "R", "number": "101"}
        )
        assert duplicate.status_code == 409  # the number claims survived too


async def test_503_while_config_service_is_down(platform: Platform) -> None:
    config = platform.services["config"]
    async with client(platform) as operator:
        tenant, key = await make_tenant(operator)
    config.stop()
    try:
        async with client(platform, key) as api:
            started = time.monotonic()
            response = await api.get(f"/v1/tenants/{tenant}/employees")
            assert response.status_code == 503
            assert time.monotonic() - started < 5
            error = response.json()["error"]
            assert error["code"] == "unavailable"
            assert "config service" in error["message"]
            assert response.headers["Retry-After"] == "2"
    finally:
        config.start()
    async with client(platform, key) as api:
        assert (await api.get(f"/v1/tenants/{tenant}/employees")).status_code == 200
