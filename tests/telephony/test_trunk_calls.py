"""Calls through the tenant's SIP trunk on real Asterisk. The provider is Asterisk itself: the
trunk points at its own SIP port, so a call leaves through ``trunk-<tenant>`` and comes back in
as a call from the provider, routed by the DID through the tenant's incoming routes."""

from __future__ import annotations

import pytest

from tests.telephony.baresip import PhoneFactory
from tests.telephony.conftest import PASSWORD, Telephony, tenant_api
from tests.telephony.helpers import AriProbe, Caller, channel_of, legs_of
from tests.telephony.test_routing import wait_endpoint

pytestmark = pytest.mark.timeout(90)


async def test_mobile_through_the_trunk_and_back_in_by_did(
    telephony: Telephony, phones: PhoneFactory, probe: AriProbe
) -> None:
    sip_port = telephony.asterisk.sip_port
    async with tenant_api(telephony) as tenant:
        await tenant.employee("101")
        await tenant.employee("103")
        await tenant.employee("102", mobile="+74950000777", routing={"ring_time": 3})
        current = (await tenant.client.get(f"/v1/tenants/{tenant.tenant_id}")).json()
        response = await tenant.client.patch(
            f"/v1/tenants/{tenant.tenant_id}",
            json={
                "revision": current["revision"],
                "settings": {
                    "trunk": {
                        "host": "127.0.0.1",
                        "port": sip_port,
                        "username": "acc1",
                        "password": "Pr0vider-pass",
                    },
                    "incoming": {"routes": [{"did": "74950000777", "target": "103"}]},
                },
            },
        )
        assert response.status_code == 200, response.text
        carol = await phones.phone("103", tenant.domain, PASSWORD, auto_answer=True)
        await wait_endpoint(probe, f"trunk-{tenant.tenant_id}")
        caller = await Caller(probe, f"101@{tenant.domain}", "101").call("102")
        await carol.wait_established(15)  # 102 unregistered -> mobile -> trunk -> DID -> 103
        inbound = [
            e for e in probe.since(caller.mark, "ChannelDialplan")
            if channel_of(e)["dialplan"]["app_data"] == "switchboard,trunk"
        ]  # fmt: skip
        assert inbound and inbound[-1]["channel"]["name"].startswith(f"PJSIP/trunk-{tenant.tenant_id}-")
        await caller.hangup()
        await carol.wait_closed()
        legs = legs_of(await tenant.calls("74950000777", legs=2))
        assert any(leg["called_account"] == "103" and leg["disposition"] == "answered" for leg in legs)
        current = (await tenant.client.get(f"/v1/tenants/{tenant.tenant_id}")).json()
        response = await tenant.client.patch(
            f"/v1/tenants/{tenant.tenant_id}",
            json={"revision": current["revision"], "settings": {"trunk": None}},
        )
        assert response.status_code == 200, response.text
        await wait_endpoint(probe, f"trunk-{tenant.tenant_id}", present=False)
