"""Asterisk 22 for Switchboard, from Debian's package in a debootstrap root.

    python scripts/asterisk.py build              # once: .cache/asterisk/root (about a minute)
    python scripts/asterisk.py check              # exit 0 when this machine can run it
    python scripts/asterisk.py run --name local   # render the configuration and run in front
    python scripts/asterisk.py render --out DIR   # only render deploy/asterisk/etc into DIR

Isolation: every Asterisk (and every test phone) runs in its own mount and PID namespace
(``unshare``) inside the root, with a private /proc. Nothing is mounted in the host's mount
table, so no mount outlives the process, and when the process ends every child it started ends
with it. The root shares the host's network, so ARI, AMI and SIP listen on loopback.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import datetime as dt
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from base64 import b64encode
from dataclasses import dataclass, field
from pathlib import Path

PROJECT = Path(__file__).resolve().parent.parent
ROOT_DIR = Path(os.environ.get("SB_ASTERISK_ROOT", PROJECT / ".cache" / "asterisk" / "root"))
TEMPLATES = PROJECT / "deploy" / "asterisk" / "etc"
PACKAGES = (
    "asterisk",
    "asterisk-modules",
    "asterisk-core-sounds-en-wav",
    "asterisk-core-sounds-ru-wav",
    "asterisk-moh-opsound-wav",
    "baresip-core",
    "ca-certificates",
)
STAMP_NAME = ".switchboard-root-v1"
INSTANCES_DIR = "srv/switchboard"  # inside the root
PLACEHOLDER = re.compile(r"%%\{([a-z_]+)\}")


def stamp() -> Path:
    return ROOT_DIR / STAMP_NAME


def why_not_runnable() -> str | None:
    """None when Asterisk can be built and run here, else the reason in a few words."""
    if not sys.platform.startswith("linux"):
        return "Asterisk runs only on Linux here"
    if os.geteuid() != 0:
        return "building and running the Asterisk root needs root (chroot, namespaces)"
    for tool in ("unshare", "chroot"):
        if shutil.which(tool) is None:
            return f"the {tool} command is missing"
    if not stamp().exists() and shutil.which("debootstrap") is None and shutil.which("apt-get") is None:
        return "debootstrap is missing and apt-get is not available to install it"
    return None


def debian_mirror() -> str:
    """The mirror this machine already uses (its apt sources), else Debian's own."""
    if env := os.environ.get("SB_DEBIAN_MIRROR"):
        return env
    for source in sorted(Path("/etc/apt/sources.list.d").glob("*.sources")):
        for line in source.read_text().splitlines():
            if line.startswith("URIs:") and "security" not in line:
                return line.split()[1]
    sources = Path("/etc/apt/sources.list")
    if sources.exists():
        for line in sources.read_text().splitlines():
            parts = line.split()
            if len(parts) >= 3 and parts[0] == "deb" and "security" not in parts[1]:
                return parts[1]
    return "http://deb.debian.org/debian"


