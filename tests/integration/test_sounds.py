"""Sound files through the gateway, end to end on a private platform (nats-server, config,
media and gateway as processes) with a real S3 server (a private SeaweedFS) and real ffmpeg:
upload of an mp3 and a wav, listing, playback with HTTP Range, download with the file name,
signed links without an API key, refusals (a renamed text file, a truncated mp3, a hostile file
name, too large) that leave nothing behind, and tenant isolation."""

from __future__ import annotations

import asyncio
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import nats
import pytest
from nats.js.errors import NotFoundError
from switchboard_contracts.sounds import MAX_READ_CHUNK, UPLOADS_BUCKET, SoundVariant
from switchboard_gateway.routes.sounds import LinkSigner
from switchboard_media.storage import object_prefix

from tests.conftest import make_tenant
from tests.media.conftest import SeaweedFS, start_seaweedfs
from tests.support import Platform

pytestmark = pytest.mark.timeout(300)

#: The gateway's upload limit on this platform (the media service keeps its own, larger one).
UPLOAD_LIMIT = 5_000_000
GREETING = "Приветствие"


def ff(*args: str) -> None:
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", *args], check=True)


def sine(path: Path, seconds: float, *codec: str) -> bytes:
    ff(
        "-f",
        "lavfi",
        "-i",
        f"sine=frequency=440:sample_rate=44100:duration={seconds}",
        "-ac",
        "1",
        *codec,
        str(path),
    )
    return path.read_bytes()


@pytest.fixture(scope="module")
def seaweedfs() -> Iterator[SeaweedFS]:
    server = start_seaweedfs()
    yield server
    server.cleanup()


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory, seaweedfs: SeaweedFS) -> Iterator[Platform]:
    media_env = seaweedfs.media_env("sb-sounds")
    work = tmp_path_factory.mktemp("sounds")
    platform = Platform(work, request_timeout="5", media_env=media_env)
    # the Platform passes the gateway no other settings; these come from the environment
    with pytest.MonkeyPatch.context() as env:
        env.setenv("SB_GATEWAY_MAX_UPLOAD_BYTES", str(UPLOAD_LIMIT))
        platform.start()
    yield platform
    platform.stop()


@pytest.fixture(scope="module")
def bucket(platform: Platform) -> str:
    return platform.services["media"].env["SB_MEDIA_S3_BUCKET"]


def client(platform: Platform, key: str | None = Platform.OPERATOR_KEY) -> httpx.AsyncClient:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.AsyncClient(base_url=platform.url, headers=headers, timeout=60)


async def tenant(platform: Platform) -> tuple[str, httpx.AsyncClient]:
    async with client(platform) as operator:
        tenant_id, key = await make_tenant(operator)
    return tenant_id, client(platform, key)


