"""Config service rules on the real thing: the service logic in-process over a real
nats-server's key-value bucket and event stream (each test gets its own bucket and tenant)."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
from cryptography.fernet import Fernet
from faststream.nats import NatsBroker
from nats.js.api import ConsumerConfig, DeliverPolicy
from pydantic import ValidationError
from switchboard_config.events import JetStreamEvents, ensure_stream
from switchboard_config.sealing import Sealer
from switchboard_config.service import ConfigService
from switchboard_config.store import KvStore, number_key
from switchboard_contracts.common import ErrorCode, ServiceError, SortOrder
from switchboard_contracts.subjects import EntityKind, config_events_of
from switchboard_contracts.tenants import TenantFields

from tests.conftest import unique_tenant
from tests.support import NatsServer

EMP, QUEUE, IVR, CONF = EntityKind.EMPLOYEE, EntityKind.QUEUE, EntityKind.IVR_MENU, EntityKind.CONFERENCE_ROOM
PASSWORD = "Str0ng-Pass{1}"


@dataclass
class Env:
    broker: NatsBroker
    store: KvStore
    service: ConfigService
    bucket: str
    key: str
    tenant: str

    async def fresh_service(self) -> ConfigService:
        """Another instance on the same bucket: a restarted service, or a second replica."""
        store = KvStore(self.bucket)
        await store.open(self.broker.connection.jetstream())
        service = ConfigService(store, JetStreamEvents(self.broker), Sealer(self.key))
        await service.load()
        return service


@pytest.fixture
async def env(nats_server: NatsServer) -> AsyncIterator[Env]:
    broker = NatsBroker(nats_server.url)
    await broker.connect()
    await ensure_stream(broker)
    bucket = "test_" + uuid.uuid4().hex[:12]
    key = Fernet.generate_key().decode()
    store = KvStore(bucket)
    await store.open(broker.connection.jetstream())
    service = ConfigService(store, JetStreamEvents(broker), Sealer(key))
    await service.load()
    tenant = unique_tenant()
    await service.create_tenant(TenantFields(id=tenant, name="Acme", sip_domain=f"{tenant}.example.com"))
    yield Env(broker, store, service, bucket, key, tenant)
    await broker.connection.jetstream().delete_key_value(bucket)
    await broker.stop()


async def employee(env: Env, number: str, name: str = "", **extra: Any) -> Any:
    data = {"name": name or f"Employee {number}", "number": number, "sip_password": PASSWORD, **extra}
    return await env.service.create(EMP, env.tenant, data)


def error_of(exc: pytest.ExceptionInfo[ServiceError]) -> tuple[ErrorCode, str | None, str]:
    return exc.value.info.code, exc.value.info.field, exc.value.info.message


async def test_number_unique_across_kinds(env: Env) -> None:
    await employee(env, "101", "Ivan")
    with pytest.raises(ServiceError) as exc:
        await env.service.create(QUEUE, env.tenant, {"name": "Sales", "number": "101"})
    code, field, message = error_of(exc)
    assert (code, field) == (ErrorCode.CONFLICT, "number")
    assert "employee 'Ivan' (101)" in message
    # another tenant may use the same number
    other = unique_tenant()
    await env.service.create_tenant(TenantFields(id=other, name="Other", sip_domain=f"{other}.example.com"))
    await env.service.create(EMP, other, {"name": "Also 101", "number": "101"})


async def test_racing_writers_get_the_number_once(env: Env) -> None:
    """Two replicas (separate caches, same bucket) race for one number: exactly one wins."""
    second = await env.fresh_service()
    attempts = [
        svc.create(CONF, env.tenant, {"name": f"Room {i}", "number": "555"})
        for i, svc in enumerate([env.service, second] * 5)
    ]
    results = await asyncio.gather(*attempts, return_exceptions=True)
    winners = [r for r in results if not isinstance(r, BaseException)]
    losers = [r for r in results if isinstance(r, ServiceError)]
    assert len(winners) == 1
    assert len(losers) == 9 and all(e.info.code is ErrorCode.CONFLICT for e in losers)
    assert len([k for k in await env.store.kv.keys() if k.endswith(".number.555")]) == 1


async def test_references_must_exist_and_fit(env: Env) -> None:
    await employee(env, "101")
    await env.service.create(QUEUE, env.tenant, {"name": "Sales", "number": "200", "agents": ["101"]})
    with pytest.raises(ServiceError) as exc:
        await env.service.create(QUEUE, env.tenant, {"name": "Q", "number": "201", "agents": ["101", "999"]})
    assert error_of(exc)[:2] == (ErrorCode.VALIDATION, "agents.1")
    with pytest.raises(ServiceError) as exc:
        await env.service.create(QUEUE, env.tenant, {"name": "Q", "number": "201", "agents": ["200"]})
    assert error_of(exc)[:2] == (ErrorCode.VALIDATION, "agents.0")
    assert "not an employee" in error_of(exc)[2]
    ivr = {"name": "Main", "number": "300", "default_target": "200",
           "actions": [{"digits": "1", "target": "101"}, {"digits": "2", "target": "404"}]}  # fmt: skip
    with pytest.raises(ServiceError) as exc:
        await env.service.create(IVR, env.tenant, ivr)
    assert error_of(exc)[:2] == (ErrorCode.VALIDATION, "actions.1.target")
    ivr["actions"][1]["target"] = "+74951234567"  # type: ignore[index]  # external numbers are fine
    created = await env.service.create(IVR, env.tenant, ivr)
    assert created.number == "300"


async def test_forwarding_target_is_not_own_number(env: Env) -> None:
    with pytest.raises(ServiceError) as exc:
        await employee(env, "101", routing={"busy_target": "101"})
    assert error_of(exc)[:2] == (ErrorCode.VALIDATION, "routing.busy_target")


async def test_delete_refused_while_referenced(env: Env) -> None:
    ivan = await employee(env, "101", "Ivan")
    anna = await employee(env, "102", "Anna", routing={"no_answer_target": "101"})
    queue = await env.service.create(QUEUE, env.tenant, {"name": "Sales", "number": "200", "agents": ["101"]})
    with pytest.raises(ServiceError) as exc:
        await env.service.delete(EMP, env.tenant, ivan.id, None)
    code, _, message = error_of(exc)
    assert code is ErrorCode.CONFLICT
    assert "queue 'Sales' (200) in agents.0" in message and "employee 'Anna' (102)" in message
    assert {d["name"] for d in exc.value.info.details} == {"Sales", "Anna"}
    await env.service.update(QUEUE, env.tenant, queue.id, queue.revision, {"agents": []})
    await env.service.update(EMP, env.tenant, anna.id, anna.revision, {"routing": {"no_answer_target": None}})
    await env.service.delete(EMP, env.tenant, ivan.id, None)
    await employee(env, "101", "New Ivan")  # the number is free again


async def test_renumbering_carries_references(env: Env) -> None:
    ivan = await employee(env, "101")
    await employee(env, "102", routing={"busy_target": "101"})
    await env.service.create(QUEUE, env.tenant, {"name": "Sales", "number": "200", "agents": ["101"]})
    await env.service.create(IVR, env.tenant, {"name": "Main", "number": "300", "default_target": "101",
                                               "actions": [{"digits": "1", "target": "101"}]})  # fmt: skip
    await env.service.update(EMP, env.tenant, ivan.id, ivan.revision, {"number": "111"})
    page = env.service.list_entities(QUEUE, env.tenant)
    assert page.items[0].agents == ["111"]
    ivr = env.service.list_entities(IVR, env.tenant).items[0]
    assert ivr.default_target == "111" and ivr.actions[0].target == "111"
    anna = env.service.list_entities(EMP, env.tenant, search="102").items[0]
    assert anna.routing.busy_target == "111"
    # the old number is released, the new one held
    keys = await env.store.kv.keys()
    assert number_key(env.tenant, "111") in keys and number_key(env.tenant, "101") not in keys
    # and a restarted service sees the same
    again = await env.fresh_service()
    assert again.list_entities(QUEUE, env.tenant).items[0].agents == ["111"]


async def test_stale_revision_is_refused(env: Env) -> None:
    ivan = await employee(env, "101")
    first = await env.service.update(EMP, env.tenant, ivan.id, ivan.revision, {"name": "Ivan I"})
    with pytest.raises(ServiceError) as exc:
        await env.service.update(EMP, env.tenant, ivan.id, ivan.revision, {"name": "Ivan II"})
    assert error_of(exc)[:2] == (ErrorCode.STALE_REVISION, "revision")
    assert env.service.get(EMP, env.tenant, ivan.id).name == "Ivan I"
    await env.service.update(EMP, env.tenant, ivan.id, first.revision, {"name": "Ivan II"})


async def test_stale_write_from_another_replica_is_refused(env: Env) -> None:
    ivan = await employee(env, "101")
    second = await env.fresh_service()
    await second.update(EMP, env.tenant, ivan.id, ivan.revision, {"name": "By replica two"})
    # the first replica's cache still holds the old revision: the bucket refuses the write
    with pytest.raises(ServiceError) as exc:
        await env.service.update(EMP, env.tenant, ivan.id, ivan.revision, {"name": "By replica one"})
    assert exc.value.info.code is ErrorCode.STALE_REVISION


async def test_mobile_unique_within_tenant(env: Env) -> None:
    await employee(env, "101", mobile="+79161234567")
    with pytest.raises(ServiceError) as exc:
        await employee(env, "102", mobile="79161234567")
    assert error_of(exc)[:2] == (ErrorCode.CONFLICT, "mobile")


async def test_list_search_sort_paginate(env: Env) -> None:
    await employee(env, "101", "Белкина Анна", mobile="+79255283744", email="belkina@acme.ru")
    await employee(env, "102", "Shevchenko Oleg", email="oleg@acme.ru")
    await employee(env, "1000", "anton", mobile="+79161112233")
    names = lambda page: [e.name for e in page.items]  # noqa: E731
    assert names(env.service.list_entities(EMP, env.tenant, search="белкина")) == ["Белкина Анна"]
    assert names(env.service.list_entities(EMP, env.tenant, search="9255283")) == ["Белкина Анна"]
    assert names(env.service.list_entities(EMP, env.tenant, search="OLEG@")) == ["Shevchenko Oleg"]
    assert [e.number for e in env.service.list_entities(EMP, env.tenant).items] == ["101", "102", "1000"]
    assert names(env.service.list_entities(EMP, env.tenant, sort="name")) == [
        "anton",
        "Shevchenko Oleg",
        "Белкина Анна",
    ]
    by_mobile = env.service.list_entities(EMP, env.tenant, sort="mobile", order=SortOrder.DESC)
    assert [e.mobile for e in by_mobile.items] == ["+79255283744", "+79161112233", None]
    page = env.service.list_entities(EMP, env.tenant, sort="email", offset=1, limit=1)
    assert page.total == 3 and [e.email for e in page.items] == ["oleg@acme.ru"]
    with pytest.raises(ServiceError) as exc:
        env.service.list_entities(EMP, env.tenant, sort="password")
    assert error_of(exc)[:2] == (ErrorCode.VALIDATION, "sort")


async def test_validation_names_the_field(env: Env) -> None:
    with pytest.raises(ValidationError) as exc:
        await employee(env, "101", sip_password="Qwerty123@abc")
    assert exc.value.errors()[0]["loc"] == ("sip_password",)
    with pytest.raises(ValidationError) as exc:
        await env.service.create(CONF, env.tenant, {"name": "Room", "number": "700", "pin": "12a4"})
    assert exc.value.errors()[0]["loc"] == ("pin",)


async def test_every_change_is_announced_with_new_state(env: Env) -> None:
    js = env.broker.connection.jetstream()
    sub = await js.subscribe(
        config_events_of(env.tenant), ordered_consumer=True, deliver_policy=DeliverPolicy.ALL
    )
    ivan = await employee(env, "101")
    ivan2 = await env.service.update(EMP, env.tenant, ivan.id, ivan.revision, {"name": "Ivan Renamed"})
    await env.service.delete(EMP, env.tenant, ivan.id, ivan2.revision)
    seen = []
    for _ in range(4):
        msg = await sub.next_msg(timeout=3)
        seen.append((msg.subject, json.loads(msg.data)))
    await sub.unsubscribe()
    assert [s for s, _ in seen] == [
        f"pbx.{env.tenant}.config.tenant.created",
        f"pbx.{env.tenant}.config.employee.created",
        f"pbx.{env.tenant}.config.employee.updated",
        f"pbx.{env.tenant}.config.employee.deleted",
    ]
    updated = seen[2][1]
    assert updated["tenant_id"] == env.tenant and updated["version"] == 1
    assert updated["entity"]["name"] == "Ivan Renamed" and updated["revision"] == ivan2.revision
    assert seen[3][1]["entity"] is None


async def test_snapshot_lines_up_with_the_stream(env: Env) -> None:
    await employee(env, "101")
    snapshot = await env.service.snapshot(env.tenant)
    assert [e.number for e in snapshot.employees] == ["101"]
    await employee(env, "102")
    js = env.broker.connection.jetstream()
    sub = await js.subscribe(
        config_events_of(env.tenant),
        ordered_consumer=True,
        config=ConsumerConfig(
            deliver_policy=DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=snapshot.stream_sequence + 1
        ),
    )
    msg = await sub.next_msg(timeout=3)
    await sub.unsubscribe()
    assert json.loads(msg.data)["entity"]["number"] == "102"  # only what came after the snapshot


async def test_sip_password_sealed_at_rest(env: Env) -> None:
    ivan = await employee(env, "101")
    raw = await env.store.kv.get(f"t.{env.tenant}.employee.{ivan.id}")
    assert raw.value is not None and PASSWORD.encode() not in raw.value
    again = await env.fresh_service()
    assert again.get(EMP, env.tenant, ivan.id).sip_password.get_secret_value() == PASSWORD  # type: ignore[attr-defined]
    assert PASSWORD not in repr(again.get(EMP, env.tenant, ivan.id))


async def test_generated_password_when_none_given(env: Env) -> None:
    created = await env.service.create(EMP, env.tenant, {"name": "Auto", "number": "150"})
    assert len(created.sip_password.get_secret_value()) >= 12  # type: ignore[attr-defined]


async def test_orphan_claim_released_on_load(env: Env) -> None:
    await env.store.create(number_key(env.tenant, "909"), b"employee:deadbeefdeadbeef")
    again = await env.fresh_service()
    await again.create(CONF, env.tenant, {"name": "Room", "number": "909"})


async def test_tenant_rules(env: Env) -> None:
    with pytest.raises(ServiceError) as exc:
        await env.service.create_tenant(
            TenantFields(id=unique_tenant(), name="Copy", sip_domain=f"{env.tenant}.example.com")
        )
    assert error_of(exc)[:2] == (ErrorCode.CONFLICT, "sip_domain")
    await employee(env, "101")
    with pytest.raises(ServiceError) as exc:
        await env.service.delete_tenant(env.tenant, purge=False)
    assert error_of(exc)[0] is ErrorCode.CONFLICT and "1 employee" in error_of(exc)[2]
    await env.service.delete_tenant(env.tenant, purge=True)
    assert not [e.key async for e in env.store.entries() if env.tenant in e.key]
    # the domain is free again
    await env.service.create_tenant(
        TenantFields(id=env.tenant, name="Again", sip_domain=f"{env.tenant}.example.com")
    )


async def test_sound_files_must_exist(env: Env) -> None:
    """The media service is asked (here a stand-in answering for two known files)."""
    known = {"aaaaaaaa11111111", "bbbbbbbb22222222"}
    answers: dict[str, bool | None] = {}

    async def lookup(tenant_id: str, sound_id: str) -> bool | None:
        assert tenant_id == env.tenant
        return answers.get(sound_id, sound_id in known)

    store = KvStore(env.bucket)
    await store.open(env.broker.connection.jetstream())
    service = ConfigService(store, JetStreamEvents(env.broker), Sealer(env.key), lookup)
    await service.load()
    await service.create(EMP, env.tenant, {"name": "Ivan", "number": "101"})
    menu = {"name": "Main", "number": "300", "default_target": "101", "greeting_sound_id": "cccccccc33333333"}
    with pytest.raises(ServiceError) as exc:
        await service.create(IVR, env.tenant, menu)
    assert error_of(exc)[:2] == (ErrorCode.VALIDATION, "greeting_sound_id")
    created = await service.create(IVR, env.tenant, {**menu, "greeting_sound_id": "aaaaaaaa11111111"})
    answers["bbbbbbbb22222222"] = None  # the media service does not answer
    with pytest.raises(ServiceError) as exc:
        await service.update(
            IVR, env.tenant, created.id, created.revision, {"greeting_sound_id": "bbbbbbbb22222222"}
        )
    assert error_of(exc)[0] is ErrorCode.UNAVAILABLE
    # an unchanged sound is not asked about again
    answers["aaaaaaaa11111111"] = None
    await service.update(IVR, env.tenant, created.id, created.revision, {"name": "Main menu"})
    assert service.sound_usages(env.tenant, "aaaaaaaa11111111") == [
        {
            "kind": "ivr_menu",
            "id": created.id,
            "name": "Main menu",
            "number": "300",
            "field": "greeting_sound_id",
        }
    ]
