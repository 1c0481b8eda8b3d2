"""Live provisioning through ARI's dynamic configuration: employees become PJSIP objects with
their SPEC section 1 settings, changes apply without reloads, deletions remove them, and the
gateway shows whether the phone is registered."""

from __future__ import annotations

import asyncio

import pytest

from tests.telephony.baresip import PhoneError, PhoneFactory
from tests.telephony.conftest import PASSWORD, Telephony, TenantApi
from tests.telephony.helpers import AriProbe
from tests.telephony.test_routing import wait_endpoint

pytestmark = pytest.mark.timeout(90)


async def endpoint_fields(
    probe: AriProbe, object_id: str, want: tuple[str, str] | None = None
) -> dict[str, str]:
    """The endpoint's fields on Asterisk; waits until ``want`` (attribute, value) shows."""
    fields: dict[str, str] = {}
    for _ in range(100):
        try:
            items = await probe.rest("GET", f"/asterisk/config/dynamic/res_pjsip/endpoint/{object_id}")
            fields = {item["attribute"]: item["value"] for item in items}
        except AssertionError:
            fields = {}
        if fields and (want is None or fields.get(want[0]) == want[1]):
            return fields
        await asyncio.sleep(0.1)
    raise AssertionError(f"{object_id}: {want} not in {fields}")


async def registered(tenant: TenantApi, number: str, expected: bool) -> None:
    for _ in range(60):
        items = (await tenant.client.get(f"/v1/tenants/{tenant.tenant_id}/employees")).json()["items"]
        if any(e["number"] == number and e["registered"] is expected for e in items):
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"{number} registered is not {expected}")


async def test_settings_become_endpoint_fields_and_changes_apply_live(
    tenant: TenantApi, probe: AriProbe
) -> None:
    employee = await tenant.employee(
        "101",
        advanced={"dtmf_mode": "info", "transport": "tcp", "max_parallel_calls": 2,
                  "pjsip_extra": "[endpoint]\nrtp_timeout = 45\ncontext = elsewhere"},
    )  # fmt: skip
    object_id = f"101@{tenant.domain}"
    fields = await endpoint_fields(probe, object_id)
    assert fields["dtmf_mode"] == "info"
    assert fields["transport"] == "transport-tcp"
    assert fields["device_state_busy_at"] == "2"
    assert fields["rtp_timeout"] == "45"
    assert fields["context"] == "sb-internal"  # extras cannot move it out of its tenant's dialplan
    assert "Employee 101" in fields["callerid"]
    await tenant.update("employees", employee, {"name": "Anna Renamed", "advanced": {"dtmf_mode": "rfc4733"}})
    fields = await endpoint_fields(probe, object_id, ("dtmf_mode", "rfc4733"))
    assert "Anna Renamed" in fields["callerid"]
    current = (await tenant.client.get(f"/v1/tenants/{tenant.tenant_id}/employees/{employee['id']}")).json()
    response = await tenant.client.delete(
        f"/v1/tenants/{tenant.tenant_id}/employees/{employee['id']}",
        headers={"If-Match": str(current["revision"])},
    )
    assert response.status_code in (200, 204), response.text
    await wait_endpoint(probe, object_id, present=False)


async def test_registration_status_and_network_filter(
    tenant: TenantApi, phones: PhoneFactory, telephony: Telephony
) -> None:
    await tenant.employee("101")
    await tenant.employee("102", advanced={"network_filter": ["10.20.0.0/16"]})
    await registered(tenant, "101", False)
    phone = await phones.phone("101", tenant.domain, PASSWORD)
    await registered(tenant, "101", True)
    await phone.stop()
    await registered(tenant, "101", False)
    # 102 may register only from 10.20.0.0/16; the phone here is on 127.0.0.1
    with pytest.raises((PhoneError, TimeoutError)):
        await phones.phone("102", tenant.domain, PASSWORD, timeout=4)
    refused = [
        line for line in telephony.asterisk.log_path.read_text(errors="replace").splitlines()
        if f"<sip:102@{tenant.domain}>" in line and "Not match Endpoint ACL" in line
    ]  # fmt: skip
    assert refused, "Asterisk did not refuse the registration by the endpoint's ACL"


async def test_tls_phone_registers_and_calls(tenant: TenantApi, phones: PhoneFactory) -> None:
    await tenant.employee("101", advanced={"transport": "tls"})
    await tenant.employee("102")
    alice = await phones.phone("101", tenant.domain, PASSWORD, transport="tls")
    bob = await phones.phone("102", tenant.domain, PASSWORD, auto_answer=True)
    await alice.dial("102")
    await bob.wait_established(10)
    await alice.wait_established()
    await alice.hangup()
    await bob.wait_closed()
