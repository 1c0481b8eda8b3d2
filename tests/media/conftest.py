"""Fixtures of the media tests: a real S3 server.

By default a private SeaweedFS (``weed mini``, started by scripts/seaweedfs.sh on free loopback
ports in a temp dir) per session; it FAILS, never skips, when the server cannot start. The same
tests run against any other S3 (a MinIO, say) when ``SB_TEST_S3_ENDPOINT`` is set
(``host:port`` or ``http(s)://host:port``), with ``SB_TEST_S3_ACCESS_KEY``,
``SB_TEST_S3_SECRET_KEY`` and optionally ``SB_TEST_S3_REGION`` and ``SB_TEST_S3_SECURE=1``.
Every session works in its own bucket, emptied and removed at the end.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from minio import Minio
from switchboard_media.storage import ObjectStore

from tests.support import ROOT, Platform, free_port, port_open

SCRIPT = ROOT / "scripts" / "seaweedfs.sh"
LOCAL_ACCESS_KEY = "sb-test-access"
LOCAL_SECRET_KEY = "sb-test-secret-key-for-seaweedfs"


class S3Backend:
    """An S3 server the tests talk to: where it is and how to log in."""

    name = "s3"
    restartable = False

    def __init__(
        self, endpoint: str, access_key: str, secret_key: str, secure: bool = False, region: str = "us-east-1"
    ) -> None:
        self.endpoint = endpoint
        self.access_key = access_key
        self.secret_key = secret_key
        self.secure = secure
        self.region = region

    def store(self, bucket: str, **options: Any) -> ObjectStore:
        return ObjectStore(
            self.endpoint,
            access_key=self.access_key,
            secret_key=self.secret_key,
            bucket=bucket,
            secure=self.secure,
            region=self.region,
            **options,
        )

    def minio(self) -> Minio:
        """A plain SDK client, for set-up and clean-up outside the code under test."""
        endpoint = self.endpoint.split("://", 1)[-1]
        secure = self.endpoint.startswith("https://") or self.secure
        return Minio(
            endpoint,
            access_key=self.access_key,
            secret_key=self.secret_key,
            secure=secure,
            region=self.region,
        )

    def start(self) -> S3Backend:
        return self

    def stop(self) -> None:
        pass

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.endpoint})"


class ExternalS3(S3Backend):
    """A server somebody else runs, from SB_TEST_S3_* variables."""

    name = "external"

    @classmethod
    def from_env(cls) -> ExternalS3 | None:
        endpoint = os.environ.get("SB_TEST_S3_ENDPOINT", "").strip()
        if not endpoint:
            return None
        access_key = os.environ.get("SB_TEST_S3_ACCESS_KEY") or os.environ.get("AWS_ACCESS_KEY_ID", "")
        secret_key = os.environ.get("SB_TEST_S3_SECRET_KEY") or os.environ.get("AWS_SECRET_ACCESS_KEY", "")
        if not access_key or not secret_key:
            pytest.fail(
                "SB_TEST_S3_ENDPOINT is set but SB_TEST_S3_ACCESS_KEY / SB_TEST_S3_SECRET_KEY are not"
            )
        return cls(
            endpoint,
            access_key,
            secret_key,
            secure=os.environ.get("SB_TEST_S3_SECURE", "") in ("1", "true", "yes"),
            region=os.environ.get("SB_TEST_S3_REGION", "us-east-1"),
        )


def s3_port() -> int:
    """A free loopback port whose SeaweedFS gRPC companion (port + 10000) is free as well."""
    for _ in range(100):
        port = free_port()
        if port <= 55535 and not port_open(port + 10000):
            return port
    raise RuntimeError("no free port pair for SeaweedFS")


class SeaweedFS(S3Backend):
    """A private ``weed mini`` through scripts/seaweedfs.sh; restartable on the same data dir
    and ports (the data survives)."""

    name = "seaweedfs"
    restartable = True

    def __init__(self, data_dir: Path | None = None) -> None:
        self.data_dir = data_dir or Path(tempfile.mkdtemp(prefix="sb-s3-"))
        self.port = s3_port()
        super().__init__(f"127.0.0.1:{self.port}", LOCAL_ACCESS_KEY, LOCAL_SECRET_KEY)
        self.pid: int | None = None

    def media_env(self, bucket_prefix: str) -> dict[str, str]:
        """Settings of a media service storing in this server, in a bucket of its own."""
        return {
            "SB_MEDIA_S3_ENDPOINT": self.endpoint,
            "SB_MEDIA_S3_ACCESS_KEY": self.access_key,
            "SB_MEDIA_S3_SECRET_KEY": self.secret_key,
            "SB_MEDIA_S3_BUCKET": f"{bucket_prefix}-{uuid.uuid4().hex[:8]}",
            "SB_MEDIA_S3_SECURE": "false",
        }

    def _script(self, *args: str, timeout: float) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "AWS_ACCESS_KEY_ID": self.access_key, "AWS_SECRET_ACCESS_KEY": self.secret_key}
        return subprocess.run(
            [str(SCRIPT), *args], capture_output=True, text=True, timeout=timeout, check=False, env=env
        )

    def start(self) -> SeaweedFS:
        """Start (or start again); RuntimeError with the script's output when it cannot."""
        outputs = []
        for _ in range(3):
            try:
                result = self._script("start", str(self.data_dir), str(self.port), timeout=90)
            except subprocess.TimeoutExpired as exc:
                raise RuntimeError(f"seaweedfs.sh start timed out: {exc.stderr!r}") from exc
            if result.returncode == 0:
                self.pid = int(result.stdout.strip().splitlines()[-1])
                return self
            outputs.append(f"(exit {result.returncode}) {result.stderr}{result.stdout}")
            if "already in use" not in result.stderr or self.pid is not None:
                break
            self.port = s3_port()  # lost a race for the port on the first start: another one
            self.endpoint = f"127.0.0.1:{self.port}"
        raise RuntimeError("seaweedfs.sh start failed:\n" + "\n".join(outputs))

    def stop(self) -> None:
        self._script("stop", str(self.data_dir), timeout=60)

    def log(self) -> str:
        path = self.data_dir / "log" / "weed.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.data_dir, ignore_errors=True)


