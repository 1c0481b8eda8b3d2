"""The call-flow service's recording delivery (adapters.recordings.RecordingDelivery) against
real nats-server, SeaweedFS, media, cdr and gateway processes: a wav as Asterisk leaves it in
its recording folder is staged, taken in by the media service under the call record's
recording_id, deleted locally, and played as mp3 through the gateway for its tenant only;
while the media service is down the file stays and the delivery succeeds once it is back."""

from __future__ import annotations

import asyncio
import json
import math
import struct
import time
import wave
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import nats
import pytest
from nats.aio.client import Client as NATS
from switchboard_callflow.adapters.recordings import SIDECAR_SUFFIX, RecordingDelivery, recording_id
from switchboard_callflow.records import Leg
from switchboard_contracts.cdr import Disposition
from switchboard_contracts.subjects import call_leg_ended, media_rpc

from tests.conftest import make_tenant
from tests.integration.test_sounds import staged_uploads
from tests.media.conftest import media_platform
from tests.support import Platform

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    with media_platform(tmp_path_factory.mktemp("recording-delivery"), "sb-recdel") as platform:
        yield platform


@pytest.fixture
async def bus(platform: Platform) -> AsyncIterator[NATS]:
    nc = await nats.connect(platform.nats.url)
    yield nc
    await nc.close()


@pytest.fixture
def recordings_dir(tmp_path: Path) -> Path:
    """Stands for Asterisk's <spool>/recording folder."""
    folder = tmp_path / "recording"
    folder.mkdir()
    return folder


def write_wav(path: Path, seconds: float = 2.0, rate: int = 8000) -> None:
    """What Asterisk's ``format=wav`` writes: 8 kHz, 16 bit, mono PCM (a 400 Hz tone)."""
    frames = b"".join(
        struct.pack("<h", int(8000 * math.sin(2 * math.pi * 400 * i / rate)))
        for i in range(int(seconds * rate))
    )
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(frames)


def files_in(folder: Path) -> list[str]:
    return sorted(path.name for path in folder.iterdir())


async def tenants(platform: Platform, count: int) -> list[tuple[str, str]]:
    async with httpx.AsyncClient(base_url=platform.url,
                                 headers={"Authorization": f"Bearer {Platform.OPERATOR_KEY}"}) as op:  # fmt: skip
        return [await make_tenant(op, settings={"timezone": "UTC"}) for _ in range(count)]


async def media_get(nc: NATS, tenant: str, sound_id: str) -> dict[str, Any]:
    reply = await nc.request(
        media_rpc(tenant, "get"), json.dumps({"tenant_id": tenant, "id": sound_id}).encode(), timeout=10
    )
    answer: dict[str, Any] = json.loads(reply.data)
    return answer


async def assert_playable(platform: Platform, tenant: str, key: str, rid: str) -> None:
    async with httpx.AsyncClient(base_url=platform.url, headers={"Authorization": f"Bearer {key}"}) as api:
        played = await api.get(
            f"/v1/tenants/{tenant}/recordings/{rid}/audio.mp3", headers={"Range": "bytes=0-99"}
        )
        assert played.status_code == 206, played.text
        assert played.headers["content-type"] == "audio/mpeg"
        assert len(played.content) == 100
        whole = await api.get(f"/v1/tenants/{tenant}/recordings/{rid}/download")
        assert whole.status_code == 200, whole.text
        assert whole.headers["content-type"] == "audio/mpeg"
        assert "attachment" in whole.headers["content-disposition"]
        assert whole.content[:3] == b"ID3" or (whole.content[0] == 0xFF and whole.content[1] & 0xE0 == 0xE0)


async def test_delivered_recording_is_playable_for_its_tenant_only(
    platform: Platform, bus: NATS, recordings_dir: Path
) -> None:
    (tenant_a, key_a), (tenant_b, key_b) = await tenants(platform, 2)
    rid = recording_id()
    write_wav(recordings_dir / f"{rid}.wav", seconds=2.0)
    delivery = RecordingDelivery(lambda: bus, str(recordings_dir), retry_delays=(0.5,))

    assert await delivery.deliver(tenant_a, rid, rid, "1764160000.7", "leg-7") is True

    assert not (recordings_dir / f"{rid}.wav").exists()
    assert files_in(recordings_dir) == []  # no sidecar left either
    assert await staged_uploads(platform) == []
    answer = await media_get(bus, tenant_a, rid)
    assert answer["ok"], answer
    sound = answer["result"]
    assert sound["category"] == "call_recording"
    assert (sound["linkedid"], sound["leg_id"]) == ("1764160000.7", "leg-7")
    assert abs(sound["duration_ms"] - 2000) < 200
    await assert_playable(platform, tenant_a, key_a, rid)

    # the leg the call-flow service publishes links to it in call history
    leg = Leg(tenant_a, "1764160000.7", "leg-7", caller_number="101", called_number="102", recording_id=rid)
    leg.talking()
    record = leg.record(Disposition.ANSWERED)
    await bus.jetstream().publish(call_leg_ended(tenant_a), record.model_dump_json().encode())
    async with httpx.AsyncClient(base_url=platform.url, headers={"Authorization": f"Bearer {key_a}"}) as api:
        deadline = time.monotonic() + 20
        while True:
            page = (await api.get(f"/v1/tenants/{tenant_a}/calls")).json()
            if page.get("total") or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.3)
        assert page["items"][0]["legs"][0]["recording_id"] == rid

    async with httpx.AsyncClient(
        base_url=platform.url, headers={"Authorization": f"Bearer {key_b}"}
    ) as other:
        assert (await other.get(f"/v1/tenants/{tenant_b}/recordings/{rid}/audio.mp3")).status_code == 404
        assert (await other.get(f"/v1/tenants/{tenant_b}/recordings/{rid}/download")).status_code == 404
        assert (await other.get(f"/v1/tenants/{tenant_a}/recordings/{rid}/audio.mp3")).status_code == 403


