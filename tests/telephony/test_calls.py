"""Calls between real SIP phones (baresip) registered as employees: ringing, answering,
no answer, busy, unregistered, and the records in call history."""

from __future__ import annotations

import pytest

from tests.telephony.baresip import PhoneFactory
from tests.telephony.conftest import PASSWORD, Telephony, TenantApi
from tests.telephony.helpers import AriProbe

pytestmark = pytest.mark.timeout(90)


async def test_employee_calls_employee_and_the_call_is_in_history(
    tenant: TenantApi, phones: PhoneFactory, probe: AriProbe, telephony: Telephony
) -> None:
    await tenant.employee("101")
    await tenant.employee("102")
    alice = await phones.phone("101", tenant.domain, PASSWORD)
    bob = await phones.phone("102", tenant.domain, PASSWORD)
    await alice.dial("102")
    await bob.wait_incoming(10)
    await bob.answer()
    await alice.wait_established()
    await bob.wait_established()
    bridge = await probe.wait(lambda e: e.get("type") == "ChannelEnteredBridge", 5)
    assert bridge["bridge"]["bridge_type"] == "mixing"
    await alice.hangup()
    await bob.wait_closed()
    groups = await tenant.calls("101 102", legs=2)
    legs = groups[0]["legs"]
    assert {leg["called_account"] for leg in legs} == {"102"}
    assert all(leg["caller_account"] == "101" and leg["disposition"] == "answered" for leg in legs)
