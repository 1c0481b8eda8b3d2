"""Fixtures of the call-history store tests: one embedded chDB store and one ClickHouse server
(Debian's package, started by scripts/clickhouse-server.sh on free loopback ports) per session.
Each test writes its own tenants, so the stores are shared."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from switchboard_cdr.store.chdb_backend import ChdbCallStore
from switchboard_cdr.store.server_backend import ServerCallStore

from tests.support import ROOT, free_port

SCRIPT = ROOT / "scripts" / "clickhouse-server.sh"


@pytest.fixture(scope="session")
def chdb_store() -> Iterator[ChdbCallStore]:
    path = Path(tempfile.mkdtemp(prefix="sb-cdr-chdb-"))
    store = ChdbCallStore(path / "data")
    store.migrate()
    yield store
    store.close()
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def clickhouse_server() -> Iterator[int]:
    """A private clickhouse-server; yields its native TCP port. Fails (never skips) when the
    script cannot install or start it."""
    data_dir = Path(tempfile.mkdtemp(prefix="sb-cdr-clickhouse-"))
    tcp_port, http_port = free_port(), free_port()
    try:
        started = subprocess.run(
            [str(SCRIPT), "start", str(data_dir), str(tcp_port), str(http_port)],
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"clickhouse-server.sh start timed out: {exc.stderr!r}")
    if started.returncode != 0:
        pytest.fail(
            f"clickhouse-server.sh start failed (exit {started.returncode}):\n{started.stderr}{started.stdout}"
        )
    yield tcp_port
    subprocess.run([str(SCRIPT), "stop", str(data_dir)], capture_output=True, timeout=60, check=False)
    shutil.rmtree(data_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def server_store(clickhouse_server: int) -> Iterator[ServerCallStore]:
    store = ServerCallStore(port=clickhouse_server, database="sb_cdr_test")
    store.migrate()
    yield store
    store.close()