@pytest.fixture(scope="module")
def audio(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    """Test files made with ffmpeg's sine source: a 3 s mp3 and a 20 s wav (its 16 kHz variant
    is larger than one read piece, so playback takes several)."""
    folder = tmp_path_factory.mktemp("audio")
    return {
        "mp3": sine(folder / "tone.mp3", 3, "-c:a", "libmp3lame", "-b:a", "128k"),
        "wav": sine(folder / "tone.wav", 20, "-c:a", "pcm_s16le"),
    }


async def upload(
    api: httpx.AsyncClient,
    tenant_id: str,
    file_name: str,
    content: bytes,
    **fields: str,
) -> httpx.Response:
    return await api.post(
        f"/v1/tenants/{tenant_id}/sounds",
        files={"file": (file_name, content, "application/octet-stream")},
        data=fields,
    )


def multipart(file_name: str, content: bytes) -> tuple[str, bytes]:
    """A multipart/form-data body written by hand: (boundary, body)."""
    boundary = uuid.uuid4().hex
    head = f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{file_name}"\r\n\r\n'
    return boundary, head.encode() + content + f"\r\n--{boundary}--\r\n".encode()


async def raw_upload(api: httpx.AsyncClient, tenant_id: str, form: tuple[str, bytes]) -> httpx.Response:
    boundary, body = form
    return await api.post(
        f"/v1/tenants/{tenant_id}/sounds",
        content=body,
        headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
    )


async def staged_uploads(platform: Platform) -> list[str]:
    """Names in the NATS object store bucket where uploads wait for the media service."""
    nc = await nats.connect(platform.nats.url)
    try:
        store = await nc.jetstream().object_store(UPLOADS_BUCKET)
        try:
            return [info.name for info in await store.list(ignore_deletes=True)]
        except NotFoundError:
            return []
    finally:
        await nc.close()


def stored_objects(seaweedfs: SeaweedFS, bucket: str, tenant_id: str) -> list[str]:
    listing = seaweedfs.minio().list_objects(bucket, prefix=object_prefix(tenant_id), recursive=True)
    return sorted(obj.object_name or "" for obj in listing)


def assert_error(
    response: httpx.Response, status: int, code: str | None = None, field: str | None = None
) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error: dict[str, Any] = response.json()["error"]
    assert set(error) == {"code", "message", "field", "details"}
    assert error["message"]
    if code is not None:
        assert error["code"] == code, error
    if field is not None:
        assert error["field"] == field, error
    return error


# --------------------------------------------------------------------------- upload, list, play


@pytest.fixture(scope="module")
async def sounds(platform: Platform, audio: dict[str, bytes]) -> AsyncIterator[dict[str, Any]]:
    """One tenant with the mp3 (named in Cyrillic) and the wav (named after its file) uploaded."""
    tenant_id, api = await tenant(platform)
    async with api:
        mp3 = await upload(api, tenant_id, "tone.mp3", audio["mp3"], name=GREETING)
        assert mp3.status_code == 201, mp3.text
        wav = await upload(api, tenant_id, "Hold music.wav", audio["wav"], category="music_on_hold")
        assert wav.status_code == 201, wav.text
        yield {"tenant": tenant_id, "api": api, "mp3": mp3, "wav": wav}


async def test_upload_an_mp3_and_a_wav(sounds: dict[str, Any], platform: Platform) -> None:
    tenant_id = sounds["tenant"]
    mp3, wav = sounds["mp3"].json(), sounds["wav"].json()
    assert sounds["mp3"].headers["location"] == f"/v1/tenants/{tenant_id}/sounds/{mp3['id']}"
    assert mp3["name"] == GREETING and mp3["file_name"] == "tone.mp3" and mp3["category"] == "custom"
    assert mp3["original_format"].startswith("mp3")
    assert 2800 <= mp3["duration_ms"] <= 3200
    assert wav["name"] == "Hold music" and wav["category"] == "music_on_hold"  # the file name without .wav
    assert wav["original_format"].startswith("wav")
    assert 19_800 <= wav["duration_ms"] <= 20_200
    for sound in (mp3, wav):
        assert sound["tenant_id"] == tenant_id
        assert set(sound["sizes"]) == {v.value for v in SoundVariant}
        assert all(size > 0 for size in sound["sizes"].values())
    assert wav["sizes"]["16k.wav"] > MAX_READ_CHUNK  # playback below needs several pieces
    assert await staged_uploads(platform) == []  # the media service removed the staged uploads


async def test_list_and_read(sounds: dict[str, Any]) -> None:
    api, tenant_id = sounds["api"], sounds["tenant"]
    mp3, wav = sounds["mp3"].json(), sounds["wav"].json()
    listed = await api.get(f"/v1/tenants/{tenant_id}/sounds")
    assert listed.status_code == 200, listed.text
    assert listed.json()["total"] == 2
    assert {s["id"] for s in listed.json()["items"]} == {mp3["id"], wav["id"]}
    music = await api.get(f"/v1/tenants/{tenant_id}/sounds", params={"category": "music_on_hold"})
    assert [s["id"] for s in music.json()["items"]] == [wav["id"]]
    found = await api.get(f"/v1/tenants/{tenant_id}/sounds", params={"search": "привет"})
    assert [s["id"] for s in found.json()["items"]] == [mp3["id"]]
    one = await api.get(f"/v1/tenants/{tenant_id}/sounds/{mp3['id']}")
    assert one.status_code == 200 and one.json() == mp3
    assert_error(await api.get(f"/v1/tenants/{tenant_id}/sounds", params={"category": "jingles"}), 422)
    assert_error(await api.get(f"/v1/tenants/{tenant_id}/sounds/{uuid.uuid4().hex}"), 404, "not_found")


async def test_play_the_mp3_with_ranges(sounds: dict[str, Any]) -> None:
    api, tenant_id = sounds["api"], sounds["tenant"]
    mp3 = sounds["mp3"].json()
    url = f"/v1/tenants/{tenant_id}/sounds/{mp3['id']}/audio.mp3"
    total = mp3["sizes"]["mp3"]

    full = await api.get(url)
    assert full.status_code == 200, full.text
    assert full.headers["content-type"] == "audio/mpeg"
    assert full.headers["accept-ranges"] == "bytes"
    assert int(full.headers["content-length"]) == total == len(full.content)
    assert full.content[:3] == b"ID3" or full.content[0] == 0xFF  # an mp3, not JSON

    part = await api.get(url, headers={"Range": "bytes=100-1099"})
    assert part.status_code == 206, part.text
    assert part.headers["content-range"] == f"bytes 100-1099/{total}"
    assert part.headers["content-length"] == "1000"
    assert part.content == full.content[100:1100]

    tail = await api.get(url, headers={"Range": "bytes=-500"})
    assert tail.status_code == 206
    assert tail.headers["content-range"] == f"bytes {total - 500}-{total - 1}/{total}"
    assert tail.content == full.content[-500:]

    rest = await api.get(url, headers={"Range": f"bytes={total - 10}-"})
    assert rest.status_code == 206 and rest.content == full.content[-10:]

    beyond = await api.get(url, headers={"Range": f"bytes=0-{total * 2}"})  # clamped to the end
    assert beyond.status_code == 206 and beyond.content == full.content
    assert beyond.headers["content-range"] == f"bytes 0-{total - 1}/{total}"

    outside = await api.get(url, headers={"Range": f"bytes={total}-"})
    assert_error(outside, 416, "range_not_satisfiable", "Range")
    assert outside.headers["content-range"] == f"bytes */{total}"

    several = await api.get(url, headers={"Range": "bytes=0-9,20-29"})  # not supported: whole file
    assert several.status_code == 200 and several.content == full.content

    stale = await api.get(url, headers={"Range": "bytes=0-9", "If-Range": '"something else"'})
    assert stale.status_code == 200 and stale.content == full.content
    fresh = await api.get(url, headers={"Range": "bytes=0-9", "If-Range": full.headers["etag"]})
    assert fresh.status_code == 206 and fresh.content == full.content[:10]

    head = await api.head(url)
    assert head.status_code == 200 and head.content == b""
    assert int(head.headers["content-length"]) == total


async def test_play_the_wav_variants_in_several_pieces(sounds: dict[str, Any]) -> None:
    api, tenant_id = sounds["api"], sounds["tenant"]
    wav = sounds["wav"].json()
    base = f"/v1/tenants/{tenant_id}/sounds/{wav['id']}/audio"
    wide = await api.get(f"{base}/16k.wav")
    assert wide.status_code == 200, wide.text
    assert wide.headers["content-type"] == "audio/wav"
    assert len(wide.content) == wav["sizes"]["16k.wav"] > MAX_READ_CHUNK
    assert wide.content[:4] == b"RIFF" and wide.content[8:12] == b"WAVE"
    across = await api.get(
        f"{base}/16k.wav", headers={"Range": f"bytes={MAX_READ_CHUNK - 100}-{MAX_READ_CHUNK + 99}"}
    )
    assert across.status_code == 206
    assert across.content == wide.content[MAX_READ_CHUNK - 100 : MAX_READ_CHUNK + 100]
    narrow = await api.get(f"{base}/8k.wav")
    assert narrow.status_code == 200 and narrow.headers["content-type"] == "audio/wav"
    assert len(narrow.content) == wav["sizes"]["8k.wav"]
    assert int.from_bytes(narrow.content[24:28], "little") == 8000
    assert int.from_bytes(wide.content[24:28], "little") == 16000
    assert_error(await api.get(f"{base}/44k.flac"), 422)


async def test_download_has_the_file_name(sounds: dict[str, Any]) -> None:
    api, tenant_id = sounds["api"], sounds["tenant"]
    mp3 = sounds["mp3"].json()
    response = await api.get(f"/v1/tenants/{tenant_id}/sounds/{mp3['id']}/download")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "audio/mpeg"
    disposition = response.headers["content-disposition"]
    assert disposition.startswith("attachment;")
    assert 'filename="sound.mp3"' in disposition  # the ASCII fallback of a Cyrillic name
    assert f"filename*=UTF-8''{quote(GREETING + '.mp3')}" in disposition
    assert len(response.content) == mp3["sizes"]["mp3"]


# --------------------------------------------------------------------------- signed links


async def test_signed_link_plays_without_a_key(sounds: dict[str, Any], platform: Platform) -> None:
    api, tenant_id = sounds["api"], sounds["tenant"]
    mp3 = sounds["mp3"].json()
    full = (await api.get(f"/v1/tenants/{tenant_id}/sounds/{mp3['id']}/audio.mp3")).content
    made = await api.post(f"/v1/tenants/{tenant_id}/sounds/{mp3['id']}/link")
    assert made.status_code == 200, made.text
    link = made.json()
    assert link["url"].startswith("/v1/public/sounds/") and link["variant"] == "mp3"
    async with client(platform, key=None) as anonymous:
        played = await anonymous.get(link["url"])
        assert played.status_code == 200, played.text
        assert played.headers["content-type"] == "audio/mpeg" and played.content == full
        seek = await anonymous.get(link["url"], headers={"Range": "bytes=1000-1999"})
        assert seek.status_code == 206 and seek.content == full[1000:2000]
        assert seek.headers["content-range"] == f"bytes 1000-1999/{len(full)}"

        token = link["url"].rsplit("/", 1)[1]
        flipped = token[:20] + ("A" if token[20] != "A" else "B") + token[21:]
        error = assert_error(await anonymous.get(f"/v1/public/sounds/{flipped}"), 403, "forbidden")
        assert "not valid" in error["message"]
        assert_error(await anonymous.get(f"/v1/public/sounds/{token}x"), 403, "forbidden")
        assert_error(await anonymous.get("/v1/public/sounds/not-a-token"), 403, "forbidden")

        signer = LinkSigner("", Platform.OPERATOR_KEY)  # the gateway's key: derived from the operator key
        expired = signer.sign(tenant_id, mp3["id"], SoundVariant.MP3, int(time.time()) - 1)
        error = assert_error(await anonymous.get(f"/v1/public/sounds/{expired}"), 403, "forbidden")
        assert "expired" in error["message"]

        # the tenant routes still want a key
        assert (
            await anonymous.get(f"/v1/tenants/{tenant_id}/sounds/{mp3['id']}/audio.mp3")
        ).status_code == 401

    # for Asterisk: the 8 kHz wav, served as audio/wav
    wav = sounds["wav"].json()
    made = await api.post(
        f"/v1/tenants/{tenant_id}/sounds/{wav['id']}/link", json={"variant": "8k.wav", "expires_in": 60}
    )
    assert made.status_code == 200, made.text
    async with client(platform, key=None) as anonymous:
        played = await anonymous.get(made.json()["url"])
    assert played.status_code == 200 and played.headers["content-type"] == "audio/wav"
    assert len(played.content) == wav["sizes"]["8k.wav"]
    assert_error(
        await api.post(f"/v1/tenants/{tenant_id}/sounds/{wav['id']}/link", json={"expires_in": 1}), 422
    )


# --------------------------------------------------------------------------- refusals


async def test_bad_files_are_refused_and_nothing_is_kept(
    platform: Platform, audio: dict[str, bytes], seaweedfs: SeaweedFS, bucket: str
) -> None:
    tenant_id, api = await tenant(platform)
    async with api:
        text = b"Meeting notes\nnothing to hear here, just text that was renamed\n" * 50
        refused = await upload(api, tenant_id, "notes.mp3", text)
        error = assert_error(refused, 422, "validation", "file")
        assert error["details"][0]["reason"] == "not_audio", error

        truncated = audio["mp3"][: len(audio["mp3"]) // 2 + 7]
        refused = await upload(api, tenant_id, "cut.mp3", truncated)
        error = assert_error(refused, 422, "validation", "file")
        assert error["details"][0]["reason"] == "corrupt", error

        refused = await upload(api, tenant_id, "empty.mp3", b"")
        error = assert_error(refused, 422, "validation", "file")
        assert error["details"][0]["reason"] == "empty", error

        refused = await upload(api, tenant_id, "../../etc/passwd.mp3", audio["mp3"])
        error = assert_error(refused, 422, "validation", "file_name")
        assert error["details"][0]["reason"] == "bad_file_name"
        refused = await upload(api, tenant_id, "song\u202egpj.mp3", audio["mp3"])  # right-to-left override
        assert_error(refused, 422, "validation", "file_name")
        # httpx (like browsers) percent-encodes control characters; a raw one is refused as well
        refused = await raw_upload(api, tenant_id, multipart("bell\x07.mp3", audio["mp3"]))
        assert "U+0007" in assert_error(refused, 422, "validation", "file_name")["message"]
        whole = multipart("fine.mp3", audio["mp3"])
        cut_short = await raw_upload(api, tenant_id, (whole[0], whole[1][: len(whole[1]) // 2]))
        assert "ends before" in assert_error(cut_short, 400, "bad_request")["message"]

        assert_error(
            await upload(api, tenant_id, "ok.mp3", audio["mp3"], category="jingles"), 422, field="category"
        )
        assert_error(await upload(api, tenant_id, "ok.mp3", audio["mp3"], name="x" * 201), 422, field="name")
        assert_error(await upload(api, tenant_id, "ok.mp3", audio["mp3"], colour="red"), 422, field="colour")
        no_file = await api.post(f"/v1/tenants/{tenant_id}/sounds", files={"name": (None, b"x")})
        assert_error(no_file, 422, field="file")
        as_json = await api.post(f"/v1/tenants/{tenant_id}/sounds", json={"file": "x"})
        assert_error(as_json, 415)

        listed = await api.get(f"/v1/tenants/{tenant_id}/sounds")
        assert listed.json() == {"items": [], "total": 0}
    assert await staged_uploads(platform) == []
    assert stored_objects(seaweedfs, bucket, tenant_id) == []


async def test_oversized_uploads_get_413(platform: Platform) -> None:
    tenant_id, api = await tenant(platform)
    url = f"/v1/tenants/{tenant_id}/sounds"
    big = b"\0" * (UPLOAD_LIMIT + 1)
    async with api:
        # Content-Length says so: refused before the body is read
        error = assert_error(await upload(api, tenant_id, "big.wav", big), 413, "too_large", "file")
        assert "5 MB" in error["message"] and error["details"][0]["limit_bytes"] == UPLOAD_LIMIT

        # no Content-Length (chunked): refused while the body arrives
        boundary = uuid.uuid4().hex

        async def body() -> AsyncIterator[bytes]:
            yield (
                f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="big.wav"\r\n'
                "Content-Type: audio/wav\r\n\r\n"
            ).encode()
            piece = b"\0" * 65536
            for _ in range(UPLOAD_LIMIT // len(piece) + 2):
                yield piece
                await asyncio.sleep(0)
            yield f"\r\n--{boundary}--\r\n".encode()

        chunked = await api.post(
            url, content=body(), headers={"Content-Type": f"multipart/form-data; boundary={boundary}"}
        )
        assert_error(chunked, 413, "too_large", "file")

        listed = await api.get(url)
        assert listed.json()["total"] == 0
    assert await staged_uploads(platform) == []


# --------------------------------------------------------------------------- isolation, deletion


async def test_another_tenant_cannot_reach_the_file(
    sounds: dict[str, Any], platform: Platform, audio: dict[str, bytes]
) -> None:
    a_tenant, a_id = sounds["tenant"], sounds["mp3"].json()["id"]
    b_tenant, b_api = await tenant(platform)
    async with b_api:
        a_base = f"/v1/tenants/{a_tenant}/sounds"
        for method, path in [
            ("GET", ""),
            ("GET", f"/{a_id}"),
            ("GET", f"/{a_id}/audio.mp3"),
            ("GET", f"/{a_id}/audio/8k.wav"),
            ("GET", f"/{a_id}/download"),
            ("POST", f"/{a_id}/link"),
            ("DELETE", f"/{a_id}"),
        ]:
            assert_error(await b_api.request(method, a_base + path), 403, "forbidden", "tenant_id")
        # an upload to A's path is refused before its body is looked at (not 413, not 422)
        too_big = await upload(b_api, a_tenant, "x.mp3", b"\0" * (UPLOAD_LIMIT + 1))
        assert_error(too_big, 403, "forbidden")
        assert_error(await upload(b_api, a_tenant, "x.mp3", audio["mp3"]), 403, "forbidden")

        b_base = f"/v1/tenants/{b_tenant}/sounds"
        for method, path in [
            ("GET", f"/{a_id}"),
            ("GET", f"/{a_id}/audio.mp3"),
            ("GET", f"/{a_id}/download"),
            ("POST", f"/{a_id}/link"),
            ("DELETE", f"/{a_id}"),
        ]:
            assert_error(await b_api.request(method, b_base + path), 404, "not_found")
        assert (await b_api.get(b_base)).json()["total"] == 0

        # a link of tenant B's naming A's file does not exist: the token is bound to its tenant
        signer = LinkSigner("", Platform.OPERATOR_KEY)
        crossed = signer.sign(b_tenant, a_id, SoundVariant.MP3, int(time.time()) + 60)
        assert_error(await b_api.get(f"/v1/public/sounds/{crossed}"), 404, "not_found")

    a_api = sounds["api"]
    assert (await a_api.get(f"{a_base}/{a_id}")).status_code == 200  # still there


async def test_delete(platform: Platform, audio: dict[str, bytes], seaweedfs: SeaweedFS, bucket: str) -> None:
    tenant_id, api = await tenant(platform)
    async with api:
        base = f"/v1/tenants/{tenant_id}/sounds"
        created = await upload(api, tenant_id, "greeting.mp3", audio["mp3"])
        assert created.status_code == 201, created.text
        sound_id = created.json()["id"]
        assert stored_objects(seaweedfs, bucket, tenant_id)

        menu = await api.post(
            f"/v1/tenants/{tenant_id}/ivr-menus",
            json={"name": "Main menu", "number": "500", "greeting_sound_id": sound_id,
                  "default_target": "+79161234567"},
        )  # fmt: skip
        assert menu.status_code == 201, menu.text
        in_use = await api.delete(f"{base}/{sound_id}")
        error = assert_error(in_use, 409, "conflict")
        assert "Main menu" in error["message"]

        removed = await api.delete(f"/v1/tenants/{tenant_id}/ivr-menus/{menu.json()['id']}")
        assert removed.status_code == 204, removed.text
        deleted = await api.delete(f"{base}/{sound_id}")
        assert deleted.status_code == 204, deleted.text
        assert deleted.content == b""
        assert_error(await api.get(f"{base}/{sound_id}"), 404, "not_found")
        assert_error(await api.get(f"{base}/{sound_id}/audio.mp3"), 404, "not_found")
        assert_error(await api.delete(f"{base}/{sound_id}"), 404, "not_found")
    assert stored_objects(seaweedfs, bucket, tenant_id) == []
