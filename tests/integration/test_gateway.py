"""The gateway as a tenant's admin and the operator use it: REST over real processes (gateway,
config service, nats-server)."""

from __future__ import annotations

import asyncio
import hashlib
import json

import httpx
import nats

from tests.conftest import make_tenant, unique_tenant
from tests.support import NatsServer, ServiceProcess

PASSWORD = "Str0ng-Pass{1}"


async def test_admin_builds_a_tenant(tenant_client: tuple[str, httpx.AsyncClient]) -> None:
    tenant, api = tenant_client
    base = f"/v1/tenants/{tenant}"
    anna = await api.post(f"{base}/employees", json={"name": "Белкина Анна", "number": "101",
                                                      "mobile": "+79255283744", "email": "belkina@acme.ru"})  # fmt: skip
    assert anna.status_code == 201, anna.text
    assert anna.headers["ETag"] == str(anna.json()["revision"])
    generated = anna.json()["sip_password"]
    assert len(generated) >= 12
    oleg = await api.post(
        f"{base}/employees", json={"name": "Oleg", "number": "102", "sip_password": PASSWORD}
    )
    assert oleg.status_code == 201
    queue = await api.post(f"{base}/queues", json={"name": "Sales", "number": "200", "agents": ["101", "102"],
                                                   "strategy": "leastrecent"})  # fmt: skip
    assert queue.status_code == 201, queue.text
    ivr = await api.post(f"{base}/ivr-menus", json={"name": "Main", "number": "300", "default_target": "200",
                                                     "actions": [{"digits": "1", "target": "200"}]})  # fmt: skip
    assert ivr.status_code == 201, ivr.text
    room = await api.post(f"{base}/conference-rooms", json={"name": "Daily", "number": "700", "pin": "4321"})
    assert room.status_code == 201, room.text

    listed = (await api.get(f"{base}/employees", params={"search": "белк"})).json()
    assert [e["number"] for e in listed["items"]] == ["101"]
    assert "sip_password" not in listed["items"][0]
    assert listed["items"][0]["registered"] is None
    by_name = (await api.get(f"{base}/employees", params={"sort": "name", "order": "desc"})).json()
    assert [e["name"] for e in by_name["items"]] == ["Белкина Анна", "Oleg"]
    page = (await api.get(f"{base}/employees", params={"limit": 1, "offset": 1})).json()
    assert page["total"] == 2
    assert [e["number"] for e in page["items"]] == ["102"]
    shown = await api.get(f"{base}/employees/{anna.json()['id']}/sip-password")
    assert shown.json() == {"sip_password": generated}

    # partial update with the revision read
    patched = await api.patch(f"{base}/employees/{oleg.json()['id']}",
                              json={"routing": {"ring_time": 20}, "revision": oleg.json()["revision"]})  # fmt: skip
    assert patched.status_code == 200, patched.text
    assert patched.json()["routing"]["ring_time"] == 20
    assert patched.json()["name"] == "Oleg"
    # If-Match works too; the old revision is refused
    stale = await api.patch(f"{base}/employees/{oleg.json()['id']}", json={"name": "X"},
                            headers={"If-Match": str(oleg.json()["revision"])})  # fmt: skip
    assert stale.status_code == 409
    assert stale.json()["error"]["code"] == "stale_revision"
    # tenant settings (star codes) are the tenant admin's to change
    current = (await api.get(base)).json()
    settings = await api.patch(base, json={"settings": {"star_codes": {"blind_transfer": "*2"}},
                                           "revision": current["revision"]})  # fmt: skip
    assert settings.status_code == 200, settings.text
    assert settings.json()["settings"]["star_codes"]["blind_transfer"] == "*2"
    assert settings.json()["settings"]["star_codes"]["attended_transfer"] == "##"