def build() -> Path:
    """Make the root once (debootstrap from Debian sid, which has Asterisk 22)."""
    if stamp().exists():
        return ROOT_DIR
    reason = why_not_runnable()
    if reason:
        raise SystemExit(f"asterisk: cannot build: {reason}")
    if shutil.which("debootstrap") is None:
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
        subprocess.run(["apt-get", "install", "-y", "-qq", "debootstrap"], check=True, env=env)
    partial = ROOT_DIR.with_name(ROOT_DIR.name + ".partial")
    if partial.exists():
        shutil.rmtree(partial)
    partial.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    print(f"asterisk: building the root in {partial} from {debian_mirror()} (about a minute)", flush=True)
    # In a private mount namespace: whatever debootstrap mounts (proc, sys) disappears with it.
    subprocess.run(
        [
            "unshare", "--mount", "--propagation", "private",
            "debootstrap", "--variant=minbase", "--include=" + ",".join(PACKAGES),
            "sid", str(partial), debian_mirror(),
        ],
        check=True,
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    if ROOT_DIR.exists():
        shutil.rmtree(ROOT_DIR)
    partial.rename(ROOT_DIR)
    (ROOT_DIR / INSTANCES_DIR).mkdir(parents=True, exist_ok=True)
    stamp().write_text(asterisk_version() + "\n")
    print(f"asterisk: root ready in {time.monotonic() - started:.0f} s: {stamp().read_text().strip()}")
    return ROOT_DIR


def _die_with_parent() -> None:
    """In the child before exec: get SIGKILL when the process that started us ends."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def isolated(command: list[str]) -> list[str]:
    """``command`` run in the root, in new mount and PID namespaces with their own /proc.
    When the first process ends, the kernel ends everything else in the namespace."""
    return [
        "unshare", "--fork", "--pid", "--mount", "--propagation", "private",
        f"--mount-proc={ROOT_DIR / 'proc'}", "--kill-child",
        "chroot", str(ROOT_DIR), *command,
    ]  # fmt: skip


def link_prompts() -> None:
    """Debian names the prompt folders by voice; Asterisk looks for sounds/<language>."""
    sounds = ROOT_DIR / "usr/share/asterisk/sounds"
    for language, voice in (("ru", "ru_RU_f_IvrvoiceRU"), ("en", "en_US_f_Allison")):
        link = sounds / language
        if (sounds / voice).is_dir() and not link.is_symlink() and not link.exists():
            link.symlink_to(voice)


def asterisk_version() -> str:
    result = subprocess.run(
        ["chroot", str(ROOT_DIR), "/usr/sbin/asterisk", "-V"], capture_output=True, text=True, check=True
    )
    return result.stdout.strip()


def render(text: str, values: dict[str, str]) -> str:
    def value(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in values:
            raise KeyError(f"no value for %%{{{name}}}")
        return values[name]

    return PLACEHOLDER.sub(value, text)


def nat_options(external_address: str | None, local_net: str) -> str:
    """Transport lines for an Asterisk behind NAT (SB_ASTERISK_EXTERNAL_ADDRESS)."""
    if not external_address:
        return ""
    return (
        f"external_media_address = {external_address}\n"
        f"external_signaling_address = {external_address}\n"
        f"local_net = {local_net}\n"
    )


def self_signed_certificate(key_path: Path, cert_path: Path, host: str) -> None:
    """A TLS certificate for SIP over TLS when no real one is given."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=825))
        .sign(key, hashes.SHA256())
    )
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    key_path.chmod(0o600)
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


