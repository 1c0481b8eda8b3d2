"""Real SIP phones for the telephony tests: one baresip per phone, driven over ctrl_tcp.

Each phone is a baresip process (Debian's baresip-core, v1.1.0 in the Asterisk root built by
``scripts/asterisk.py``) run inside that root with the same isolation as Asterisk (new mount
and PID namespaces, ``chroot``), in its own process group, killed with the test process.

    phone = await Phone("101", "acme.pbx.test", "secret", sip_port=instance.sip_port).start()
    await phone.wait_registered()
    await phone.dial("102")
    await phone.wait_established()
    await phone.send_dtmf("12#")
    await phone.hangup()
    await phone.wait_closed()
    await phone.stop()

Control: ctrl_tcp, netstring-framed JSON. Commands are ``{"command", "params", "token"}``;
baresip answers ``{"response": true, "ok", "data", "token"}`` and pushes events
``{"event": true, "class", "type", "param", "accountaor", "direction", "peeruri", "id"}``
(``id``: the call's SIP Call-ID). ctrl_tcp sends events only to a connected client, so the
phone starts with no account and the account is added (``uanew``) once the driver is
connected: no event, REGISTERING and REGISTER_OK included, can be missed.

Answering: baresip's account is always ``answermode=manual``; ``auto_answer`` and ``busy`` are
done by the driver when CALL_INCOMING comes (answer it, or reject it: 486), so every incoming
call has its CALL_INCOMING event (baresip's own auto mode sends none). Calls beyond
``max_calls`` (default 4: call waiting) are refused by baresip with 486 "Max Calls".

Media: no sound card. The microphone is ``ausine`` (a steady 440 Hz tone, endless) unless
``audio_file`` names a wav inside the root (``aufile``; baresip closes the call with "end of
file" when the file ends). What the phone hears is written to ``speaker.wav`` in its folder
(``speaker_wav``, 8 kHz 16-bit mono), anew for each call. Codecs: G.711 only (PCMU, PCMA);
DTMF: RFC 4733 events.

Asterisk endpoints for these phones need ``allow`` with ulaw or alaw, for TLS
``rewrite_contact = yes``, and a ``transport`` of the phone's protocol or none (see
tests/telephony/test_baresip_driver.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import re
import shutil
import signal
import subprocess
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from scripts.asterisk import ROOT_DIR, _die_with_parent, isolated
from tests.support import free_port

PHONES_DIR = "srv/switchboard/phones"  # inside the root
SINE_HZ = 440
TRANSPORTS = ("udp", "tcp", "tls")
# Each phone gets its own RTP port range, above Asterisk's default range (10000-20000) and
# below the kernel's ephemeral ports (32768+).
RTP_FIRST, RTP_LAST, RTP_PORTS_PER_PHONE = 21000, 32000, 16
_rtp_slots = itertools.count()

Event = dict[str, Any]


class PhoneError(RuntimeError):
    """baresip refused a command, ended, or an awaited event did not come."""


def _netstring(body: bytes) -> bytes:
    return str(len(body)).encode() + b":" + body + b","


class Phone:
    """One SIP phone (a baresip process) registered to Asterisk as ``number@domain``."""

    def __init__(
        self,
        number: str,
        domain: str,
        password: str,
        *,
        sip_port: int,
        tls_port: int | None = None,
        transport: str = "udp",
        auth_user: str | None = None,
        auto_answer: bool = False,
        busy: bool = False,
        regint: int = 60,
        max_calls: int = 4,
        proxy_host: str = "127.0.0.1",
        audio_file: str | None = None,
        name: str | None = None,
    ) -> None:
        if transport not in TRANSPORTS:
            raise ValueError(f"transport must be one of {TRANSPORTS}, not {transport!r}")
        if transport == "tls" and tls_port is None:
            raise ValueError("transport tls needs tls_port")
        self.number = number
        self.domain = domain
        self.password = password
        self.auth_user = auth_user or number
        self.transport = transport
        self.sip_port = sip_port
        self.tls_port = tls_port
        self.auto_answer = auto_answer
        self.busy = busy
        self.regint = regint
        self.max_calls = max_calls
        self.proxy_host = proxy_host
        self.audio_file = audio_file
        self.name = name or f"{number}-{domain}-{uuid.uuid4().hex[:8]}"
        self.ctrl_port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self.events: list[Event] = []  # every event so far, oldest first
        self._taken: set[int] = set()  # indexes in events that a wait returned
        self._changed = asyncio.Condition()
        self._responses: dict[str, asyncio.Future[Event]] = {}
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._read_task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()  # one command at a time: replies come in order
        self._closed: str | None = None
        self._reactions: set[asyncio.Task[None]] = set()

    # -- where things are ---------------------------------------------------------------------

    @property
    def home(self) -> Path:
        """The phone's config folder on the host (inside the root)."""
        return ROOT_DIR / PHONES_DIR / self.name

    @property
    def home_in_root(self) -> str:
        return f"/{PHONES_DIR}/{self.name}"

    @property
    def log_path(self) -> Path:
        return self.home / "baresip.log"

    @property
    def speaker_wav(self) -> Path:
        """What the phone heard in its last call (16-bit mono wav, 8 kHz), on the host."""
        return self.home / "speaker.wav"

    @property
    def aor(self) -> str:
        return f"sip:{self.number}@{self.domain}"

    def uri(self, number: str) -> str:
        """The request URI for dialling ``number`` (or a full ``sip:`` URI, kept as is)."""
        return number if number.startswith(("sip:", "sips:")) else f"sip:{number}@{self.domain}"

    def account_line(self) -> str:
        port = self.tls_port if self.transport == "tls" else self.sip_port
        return (
            f"<sip:{self.number}@{self.domain};transport={self.transport}>"
            f";auth_user={self.auth_user};auth_pass={self.password}"
            f';outbound="sip:{self.proxy_host}:{port};transport={self.transport}"'
            f";regint={self.regint};answermode=manual"
        )

    def config_text(self) -> str:
        first = RTP_FIRST + (next(_rtp_slots) * RTP_PORTS_PER_PHONE) % (RTP_LAST - RTP_FIRST)
        source = f"aufile,{self.audio_file}" if self.audio_file else f"ausine,{SINE_HZ}"
        return "\n".join(
            (
                "poll_method epoll",
                # Port 0: the kernel picks free ports for UDP, TCP and TLS (a fixed port P would
                # also take P+1 for TLS).
                "sip_listen 127.0.0.1:0",
                "net_interface 127.0.0.1",  # SDP and Contact on loopback, not eth0's address
                "sip_verify_server no",  # Asterisk's certificate is self-signed
                "sip_trans_def udp",
                "call_local_timeout 120",
                # More calls than this are refused by baresip itself with "486 Max Calls".
                f"call_max_calls {self.max_calls}",
                f"audio_source {source}",
                f"audio_player aufile,{self.home_in_root}/speaker.wav",
                "audio_path /usr/share/baresip",
                *(
                    () if self.audio_file else ("ausrc_srate 48000", "ausrc_channels 1")
                ),  # ausine: 48 kHz only
                f"rtp_ports {first}-{first + RTP_PORTS_PER_PHONE - 1}",
                "rtcp_mux no",
                "jitter_buffer_type fixed",
                "jitter_buffer_delay 1-10",
                "module_path /usr/lib/baresip/modules",
                "module g711.so",
                "module aufile.so",
                "module ausine.so",
                "module_tmp account.so",
                "module_app menu.so",
                "module_app ctrl_tcp.so",
                f"ctrl_tcp_listen 127.0.0.1:{self.ctrl_port}",
                "ringback_disabled yes",
                # No ring, call-waiting or error tones: the menu plays them through an aufile
                # player that races with the call's own player (baresip 1.1.0 crashed on answer).
                *(
                    f"{tone}_aufile none"
                    for tone in ("ring", "callwaiting", "ringback", "notfound", "busy", "error")
                ),
                "sip_autoanswer_aufile none",
                "sip_autoanswer_beep no",
                "",
            )
        )

    # -- life cycle ---------------------------------------------------------------------------

    async def start(self, timeout: float = 10) -> Phone:
        """Start baresip, connect to its control port and add the account (which registers
        when ``regint`` is not 0). Does not wait for the registration: ``wait_registered``."""
        if self.proc is not None:
            raise PhoneError(f"phone {self.name} already started")
        self.home.mkdir(parents=True, exist_ok=True)
        self.ctrl_port = free_port()
        (self.home / "config").write_text(self.config_text())
        # The account is added over ctrl_tcp once connected; this file is for reading only.
        (self.home / "accounts").write_text(f"# added with uanew at start:\n# {self.account_line()}\n")
        (self.home / "contacts").write_text("")
        command = f"uanew {self.account_line()}"
        if len(command.encode()) > 255:  # ctrl_tcp builds the command line in 256 bytes
            raise ValueError(f"account line too long for baresip's ctrl_tcp: {command!r}")
        self.proc = self._spawn()
        try:
            await asyncio.wait_for(self._connect(), timeout)
            await self.command("uanew", self.account_line(), timeout=timeout)
        except BaseException:
            await self.stop()
            raise
        return self

    def _spawn(self) -> subprocess.Popen[bytes]:
        with self.log_path.open("ab") as log:
            return subprocess.Popen(
                isolated(["baresip", "-f", self.home_in_root]),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_die_with_parent,  # only prctl, before exec
            )

    async def _connect(self) -> None:
        while True:
            if self.proc is None or self.proc.poll() is not None:
                raise PhoneError(f"baresip {self.name} ended before its control port opened: {self.tail()}")
            try:
                self._reader, self._writer = await asyncio.open_connection("127.0.0.1", self.ctrl_port)
                break
            except OSError:
                await asyncio.sleep(0.02)
        self._read_task = asyncio.create_task(self._read_loop(), name=f"baresip-{self.name}")

    async def stop(self, timeout: float = 3) -> None:
        """End baresip: on SIGTERM (to its process group) it hangs up its calls and unregisters
        before it exits (at once on loopback); SIGKILL if it lingers. Then remove its folder
        (kept when SB_KEEP_PHONES is set, to read ``baresip.log``)."""
        for task in list(self._reactions):
            task.cancel()
        if self._read_task is not None:
            self._read_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._read_task
            self._read_task = None
        if self._writer is not None:
            self._writer.close()
            with contextlib.suppress(Exception):
                await self._writer.wait_closed()
            self._writer = None
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                await asyncio.to_thread(proc.wait, timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                await asyncio.to_thread(proc.wait)
        self._fail_pending(PhoneError(f"phone {self.name} stopped"))
        if not os.environ.get("SB_KEEP_PHONES"):
            shutil.rmtree(self.home, ignore_errors=True)

    def tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    # -- the control connection ---------------------------------------------------------------

    async def _read_loop(self) -> None:
        assert self._reader is not None
        reason = "control connection closed"
        try:
            while True:
                header = await self._reader.readuntil(b":")
                size = int(header[:-1])
                payload = await self._reader.readexactly(size + 1)
                if payload[-1:] != b",":
                    raise PhoneError(f"bad netstring from baresip: {payload[-20:]!r}")
                message: Event = json.loads(payload[:-1])
                if message.get("response"):
                    future = self._responses.pop(str(message.get("token")), None)
                    if future is not None and not future.done():
                        future.set_result(message)
                elif message.get("event"):
                    await self._on_event(message)
        except (asyncio.IncompleteReadError, ConnectionError) as exc:
            reason = f"control connection closed ({exc!r})"
        except asyncio.CancelledError:
            reason = "stopped"
            raise
        except Exception as exc:
            reason = f"control reader failed: {exc!r}"
            raise
        finally:
            self._closed = reason
            self._fail_pending(PhoneError(f"phone {self.name}: {reason}: {self.tail(10)}"))
            with contextlib.suppress(RuntimeError):
                async with self._changed:
                    self._changed.notify_all()

    async def _on_event(self, event: Event) -> None:
        if event.get("type") == "CALL_INCOMING" and (self.busy or self.auto_answer):
            task = asyncio.get_running_loop().create_task(self._pick_up(event))
            self._reactions.add(task)
            task.add_done_callback(self._reactions.discard)
        async with self._changed:
            self.events.append(event)
            self._changed.notify_all()

    async def _pick_up(self, event: Event) -> None:
        """Busy: reject the ringing call (486); auto-answer: answer it. The driver does this
        rather than baresip's answermode=auto, which gives no CALL_INCOMING event."""
        call_id = str(event.get("id", ""))
        with contextlib.suppress(PhoneError):
            if self.busy:
                await self.hangup(call_id)
            elif self.auto_answer:
                await self.answer(call_id)

    def _fail_pending(self, error: Exception) -> None:
        for future in self._responses.values():
            if not future.done():
                future.set_exception(error)
        self._responses.clear()

    async def command(self, command: str, params: str | None = None, timeout: float = 5) -> str:
        """Run a baresip command (as in its ``/help``); returns its output, raises PhoneError
        when baresip says it failed."""
        if self._writer is None or self._closed is not None:
            raise PhoneError(f"phone {self.name} is not connected ({self._closed or 'not started'})")
        token = uuid.uuid4().hex
        request: dict[str, str] = {"command": command, "token": token}
        if params is not None:
            request["params"] = params
        future: asyncio.Future[Event] = asyncio.get_running_loop().create_future()
        self._responses[token] = future
        async with self._lock:
            self._writer.write(_netstring(json.dumps(request).encode()))
            await self._writer.drain()
            try:
                response = await asyncio.wait_for(future, timeout)
            except TimeoutError:
                self._responses.pop(token, None)
                raise PhoneError(f"phone {self.name}: no answer to {command!r} in {timeout} s") from None
        data = str(response.get("data", ""))
        if not response.get("ok"):
            raise PhoneError(f"phone {self.name}: {command} {params or ''} failed: {data.strip()}")
        return data

    # -- events -------------------------------------------------------------------------------

    async def wait_event(
        self,
        kind: str | Iterable[str],
        timeout: float = 5,
        *,
        call_id: str | None = None,
        fail_on: Iterable[str] = (),
    ) -> Event:
        """The oldest event of type ``kind`` (one type or several; of call ``call_id`` when
        given) that no wait has returned yet, waiting up to ``timeout`` seconds for it. Raises
        PhoneError when an event of a type in ``fail_on`` (of that call) comes before it,
        TimeoutError when none comes. A ``fail_on`` event of a call that had already reached
        ``kind`` (an earlier call, closed after it was established) does not count."""
        kinds = {kind} if isinstance(kind, str) else set(kind)
        failing = set(fail_on)
        wanted = "/".join(sorted(kinds)) + (f" of call {call_id}" if call_id else "")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        async with self._changed:
            while True:
                for index, event in enumerate(self.events):
                    if index in self._taken or (call_id is not None and event.get("id") != call_id):
                        continue
                    if event.get("type") in kinds:
                        self._taken.add(index)
                        return event
                    if event.get("type") in failing and not self._got_past(event, kinds, index):
                        raise PhoneError(
                            f"phone {self.name}: {event.get('type')} ({event.get('param', '')}) "
                            f"while waiting for {wanted}"
                        )
                if self._closed is not None:
                    raise PhoneError(
                        f"phone {self.name}: {self._closed}; waited for {wanted}; "
                        f"baresip's last words:\n{self.tail(15)}"
                    )
                remaining = deadline - loop.time()
                if remaining <= 0:
                    seen = [e.get("type") for e in self.events[-8:]]
                    raise TimeoutError(f"phone {self.name}: no {wanted} in {timeout} s (last events {seen})")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._changed.wait(), remaining)

    def _got_past(self, failure: Event, kinds: set[str], before: int) -> bool:
        """Whether ``failure`` ends a call that had already reached ``kinds`` (an earlier call
        that closed after it was established does not fail a wait for the next one)."""
        call_id = failure.get("id")
        return call_id is not None and any(
            e.get("id") == call_id and e.get("type") in kinds for e in self.events[:before]
        )

    def forget_events(self) -> None:
        """Let no event seen so far answer a later wait (a clean slate between scenarios)."""
        self._taken.update(range(len(self.events)))

    async def wait_registered(self, timeout: float = 5) -> Event:
        """REGISTER_OK; PhoneError on REGISTER_FAIL (its ``param`` is the SIP status)."""
        return await self.wait_event("REGISTER_OK", timeout, fail_on=("REGISTER_FAIL",))

    async def wait_incoming(self, timeout: float = 5) -> Event:
        """CALL_INCOMING: a call rings (on auto-answer and busy phones too, just before the
        driver answers or rejects it). ``peeruri`` is the caller, ``id`` the call's id."""
        return await self.wait_event("CALL_INCOMING", timeout)

    async def wait_established(self, timeout: float = 5, call_id: str | None = None) -> Event:
        """CALL_ESTABLISHED; PhoneError when the call closes first (``param`` says why, e.g.
        "486 Busy Here" or "No audio codecs")."""
        return await self.wait_event("CALL_ESTABLISHED", timeout, call_id=call_id, fail_on=("CALL_CLOSED",))

    async def wait_closed(self, timeout: float = 5, call_id: str | None = None) -> Event:
        """CALL_CLOSED; ``param`` is the reason ("Connection reset by peer" when the far end
        hung up, "603 Decline" and the like when the call was refused)."""
        return await self.wait_event("CALL_CLOSED", timeout, call_id=call_id)

    # -- calls --------------------------------------------------------------------------------

    async def dial(self, number: str) -> str:
        """Call ``number`` (at the phone's domain, through Asterisk) or a full SIP URI; returns
        the new call's id, as in its events."""
        data = await self.command("dial", self.uri(number))
        match = re.search(r"call id: (\S+)", data)
        if match is None:
            raise PhoneError(f"phone {self.name}: dial {number}: no call id in {data!r}")
        return match.group(1)

    async def answer(self, call_id: str | None = None) -> None:
        """Answer the ringing call, or call ``call_id``; like a real phone, baresip puts its
        other calls on hold (``call_hold_other_calls``)."""
        if call_id is None:
            await self.command("accept")
        else:
            await self.command("acceptdir", f"audio=sendrecv video=inactive callid={call_id}")

    async def hangup(self, call_id: str | None = None) -> None:
        """Hang up the current call, or call ``call_id``; an unanswered incoming call is
        rejected with 486, an unanswered outgoing one cancelled."""
        await self.command("hangup", call_id)

    async def send_dtmf(self, digits: str, gap: float = 0.12) -> None:
        """Send DTMF as RFC 4733 events in the current call's RTP, one digit at a time
        (``sndcode`` presses the key and releases it), ``gap`` seconds apart."""
        for digit in digits:
            if digit not in "0123456789*#ABCD":
                raise ValueError(f"not a DTMF digit: {digit!r}")
            await self.command("sndcode", digit)
            await asyncio.sleep(gap)

    def set_busy(self, busy: bool) -> None:
        """Reject incoming calls with 486 Busy Here (True) or let them ring (False); the same
        as setting ``busy``."""
        self.busy = busy

    def __repr__(self) -> str:
        return f"<Phone {self.aor} {self.transport} {self.name}>"


