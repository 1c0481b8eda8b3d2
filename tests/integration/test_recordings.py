"""Call recordings end to end: a wav (as Asterisk writes it) taken in by the media service
under the call record's recording_id, the call record published for the cdr service, and
the recording found in call history and played as mp3 through the gateway. Real nats-server,
SeaweedFS, cdr (chDB), media and gateway processes."""

from __future__ import annotations

import asyncio
import io
import json
import subprocess
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import nats
import pytest
from switchboard_contracts.sounds import UPLOADS_BUCKET
from switchboard_contracts.subjects import call_leg_ended

from tests.conftest import make_tenant
from tests.integration.test_sounds import staged_uploads
from tests.media.conftest import media_platform
from tests.support import Platform

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    with media_platform(tmp_path_factory.mktemp("recordings"), "sb-rec") as platform:
        yield platform


@pytest.fixture(scope="module")
def call_wav(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    path: Path = tmp_path_factory.mktemp("wav") / "call.wav"
    subprocess.run(
        ["ffmpeg", "-nostdin", "-v", "error", "-y", "-f", "lavfi", "-i", "sine=frequency=300:duration=6",
         "-ar", "8000", "-ac", "1", "-c:a", "pcm_s16le", str(path)],
        check=True,
    )  # fmt: skip
    return path.read_bytes()


async def take_in_recording(platform: Platform, tenant: str, wav: bytes, linkedid: str, leg_id: str) -> dict:  # type: ignore[type-arg]
    """What callflow does after an answered call: stage the wav, ask media to take it in."""
    nc = await nats.connect(platform.nats.url)
    try:
        js = nc.jetstream()
        staged = uuid.uuid4().hex
        await (await js.object_store(UPLOADS_BUCKET)).put(staged, io.BytesIO(wav))
        recording_id = uuid.uuid4().hex
        body = {
            "tenant_id": tenant,
            "upload": staged,
            "id": recording_id,
            "linkedid": linkedid,
            "leg_id": leg_id,
        }
        reply = await nc.request(
            f"rpc.media.{tenant}.recording.create", json.dumps(body).encode(), timeout=60
        )
        answer: dict = json.loads(reply.data)  # type: ignore[type-arg]
        if answer["ok"]:
            start = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=2)
            record = {
                "tenant_id": tenant, "linkedid": linkedid, "leg_id": leg_id, "start": start.isoformat(),
                "answer": (start + timedelta(seconds=5)).isoformat(), "end": (start + timedelta(seconds=11)).isoformat(),
                "caller_number": "+79255283744", "called_number": "101", "called_account": "101",
                "disposition": "answered", "duration": 11, "billsec": 6, "recording_id": recording_id,
            }  # fmt: skip
            await js.publish(call_leg_ended(tenant), json.dumps(record).encode())
        return answer
    finally:
        await nc.close()


async def test_recording_in_history_and_playable(platform: Platform, call_wav: bytes) -> None:
    async with httpx.AsyncClient(base_url=platform.url,
                                 headers={"Authorization": f"Bearer {Platform.OPERATOR_KEY}"}) as op:  # fmt: skip
        tenant_a, key_a = await make_tenant(op, settings={"timezone": "UTC"})
        tenant_b, key_b = await make_tenant(op, settings={"timezone": "UTC"})
    answer = await take_in_recording(platform, tenant_a, call_wav, "1764150000.5", "leg-1")
    assert answer["ok"], answer
    recording = answer["result"]
    assert recording["category"] == "call_recording"
    assert set(recording["sizes"]) == {"original", "mp3"}
    assert abs(recording["duration_ms"] - 6000) < 200

    async with httpx.AsyncClient(base_url=platform.url, headers={"Authorization": f"Bearer {key_a}"}) as api:
        deadline = time.monotonic() + 20
        while True:
            page = (await api.get(f"/v1/tenants/{tenant_a}/calls")).json()
            if page.get("total") or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.3)
        leg = page["items"][0]["legs"][0]
        assert leg["recording_id"] == recording["id"]
        played = await api.get(f"/v1/tenants/{tenant_a}/recordings/{leg['recording_id']}/audio.mp3",
                               headers={"Range": "bytes=0-99"})  # fmt: skip
        assert played.status_code == 206
        assert played.headers["content-type"] == "audio/mpeg"
        assert len(played.content) == 100
        whole = await api.get(f"/v1/tenants/{tenant_a}/recordings/{recording['id']}/download")
        assert whole.status_code == 200
        assert whole.headers["content-length"] == str(recording["sizes"]["mp3"])
        assert "attachment" in whole.headers["content-disposition"]
        # recordings do not show up among the admin's sound files
        listed = (await api.get(f"/v1/tenants/{tenant_a}/sounds")).json()
        assert recording["id"] not in {s["id"] for s in listed["items"]}

    async with httpx.AsyncClient(
        base_url=platform.url, headers={"Authorization": f"Bearer {key_b}"}
    ) as other:
        assert (
            await other.get(f"/v1/tenants/{tenant_a}/recordings/{recording['id']}/audio.mp3")
        ).status_code == 403
        assert (
            await other.get(f"/v1/tenants/{tenant_b}/recordings/{recording['id']}/audio.mp3")
        ).status_code == 404


async def test_a_broken_recording_is_refused_and_leaves_nothing(platform: Platform) -> None:
    async with httpx.AsyncClient(base_url=platform.url,
                                 headers={"Authorization": f"Bearer {Platform.OPERATOR_KEY}"}) as op:  # fmt: skip
        tenant, _ = await make_tenant(op)
    answer = await take_in_recording(
        platform, tenant, b"RIFF\x00\x00not really a wav", "1764150001.6", "leg-2"
    )
    assert answer["ok"] is False
    assert answer["error"]["field"] == "file"
    assert await staged_uploads(platform) == []
