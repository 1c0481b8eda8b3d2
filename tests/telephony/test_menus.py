"""IVR menus and conference rooms on real Asterisk (SPEC sections 3 and 4), with simulated
callers (Local channels) sending DTMF, and a real phone answering."""

from __future__ import annotations

import asyncio

import pytest

from tests.telephony.baresip import PhoneFactory
from tests.telephony.conftest import PASSWORD, TenantApi
from tests.telephony.helpers import AriProbe, Caller, channel_of, legs_of

pytestmark = pytest.mark.timeout(90)


async def music_on_hold(probe: AriProbe, playing: bool) -> bool:
    """Asterisk plays a bridge's music on hold through an Announcer/ARI_MOH channel."""
    for _ in range(50):
        channels = await asyncio.to_thread(probe.instance.cli, "core show channels concise")
        if ("Announcer/ARI_MOH" in channels) == playing:
            return True
        await asyncio.sleep(0.1)
    return False


async def test_a_digit_during_the_greeting_reaches_the_employee(
    tenant: TenantApi, phones: PhoneFactory, probe: AriProbe
) -> None:
    await tenant.employee("101")
    await tenant.employee("102")
    await tenant.create(
        "ivr-menus",
        {"name": "Main", "number": "500", "actions": [{"digits": "2", "target": "102"}], "default_target": "101",
         "timeout": 5},
    )  # fmt: skip
    bob = await phones.phone("102", tenant.domain, PASSWORD, auto_answer=True)
    caller = await Caller(probe, f"101@{tenant.domain}", "101").call("500")
    await caller.wait_answered()
    await probe.wait(lambda e: e.get("type") == "PlaybackStarted", 5, caller.mark)
    await caller.dtmf("2")
    await bob.wait_established(10)
    await caller.hangup()
    await bob.wait_closed()
    legs = legs_of(await tenant.calls("500", legs=1))
    menu_legs = [leg for leg in legs if leg["ivr_number"] == "500"]
    assert menu_legs and all(leg["ivr_digits"] == "2" for leg in menu_legs)
    answered = [leg for leg in menu_legs if leg["called_account"] == "102"]
    assert answered and answered[0]["disposition"] == "answered"


async def test_no_input_repeats_the_greeting_then_the_default_number(
    tenant: TenantApi, phones: PhoneFactory, probe: AriProbe
) -> None:
    await tenant.employee("101")
    await tenant.employee("103")
    await tenant.create(
        "ivr-menus",
        {"name": "Quiet", "number": "501", "actions": [{"digits": "1", "target": "101"}], "default_target": "103",
         "timeout": 1, "repeats": 2},
    )  # fmt: skip
    carol = await phones.phone("103", tenant.domain, PASSWORD, auto_answer=True)
    caller = await Caller(probe, f"101@{tenant.domain}", "101").call("501")
    await caller.wait_answered()
    await carol.wait_established(30)
    played = [e for e in probe.since(caller.mark, "PlaybackStarted")]
    assert len(played) == 2  # the greeting twice (two attempts), then the default number
    await caller.hangup()
    legs = legs_of(await tenant.calls("501", legs=1))
    assert any(leg["ivr_digits"] == "tt" for leg in legs)


async def test_wrong_digits_and_internal_dialing(
    tenant: TenantApi, phones: PhoneFactory, probe: AriProbe
) -> None:
    await tenant.employee("101")
    await tenant.employee("104")
    await tenant.create(
        "ivr-menus",
        {"name": "Dial", "number": "502", "actions": [{"digits": "1", "target": "101"}], "default_target": "101",
         "timeout": 3, "repeats": 3, "allow_internal_dialing": True},
    )  # fmt: skip
    dave = await phones.phone("104", tenant.domain, PASSWORD, auto_answer=True)
    caller = await Caller(probe, f"101@{tenant.domain}", "101").call("502")
    await caller.wait_answered()
    await probe.wait(lambda e: e.get("type") == "PlaybackStarted", 5, caller.mark)
    await caller.dtmf("9")  # nothing: the greeting again
    for _ in range(100):
        if len(probe.since(caller.mark, "PlaybackStarted")) >= 2:
            break
        await asyncio.sleep(0.1)
    assert len(probe.since(caller.mark, "PlaybackStarted")) >= 2
    await caller.dtmf("104")  # an internal number: allowed by the flag
    await dave.wait_established(15)
    await caller.hangup()
    legs = legs_of(await tenant.calls("502", legs=1))
    assert any(leg["ivr_digits"].startswith("9") and "104" in leg["ivr_digits"] for leg in legs)


