"""A real browser plays an uploaded mp3 through a signed link and seeks in it: headless Chromium
(Debian's ``chromium``, installed here with apt-get if it is missing) driven over the Chrome
DevTools Protocol, on a private platform (SeaweedFS, nats, config, media and gateway) like the
one of test_sounds. The protocol runs over ``--remote-debugging-pipe`` (fds 3 and 4, messages
separated by NUL bytes), so no websocket package is needed."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.test_sounds import (  # noqa: F401 - module-scoped fixtures used below
    platform,
    seaweedfs,
    sine,
    tenant,
    upload,
)
from tests.support import Platform

pytestmark = pytest.mark.timeout(300)

CHROMIUM = "/usr/bin/chromium"
SECONDS = 20
SEEK_TO = 15
FLAGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--autoplay-policy=no-user-gesture-required",
    "--mute-audio",
    "--remote-debugging-pipe",
]


def apt_install() -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    return subprocess.run(
        ["apt-get", "install", "-y", "--no-install-recommends", "chromium"],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )


@pytest.fixture(scope="module")
def chromium() -> str:
    """Debian's chromium; installed when missing. A browser that cannot be had fails the test."""
    if not os.access(CHROMIUM, os.X_OK):
        if shutil.which("apt-get") is None:
            pytest.fail("chromium is missing and there is no apt-get to install it")
        done = apt_install()
        if done.returncode != 0:  # perhaps no package lists yet
            subprocess.run(["apt-get", "update"], capture_output=True, text=True, timeout=600)
            done = apt_install()
        if done.returncode != 0 or not os.access(CHROMIUM, os.X_OK):
            pytest.fail(
                f"cannot install chromium with apt-get:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}"
            )
    return CHROMIUM


class Browser:
    """Chromium with the DevTools Protocol on a pipe: commands are written to its fd 3, answers
    and events come from its fd 4, each a JSON message followed by a NUL byte."""

    def __init__(self, binary: str) -> None:
        self.profile = tempfile.mkdtemp(prefix="sb-chromium-")
        to_browser_r, self.to_browser = os.pipe()
        self.from_browser, from_browser_w = os.pipe()
        # bash, not sh: dash takes only one-digit file descriptors in redirections
        shell = f'exec "$0" "$@" 3<&{to_browser_r} 4>&{from_browser_w}'
        self.proc = subprocess.Popen(
            ["bash", "-c", shell, binary, *FLAGS, f"--user-data-dir={self.profile}", "about:blank"],
            pass_fds=(to_browser_r, from_browser_w),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=open(Path(self.profile) / "stderr.log", "wb"),  # noqa: SIM115 - the child owns it
        )
        os.close(to_browser_r)
        os.close(from_browser_w)
        self.next_id = 0
        self.answers: dict[int, dict[str, Any]] = {}
        self.events: list[dict[str, Any]] = []
        self.lock = threading.Condition()
        self.closed = False
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        buffer = b""
        with os.fdopen(self.from_browser, "rb", buffering=0) as pipe:
            while chunk := pipe.read(65536):
                buffer += chunk
                *messages, buffer = buffer.split(b"\0")
                with self.lock:
                    for raw in messages:
                        message = json.loads(raw)
                        if "id" in message:
                            self.answers[message["id"]] = message
                        else:
                            self.events.append(message)
                    self.lock.notify_all()
        with self.lock:
            self.closed = True
            self.lock.notify_all()

    def call(self, method: str, session: str | None = None, timeout: float = 15, **params: Any) -> Any:
        self.next_id += 1
        number = self.next_id
        message: dict[str, Any] = {"id": number, "method": method, "params": params}
        if session:
            message["sessionId"] = session
        try:
            os.write(self.to_browser, json.dumps(message).encode() + b"\0")
        except BrokenPipeError:
            raise AssertionError(f"chromium is gone (exit {self.proc.poll()}):\n{self.stderr()}") from None
        deadline = time.monotonic() + timeout
        with self.lock:
            while number not in self.answers:
                left = deadline - time.monotonic()
                if self.closed or left <= 0:
                    raise AssertionError(
                        f"no answer to {method} (browser closed: {self.closed})\n{self.stderr()}"
                    )
                self.lock.wait(left)
            answer = self.answers.pop(number)
        if "error" in answer:
            raise AssertionError(f"{method} failed: {answer['error']}")
        return answer["result"]

    def stderr(self) -> str:
        return (Path(self.profile) / "stderr.log").read_text(errors="replace")[-3000:]

    def close(self) -> None:
        with self.lock:
            closed = self.closed
        if not closed:
            with contextlib.suppress(AssertionError):
                self.call("Browser.close", timeout=5)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self.to_browser)
        shutil.rmtree(self.profile, ignore_errors=True)