def start_seaweedfs() -> SeaweedFS:
    server = SeaweedFS()
    try:
        return server.start()
    except RuntimeError as exc:
        shutil.rmtree(server.data_dir, ignore_errors=True)
        pytest.fail(str(exc))


@contextmanager
def media_platform(
    work: Path, bucket_prefix: str, request_timeout: str = "10", **services: Any
) -> Iterator[Platform]:
    """A private platform with call history (chDB) and the media service on a private SeaweedFS
    (bucket ``<bucket_prefix>-<random>``); ``services`` adds e.g. ``callflow_env``."""
    server = start_seaweedfs()
    cdr_env = {"SB_CDR_CHDB_PATH": str(work / "chdb"), "SB_CDR_BATCH_MAX_WAIT": "0.2"}
    platform = Platform(
        work,
        cdr_env=cdr_env,
        request_timeout=request_timeout,
        media_env=server.media_env(bucket_prefix),
        **services,
    )
    try:
        yield platform.start()
    finally:
        platform.stop()
        server.cleanup()


@pytest.fixture(scope="session")
def s3_backend() -> Iterator[S3Backend]:
    """The session's S3 server: SB_TEST_S3_* if set, else a private SeaweedFS."""
    external = ExternalS3.from_env()
    if external is not None:
        yield external
        return
    server = start_seaweedfs()
    yield server
    server.cleanup()


def remove_bucket(backend: S3Backend, bucket: str) -> None:
    client = backend.minio()
    if not client.bucket_exists(bucket):
        return
    for obj in client.list_objects(bucket, recursive=True):
        if obj.object_name:
            client.remove_object(bucket, obj.object_name)
    client.remove_bucket(bucket)


def unique_bucket() -> str:
    return f"sb-test-{uuid.uuid4().hex[:12]}"


@pytest.fixture(scope="session")
def s3_bucket(s3_backend: S3Backend) -> Iterator[str]:
    """A bucket of this session (created), emptied and removed at the end."""
    bucket = unique_bucket()
    store = s3_backend.store(bucket)
    store.ensure_bucket()
    store.close()
    yield bucket
    remove_bucket(s3_backend, bucket)


@pytest.fixture(scope="session")
def object_store(s3_backend: S3Backend, s3_bucket: str) -> Iterator[ObjectStore]:
    store = s3_backend.store(s3_bucket)
    yield store
    store.close()


@pytest.fixture
def private_seaweedfs() -> Iterator[Callable[[], SeaweedFS]]:
    """Start private SeaweedFS instances (for tests that stop and restart the server, whatever
    the session's backend is); all stopped and removed at the end of the test."""
    servers: list[SeaweedFS] = []

    def start() -> SeaweedFS:
        server = start_seaweedfs()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.cleanup()
