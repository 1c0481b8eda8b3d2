"""The baresip phone driver against a real Asterisk 22: registration over UDP, TCP and TLS,
calls to the phone (ring, answer, hang up, auto-answer, busy), DTMF and media both ways, and a
call from the phone into the dialplan's Stasis application.

Endpoints are made live through ARI's dynamic configuration (sorcery memory), one set per test
under a domain of its own; calls to the phones are originated into this file's Stasis
application and watched, like the phones' calls into ``switchboard``, over an ARI websocket.
The module has an Asterisk of its own (not the session's, whose ``switchboard`` application
belongs to the call-flow service).
"""

from __future__ import annotations

import array
import asyncio
import contextlib
import json
import math
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import pytest

from scripts.asterisk import Instance, build, why_not_runnable
from tests.support import free_port
from tests.telephony.baresip import Phone, PhoneError, PhoneFactory

APP = "drivertest"
PASSWORD = "Phone-Secret-1"
# The fields a phone endpoint needs besides context, auth, aors and callerid (its transport,
# when set, must be of the phone's protocol: a UDP transport cannot reach a TCP contact):
# - allow: baresip here has G.711 only; with no allow list Asterisk offers no codec and the call
#   closes on the phone with "No audio codecs";
# - rewrite_contact: over TLS Asterisk must send calls back on the phone's own connection (the
#   phone has no certificate to accept one); needed behind NAT for every transport;
# - direct_media no: media stays in Asterisk (recording, DTMF, NAT); with the default (yes) a
#   bridge of two phones re-INVITEs them to send RTP to each other;
# - rtp_symmetric and force_rport: answer to where packets come from (NAT); harmless here.
PHONE_ENDPOINT = {
    "disallow": "all",
    "allow": "ulaw,alaw",
    "rewrite_contact": "yes",
    "direct_media": "no",
    "rtp_symmetric": "yes",
    "force_rport": "yes",
}

pytestmark = pytest.mark.timeout(30)

AriEvent = dict[str, Any]


@pytest.fixture(scope="module")
def asterisk() -> Iterator[Instance]:
    reason = why_not_runnable()
    assert reason is None, f"Asterisk cannot run here: {reason}"
    build()
    instance = Instance(
        f"driver-{uuid.uuid4().hex[:8]}",
        sip_port=free_port(),
        tls_port=free_port(),
        ari_port=free_port(),
        ami_port=free_port(),
    )
    try:
        instance.start(timeout=30)
        (instance.home / "state/spool/recording").mkdir(parents=True, exist_ok=True)
        yield instance
    finally:
        instance.remove()


@pytest.fixture(scope="module")
async def ari(asterisk: Instance) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{asterisk.ari_port}/ari",
        auth=(asterisk.ari_user, asterisk.ari_password),
        timeout=5,
    ) as client:
        yield client


class AriEvents:
    """Events of the Stasis applications ``APP`` and the instance's own, from the websocket."""

    def __init__(self) -> None:
        self.events: list[AriEvent] = []
        self.changed = asyncio.Condition()

    async def run(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        async for message in ws:
            if message.type != aiohttp.WSMsgType.TEXT:
                break
            async with self.changed:
                self.events.append(json.loads(message.data))
                self.changed.notify_all()

    async def wait(
        self, predicate: Callable[[AriEvent], bool], timeout: float = 5, what: str = ""
    ) -> AriEvent:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        async with self.changed:
            while True:
                for event in self.events:
                    if predicate(event):
                        return event
                remaining = deadline - loop.time()
                if remaining <= 0:
                    seen = [e.get("type") for e in self.events[-10:]]
                    raise TimeoutError(f"no ARI event {what} in {timeout} s (last {seen})")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.changed.wait(), remaining)

    async def of_channel(self, kind: str, channel_id: str, timeout: float = 5) -> AriEvent:
        return await self.wait(
            lambda e: e.get("type") == kind and e.get("channel", {}).get("id") == channel_id,
            timeout,
            f"{kind} of {channel_id}",
        )


@pytest.fixture(scope="module")
async def ari_events(asterisk: Instance) -> AsyncIterator[AriEvents]:
    url = (
        f"ws://127.0.0.1:{asterisk.ari_port}/ari/events?app={APP},{asterisk.app}"
        f"&api_key={asterisk.ari_user}:{asterisk.ari_password}"
    )
    events = AriEvents()
    async with (
        aiohttp.ClientSession() as session,
        session.ws_connect(url, timeout=aiohttp.ClientWSTimeout(ws_close=5)) as ws,
    ):
        task = asyncio.create_task(events.run(ws))
        yield events
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