async def test_errors_name_the_problem(tenant_client: tuple[str, httpx.AsyncClient]) -> None:
    tenant, api = tenant_client
    base = f"/v1/tenants/{tenant}"
    first = await api.post(f"{base}/employees", json={"name": "Ivan", "number": "101"})
    assert first.status_code == 201

    dup = await api.post(f"{base}/conference-rooms", json={"name": "Room", "number": "101"})
    assert dup.status_code == 409
    assert dup.json()["error"]["field"] == "number"
    assert "Ivan" in dup.json()["error"]["message"]

    weak = await api.post(
        f"{base}/employees", json={"name": "W", "number": "102", "sip_password": "short1A@"}
    )
    assert weak.status_code == 422
    assert weak.json()["error"]["field"] == "sip_password"
    assert "longer than 8" in weak.json()["error"]["message"]

    for body, field in [
        ({"name": "W", "number": "1x"}, "number"),
        ({"name": "W", "number": "103", "email": "not-an-email"}, "email"),
        ({"name": "W", "number": "103", "routing": {"ring_time": 500}}, "routing.ring_time"),
        (
            {"name": "W", "number": "103", "advanced": {"pjsip_extra": "[transport]\nx=1"}},
            "advanced.pjsip_extra",
        ),
        (
            {"name": "W", "number": "103", "advanced": {"network_filter": ["10.0.0.0/99"]}},
            "advanced.network_filter",
        ),
        ({"name": "W", "number": "103", "colour": "red"}, "colour"),
        ({"name": "", "number": "103"}, "name"),
    ]:
        response = await api.post(f"{base}/employees", json=body)
        assert response.status_code == 422, (body, response.text)
        assert response.json()["error"]["field"] == field, response.text

    queue = await api.post(f"{base}/queues", json={"name": "Sales", "number": "200", "agents": ["101"]})
    used = await api.delete(f"{base}/employees/{first.json()['id']}")
    assert used.status_code == 409
    assert "queue 'Sales' (200)" in used.json()["error"]["message"]
    assert queue.status_code == 201

    missing = await api.get(f"{base}/employees/0123456789abcdef0123456789abcdef")
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "not_found"
    bad_json = await api.post(
        f"{base}/employees", content=b"{nope", headers={"content-type": "application/json"}
    )
    assert bad_json.status_code == 400
    no_revision = await api.patch(f"{base}/employees/{first.json()['id']}", json={"name": "Ivan II"})
    assert no_revision.status_code == 428
    assert no_revision.json()["error"]["field"] == "revision"
    bad_sort = await api.get(f"{base}/employees", params={"sort": "sip_password"})
    assert bad_sort.status_code == 422
    assert bad_sort.json()["error"]["field"] == "sort"
    bad_id = await api.get(f"{base}/employees/..%2F..%2Fetc")
    assert bad_id.status_code in (404, 422)


async def test_keys_are_required_and_scoped(gateway: ServiceProcess, operator: httpx.AsyncClient) -> None:
    url = gateway.base_url
    tenant, key = await make_tenant(operator)
    async with httpx.AsyncClient(base_url=url) as anonymous:
        assert (await anonymous.get(f"/v1/tenants/{tenant}/employees")).status_code == 401
        wrong = await anonymous.get(
            f"/v1/tenants/{tenant}/employees", headers={"Authorization": "Bearer sbk_0_x"}
        )
        assert wrong.status_code == 401
        forged = key[:-4] + ("AAAA" if not key.endswith("AAAA") else "BBBB")
        assert (await anonymous.get(f"/v1/tenants/{tenant}/employees",
                                    headers={"Authorization": f"Bearer {forged}"})).status_code == 401  # fmt: skip
        # X-API-Key works as well as Bearer
        assert (
            await anonymous.get(f"/v1/tenants/{tenant}/employees", headers={"X-API-Key": key})
        ).status_code == 200
    async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {key}"}) as api:
        assert (await api.get("/v1/tenants")).status_code == 403
        assert (await api.post("/v1/tenants", json={"id": unique_tenant(), "name": "x",
                                                    "sip_domain": "x.example.com"})).status_code == 403  # fmt: skip
        assert (await api.post(f"/v1/tenants/{tenant}/api-keys")).status_code == 403
        assert (await api.delete(f"/v1/tenants/{tenant}")).status_code == 403
        current = (await api.get(f"/v1/tenants/{tenant}")).json()
        rename = await api.patch(f"/v1/tenants/{tenant}", json={"sip_domain": "stolen.example.com",
                                                                "revision": current["revision"]})  # fmt: skip
        assert rename.status_code == 403
    # revoking a key locks it out
    keys = (await operator.get(f"/v1/tenants/{tenant}/api-keys")).json()
    assert [k["name"] for k in keys] == ["admin"]
    assert "secret_sha256" not in keys[0]
    assert (await operator.delete(f"/v1/tenants/{tenant}/api-keys/{keys[0]['key_id']}")).status_code == 204
    async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {key}"}) as api:
        assert (await api.get(f"/v1/tenants/{tenant}/employees")).status_code == 401


async def test_keys_stored_hashed(nats_server: NatsServer, operator: httpx.AsyncClient) -> None:
    tenant, key = await make_tenant(operator)
    _, key_id, secret = key.split("_", 2)
    nc = await nats.connect(nats_server.url)
    try:
        kv = await nc.jetstream().key_value("sb_gateway_keys")
        names = await kv.keys()
        assert f"key.{key_id}" in names  # this key's record is there...
        for name in names:
            value = (await kv.get(name)).value or b""
            assert secret.encode() not in value  # ...and no record holds a secret
            assert key.encode() not in value
        record = json.loads((await kv.get(f"key.{key_id}")).value or b"{}")
        assert record["tenant_id"] == tenant
        assert record["secret_sha256"] == hashlib.sha256(secret.encode()).hexdigest()
    finally:
        await nc.close()


