"""The S3 storage adapter of the media service against a real S3 server (SeaweedFS by default,
any S3 through SB_TEST_S3_*; see conftest)."""

from __future__ import annotations

import hashlib
import io
import os
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from switchboard_media.storage import (
    VARIANTS,
    InvalidKeyError,
    ObjectNotFound,
    ObjectStore,
    RangeNotSatisfiable,
    StorageError,
    StorageUnavailable,
    object_key,
    object_prefix,
    parse_key,
)

from tests.media.conftest import S3Backend, SeaweedFS, remove_bucket, unique_bucket
from tests.support import free_port

MIB = 1024 * 1024


def new_tenant() -> str:
    return "t" + uuid.uuid4().hex[:12]


def new_id() -> str:
    return uuid.uuid4().hex


def key_of(tenant: str, variant: str = "mp3", kind: str = "sounds", object_id: str | None = None) -> str:
    return object_key(tenant, kind, object_id or new_id(), variant)


def pattern(size: int) -> bytes:
    """Deterministic bytes where every offset is distinguishable (not a repeating short cycle)."""
    out = bytearray()
    counter = 0
    while len(out) < size:
        out += hashlib.sha256(counter.to_bytes(8, "big")).digest()
        counter += 1
    return bytes(out[:size])


def fetch(url: str) -> tuple[int, bytes, dict[str, str]]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.read(), dict(response.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(), dict(exc.headers)


class NonSeekable(io.RawIOBase):
    """A stream without seek or len, like an upload body: forces the unknown-length path."""

    def __init__(self, data: bytes, chunk: int = 100_000) -> None:
        self._data = memoryview(data)
        self._pos = 0
        self._chunk = chunk

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        size = self._chunk if size < 0 else min(size, self._chunk)
        out = bytes(self._data[self._pos : self._pos + size])
        self._pos += len(out)
        return out


# ---- keys ------------------------------------------------------------------------------------


def test_object_key_layout() -> None:
    assert object_key("acme", "sounds", "abcdef12", "mp3") == "tenants/acme/sounds/abcdef12/mp3"
    assert (
        object_key("acme-2", "recordings", "0" * 64, "8k.wav")
        == "tenants/acme-2/recordings/" + "0" * 64 + "/8k.wav"
    )
    assert object_prefix("acme") == "tenants/acme/"
    assert object_prefix("acme", "sounds") == "tenants/acme/sounds/"
    assert object_prefix("acme", "sounds", "abcdef12") == "tenants/acme/sounds/abcdef12/"
    for variant in VARIANTS:
        parts = parse_key(object_key("acme", "sounds", "abcdef12", variant))
        assert (parts.tenant_id, parts.kind, parts.object_id, parts.variant) == (
            "acme",
            "sounds",
            "abcdef12",
            variant,
        )


HOSTILE_TENANTS = [
    "../acme",
    "acme/../other",
    "acme/",
    "ACME",
    "a",
    "",
    "-acme",
    "acme\n",
    "x" * 33,
    "ac me",
    "acme/x",
]
HOSTILE_IDS = [
    "../abcdef12",
    "abcdef12/../x",
    "abcdef1",
    "ABCDEF12",
    "abcdef12\n",
    "abc-def12",
    "a" * 65,
    "",
    "abcdef12/",
]
HOSTILE_VARIANTS = ["../mp3", "mp3/../../other", "wav", "MP3", "mp3\n", "", "original/", "..", "8k.wav/x"]


@pytest.mark.parametrize("tenant", HOSTILE_TENANTS)
def test_object_key_refuses_hostile_tenant(tenant: str) -> None:
    with pytest.raises(InvalidKeyError):
        object_key(tenant, "sounds", "abcdef12", "mp3")
    with pytest.raises(InvalidKeyError):
        object_prefix(tenant)


@pytest.mark.parametrize("object_id", HOSTILE_IDS)
def test_object_key_refuses_hostile_id(object_id: str) -> None:
    with pytest.raises(InvalidKeyError):
        object_key("acme", "sounds", object_id, "mp3")
    with pytest.raises(InvalidKeyError):
        object_prefix("acme", "sounds", object_id)


@pytest.mark.parametrize("variant", HOSTILE_VARIANTS)
def test_object_key_refuses_hostile_variant(variant: str) -> None:
    with pytest.raises(InvalidKeyError):
        object_key("acme", "sounds", "abcdef12", variant)


@pytest.mark.parametrize("kind", ["sound", "../sounds", "sounds/..", "Sounds", ""])
def test_object_key_refuses_unknown_kind(kind: str) -> None:
    with pytest.raises(InvalidKeyError):
        object_key("acme", kind, "abcdef12", "mp3")


def test_store_refuses_keys_and_prefixes_outside_the_layout(object_store: ObjectStore) -> None:
    hostile_keys = [
        "tenants/acme/sounds/abcdef12/../../../other/sounds/abcdef12/mp3",
        "tenants/acme/../other/sounds/abcdef12/mp3",
        "/tenants/acme/sounds/abcdef12/mp3",
        "tenants/acme/sounds/abcdef12/mp3/x",
        "other/acme/sounds/abcdef12/mp3",
        "tenants/acme/sounds/abcdef12/mp3\n",
    ]
    for key in hostile_keys:
        with pytest.raises(InvalidKeyError):
            parse_key(key)
        with pytest.raises(InvalidKeyError):
            object_store.stat(key)
        with pytest.raises(InvalidKeyError):
            object_store.put_stream(key, io.BytesIO(b"x"), 1, "audio/mpeg")
        with pytest.raises(InvalidKeyError):
            object_store.presigned_get(key, 60)
        with pytest.raises(InvalidKeyError):
            object_store.remove(key)
    # Prefixes: a tenant's prefix must end with "/" (else "acme" would match "acme-2"), and the
    # prefix of all tenants cannot be removed.
    for prefix in ["tenants/acme", "tenants/", "", "tenants/acme/../", "tenants/acme/sounds", "x/"]:
        with pytest.raises(InvalidKeyError):
            object_store.remove_prefix(prefix)
    with pytest.raises(InvalidKeyError):
        object_store.list_prefix("tenants/acme")
    with pytest.raises(ValueError, match="content type"):
        object_store.put_stream(key_of(new_tenant()), io.BytesIO(b"x"), 1, "audio/mpeg\r\nX-Evil: 1")
    with pytest.raises(ValueError, match="metadata name"):
        object_store.put_stream(key_of(new_tenant()), io.BytesIO(b"x"), 1, "audio/mpeg", {"Bad Name": "x"})


# ---- bucket ----------------------------------------------------------------------------------


def test_ensure_bucket_is_idempotent(s3_backend: S3Backend) -> None:
    bucket = unique_bucket()
    store = s3_backend.store(bucket)
    try:
        assert store.ping() is False  # answers, but the bucket is not there yet
        store.ensure_bucket()
        store.ensure_bucket()
        assert store.ping() is True
        other = s3_backend.store(bucket)  # a second instance (another replica) at the same time
        other.ensure_bucket()
        key = key_of(new_tenant())
        store.put_stream(key, io.BytesIO(b"kept"), 4, "audio/mpeg")
        other.ensure_bucket()  # does not empty or recreate it
        assert store.get_bytes(key) == b"kept"
    finally:
        store.close()
        remove_bucket(s3_backend, bucket)


def test_missing_bucket_is_a_clear_error(s3_backend: S3Backend) -> None:
    store = s3_backend.store(unique_bucket())
    with pytest.raises(StorageError, match="does not exist"):
        store.put_stream(key_of(new_tenant()), io.BytesIO(b"x"), 1, "audio/mpeg")


# ---- objects ---------------------------------------------------------------------------------


@pytest.fixture
def big_file(tmp_path: Path) -> tuple[Path, str, int]:
    """A 7 MiB file of random bytes (two multipart parts at 5 MiB) and its sha256."""
    size = 7 * MIB
    path = tmp_path / "recording.wav"
    digest = hashlib.sha256()
    with path.open("wb") as out:
        for _ in range(size // MIB):
            block = os.urandom(MIB)
            digest.update(block)
            out.write(block)
    return path, digest.hexdigest(), size


def test_put_file_stat_and_streamed_get(
    s3_backend: S3Backend, s3_bucket: str, big_file: tuple[Path, str, int]
) -> None:
    path, sha, size = big_file
    store = s3_backend.store(s3_bucket, part_size=5 * MIB)  # multipart
    key = key_of(new_tenant(), "original", "recordings")
    metadata = {"name": 'Begrüßung "Hauptmenü".wav', "category": "custom"}
    etag = store.put_file(key, path, "audio/wav", metadata)
    assert etag

    info = store.stat(key)
    assert info is not None
    assert info.size == size
    assert info.etag == etag
    assert info.content_type == "audio/wav"
    assert info.metadata == metadata

    digest = hashlib.sha256()
    chunks = 0
    with store.open_range(key, chunk_size=256 * 1024) as reader:
        assert (reader.start, reader.length, reader.total_size) == (0, size, size)
        for chunk in reader:
            assert 0 < len(chunk) <= 256 * 1024  # streamed in chunks, never the whole object
            digest.update(chunk)
            chunks += 1
    assert digest.hexdigest() == sha
    assert chunks >= size // (256 * 1024)
    store.close()


def test_put_stream_of_unknown_length(object_store: ObjectStore) -> None:
    data = pattern(6 * MIB + 12345)
    key = key_of(new_tenant(), "original")
    etag = object_store.put_stream(key, NonSeekable(data), -1, "audio/mpeg", part_size=5 * MIB)
    info = object_store.stat(key)
    assert info is not None and info.size == len(data) and info.etag == etag
    assert hashlib.sha256(object_store.get_bytes(key)).digest() == hashlib.sha256(data).digest()

    small = key_of(new_tenant())
    object_store.put_stream(small, NonSeekable(b"tiny"), -1, "audio/mpeg")
    assert object_store.get_bytes(small) == b"tiny"
    empty = key_of(new_tenant())
    object_store.put_stream(empty, io.BytesIO(b""), 0, "audio/mpeg")
    info = object_store.stat(empty)
    assert info is not None and info.size == 0
    assert object_store.get_bytes(empty) == b""


def test_range_reads_are_exact(object_store: ObjectStore) -> None:
    size = 1 * MIB + 777
    data = pattern(size)
    key = key_of(new_tenant())
    object_store.put_stream(key, io.BytesIO(data), size, "audio/mpeg")

    def read(start: int, length: int | None = None) -> bytes:
        with object_store.open_range(key, start, length, chunk_size=10_000) as reader:
            assert reader.total_size == size
            assert reader.start == start
            body = reader.read_all()
            assert reader.length == len(body)
            return body

    assert read(0, 100) == data[:100]  # first bytes
    assert read(0, 1) == data[:1]
    assert read(500_000, 123_457) == data[500_000:623_457]  # middle
    assert read(size - 4096) == data[size - 4096 :]  # suffix to the end
    assert read(size - 1) == data[-1:]  # last byte
    assert read(size - 10, 1000) == data[size - 10 :]  # a length beyond the end stops at the end
    assert read(0) == data  # everything
    with pytest.raises(RangeNotSatisfiable):
        object_store.open_range(key, size)
    with pytest.raises(ValueError, match="negative"):
        object_store.open_range(key, -1)


def test_abandoned_reads_release_their_connections(object_store: ObjectStore) -> None:
    """Closing a reader early (a browser seeking away) must not exhaust the connection pool."""
    key = key_of(new_tenant())
    data = pattern(2 * MIB)
    object_store.put_stream(key, io.BytesIO(data), len(data), "audio/mpeg")
    for start in range(0, 40 * 10_000, 10_000):  # more reads than the pool has connections
        reader = object_store.open_range(key, start)
        chunk = next(reader)
        assert chunk and chunk == data[start : start + len(chunk)]
        reader.close()
        assert list(reader) == []
    assert object_store.get_bytes(key) == data


def test_missing_objects(object_store: ObjectStore) -> None:
    key = key_of(new_tenant())
    assert object_store.stat(key) is None
    with pytest.raises(ObjectNotFound):
        object_store.open_range(key, 0)
    object_store.remove(key)  # removing nothing is fine
    object_store.put_stream(key, io.BytesIO(b"abc"), 3, "audio/mpeg")
    object_store.remove(key)
    assert object_store.stat(key) is None


def test_concurrent_use_from_threads(object_store: ObjectStore) -> None:
    tenant = new_tenant()
    payloads = {key_of(tenant): os.urandom(20_000 + i) for i in range(40)}

    def roundtrip(item: tuple[str, bytes]) -> bool:
        key, data = item
        object_store.put_stream(key, io.BytesIO(data), len(data), "audio/mpeg")
        return object_store.get_bytes(key) == data

    with ThreadPoolExecutor(max_workers=12) as pool:
        assert all(pool.map(roundtrip, payloads.items()))
    assert {entry.key for entry in object_store.list_prefix(object_prefix(tenant))} == set(payloads)


# ---- presigned links -------------------------------------------------------------------------


def test_presigned_get(object_store: ObjectStore) -> None:
    data = pattern(50_000)
    key = key_of(new_tenant())
    object_store.put_stream(key, io.BytesIO(data), len(data), "audio/mpeg")

    url = object_store.presigned_get(key, 60)
    status, body, _ = fetch(url)
    assert (status, body) == (200, data)

    # A download name: Content-Disposition with an ASCII fallback and the exact UTF-8 name.
    status, body, headers = fetch(object_store.presigned_get(key, 60, download_name="Ansage Grüße.mp3"))
    assert status == 200 and body == data
    disposition = {k.lower(): v for k, v in headers.items()}["content-disposition"]
    assert disposition.startswith("attachment;")
    assert "filename*=UTF-8''Ansage%20Gr%C3%BC%C3%9Fe.mp3" in disposition

    # Tampering: another signature, another key with this signature, a longer expiry.
    parts = urllib.parse.urlsplit(url)
    query = dict(urllib.parse.parse_qsl(parts.query))
    signature = query["X-Amz-Signature"]
    forged = {**query, "X-Amz-Signature": ("0" if signature[0] != "0" else "1") + signature[1:]}
    assert fetch(parts._replace(query=urllib.parse.urlencode(forged)).geturl())[0] == 403
    other_key = key_of(new_tenant())
    object_store.put_stream(other_key, io.BytesIO(b"secret of another tenant"), 24, "audio/mpeg")
    moved = parts._replace(path=parts.path.rsplit("/tenants/", 1)[0] + "/" + other_key).geturl()
    assert fetch(moved)[0] == 403
    longer = {**query, "X-Amz-Expires": "604800"}
    assert fetch(parts._replace(query=urllib.parse.urlencode(longer)).geturl())[0] == 403

    # Expiry.
    short = object_store.presigned_get(key, 1)
    time.sleep(2.2)
    assert fetch(short)[0] == 403
    with pytest.raises(ValueError, match="between"):
        object_store.presigned_get(key, 8 * 24 * 3600)


# ---- prefixes --------------------------------------------------------------------------------


def test_remove_prefix_removes_only_that_tenants_objects(object_store: ObjectStore) -> None:
    base = new_tenant()[:20]
    victim, neighbour, other = base, f"{base}-2", new_tenant()  # "<t>-2" shares "<t>" as a string prefix
    objects: dict[str, list[str]] = {victim: [], neighbour: [], other: []}
    for tenant in objects:
        for kind in ("sounds", "recordings"):
            object_id = new_id()
            for variant in ("original", "mp3"):
                key = object_key(tenant, kind, object_id, variant)
                object_store.put_stream(key, io.BytesIO(key.encode()), len(key), "audio/mpeg")
                objects[tenant].append(key)

    # One file's variants only.
    one_file = parse_key(objects[victim][0])
    removed = object_store.remove_prefix(object_prefix(victim, one_file.kind, one_file.object_id))
    assert removed == 2
    assert [e.key for e in object_store.list_prefix(object_prefix(victim))] == sorted(objects[victim][2:])

    # The whole tenant.
    assert object_store.remove_prefix(object_prefix(victim)) == 2
    assert object_store.list_prefix(object_prefix(victim)) == []
    for tenant in (neighbour, other):
        listed = object_store.list_prefix(object_prefix(tenant))
        assert [e.key for e in listed] == sorted(objects[tenant])
        for key in objects[tenant]:
            assert object_store.get_bytes(key) == key.encode()
    assert object_store.remove_prefix(object_prefix(victim)) == 0


def test_remove_prefix_of_many_objects(object_store: ObjectStore) -> None:
    """More than one listing/deletion batch of 1000."""
    tenant = new_tenant()
    keys = [key_of(tenant, "mp3") for _ in range(1050)]
    with ThreadPoolExecutor(max_workers=16) as pool:
        list(pool.map(lambda k: object_store.put_stream(k, io.BytesIO(b"x"), 1, "audio/mpeg"), keys))
    assert len(object_store.list_prefix(object_prefix(tenant))) == 1050
    assert object_store.remove_prefix(object_prefix(tenant)) == 1050
    assert object_store.list_prefix(object_prefix(tenant)) == []


# ---- failures and reconnection ---------------------------------------------------------------


def test_unreachable_server_is_unavailable_after_retries() -> None:
    store = ObjectStore(
        f"127.0.0.1:{free_port()}", access_key="a", secret_key="b", bucket="media", attempts=3, backoff=0.05
    )
    started = time.monotonic()
    with pytest.raises(StorageUnavailable, match="after 3 attempt"):
        store.stat(key_of(new_tenant()))
    assert time.monotonic() - started >= 0.05 + 0.1  # backed off between the attempts
    assert store.ping() is False


def test_wrong_credentials_are_not_retried(s3_backend: S3Backend, s3_bucket: str) -> None:
    store = ObjectStore(
        s3_backend.endpoint,
        access_key=s3_backend.access_key,
        secret_key="not-the-secret",
        bucket=s3_bucket,
        secure=s3_backend.secure,
        region=s3_backend.region,
        backoff=5,  # a retry would take seconds
    )
    started = time.monotonic()
    with pytest.raises(StorageError, match="credentials") as caught:
        store.stat(key_of(new_tenant()))
    assert not isinstance(caught.value, StorageUnavailable)
    assert time.monotonic() - started < 3
    assert store.ping() is False


def test_reconnects_after_the_server_restarts(private_seaweedfs: Callable[[], SeaweedFS]) -> None:
    server = private_seaweedfs()
    store = server.store("media-restart", attempts=2, backoff=0.05)
    patient = server.store("media-restart", attempts=10, backoff=0.2)
    store.ensure_bucket()
    key = key_of(new_tenant())
    store.put_stream(key, io.BytesIO(b"before"), 6, "audio/mpeg")
    # Both stores now hold pooled keep-alive connections to the server that goes away.
    assert store.get_bytes(key) == b"before"
    assert patient.get_bytes(key) == b"before"

    server.stop()
    assert store.ping() is False
    with pytest.raises(StorageUnavailable):
        store.stat(key)

    # A call made while the server is starting again succeeds once it is back (retried with
    # backoff on new connections), and the store that gave up works again as well.
    restart = threading.Thread(target=server.start)
    restart.start()
    try:
        assert patient.get_bytes(key) == b"before"  # the data survived the restart
    finally:
        restart.join()
    assert store.ping() is True
    assert store.get_bytes(key) == b"before"
    store.put_stream(key, io.BytesIO(b"after"), 5, "audio/mpeg")
    assert patient.get_bytes(key) == b"after"
    store.close()
    patient.close()
