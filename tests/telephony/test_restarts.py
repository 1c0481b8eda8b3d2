"""Restarts: a restarted call-flow service recognises what Asterisk still holds and does not
put it again; a restarted Asterisk gets everything back (full resync) without any call."""

from __future__ import annotations

import asyncio

import pytest

from tests.telephony.baresip import PhoneFactory
from tests.telephony.conftest import PASSWORD, Telephony, TenantApi
from tests.telephony.helpers import AriProbe, wait_ready
from tests.telephony.test_routing import wait_endpoint

pytestmark = pytest.mark.timeout(120)


async def test_callflow_restart_keeps_what_asterisk_holds(
    tenant: TenantApi, telephony: Telephony, probe: AriProbe
) -> None:
    await tenant.employee("101")
    object_id = f"101@{tenant.domain}"
    await wait_endpoint(probe, object_id)
    await asyncio.to_thread(telephony.callflow.restart)
    before = len(telephony.callflow.log())
    await wait_ready(telephony.callflow.base_url)
    await asyncio.sleep(1)
    after = telephony.callflow.log()[before:]
    assert "ARI connected" in after
    assert f"provisioned {object_id}" not in after  # recognised by its digest, not put again


async def test_asterisk_restart_gets_a_full_resync(
    tenant: TenantApi, telephony: Telephony, probe: AriProbe, phones: PhoneFactory
) -> None:
    await tenant.employee("101")
    await tenant.employee("102")
    await wait_endpoint(probe, f"102@{tenant.domain}")
    await asyncio.to_thread(telephony.asterisk.restart)
    for _ in range(150):  # callflow reconnects and puts everything back
        try:
            await probe.rest("GET", f"/endpoints/PJSIP/102@{tenant.domain}")
            break
        except Exception:
            await asyncio.sleep(0.1)
    await wait_endpoint(probe, f"101@{tenant.domain}")
    await wait_ready(telephony.callflow.base_url)
    alice = await phones.phone("101", tenant.domain, PASSWORD)
    bob = await phones.phone("102", tenant.domain, PASSWORD, auto_answer=True)
    await alice.dial("102")
    await bob.wait_established(10)
    await alice.hangup()