async def test_delivery_waits_while_media_is_down(
    platform: Platform, bus: NATS, recordings_dir: Path
) -> None:
    [(tenant, key)] = await tenants(platform, 1)
    rid = recording_id()
    wav = recordings_dir / f"{rid}.wav"
    write_wav(wav, seconds=2.0)
    delivery = RecordingDelivery(lambda: bus, str(recordings_dir), retry_delays=(0.5, 1, 1, 2, 2, 4, 4, 8, 8))
    media = platform.services["media"]
    media.stop()
    try:
        task = delivery.submit(tenant, rid, rid, "1764160001.8", "leg-8")
        await asyncio.sleep(2.5)  # a few attempts found nobody
        assert not task.done()
        assert delivery.pending == 1
        assert wav.exists()
        assert (recordings_dir / f"{rid}{SIDECAR_SUFFIX}").exists()
        assert await staged_uploads(platform) == []  # unanswered attempts left nothing staged
    finally:
        await asyncio.to_thread(media.start)
    assert await asyncio.wait_for(task, 90) is True
    assert not wav.exists()
    assert files_in(recordings_dir) == []
    assert delivery.pending == 0
    await assert_playable(platform, tenant, key, rid)


async def test_recording_left_at_a_restart_is_delivered_by_resume(
    platform: Platform, bus: NATS, recordings_dir: Path
) -> None:
    [(tenant, key)] = await tenants(platform, 1)
    rid = recording_id()
    (recordings_dir / "sub").mkdir()
    write_wav(recordings_dir / "sub" / f"{rid}.wav", seconds=1.0)
    sidecar = {"tenant_id": tenant, "recording_id": rid, "name": f"sub/{rid}", "linkedid": "1764160002.9",
               "leg_id": "leg-9"}  # fmt: skip
    (recordings_dir / "sub" / f"{rid}{SIDECAR_SUFFIX}").write_text(json.dumps(sidecar))
    delivery = RecordingDelivery(lambda: bus, str(recordings_dir), retry_delays=(0.5,))

    tasks = delivery.resume()
    assert len(tasks) == 1
    assert await asyncio.wait_for(tasks[0], 60) is True

    assert files_in(recordings_dir / "sub") == []
    await assert_playable(platform, tenant, key, rid)


async def test_a_file_the_media_service_refuses_is_kept_and_not_retried(
    platform: Platform, bus: NATS, recordings_dir: Path
) -> None:
    [(tenant, _)] = await tenants(platform, 1)
    rid = recording_id()
    broken = recordings_dir / f"{rid}.wav"
    broken.write_bytes(b"RIFF\x00\x00\x00\x00WAVEnot really audio at all" * 50)
    delivery = RecordingDelivery(lambda: bus, str(recordings_dir), retry_delays=(30, 30), settle_time=0.5)

    started = time.monotonic()
    assert await delivery.deliver(tenant, rid, rid, "1764160003.1", "leg-1") is False
    assert time.monotonic() - started < 20  # refused at once, not retried

    assert broken.exists()  # kept for the operator
    assert not (recordings_dir / f"{rid}{SIDECAR_SUFFIX}").exists()  # not tried again after a restart
    assert await staged_uploads(platform) == []
    assert (await media_get(bus, tenant, rid))["ok"] is False


async def test_employee_recording_setting_is_stored_through_the_gateway(platform: Platform) -> None:
    [(tenant, key)] = await tenants(platform, 1)
    async with httpx.AsyncClient(base_url=platform.url, headers={"Authorization": f"Bearer {key}"}) as api:
        body = {"name": "Rec", "number": "101", "advanced": {"record_calls": True}}
        created = await api.post(f"/v1/tenants/{tenant}/employees", json=body)
        assert created.status_code == 201, created.text
        employee = created.json()
        assert employee["advanced"]["record_calls"] is True
        changed = await api.patch(
            f"/v1/tenants/{tenant}/employees/{employee['id']}",
            json={"revision": employee["revision"], "advanced": {"record_calls": False}},
        )
        assert changed.status_code == 200, changed.text
        assert changed.json()["advanced"]["record_calls"] is False
        assert changed.json()["advanced"]["transport"] == "udp+tcp"  # the rest of advanced kept
        fetched = (await api.get(f"/v1/tenants/{tenant}/employees/{employee['id']}")).json()
        assert fetched["advanced"]["record_calls"] is False
        plain = await api.post(f"/v1/tenants/{tenant}/employees", json={"name": "Plain", "number": "102"})
        assert plain.json()["advanced"]["record_calls"] is False
        wrong = await api.post(
            f"/v1/tenants/{tenant}/employees",
            json={"name": "W", "number": "103", "advanced": {"record_calls": "sometimes"}},
        )
        assert wrong.status_code == 422