class PhoneFactory:
    """Phones against one Asterisk ``Instance``; ``stop_all`` ends every phone it made.

    As a fixture::

        factory = PhoneFactory(instance)
        yield factory
        await factory.stop_all()
    """

    def __init__(self, instance: Any) -> None:
        self.instance = instance
        self.phones: list[Phone] = []

    async def phone(
        self,
        number: str,
        domain: str,
        password: str,
        transport: str = "udp",
        auto_answer: bool = False,
        *,
        register: bool = True,
        timeout: float = 10,
        **options: Any,
    ) -> Phone:
        """A started phone; registered (REGISTER_OK seen) unless ``register`` is False."""
        phone = Phone(
            number,
            domain,
            password,
            sip_port=self.instance.sip_port,
            tls_port=self.instance.tls_port,
            transport=transport,
            auto_answer=auto_answer,
            **options,
        )
        self.phones.append(phone)
        await self.wait_provisioned(f"{number}@{domain}", timeout)
        await phone.start(timeout)
        if register:
            await phone.wait_registered(timeout)
        return phone

    async def wait_provisioned(self, endpoint: str, timeout: float) -> None:
        """Until the call-flow service has put the endpoint on Asterisk: a phone that
        registers before its auth exists gets 401 and baresip waits a long while to retry."""
        from urllib.parse import quote

        import aiohttp

        url = f"http://127.0.0.1:{self.instance.ari_port}/ari/endpoints/PJSIP/{quote(endpoint, safe='')}"
        auth = aiohttp.BasicAuth(self.instance.ari_user, self.instance.ari_password)
        deadline = asyncio.get_running_loop().time() + timeout
        async with aiohttp.ClientSession(auth=auth, timeout=aiohttp.ClientTimeout(total=2)) as session:
            while asyncio.get_running_loop().time() < deadline:
                with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                    async with session.get(url) as response:
                        if response.status == 200:
                            return
                await asyncio.sleep(0.1)

    async def stop_all(self) -> None:
        phones, self.phones = self.phones, []
        await asyncio.gather(*(phone.stop() for phone in phones), return_exceptions=True)