@pytest.fixture
async def phones(asterisk: Instance) -> AsyncIterator[PhoneFactory]:
    factory = PhoneFactory(asterisk)
    yield factory
    await factory.stop_all()


@pytest.fixture
def domain() -> str:
    return f"t{uuid.uuid4().hex[:8]}.pbx.test"


async def endpoint(ari: httpx.AsyncClient, number: str, domain: str, transport: str = "udp") -> str:
    """A phone endpoint ``number@domain`` (auth and aor of the same id); returns the id."""
    ident = f"{number}@{domain}"
    objects = {
        "auth": {"auth_type": "userpass", "username": number, "password": PASSWORD},
        "aor": {"max_contacts": "1", "remove_existing": "yes"},
        "endpoint": {
            "transport": f"transport-{transport}",
            "context": "sb-internal",
            "auth": ident,
            "aors": ident,
            "callerid": f'"Phone {number}" <{number}>',
            **PHONE_ENDPOINT,
        },
    }
    for kind, fields in objects.items():
        body = {"fields": [{"attribute": key, "value": value} for key, value in fields.items()]}
        response = await ari.put(f"/asterisk/config/dynamic/res_pjsip/{kind}/{ident}", json=body)
        assert response.status_code == 200, response.text
    return ident


async def call_phone(ari: httpx.AsyncClient, ident: str, timeout: int = 10) -> str:
    """Originate a call to the phone into ``APP``; returns the channel id."""
    response = await ari.post(
        "/channels",
        params={"endpoint": f"PJSIP/{ident}", "app": APP, "timeout": timeout, "callerId": '"Desk" <555>'},
    )
    assert response.status_code == 200, response.text
    return str(response.json()["id"])


