"""Employee routing on real Asterisk (SPEC section 1): no answer, busy, unregistered, the
maximum of parallel calls, chained targets with loop protection, the mobile through the
tenant's trunk, calls from the trunk by DID, and two tenants with the same numbers."""

from __future__ import annotations

import asyncio

import pytest

from tests.telephony.baresip import PhoneFactory
from tests.telephony.conftest import PASSWORD, Telephony, TenantApi, tenant_api
from tests.telephony.helpers import AriProbe, Caller, legs_of

pytestmark = pytest.mark.timeout(90)


async def test_no_answer_goes_to_the_no_answer_target(
    tenant: TenantApi, phones: PhoneFactory, telephony: Telephony
) -> None:
    await tenant.employee("101")
    await tenant.employee("103")
    await tenant.employee("102", routing={"ring_time": 3, "no_answer_target": "103"})
    alice = await phones.phone("101", tenant.domain, PASSWORD)
    bob = await phones.phone("102", tenant.domain, PASSWORD)
    carol = await phones.phone("103", tenant.domain, PASSWORD, auto_answer=True)
    await alice.dial("102")
    await bob.wait_incoming()
    await carol.wait_established(10)  # after bob's 3 s
    await alice.wait_established()
    await alice.hangup()
    await carol.wait_closed()
    legs = legs_of(await tenant.calls("101", legs=3))
    by_account = {(leg["called_account"], leg["disposition"]) for leg in legs}
    assert ("102", "no_answer") in by_account
    assert ("103", "answered") in by_account


async def test_busy_and_unregistered_targets(
    tenant: TenantApi, phones: PhoneFactory, probe: AriProbe
) -> None:
    await tenant.employee("101")
    await tenant.employee("104")
    await tenant.employee("105")
    await tenant.employee("102", routing={"busy_target": "104", "unavailable_target": "105"})
    alice = await phones.phone("101", tenant.domain, PASSWORD)
    bob = await phones.phone("102", tenant.domain, PASSWORD, busy=True)
    dave = await phones.phone("104", tenant.domain, PASSWORD, auto_answer=True)
    await alice.dial("102")
    await dave.wait_established(10)  # bob rejected with 486: busy target
    await alice.hangup()
    await dave.wait_closed()
    await bob.stop()  # now 102 has no registered phone: unavailable target
    erin = await phones.phone("105", tenant.domain, PASSWORD, auto_answer=True)
    await _wait_unregistered(tenant, "102")
    await alice.dial("102")
    await erin.wait_established(10)
    await alice.hangup()
    legs = legs_of(await tenant.calls("105", legs=1))
    assert any(leg["called_account"] == "105" and leg["disposition"] == "answered" for leg in legs)


async def wait_endpoint(probe: AriProbe, endpoint: str, present: bool = True) -> None:
    """Until callflow has (or no longer has) put ``endpoint`` on Asterisk."""
    for _ in range(100):
        try:
            await probe.rest("GET", f"/endpoints/PJSIP/{endpoint}")
            found = True
        except AssertionError:
            found = False
        if found == present:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"endpoint {endpoint} {'missing' if present else 'still there'}")


async def _wait_unregistered(tenant: TenantApi, number: str) -> None:
    for _ in range(50):
        listed = (await tenant.client.get(f"/v1/tenants/{tenant.tenant_id}/employees")).json()["items"]
        if any(e["number"] == number and e["registered"] is False for e in listed):
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"{number} still registered")


async def test_max_parallel_calls_counts_as_busy(
    tenant: TenantApi, phones: PhoneFactory, probe: AriProbe
) -> None:
    await tenant.employee("101")
    await tenant.employee("103")
    await tenant.employee("104")
    await tenant.employee("102", advanced={"max_parallel_calls": 1}, routing={"busy_target": "103"})
    bob = await phones.phone("102", tenant.domain, PASSWORD, auto_answer=True)
    carol = await phones.phone("103", tenant.domain, PASSWORD, auto_answer=True)
    first = await Caller(probe, f"101@{tenant.domain}", "101").call("102")
    await first.wait_answered()
    await bob.wait_established()
    second = await Caller(probe, f"104@{tenant.domain}", "104").call("102")
    await carol.wait_established(10)  # 102 is on its one call: busy target
    await second.hangup()
    await first.hangup()