async def test_conference_with_a_pin(tenant: TenantApi, probe: AriProbe) -> None:
    await tenant.employee("101")
    await tenant.employee("102")
    await tenant.create("conference-rooms", {"name": "Board", "number": "700", "pin": "4321"})
    wrong = await Caller(probe, f"101@{tenant.domain}", "101").call("700")
    await wrong.wait_answered()
    await probe.wait(lambda e: e.get("type") == "PlaybackStarted", 5, wrong.mark)
    await wrong.dtmf("1111")
    await probe.wait(
        lambda e: (
            e.get("type") == "PlaybackStarted"
            and "conf-invalidpin" in str(e.get("playback", {}).get("media_uri"))
        ),
        10,
        wrong.mark,
    )
    await wrong.dtmf("2222")
    await wrong.wait_hung_up(15)  # asked again, then hung up

    first = await Caller(probe, f"101@{tenant.domain}", "101").call("700")
    await first.wait_answered()
    await probe.wait(lambda e: e.get("type") == "PlaybackStarted", 5, first.mark)
    await first.dtmf("4321")
    joined = await probe.wait(
        lambda e: (
            e.get("type") == "ChannelEnteredBridge" and channel_of(e).get("name", "").startswith("Local/700@")
        ),
        10,
        first.mark,
    )
    bridge_id = joined["bridge"]["id"]
    assert await music_on_hold(probe, playing=True)  # alone in the room
    second = await Caller(probe, f"102@{tenant.domain}", "102").call("700")
    await second.wait_answered()
    await probe.wait(lambda e: e.get("type") == "PlaybackStarted", 5, second.mark)
    await second.dtmf("4321#")
    await probe.wait(
        lambda e: e.get("type") == "ChannelEnteredBridge" and e["bridge"]["id"] == bridge_id,
        10,
        second.mark,
    )  # both in the room's one mixing bridge: everyone hears everyone
    assert await music_on_hold(probe, playing=False)  # not any more
    bridge = await probe.rest("GET", f"/bridges/{bridge_id}")
    assert len(bridge["channels"]) == 2
    await first.hangup()
    await second.hangup()
    legs = legs_of(await tenant.calls("700", legs=3))
    assert sum(1 for leg in legs if leg["disposition"] == "answered") >= 2


async def test_the_greeting_is_the_tenants_uploaded_sound_file(tenant: TenantApi, probe: AriProbe) -> None:
    """An uploaded mp3 becomes the IVR greeting: the media service's 8 kHz wav, fetched over
    the bus into a folder Asterisk reads, played to the caller."""
    import subprocess
    import tempfile
    from pathlib import Path

    await tenant.employee("101")
    with tempfile.TemporaryDirectory() as folder:
        mp3 = Path(folder) / "greeting.mp3"
        command = ["ffmpeg", "-nostdin", "-v", "error", "-y", "-f", "lavfi", "-i", "sine=frequency=500:duration=2",
                   "-ac", "1", "-c:a", "libmp3lame", str(mp3)]  # fmt: skip
        await asyncio.to_thread(subprocess.run, command, check=True)
        uploaded = await tenant.client.post(
            f"/v1/tenants/{tenant.tenant_id}/sounds",
            files={"file": ("greeting.mp3", mp3.read_bytes(), "audio/mpeg")},
            data={"name": "Welcome"},
        )
    assert uploaded.status_code == 201, uploaded.text
    sound_id = uploaded.json()["id"]
    await tenant.create(
        "ivr-menus",
        {
            "name": "Welcome",
            "number": "503",
            "greeting_sound_id": sound_id,
            "default_target": "101",
            "timeout": 5,
        },
    )
    caller = await Caller(probe, f"101@{tenant.domain}", "101").call("503")
    await caller.wait_answered()
    started = await probe.wait(lambda e: e.get("type") == "PlaybackStarted", 10, caller.mark)
    assert f"{tenant.tenant_id}/{sound_id}" in started["playback"]["media_uri"]
    finished = await probe.wait(
        lambda e: e.get("type") == "PlaybackFinished" and e["playback"]["id"] == started["playback"]["id"], 10
    )
    assert finished["playback"]["state"] == "done"  # played to its end, not failed
    await caller.hangup()