async def endpoint_state(ari: httpx.AsyncClient, ident: str, wanted: str, timeout: float = 3) -> str:
    """The endpoint's state once it is ``wanted`` (Asterisk updates it just after the
    REGISTER's answer), or the last one seen after ``timeout``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        state = str((await ari.get(f"/endpoints/PJSIP/{ident}")).json()["state"])
        if state == wanted or loop.time() > deadline:
            return state
        await asyncio.sleep(0.02)


def level(samples: array.array[int]) -> float:
    """RMS of 16-bit samples."""
    return math.sqrt(sum(s * s for s in samples) / len(samples)) if samples else 0.0


def tail_level(wav: Path, seconds: float = 0.2, rate: int = 8000) -> float:
    """RMS of the last ``seconds`` of a 16-bit mono wav that is still being written."""
    try:
        data = wav.read_bytes()[44:]
    except OSError:
        return 0.0
    data = data[len(data) % 2 :][-int(seconds * rate) * 2 :]
    return level(array.array("h", data))


def hears(phone: Phone) -> Callable[[], bool]:
    """Whether the phone hears something (a tone, not silence) now."""
    return lambda: tail_level(phone.speaker_wav) > 1000


async def until(predicate: Callable[[], bool], what: str, timeout: float = 3) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise TimeoutError(f"{what}: not after {timeout} s")
        await asyncio.sleep(0.05)


@pytest.mark.parametrize("transport", ["udp", "tcp", "tls"])
async def test_phone_registers(
    ari: httpx.AsyncClient, phones: PhoneFactory, domain: str, transport: str
) -> None:
    ident = await endpoint(ari, "101", domain, transport)
    phone = await phones.phone("101", domain, PASSWORD, transport)
    assert phone.events[-1]["type"] == "REGISTER_OK"
    assert await endpoint_state(ari, ident, "online") == "online"


async def test_wrong_password_fails_registration(
    ari: httpx.AsyncClient, phones: PhoneFactory, domain: str
) -> None:
    await endpoint(ari, "101", domain)
    phone = await phones.phone("101", domain, "not-the-password", register=False)
    with pytest.raises(PhoneError, match="REGISTER_FAIL"):
        await phone.wait_registered()


@pytest.mark.parametrize("transport", ["udp", "tls"])
async def test_incoming_call_rings_answers_and_hangs_up(
    ari: httpx.AsyncClient, ari_events: AriEvents, phones: PhoneFactory, domain: str, transport: str
) -> None:
    ident = await endpoint(ari, "101", domain, transport)
    phone = await phones.phone("101", domain, PASSWORD, transport)
    channel = await call_phone(ari, ident)
    ringing = await phone.wait_incoming()
    assert ringing["direction"] == "incoming"
    assert "555" in ringing["peeruri"]
    await ari_events.wait(
        lambda e: (
            e.get("type") == "ChannelStateChange"
            and e["channel"]["id"] == channel
            and e["channel"]["state"] == "Ringing"
        ),
        what="Ringing",
    )
    await phone.answer()
    established = await phone.wait_established()
    assert established["id"] == ringing["id"]
    await ari_events.of_channel("StasisStart", channel)
    await phone.hangup()
    await phone.wait_closed()
    # The phone's BYE: Asterisk is asked to hang up (by the far end) and the channel ends.
    await ari_events.of_channel("ChannelHangupRequest", channel)
    await ari_events.of_channel("ChannelDestroyed", channel)


async def test_call_hung_up_by_asterisk_closes_on_the_phone(
    ari: httpx.AsyncClient, ari_events: AriEvents, phones: PhoneFactory, domain: str
) -> None:
    ident = await endpoint(ari, "101", domain)
    phone = await phones.phone("101", domain, PASSWORD, auto_answer=True)
    channel = await call_phone(ari, ident)
    await phone.wait_established()
    await ari_events.of_channel("StasisStart", channel)
    assert (await ari.delete(f"/channels/{channel}")).status_code == 204
    closed = await phone.wait_closed()
    assert closed["id"]


async def test_auto_answer(
    ari: httpx.AsyncClient, ari_events: AriEvents, phones: PhoneFactory, domain: str
) -> None:
    ident = await endpoint(ari, "102", domain)
    phone = await phones.phone("102", domain, PASSWORD, auto_answer=True)
    channel = await call_phone(ari, ident)
    ringing = await phone.wait_incoming()  # rings, like a phone in manual mode, then answers
    assert (await phone.wait_established())["id"] == ringing["id"]
    start = await ari_events.of_channel("StasisStart", channel)
    assert start["channel"]["state"] == "Up"
    await ari.delete(f"/channels/{channel}")
    await phone.wait_closed()


async def test_busy_phone_rejects_with_486(
    ari: httpx.AsyncClient, ari_events: AriEvents, phones: PhoneFactory, domain: str
) -> None:
    ident = await endpoint(ari, "103", domain)
    phone = await phones.phone("103", domain, PASSWORD, busy=True)
    channel = await call_phone(ari, ident)
    await phone.wait_incoming()
    destroyed = await ari_events.of_channel("ChannelDestroyed", channel)
    assert destroyed["cause"] == 17, destroyed  # user busy
    await phone.wait_closed()
    assert "CALL_ESTABLISHED" not in [e["type"] for e in phone.events]
    # Not busy any more: the next call is answered.
    phone.set_busy(False)
    channel = await call_phone(ari, ident)
    await phone.wait_incoming()
    await phone.answer()
    await phone.wait_established()
    await ari.delete(f"/channels/{channel}")
    await phone.wait_closed()


async def test_a_phone_with_one_line_is_busy_in_a_call(
    ari: httpx.AsyncClient, ari_events: AriEvents, phones: PhoneFactory, domain: str
) -> None:
    ident = await endpoint(ari, "106", domain)
    phone = await phones.phone("106", domain, PASSWORD, auto_answer=True, max_calls=1)
    first = await call_phone(ari, ident)
    await phone.wait_established()
    second = await call_phone(ari, ident)
    destroyed = await ari_events.of_channel("ChannelDestroyed", second)
    assert destroyed["cause"] == 17, destroyed
    assert [e["type"] for e in phone.events].count("CALL_INCOMING") == 1
    await ari.delete(f"/channels/{first}")
    await phone.wait_closed()


async def test_dtmf_and_media_both_ways(
    ari: httpx.AsyncClient, ari_events: AriEvents, phones: PhoneFactory, domain: str
) -> None:
    ident = await endpoint(ari, "104", domain)
    phone = await phones.phone("104", domain, PASSWORD, auto_answer=True)
    channel = await call_phone(ari, ident)
    await phone.wait_established()
    await ari_events.of_channel("StasisStart", channel)
    await phone.send_dtmf("19*#")

    def digits() -> str:
        return "".join(
            e["digit"]
            for e in ari_events.events
            if e.get("type") == "ChannelDtmfReceived" and e["channel"]["id"] == channel
        )

    await ari_events.wait(lambda _: len(digits()) >= 4, what="four DTMF digits")
    assert digits() == "19*#"
    # The phone hears Asterisk (a tone in what it wrote to its speaker), and Asterisk hears the
    # phone's 440 Hz tone (a recording has sound). ARI runs a channel's operations one at a time.
    playback = await ari.post(f"/channels/{channel}/play", params={"media": "tone:1000"})
    assert playback.status_code == 201, playback.text
    await ari_events.wait(
        lambda e: e.get("type") == "PlaybackStarted" and e["playback"]["id"] == playback.json()["id"],
        what="PlaybackStarted",
    )
    await until(hears(phone), "the phone hears the tone")
    assert (await ari.delete(f"/playbacks/{playback.json()['id']}")).status_code == 204
    name = f"driver-{uuid.uuid4().hex[:8]}"
    recording = await ari.post(
        f"/channels/{channel}/record", params={"name": name, "format": "wav", "maxDurationSeconds": 1}
    )
    assert recording.status_code == 201, recording.text
    await ari_events.wait(
        lambda e: e.get("type") == "RecordingFinished" and e["recording"]["name"] == name,
        what="RecordingFinished",
    )
    stored = await ari.get(f"/recordings/stored/{name}/file")
    assert stored.status_code == 200, stored.text
    heard_by_asterisk = array.array("h", stored.content[44:])
    assert level(heard_by_asterisk) > 1000, level(heard_by_asterisk)
    await phone.hangup()
    await phone.wait_closed()


async def test_phone_dials_into_the_switchboard_app(
    asterisk: Instance, ari: httpx.AsyncClient, ari_events: AriEvents, phones: PhoneFactory, domain: str
) -> None:
    await endpoint(ari, "105", domain)
    phone = await phones.phone("105", domain, PASSWORD)
    await phone.dial("200")
    start = await ari_events.wait(
        lambda e: (
            e.get("type") == "StasisStart"
            and e.get("application") == asterisk.app
            and e["channel"]["caller"]["number"] == "105"
            and e["channel"]["dialplan"]["exten"] == "200"
        ),
        what="StasisStart of the phone's call",
    )
    assert start["args"] == ["internal"]
    assert start["channel"]["name"].startswith(f"PJSIP/105@{domain}-")
    channel = start["channel"]["id"]
    assert (await ari.post(f"/channels/{channel}/answer")).status_code == 204
    established = await phone.wait_established()
    assert established["direction"] == "outgoing"
    await ari.delete(f"/channels/{channel}")
    await phone.wait_closed()


async def test_two_phones_one_tenant(
    ari: httpx.AsyncClient, ari_events: AriEvents, phones: PhoneFactory, domain: str
) -> None:
    first, second = await asyncio.gather(endpoint(ari, "101", domain), endpoint(ari, "102", domain, "tcp"))
    one, two = await asyncio.gather(
        phones.phone("101", domain, PASSWORD), phones.phone("102", domain, PASSWORD, "tcp", auto_answer=True)
    )
    to_two = await call_phone(ari, second)
    await two.wait_established()
    to_one = await call_phone(ari, first)
    await one.wait_incoming()
    # The second call rang the first phone only.
    assert [e["type"] for e in two.events].count("CALL_INCOMING") == 1
    await one.hangup()
    await one.wait_closed()
    await ari.delete(f"/channels/{to_two}")
    await two.wait_closed()
    destroyed = await ari_events.of_channel("ChannelDestroyed", to_one)
    assert destroyed["cause"] == 17


async def test_two_phones_talk_through_a_bridge(
    ari: httpx.AsyncClient, ari_events: AriEvents, phones: PhoneFactory, domain: str
) -> None:
    idents = await asyncio.gather(endpoint(ari, "201", domain), endpoint(ari, "202", domain, "tls"))
    pair = await asyncio.gather(
        phones.phone("201", domain, PASSWORD, auto_answer=True),
        phones.phone("202", domain, PASSWORD, "tls", auto_answer=True),
    )
    channels = [await call_phone(ari, ident) for ident in idents]
    for phone, channel in zip(pair, channels, strict=True):
        await phone.wait_established()
        await ari_events.of_channel("StasisStart", channel)
    bridge = await ari.post("/bridges", params={"type": "mixing"})
    assert bridge.status_code == 200, bridge.text
    bridge_id = bridge.json()["id"]
    try:
        added = await ari.post(f"/bridges/{bridge_id}/addChannel", params={"channel": ",".join(channels)})
        assert added.status_code == 204, added.text
        for phone in pair:  # each hears the other's tone
            await until(hears(phone), f"{phone} hears the other")
    finally:
        await ari.delete(f"/bridges/{bridge_id}")
    await pair[0].hangup()
    await pair[0].wait_closed()
    await ari.delete(f"/channels/{channels[1]}")
    await pair[1].wait_closed()