async def test_tenant_isolation_matrix(gateway: ServiceProcess, operator: httpx.AsyncClient) -> None:
    """Every endpoint under /v1/tenants/{tenant_id}, called with tenant A's key on tenant B's
    path, is refused; A's key with A's path and B's object ids finds nothing."""
    url = gateway.base_url
    tenant_a, key_a = await make_tenant(operator)
    tenant_b, key_b = await make_tenant(operator)
    ids_b: dict[str, str] = {}
    async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {key_b}"}) as api_b:
        for path, body in [
            ("employees", {"name": "B emp", "number": "101"}),
            ("queues", {"name": "B queue", "number": "200"}),
            ("ivr-menus", {"name": "B ivr", "number": "300", "default_target": "101"}),
            ("conference-rooms", {"name": "B room", "number": "700"}),
        ]:
            created = await api_b.post(f"/v1/tenants/{tenant_b}/{path}", json=body)
            assert created.status_code == 201, created.text
            ids_b[path] = created.json()["id"]
    spec = (await operator.get("/openapi.json")).json()
    routes = [(p, m) for p, methods in spec["paths"].items() if "{tenant_id}" in p for m in methods]
    assert len(routes) >= 25  # every entity kind's CRUD plus tenants and keys

    def fill(path: str, tenant: str) -> str:
        entity_kind = path.split("/")[4] if path.count("/") > 3 else ""
        return (
            path.replace("{tenant_id}", tenant)
            .replace("{entity_id}", ids_b.get(entity_kind, "0" * 32))
            .replace("{key_id}", "0" * 16)
        )

    checked = 0
    async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {key_a}"}) as api_a:
        for path, method in routes:
            body = {} if method in ("post", "patch", "put") else None
            cross = await api_a.request(method.upper(), fill(path, tenant_b), json=body)
            assert cross.status_code == 403, (method, path, cross.status_code, cross.text)
            if "{entity_id}" in path:  # A's own path with B's object id: nothing there
                foreign = await api_a.request(method.upper(), fill(path, tenant_a), json=body)
                assert foreign.status_code in (404, 428), (method, path, foreign.status_code, foreign.text)
            checked += 1
        # lists of A never show B's objects
        for kind in ids_b:
            listed = (await api_a.get(f"/v1/tenants/{tenant_a}/{kind}")).json()
            assert listed["items"] == []
    assert checked == len(routes)
    # and B's objects are all still there
    async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {key_b}"}) as api_b:
        for kind, entity_id in ids_b.items():
            assert (await api_b.get(f"/v1/tenants/{tenant_b}/{kind}/{entity_id}")).status_code == 200


async def test_secrets_never_logged(
    gateway: ServiceProcess, config_service: ServiceProcess, tenant_client: tuple[str, httpx.AsyncClient]
) -> None:
    tenant, api = tenant_client
    response = await api.post(f"/v1/tenants/{tenant}/employees",
                              json={"name": "Secretive", "number": "150", "sip_password": "Log-Me-Not{42}x"})  # fmt: skip
    assert response.status_code == 201
    bad = await api.post(f"/v1/tenants/{tenant}/employees",
                         json={"name": "Weak", "number": "151", "sip_password": "Password-Secret{9}"})  # fmt: skip
    assert bad.status_code == 422
    await asyncio.sleep(0.2)
    for log in (gateway.log(), config_service.log()):
        assert "Log-Me-Not{42}x" not in log
        assert "Password-Secret{9}" not in log
        assert api.headers["Authorization"].split()[1] not in log


async def test_health_endpoints(gateway: ServiceProcess, config_service: ServiceProcess) -> None:
    async with httpx.AsyncClient() as client:
        ready = await client.get(gateway.base_url + "/readyz")
        assert ready.status_code == 200
        assert ready.json()["checks"] == {"nats": True, "key_store": True}
        assert (await client.get(config_service.health_url)).status_code == 200
        assert (await client.get(config_service.health_url.replace("readyz", "healthz"))).status_code == 200


async def test_openapi_docs(gateway: ServiceProcess) -> None:
    async with httpx.AsyncClient() as client:
        docs = await client.get(gateway.base_url + "/docs")
        assert docs.status_code == 200
        spec = (await client.get(gateway.base_url + "/openapi.json")).json()
    assert "/v1/tenants/{tenant_id}/ivr-menus/{entity_id}" in spec["paths"]
    assert json.dumps(spec).count("sip_password") > 0