@dataclass
class Instance:
    """One Asterisk with its own ports, credentials and folders under the root."""

    name: str
    sip_port: int = 5060
    tls_port: int = 5061
    ari_port: int = 8088
    ami_port: int = 5038
    rtp_start: int = 10000
    rtp_end: int = 20000
    bind_address: str = "127.0.0.1"
    sip_bind: str = "127.0.0.1"
    ari_user: str = "switchboard"
    ari_password: str = field(default_factory=lambda: secrets.token_urlsafe(18))
    ami_user: str = "switchboard"
    ami_password: str = field(default_factory=lambda: secrets.token_urlsafe(18))
    app: str = "switchboard"
    language: str = "ru"
    external_address: str | None = None
    local_net: str = "127.0.0.0/8"
    proc: subprocess.Popen[bytes] | None = None

    @property
    def home(self) -> Path:
        """The instance's folder on the host (inside the root)."""
        return ROOT_DIR / INSTANCES_DIR / self.name

    @property
    def home_in_root(self) -> str:
        return f"/{INSTANCES_DIR}/{self.name}"

    @property
    def log_path(self) -> Path:
        return self.home / "asterisk.out"

    def values(self) -> dict[str, str]:
        inside = self.home_in_root
        return {
            "etc_dir": f"{inside}/etc",
            "state_dir": f"{inside}/state",
            "language": self.language,
            "bind_address": self.bind_address,
            "sip_bind": self.sip_bind,
            "ari_port": str(self.ari_port),
            "ari_user": self.ari_user,
            "ari_password": self.ari_password,
            "ami_port": str(self.ami_port),
            "ami_user": self.ami_user,
            "ami_password": self.ami_password,
            "ami_permit": "127.0.0.1/255.255.255.255"
            if self.bind_address == "127.0.0.1"
            else "0.0.0.0/0.0.0.0",
            "sip_port": str(self.sip_port),
            "tls_port": str(self.tls_port),
            "tls_cert": f"{inside}/keys/sip.crt",
            "tls_key": f"{inside}/keys/sip.key",
            "nat_options": nat_options(self.external_address, self.local_net),
            "rtp_start": str(self.rtp_start),
            "rtp_end": str(self.rtp_end),
            "app": self.app,
        }

    def render(self, out: Path | None = None) -> Path:
        if out is None:
            link_prompts()
        etc = out or self.home / "etc"
        etc.mkdir(parents=True, exist_ok=True)
        values = self.values()
        for template in sorted(TEMPLATES.glob("*.conf")):
            target = etc / template.name
            target.write_text(render(template.read_text(), values))
            target.chmod(0o600)
        if out is None:
            for sub in ("state/spool/recording", "state/run", "state/log", "state/keys", "keys", "sounds"):
                (self.home / sub).mkdir(parents=True, exist_ok=True)
            keys = self.home / "keys"
            if not (keys / "sip.crt").exists():
                self_signed_certificate(
                    keys / "sip.key", keys / "sip.crt", self.external_address or "localhost"
                )
        return etc

    def command(self) -> list[str]:
        return isolated(["/usr/sbin/asterisk", "-f", "-n", "-C", f"{self.home_in_root}/etc/asterisk.conf"])

    def start(self, timeout: float = 60) -> Instance:
        self.render()
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            self.command(),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
        log.close()
        self.wait_ready(timeout)
        return self

    def ari_ready(self) -> bool:
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.ari_port}/ari/asterisk/info",
            headers={
                "Authorization": "Basic "
                + b64encode(f"{self.ari_user}:{self.ari_password}".encode()).decode()
            },
        )
        try:
            with urllib.request.urlopen(request, timeout=1) as response:  # noqa: S310
                return bool(response.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"asterisk {self.name} exited ({self.proc.returncode}): {self.tail()}")
            if self.ari_ready():
                return
            time.sleep(0.1)
        raise TimeoutError(f"asterisk {self.name}: ARI not ready after {timeout} s: {self.tail()}")

    def cli(self, command: str) -> str:
        """Run an Asterisk CLI command against this instance (through its control socket)."""
        result = subprocess.run(
            [
                "chroot",
                str(ROOT_DIR),
                "/usr/sbin/asterisk",
                "-C",
                f"{self.home_in_root}/etc/asterisk.conf",
                "-rx",
                command,
            ],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
        return result.stdout

    def tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self, timeout: float = 10) -> None:
        """Asterisk ends gracefully on SIGTERM; whatever is left of the group is killed."""
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()

    def restart(self, timeout: float = 60) -> None:
        self.stop()
        self.start(timeout)

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.home, ignore_errors=True)


def instance_from_env(name: str) -> Instance:
    """The run command's instance: ports and passwords from SB_ASTERISK_* variables."""
    env = os.environ
    kwargs: dict[str, object] = {"name": name}
    for key, var in (
        ("sip_port", "SB_ASTERISK_SIP_PORT"),
        ("tls_port", "SB_ASTERISK_TLS_PORT"),
        ("ari_port", "SB_ASTERISK_ARI_PORT"),
        ("ami_port", "SB_ASTERISK_AMI_PORT"),
    ):
        if var in env:
            kwargs[key] = int(env[var])
    for key, var in (
        ("ari_password", "SB_ASTERISK_ARI_PASSWORD"),
        ("ami_password", "SB_ASTERISK_AMI_PASSWORD"),
        ("external_address", "SB_ASTERISK_EXTERNAL_ADDRESS"),
        ("sip_bind", "SB_ASTERISK_SIP_BIND"),
        ("language", "SB_ASTERISK_LANGUAGE"),
    ):
        if env.get(var):
            kwargs[key] = env[var]
    return Instance(**kwargs)  # type: ignore[arg-type]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("build")
    sub.add_parser("check")
    run = sub.add_parser("run")
    run.add_argument("--name", default="local")
    out = sub.add_parser("render")
    out.add_argument("--name", default="local")
    out.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)

    if args.command == "check":
        reason = why_not_runnable()
        print(f"asterisk: {reason}" if reason else "asterisk: can run here")
        return 1 if reason else 0
    if args.command == "build":
        build()
        return 0
    if args.command == "render":
        instance_from_env(args.name).render(args.out)
        return 0
    build()
    instance = instance_from_env(args.name)
    instance.render()
    print(f"asterisk: {instance.name}: SIP {instance.sip_port} (TLS {instance.tls_port}), ARI {instance.ari_port}, "
          f"AMI {instance.ami_port}", flush=True)  # fmt: skip
    command = instance.command()
    os.execvp(command[0], command)
    return 0  # pragma: no cover


if __name__ == "__main__":
    sys.exit(main())
