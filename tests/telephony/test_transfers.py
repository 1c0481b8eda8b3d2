"""Transfers and pickup between real phones (SPEC section 6, the tenant's star codes):
blind ``**``, attended ``##`` completed and cancelled with ``*0``, a blind transfer into a
conference room, group pickup ``*8`` and directed pickup ``*8<number>``; the chain in call
history under one linkedid."""

from __future__ import annotations

import asyncio

import pytest

from tests.telephony.baresip import Phone, PhoneFactory
from tests.telephony.conftest import PASSWORD, Telephony, TenantApi, tenant_api
from tests.telephony.helpers import AriProbe, channel_of, legs_of

pytestmark = pytest.mark.timeout(90)


async def connected(phones: PhoneFactory, tenant: TenantApi) -> tuple[Phone, Phone, Phone]:
    for number in ("101", "102", "103"):
        await tenant.employee(number)
    alice = await phones.phone("101", tenant.domain, PASSWORD)
    bob = await phones.phone("102", tenant.domain, PASSWORD, auto_answer=True)
    carol = await phones.phone("103", tenant.domain, PASSWORD, auto_answer=True)
    await alice.dial("102")
    await bob.wait_established(10)
    await alice.wait_established()
    await asyncio.sleep(0.5)  # the bridge is up
    return alice, bob, carol


async def test_blind_transfer(tenant: TenantApi, phones: PhoneFactory) -> None:
    alice, bob, carol = await connected(phones, tenant)
    await bob.send_dtmf("**103#")
    await bob.wait_closed(10)  # the one who transferred leaves
    await carol.wait_established(10)  # the caller now talks to 103
    await alice.hangup()
    await carol.wait_closed()
    groups = await tenant.calls("101", legs=3)
    legs = legs_of(groups)
    assert len({leg["linkedid"] for leg in legs}) == 1  # one call, the whole chain
    transferred = [leg for leg in legs if leg["called_account"] == "102"]
    assert transferred and transferred[0]["transfer"] == "blind" and transferred[0]["transferred_to"] == "103"
    assert any(leg["called_account"] == "103" and leg["disposition"] == "answered" for leg in legs)


async def test_attended_transfer_completed(tenant: TenantApi, phones: PhoneFactory, probe: AriProbe) -> None:
    alice, bob, carol = await connected(phones, tenant)
    await bob.send_dtmf("##103#")
    await carol.wait_established(10)  # bob consults carol; alice hears music
    await bob.hangup()  # completes the transfer
    await bob.wait_closed()
    await asyncio.sleep(1)
    assert not any(e.get("type") == "CALL_CLOSED" for e in alice.events)
    assert not any(e.get("type") == "CALL_CLOSED" for e in carol.events)
    await alice.hangup()
    await carol.wait_closed(10)  # they were connected to each other
    legs = legs_of(await tenant.calls("101", legs=3))
    assert any(leg["transfer"] == "attended" and leg["transferred_to"] == "103" for leg in legs)


async def test_attended_transfer_cancelled(tenant: TenantApi, phones: PhoneFactory) -> None:
    alice, bob, carol = await connected(phones, tenant)
    await bob.send_dtmf("##103#")
    await carol.wait_established(10)
    await bob.send_dtmf("*0")
    await carol.wait_closed(10)  # the consultation ends; bob is back with alice
    await asyncio.sleep(0.5)
    assert not any(e.get("type") == "CALL_CLOSED" for e in alice.events)
    await alice.hangup()
    await bob.wait_closed(10)


async def test_blind_transfer_into_a_conference(
    tenant: TenantApi, phones: PhoneFactory, probe: AriProbe
) -> None:
    await tenant.create("conference-rooms", {"name": "Room", "number": "700"})
    alice, bob, _ = await connected(phones, tenant)
    mark = probe.mark()
    await bob.send_dtmf("**700#")
    await bob.wait_closed(10)
    entered = await probe.wait(
        lambda e: e.get("type") == "ChannelEnteredBridge" and channel_of(e)["name"].startswith("PJSIP/101@"),
        10,
        mark,
    )
    assert entered["bridge"]["name"].startswith(f"conf-{tenant.tenant_id}-700")
    await alice.hangup()


@pytest.mark.parametrize("code", ["*8", "*8102"])
async def test_pickup(tenant: TenantApi, phones: PhoneFactory, code: str) -> None:
    for number in ("101", "102", "103"):
        await tenant.employee(number)
    alice = await phones.phone("101", tenant.domain, PASSWORD)
    bob = await phones.phone("102", tenant.domain, PASSWORD)  # rings, does not answer
    carol = await phones.phone("103", tenant.domain, PASSWORD)
    await alice.dial("102")
    await bob.wait_incoming(10)
    await carol.dial(code)
    await carol.wait_established(10)
    await alice.wait_established(10)  # alice talks to carol
    await bob.wait_closed(10)  # bob's phone stops ringing
    await alice.hangup()
    await carol.wait_closed(10)
    legs = legs_of(await tenant.calls("101", legs=2))
    assert any(leg["called_account"] == "103" and leg["disposition"] == "answered" for leg in legs)


async def test_answered_calls_are_recorded_and_played_from_history(
    telephony: Telephony, phones: PhoneFactory
) -> None:
    async with tenant_api(telephony, record_calls=True) as tenant:
        for number in ("101", "102"):
            await tenant.employee(number)
        alice = await phones.phone("101", tenant.domain, PASSWORD)
        bob = await phones.phone("102", tenant.domain, PASSWORD, auto_answer=True)
        await alice.dial("102")
        await bob.wait_established(10)
        await asyncio.sleep(2.5)  # something to record
        await alice.hangup()
        await bob.wait_closed()
        legs = legs_of(await tenant.calls("101 102", legs=2))
        recorded = [leg for leg in legs if leg["recording_id"]]
        assert recorded and all(leg["disposition"] == "answered" for leg in recorded)
        path = f"/v1/tenants/{tenant.tenant_id}/recordings/{recorded[0]['recording_id']}/audio.mp3"
        for _ in range(100):  # delivered to the media service in the background
            played = await tenant.client.get(path, headers={"Range": "bytes=0-"})
            if played.status_code in (200, 206):
                break
            await asyncio.sleep(0.2)
        assert played.status_code in (200, 206), played.text
        assert played.headers["content-type"] == "audio/mpeg"
        assert len(played.content) > 1000
        download = await tenant.client.get(path.replace("/audio.mp3", "/download"))
        assert download.status_code == 200 and download.content[:3] in (b"ID3", b"\xff\xfb", b"\xff\xf3")
        # a missed call has no recording
        await tenant.employee("103", routing={"ring_time": 3})
        carol = await phones.phone("103", tenant.domain, PASSWORD)
        await alice.dial("103")
        await carol.wait_incoming(10)
        await alice.wait_closed(15)
        missed = legs_of(await tenant.calls("103", legs=2))
        assert all(leg["recording_id"] is None for leg in missed)
        assert any(leg["disposition"] == "no_answer" for leg in missed)