@pytest.fixture
def browser(chromium: str) -> Iterator[Browser]:
    chrome = Browser(chromium)
    yield chrome
    chrome.close()


#: Runs in the page: an <audio> element on the signed link; metadata, a seek, a moment of play.
PLAY_AND_SEEK = """
(async () => {
  const audio = document.createElement('audio');
  audio.muted = true;
  audio.preload = 'auto';
  const failure = () => audio.error ? `media error ${audio.error.code} ${audio.error.message}` : 'no error';
  const once = (name, ms) => new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no ${name} in ${ms} ms; ${failure()}`)), ms);
    audio.addEventListener(name, () => { clearTimeout(timer); resolve(); }, {once: true});
    audio.addEventListener('error', () => { clearTimeout(timer); reject(new Error(failure())); }, {once: true});
  });
  const out = {};
  const metadata = once('loadedmetadata', 10000);
  audio.src = SRC;
  document.documentElement.appendChild(audio);
  await metadata;
  out.duration = audio.duration;
  const seeked = once('seeked', 10000);
  audio.currentTime = SEEK_TO;
  await seeked;
  out.seeked_to = audio.currentTime;
  out.seekable = [];
  for (let i = 0; i < audio.seekable.length; i++) out.seekable.push([audio.seekable.start(i), audio.seekable.end(i)]);
  await audio.play();
  out.play_from = audio.currentTime;
  await new Promise(resolve => setTimeout(resolve, 1500));
  out.play_to = audio.currentTime;
  out.paused = audio.paused;
  audio.pause();
  return out;
})()
"""


def play_and_seek(chrome: Browser, page_url: str, src: str) -> dict[str, Any]:
    target = chrome.call("Target.createTarget", url="about:blank")["targetId"]
    session = chrome.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
    chrome.call("Network.enable", session)
    chrome.call("Page.enable", session)
    # a page of the gateway's own origin, so that the audio is a same-origin, local request
    navigated = chrome.call("Page.navigate", session, url=page_url)
    assert "errorText" not in navigated, navigated
    deadline = time.monotonic() + 10
    while (
        chrome.call("Runtime.evaluate", session, expression="document.readyState")["result"]["value"]
        != "complete"
    ):
        assert time.monotonic() < deadline, "the page did not load"
        time.sleep(0.05)
    script = PLAY_AND_SEEK.replace("SRC", json.dumps(src)).replace("SEEK_TO", str(SEEK_TO))
    evaluated = chrome.call(
        "Runtime.evaluate", session, timeout=30, expression=script, awaitPromise=True, returnByValue=True
    )
    assert "exceptionDetails" not in evaluated, evaluated["exceptionDetails"]
    result: dict[str, Any] = evaluated["result"]["value"]
    with chrome.lock:
        result["responses"] = [
            (e["params"]["response"]["url"], e["params"]["response"]["status"], e["params"].get("type"))
            for e in chrome.events
            if e.get("method") == "Network.responseReceived"
        ]
    return result


async def test_an_uploaded_mp3_plays_and_seeks_in_chromium(
    platform: Platform,  # noqa: F811
    browser: Browser,
    tmp_path: Path,
) -> None:
    tenant_id, api = await tenant(platform)
    async with api:
        mp3 = sine(tmp_path / "tone.mp3", SECONDS, "-c:a", "libmp3lame", "-b:a", "128k")
        made = await upload(api, tenant_id, "tone.mp3", mp3, name="Twenty seconds")
        assert made.status_code == 201, made.text
        sound = made.json()
        assert abs(sound["duration_ms"] - SECONDS * 1000) <= 200
        linked = await api.post(f"/v1/tenants/{tenant_id}/sounds/{sound['id']}/link")
        assert linked.status_code in (200, 201), linked.text
        link = linked.json()["url"]
    assert link.startswith("/v1/public/sounds/")

    src = platform.url + link
    played = await asyncio.to_thread(play_and_seek, browser, platform.url + "/readyz", src)

    duration = played["duration"]
    assert abs(duration - SECONDS) <= 0.5, played
    assert abs(played["seeked_to"] - SEEK_TO) <= 0.1, played
    # seekable over the whole file: the browser saw that the server answers byte ranges
    assert played["seekable"] and played["seekable"][0][0] == 0, played
    assert abs(played["seekable"][-1][1] - duration) <= 0.1, played
    assert not played["paused"] and played["play_to"] > played["play_from"] + 0.3, played
    assert played["play_from"] >= SEEK_TO - 0.1, played

    media = [status for url, status, _ in played["responses"] if url == src]
    assert 206 in media, played["responses"]
    gateway_log = platform.services["gateway"].log()
    ranged = [line for line in gateway_log.splitlines() if "/v1/public/sounds/" in line and " 206" in line]
    assert ranged, gateway_log[-3000:]