async def test_forwarding_loop_ends_the_call(tenant: TenantApi, probe: AriProbe) -> None:
    await tenant.employee("101")
    e102 = await tenant.employee("102")
    await tenant.employee("103", routing={"unavailable_target": "102"})
    await tenant.update("employees", e102, {"routing": {"unavailable_target": "103"}})
    caller = await Caller(probe, f"101@{tenant.domain}", "101").call("102")
    await caller.wait_hung_up(15)
    legs = legs_of(await tenant.calls("101", legs=1))
    assert all(leg["disposition"] != "answered" for leg in legs)


async def test_an_external_number_without_a_trunk_is_refused_and_recorded_as_failed(
    tenant: TenantApi, probe: AriProbe
) -> None:
    await tenant.employee("101")
    caller = await Caller(probe, f"101@{tenant.domain}", "101").call("84951112233")
    await caller.wait_hung_up(10)
    failed = [leg for group in await tenant.calls("84951112233", legs=1) for leg in group["legs"]]
    assert failed[0]["disposition"] == "failed"
    assert failed[0]["caller_account"] == "101"


async def test_the_trunk_is_provisioned_with_identify_and_removed(
    telephony: Telephony, probe: AriProbe
) -> None:
    async with tenant_api(telephony) as tenant:
        revision = (await tenant.client.get(f"/v1/tenants/{tenant.tenant_id}")).json()["revision"]
        trunk = {"host": "127.0.0.1", "port": 5999, "username": "acc1", "password": "Pr0vider-pass"}
        response = await tenant.client.patch(
            f"/v1/tenants/{tenant.tenant_id}", json={"revision": revision, "settings": {"trunk": trunk}}
        )
        assert response.status_code == 200, response.text
        endpoint = f"trunk-{tenant.tenant_id}"
        await wait_endpoint(probe, endpoint)
        identify = None
        for _ in range(50):  # the identify is put right after the endpoint
            try:
                identify = await probe.rest("GET", f"/asterisk/config/dynamic/res_pjsip/identify/{endpoint}")
                break
            except AssertionError:
                await asyncio.sleep(0.1)
        assert identify is not None
        fields = {item["attribute"]: item["value"] for item in identify}
        assert fields["endpoint"] == endpoint
        assert "127.0.0.1" in fields["match"]
        aor = await probe.rest("GET", f"/asterisk/config/dynamic/res_pjsip/aor/{endpoint}")
        assert any(item["attribute"] == "contact" and "127.0.0.1:5999" in item["value"] for item in aor)
        revision = response.json()["revision"]
        response = await tenant.client.patch(
            f"/v1/tenants/{tenant.tenant_id}", json={"revision": revision, "settings": {"trunk": None}}
        )
        assert response.status_code == 200, response.text
        await wait_endpoint(probe, endpoint, present=False)


async def test_two_tenants_with_the_same_numbers_stay_apart(
    telephony: Telephony, phones: PhoneFactory
) -> None:
    async with tenant_api(telephony) as first, tenant_api(telephony) as second:
        for api in (first, second):
            await api.employee("101")
            await api.employee("102")
        a101 = await phones.phone("101", first.domain, PASSWORD)
        a102 = await phones.phone("102", first.domain, PASSWORD, auto_answer=True)
        b102 = await phones.phone("102", second.domain, PASSWORD, auto_answer=True)
        await a101.dial("102")
        await a102.wait_established(10)
        assert not any(e.get("type") == "CALL_INCOMING" for e in b102.events)
        await a101.hangup()
        await a102.wait_closed()
        # the other tenant's phone cannot reach into the first tenant's domain
        b101 = await phones.phone("101", second.domain, PASSWORD)
        await b101.dial(f"sip:102@{first.domain}")
        await b102.wait_established(10)  # routed by the caller's own tenant: its own 102
        assert sum(1 for e in a102.events if e.get("type") == "CALL_INCOMING") == 1
        await b101.hangup()
        assert await first.calls("101", legs=2)
        assert all(
            leg["caller_account"] == "101"
            for group in await second.calls("101", legs=2)
            for leg in group["legs"]
        )
