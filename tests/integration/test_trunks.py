"""The tenant's SIP trunk, its incoming routes and the employees' device status, through the
gateway over real processes (gateway, config service, nats-server)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import nats
import pytest
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.js.api import DeliverPolicy
from pydantic import BaseModel
from switchboard_config.sealing import Sealer
from switchboard_config.service import ConfigService
from switchboard_config.store import KvStore
from switchboard_contracts.subjects import Change, callflow_registrations, config_event, config_snapshot

from tests.conftest import make_tenant
from tests.support import NatsServer, Platform, ServiceProcess

SECRET = "Tr0nk-Secret{77}"
TRUNK = {
    "host": "SIP.Provider.Example",
    "port": 5070,
    "transport": "tcp",
    "username": "acme-trunk",
    "password": SECRET,
    "register": True,
    "caller_id": "+74951234567",
    "strip_digits": 1,
    "prefix": "+7",
}


class NoEvents:
    """For a config service that only reads: it must publish nothing."""

    async def publish(self, subject: str, event: BaseModel, msg_id: str) -> None:
        raise AssertionError("a read-only service published an event")

    async def last_sequence(self) -> int:
        return 0


@pytest.fixture
async def bus(nats_server: NatsServer) -> AsyncIterator[NatsClient]:
    client = await nats.connect(nats_server.url)
    yield client
    await client.close()


async def patch_settings(api: httpx.AsyncClient, tenant: str, settings: dict[str, Any]) -> httpx.Response:
    current = await api.get(f"/v1/tenants/{tenant}")
    assert current.status_code == 200, current.text
    return await api.patch(
        f"/v1/tenants/{tenant}", json={"settings": settings, "revision": current.json()["revision"]}
    )


async def test_trunk_password_is_sealed_and_never_shown(
    tenant_client: tuple[str, httpx.AsyncClient],
    operator: httpx.AsyncClient,
    bus: NatsClient,
    gateway: ServiceProcess,
    config_service: ServiceProcess,
) -> None:
    tenant, api = tenant_client
    js = bus.jetstream()
    events = await js.subscribe(
        config_event(tenant, "tenant", Change.UPDATED),
        ordered_consumer=True,
        deliver_policy=DeliverPolicy.NEW,
    )
    patched = await patch_settings(api, tenant, {"trunk": TRUNK})
    assert patched.status_code == 200, patched.text
    assert SECRET not in patched.text
    trunk = patched.json()["settings"]["trunk"]
    assert "password" not in trunk and trunk["password_set"] is True
    assert trunk["host"] == "sip.provider.example" and trunk["register"] is True
    assert {k: trunk[k] for k in ("port", "transport", "username", "caller_id", "strip_digits", "prefix")} == {
        "port": 5070, "transport": "tcp", "username": "acme-trunk", "caller_id": "+74951234567",
        "strip_digits": 1, "prefix": "+7",
    }  # fmt: skip
    assert patched.headers["ETag"] == str(patched.json()["revision"])

    read = await api.get(f"/v1/tenants/{tenant}")
    assert SECRET not in read.text and read.json()["settings"]["trunk"]["password_set"] is True
    listed = await operator.get("/v1/tenants", params={"limit": 1000})
    assert listed.status_code == 200 and SECRET not in listed.text
    mine = [t for t in listed.json()["items"] if t["id"] == tenant]
    assert mine[0]["settings"]["trunk"]["password_set"] is True

    # sealed at rest in the config service's bucket
    kv = await js.key_value("sb_config")
    stored = (await kv.get(f"tenant.{tenant}")).value or b""
    assert SECRET.encode() not in stored
    assert json.loads(stored)["settings"]["trunk"]["password"].startswith("fernet:")

    # a (re)started config service opens it again
    store = KvStore("sb_config")
    await store.open(js)
    restarted = ConfigService(store, NoEvents(), Sealer(Platform.CONFIG_SECRET_KEY))
    await restarted.load()
    loaded = restarted.get_tenant(tenant).settings.trunk
    assert loaded is not None and loaded.password is not None
    assert loaded.password.get_secret_value() == SECRET

    # the bus (snapshot and change event) carries it for the call-flow service
    reply = await bus.request(config_snapshot(tenant), json.dumps({"tenant_id": tenant}).encode(), timeout=3)
    snapshot = json.loads(reply.data)
    assert snapshot["ok"], snapshot
    assert snapshot["result"]["tenant"]["settings"]["trunk"]["password"] == SECRET
    event = json.loads((await events.next_msg(timeout=3)).data)
    await events.unsubscribe()
    assert event["entity"]["settings"]["trunk"]["password"] == SECRET

    # a partial change keeps the password; null removes it
    port_only = await patch_settings(api, tenant, {"trunk": {"port": 5080}})
    assert port_only.status_code == 200, port_only.text
    assert port_only.json()["settings"]["trunk"]["port"] == 5080
    assert port_only.json()["settings"]["trunk"]["password_set"] is True
    reply = await bus.request(config_snapshot(tenant), json.dumps({"tenant_id": tenant}).encode(), timeout=3)
    assert json.loads(reply.data)["result"]["tenant"]["settings"]["trunk"]["password"] == SECRET
    needs_password = await patch_settings(api, tenant, {"trunk": {"password": None}})
    assert needs_password.status_code == 422
    assert needs_password.json()["error"]["field"] == "settings.trunk.register"
    removed = await patch_settings(api, tenant, {"trunk": {"password": None, "register": False}})
    assert removed.status_code == 200, removed.text
    assert removed.json()["settings"]["trunk"]["password_set"] is False
    no_trunk = await patch_settings(api, tenant, {"trunk": None})
    assert no_trunk.status_code == 200 and no_trunk.json()["settings"]["trunk"] is None

    for body, field in [
        ({"trunk": {**TRUNK, "port": 70000}}, "settings.trunk.port"),
        ({"trunk": {**TRUNK, "host": "not a host"}}, "settings.trunk.host"),
        ({"trunk": {**TRUNK, "prefix": "9x"}}, "settings.trunk.prefix"),
        ({"trunk": {"port": 5060}}, "settings.trunk.host"),  # no trunk yet: host is required
    ]:
        bad = await patch_settings(api, tenant, body)
        assert bad.status_code == 422, (body, bad.text)
        assert bad.json()["error"]["field"] == field, bad.text
        assert SECRET not in bad.text

    await asyncio.sleep(0.2)
    for log in (gateway.log(), config_service.log()):
        assert SECRET not in log


async def test_operator_creates_a_tenant_with_a_trunk(operator: httpx.AsyncClient) -> None:
    tenant, _ = await make_tenant(operator, settings={"trunk": TRUNK})
    shown = await operator.get(f"/v1/tenants/{tenant}")
    assert SECRET not in shown.text
    assert shown.json()["settings"]["trunk"]["password_set"] is True
    # a new tenant has no numbers for incoming routes to go to
    refused = await operator.post(
        "/v1/tenants",
        json={"id": tenant + "x", "name": "X", "sip_domain": f"{tenant}x.pbx.test",
              "settings": {"incoming": {"default_target": "101"}}},
    )  # fmt: skip
    assert refused.status_code == 422, refused.text
    assert refused.json()["error"]["field"] == "settings.incoming.default_target"


async def test_incoming_routes_go_to_tenant_numbers(tenant_client: tuple[str, httpx.AsyncClient]) -> None:
    tenant, api = tenant_client
    base = f"/v1/tenants/{tenant}"
    ivan = (await api.post(f"{base}/employees", json={"name": "Ivan", "number": "101"})).json()
    queue = (await api.post(f"{base}/queues", json={"name": "Sales", "number": "200"})).json()
    room = await api.post(f"{base}/conference-rooms", json={"name": "Daily", "number": "700"})
    assert room.status_code == 201

    missing = await patch_settings(
        api, tenant, {"incoming": {"routes": [{"did": "74951234567", "target": "101"},
                                              {"did": "74957654321", "target": "999"}]}}
    )  # fmt: skip
    assert missing.status_code == 422, missing.text
    assert missing.json()["error"]["field"] == "settings.incoming.routes.1.target"
    assert "999" in missing.json()["error"]["message"]
    missing_default = await patch_settings(api, tenant, {"incoming": {"default_target": "998"}})
    assert missing_default.status_code == 422
    assert missing_default.json()["error"]["field"] == "settings.incoming.default_target"
    external = await patch_settings(api, tenant, {"incoming": {"default_target": "+79161234567"}})
    assert external.status_code == 422
    assert external.json()["error"]["field"] == "settings.incoming.default_target"
    twice = await patch_settings(
        api, tenant, {"incoming": {"routes": [{"did": "74951234567", "target": "101"},
                                              {"did": "+74951234567", "target": "200"}]}}
    )  # fmt: skip
    assert twice.status_code == 422
    assert twice.json()["error"]["field"] == "settings.incoming.routes"
    assert "74951234567 appears twice" in twice.json()["error"]["message"]

    routes = [{"did": "74951234567", "target": "101"}, {"did": "+74957654321", "target": "700"}]
    ok = await patch_settings(api, tenant, {"incoming": {"routes": routes, "default_target": "200"}})
    assert ok.status_code == 200, ok.text
    assert ok.json()["settings"]["incoming"] == {"routes": routes, "default_target": "200"}

    # deleting what a route points at is refused, naming the route
    used = await api.delete(f"{base}/employees/{ivan['id']}")
    assert used.status_code == 409, used.text
    error = used.json()["error"]
    assert error["code"] == "conflict"
    assert "employee 'Ivan' (101)" in error["message"]
    assert "incoming route of DID 74951234567 in settings.incoming.routes.0.target" in error["message"]
    assert error["details"] == [
        {"kind": "tenant", "id": tenant, "name": f"Tenant {tenant}", "number": None,
         "field": "settings.incoming.routes.0.target"}
    ]  # fmt: skip
    used = await api.delete(f"{base}/queues/{queue['id']}")
    assert used.status_code == 409
    assert "the default incoming route in settings.incoming.default_target" in used.json()["error"]["message"]

    # renumbering: the routes follow
    renumbered = await api.patch(
        f"{base}/employees/{ivan['id']}", json={"number": "111", "revision": ivan["revision"]}
    )
    assert renumbered.status_code == 200, renumbered.text
    incoming = (await api.get(base)).json()["settings"]["incoming"]
    assert incoming["routes"][0] == {"did": "74951234567", "target": "111"}
    queue_renumbered = await api.patch(
        f"{base}/queues/{queue['id']}", json={"number": "201", "revision": queue["revision"]}
    )
    assert queue_renumbered.status_code == 200, queue_renumbered.text
    assert (await api.get(base)).json()["settings"]["incoming"]["default_target"] == "201"

    # without the routes the employee can go
    cleared = await patch_settings(api, tenant, {"incoming": {"routes": [], "default_target": None}})
    assert cleared.status_code == 200, cleared.text
    assert (await api.delete(f"{base}/employees/{ivan['id']}")).status_code == 204


async def test_trunks_and_routes_are_per_tenant(gateway: ServiceProcess, operator: httpx.AsyncClient) -> None:
    tenant_a, key_a = await make_tenant(operator)
    tenant_b, key_b = await make_tenant(operator)
    url = gateway.base_url
    async with (
        httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {key_a}"}) as api_a,
        httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {key_b}"}) as api_b,
    ):
        assert (
            await api_b.post(f"/v1/tenants/{tenant_b}/employees", json={"name": "B", "number": "101"})
        ).status_code == 201
        # B's number 101 is no target for A's routes
        refused = await patch_settings(api_a, tenant_a, {"incoming": {"default_target": "101"}})
        assert refused.status_code == 422
        assert (await patch_settings(api_a, tenant_a, {"trunk": TRUNK})).status_code == 200
        # B sees none of it and cannot change A's
        assert (await api_b.get(f"/v1/tenants/{tenant_b}")).json()["settings"]["trunk"] is None
        assert (await api_b.get(f"/v1/tenants/{tenant_a}")).status_code == 403
        revision = (await api_a.get(f"/v1/tenants/{tenant_a}")).json()["revision"]
        foreign = await api_b.patch(
            f"/v1/tenants/{tenant_a}", json={"settings": {"trunk": None}, "revision": revision}
        )
        assert foreign.status_code == 403
        assert (await api_a.get(f"/v1/tenants/{tenant_a}")).json()["settings"]["trunk"][
            "password_set"
        ] is True
        assert (
            await patch_settings(api_b, tenant_b, {"incoming": {"default_target": "101"}})
        ).status_code == 200


async def test_employee_list_shows_the_device_status(
    tenant_client: tuple[str, httpx.AsyncClient], bus: NatsClient
) -> None:
    tenant, api = tenant_client
    base = f"/v1/tenants/{tenant}"
    ids = {}
    for number in ("101", "102", "103"):
        created = await api.post(f"{base}/employees", json={"name": f"E{number}", "number": number})
        assert created.status_code == 201
        ids[number] = created.json()["id"]

    async def statuses() -> dict[str, bool | None]:
        listed = await api.get(f"{base}/employees")
        assert listed.status_code == 200, listed.text
        return {e["number"]: e["registered"] for e in listed.json()["items"]}

    # nobody answers: unknown
    assert await statuses() == {"101": None, "102": None, "103": None}
    assert (await api.get(f"{base}/employees/{ids['101']}")).json()["registered"] is None

    asked: list[dict[str, Any]] = []

    async def callflow(msg: Msg) -> None:
        request = json.loads(msg.data)
        asked.append(request)
        known = {"101": True, "102": False}
        registered = {n: known[n] for n in request.get("numbers") or known if n in known}
        await msg.respond(
            json.dumps({"ok": True, "result": {"tenant_id": tenant, "registered": registered}}).encode()
        )

    sub = await bus.subscribe(callflow_registrations(tenant), cb=callflow)
    await bus.flush()
    try:
        assert await statuses() == {"101": True, "102": False, "103": None}
        assert len(asked) == 1  # one question per list, not one per employee
        assert asked[0]["tenant_id"] == tenant and sorted(asked[0]["numbers"]) == ["101", "102", "103"]
        one = await api.get(f"{base}/employees/{ids['101']}")
        assert one.json()["registered"] is True
        assert asked[-1]["numbers"] == ["101"]
        searched = await api.get(f"{base}/employees", params={"search": "E102"})
        assert [e["registered"] for e in searched.json()["items"]] == [False]
    finally:
        await sub.unsubscribe()

    # a call-flow service that does not answer in time: unknown, and the list is not held up
    async def never_answers(msg: Msg) -> None:
        return None

    silent = await bus.subscribe(callflow_registrations(tenant), cb=never_answers)
    await bus.flush()
    try:
        started = time.monotonic()
        assert await statuses() == {"101": None, "102": None, "103": None}
        assert time.monotonic() - started < 1.2  # the 0.5 s deadline, not the bus's 1.5 s
    finally:
        await silent.unsubscribe()
