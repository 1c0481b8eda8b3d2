#!/usr/bin/env python
"""Media benchmark: conversion speed, upload-to-playable latency and S3 rates. Prints one JSON
document on stdout; progress goes to stderr.

    .venv/bin/python bench/media_bench.py
    .venv/bin/python bench/media_bench.py --durations 10,60 --phases conversion,bus

Inputs are mp3 files made with ffmpeg's lavfi sources (a 440 Hz sine on the left, 660 Hz on the
right, plus pink noise; 44.1 kHz stereo, 128 kbit/s CBR with a Xing header, as LAME writes
it), one per ``--durations`` (seconds; default 10, 60 and 600).

Phases (``--phases``, default all four):

- ``conversion``: ``switchboard_media.audio.validate`` and ``convert`` in this process, timed
  separately; ``--runs`` runs for files up to 60 s, one run for longer ones. ``x_realtime`` is the
  audio's duration divided by validate + convert.
- ``s3``: a private SeaweedFS (``scripts/seaweedfs.sh``) and ``switchboard_media.storage.
  ObjectStore``: 64 KB objects put then got with 1 and 8 threads (objects/s, latency
  percentiles for 1 thread), and a 50 MB object put (``put_file``, multipart) and got
  (``open_range``, streamed) ``--large-runs`` times (MB/s, MB = 10^6 bytes).
- ``bus``: a private platform (``tests.support.Platform``: nats-server, config, media, gateway)
  on the same SeaweedFS. Each run streams the file into the NATS object store bucket
  ``UPLOADS_BUCKET``, sends ``rpc.media.<t>.sound.create`` and then ``...sound.read`` (mp3,
  first 512 KB) until it answers with bytes: ``upload_to_playable_s`` is from the first byte
  streamed to that answer. The whole mp3 is then read (``mp3_download_s``, not included) and the
  sound deleted. One 10-second warm-up run first, not counted.
- ``gateway``: the same through the HTTP API when the gateway has sound routes (found in its
  OpenAPI document): ``POST /v1/tenants/{t}/sounds`` (multipart ``file``) with httpx, then a
  ranged GET of the mp3 through the gateway when it has such a route (else the bus read).
  Skipped, with the reason in the output, when there are no sound routes.

Everything (SeaweedFS, the platform, temp files) is stopped and removed at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import platform as platform_info
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
import nats  # noqa: E402
import switchboard_media.audio as audio  # noqa: E402
from switchboard_contracts.sounds import (  # noqa: E402
    MAX_READ_CHUNK,
    UPLOADS_BUCKET,
    SoundCategory,
    SoundIdRequest,
    SoundReadRequest,
    SoundUploadRequest,
    SoundVariant,
)
from switchboard_contracts.subjects import media_rpc  # noqa: E402
from switchboard_media.storage import ObjectStore, object_key, object_prefix  # noqa: E402

from tests.support import Platform, free_port, port_open  # noqa: E402

SEAWEEDFS = ROOT / "scripts" / "seaweedfs.sh"
# Credentials of the private SeaweedFS, new for every run.
S3_ACCESS_KEY = "sb-bench-access"
S3_SECRET_KEY = secrets.token_urlsafe(24)
MEDIA_BUCKET = "sb-bench-media"
S3_BENCH_BUCKET = "sb-bench-s3"
S3_TENANT = "bench"
TENANT = "bench-media"
PHASES = ("conversion", "s3", "bus", "gateway")
JSON_HEADERS = {"content-type": "application/json"}
SMALL_SIZE = 64 * 1024
MB = 1_000_000


def say(message: str) -> None:
    print(f"[media_bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


class BenchError(RuntimeError):
    pass


def summary(values: Sequence[float], digits: int = 4) -> dict[str, Any]:
    return {
        "best": round(min(values), digits),
        "median": round(statistics.median(values), digits),
        "runs": len(values),
    }


def percentile(values: Sequence[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def label(seconds: int) -> str:
    return f"{seconds // 60}min" if seconds >= 60 and seconds % 60 == 0 else f"{seconds}s"


# --------------------------------------------------------------------------------------------
# inputs


def make_mp3(path: Path, seconds: int) -> None:
    sources = [
        f"sine=frequency=440:sample_rate=44100:duration={seconds}",
        f"sine=frequency=660:sample_rate=44100:duration={seconds}",
        f"anoisesrc=color=pink:amplitude=0.08:sample_rate=44100:duration={seconds}:seed=7",
    ]
    inputs = [arg for source in sources for arg in ("-f", "lavfi", "-i", source)]
    graph = (
        "[0:a][1:a]amerge=inputs=2[tones];[2:a]aformat=channel_layouts=stereo[noise];"
        "[tones][noise]amix=inputs=2:normalize=0[out]"
    )
    subprocess.run(
        ["ffmpeg", "-nostdin", "-v", "error", "-y", *inputs, "-filter_complex", graph, "-map", "[out]",
         "-ar", "44100", "-ac", "2", "-c:a", "libmp3lame", "-b:a", "128k", str(path)],
        check=True,
    )  # fmt: skip


def make_inputs(work: Path, durations: Sequence[int]) -> dict[int, Path]:
    folder = work / "inputs"
    folder.mkdir()
    files: dict[int, Path] = {}
    for seconds in durations:
        path = folder / f"bench-{label(seconds)}.mp3"
        started = time.perf_counter()
        make_mp3(path, seconds)
        say(f"input {path.name}: {path.stat().st_size:,} bytes in {time.perf_counter() - started:.1f} s")
        files[seconds] = path
    return files


def describe_input(path: Path, seconds: int) -> dict[str, Any]:
    info = audio.probe(path)
    return {
        "file": path.name,
        "duration_s": seconds,
        "bytes": info.size_bytes,
        "container": info.container,
        "codec": info.codec,
        "sample_rate": info.sample_rate,
        "channels": info.channels,
        "bit_rate": info.bit_rate,
    }


# --------------------------------------------------------------------------------------------
# conversion


def bench_conversion(work: Path, files: dict[int, Path], runs: int) -> dict[str, Any]:
    results: dict[str, Any] = {}
    for seconds, path in files.items():
        count = runs if seconds <= 60 else 1
        validate_s: list[float] = []
        convert_s: list[float] = []
        total_s: list[float] = []
        converted: audio.Converted | None = None
        for run in range(count):
            out = work / "convert" / f"{label(seconds)}-{run}"
            started = time.perf_counter()
            audio.validate(path)
            checked = time.perf_counter()
            converted = audio.convert(path, out, "sound")
            done = time.perf_counter()
            validate_s.append(checked - started)
            convert_s.append(done - checked)
            total_s.append(done - started)
            shutil.rmtree(out)
            say(
                f"conversion {label(seconds)} run {run + 1}/{count}: validate {checked - started:.3f} s,"
                f" convert {done - checked:.3f} s ({seconds / (done - started):.1f}x realtime)"
            )
        assert converted is not None
        results[label(seconds)] = {
            "duration_s": seconds,
            "runs": count,
            "validate_s": summary(validate_s),
            "convert_s": summary(convert_s),
            "total_s": summary(total_s),
            "x_realtime": {
                "best": round(seconds / min(total_s), 1),
                "median": round(seconds / statistics.median(total_s), 1),
            },
            "decoded_duration_ms": converted.duration_ms,
            "gain_db": converted.gain_db,
            "output_bytes": {
                "8k.wav": converted.wav_8k.size_bytes,
                "16k.wav": converted.wav_16k.size_bytes,
                "mp3": converted.mp3.size_bytes,
            },
        }
    return results


# --------------------------------------------------------------------------------------------
# SeaweedFS


class SeaweedFS:
    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.port = 0
        self.started = False

    def _script(self, *args: str, timeout: float) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "AWS_ACCESS_KEY_ID": S3_ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": S3_SECRET_KEY}
        return subprocess.run(
            [str(SEAWEEDFS), *args], capture_output=True, text=True, timeout=timeout, check=False, env=env
        )

    @staticmethod
    def _port() -> int:
        for _ in range(100):
            port = free_port()
            if port <= 55535 and not port_open(port + 10000):
                return port
        raise BenchError("no free port pair for SeaweedFS")

    def start(self) -> SeaweedFS:
        errors = []
        for _ in range(3):
            self.port = self._port()
            result = self._script("start", str(self.data_dir), str(self.port), timeout=120)
            if result.returncode == 0:
                self.started = True
                return self
            errors.append(result.stderr.strip())
            if "already in use" not in result.stderr:
                break
        raise BenchError("seaweedfs.sh start failed: " + "\n".join(errors))

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.port}"

    def store(self, bucket: str) -> ObjectStore:
        return ObjectStore(self.endpoint, access_key=S3_ACCESS_KEY, secret_key=S3_SECRET_KEY, bucket=bucket)

    def stop(self) -> None:
        if self.started:
            result = self._script("stop", str(self.data_dir), timeout=60)
            if result.returncode != 0:
                say(f"seaweedfs.sh stop: {result.stderr.strip()}")
            self.started = False


# --------------------------------------------------------------------------------------------
# S3


def small_key(index: int) -> str:
    return str(object_key(S3_TENANT, "sounds", f"{index:016d}", "original"))


def timed_ops(op: Callable[[int], None], keys: range, threads: int) -> tuple[float, list[float]]:
    """(elapsed seconds, per-operation latencies) of ``op`` over ``keys`` with ``threads``."""
    latencies: list[float] = []
    lock = threading.Lock()

    def one(index: int) -> None:
        started = time.perf_counter()
        op(index)
        spent = time.perf_counter() - started
        with lock:
            latencies.append(spent)

    started = time.perf_counter()
    if threads == 1:
        for index in keys:
            one(index)
    else:
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(one, keys))
    return time.perf_counter() - started, latencies


def bench_s3(
    store: ObjectStore, work: Path, small_objects: int, large_bytes: int, large_runs: int
) -> dict[str, Any]:
    store.ensure_bucket()
    payload = os.urandom(SMALL_SIZE)

    def put(index: int) -> None:
        store.put_stream(small_key(index), io.BytesIO(payload), SMALL_SIZE, "application/octet-stream")

    def get(index: int) -> None:
        if len(store.get_bytes(small_key(index))) != SMALL_SIZE:
            raise BenchError(f"short read of {small_key(index)}")

    for index in range(10):  # warm-up: connections, the bucket's first volume
        put(10_000_000 + index)
        get(10_000_000 + index)

    results: dict[str, Any] = {"object_bytes_small": SMALL_SIZE}
    first = 0
    for threads in (1, 8):
        count = small_objects if threads == 1 else small_objects * 2
        keys = range(first, first + count)
        first += count
        put_s, put_lat = timed_ops(put, keys, threads)
        get_s, get_lat = timed_ops(get, keys, threads)
        entry: dict[str, Any] = {
            "objects": count,
            "put_per_s": round(count / put_s, 1),
            "get_per_s": round(count / get_s, 1),
            "put_mb_per_s": round(count * SMALL_SIZE / MB / put_s, 1),
            "get_mb_per_s": round(count * SMALL_SIZE / MB / get_s, 1),
        }
        if threads == 1:
            entry["put_latency_ms"] = {
                "p50": round(percentile(put_lat, 0.5) * 1000, 2),
                "p95": round(percentile(put_lat, 0.95) * 1000, 2),
            }
            entry["get_latency_ms"] = {
                "p50": round(percentile(get_lat, 0.5) * 1000, 2),
                "p95": round(percentile(get_lat, 0.95) * 1000, 2),
            }
        results[f"small_64k_{threads}_thread{'s' if threads > 1 else ''}"] = entry
        say(
            f"s3 64 KB x{count}, {threads} thread(s): {entry['put_per_s']} puts/s, {entry['get_per_s']} gets/s"
        )

    big = work / "large.bin"
    with big.open("wb") as handle:
        left = large_bytes
        while left:
            chunk = min(left, 4 * 1024 * 1024)
            handle.write(os.urandom(chunk))
            left -= chunk
    put_rates: list[float] = []
    get_rates: list[float] = []
    for run in range(large_runs):
        key = object_key(S3_TENANT, "sounds", f"large{run:08d}", "original")
        started = time.perf_counter()
        store.put_file(key, big, "application/octet-stream")
        put_s = time.perf_counter() - started
        started = time.perf_counter()
        received = 0
        with store.open_range(key) as reader:
            for block in reader:
                received += len(block)
        get_s = time.perf_counter() - started
        if received != large_bytes:
            raise BenchError(f"large get returned {received} of {large_bytes} bytes")
        put_rates.append(large_bytes / MB / put_s)
        get_rates.append(large_bytes / MB / get_s)
        say(
            f"s3 {large_bytes / MB:.0f} MB run {run + 1}: put {put_rates[-1]:.1f} MB/s, get {get_rates[-1]:.1f} MB/s"
        )
    big.unlink()
    results["large"] = {
        "object_bytes": large_bytes,
        "part_bytes": 16 * 1024 * 1024,
        "put_mb_per_s": {
            "best": round(max(put_rates), 1),
            "median": round(statistics.median(put_rates), 1),
            "runs": large_runs,
        },
        "get_mb_per_s": {
            "best": round(max(get_rates), 1),
            "median": round(statistics.median(get_rates), 1),
            "runs": large_runs,
        },
    }
    removed = store.remove_prefix(object_prefix(S3_TENANT))
    say(f"s3: removed {removed} objects")
    return results


# --------------------------------------------------------------------------------------------
# upload to playable over the bus


def reply_result(data: bytes) -> Any:
    reply = json.loads(data)
    if not reply.get("ok"):
        raise BenchError(f"error reply: {reply.get('error')}")
    return reply["result"]


async def bus_read(nc: Any, sound_id: str, offset: int) -> tuple[bytes, int]:
    request = SoundReadRequest(
        tenant_id=TENANT, id=sound_id, variant=SoundVariant.MP3, offset=offset, length=MAX_READ_CHUNK
    )
    msg = await nc.request(
        media_rpc(TENANT, "read"), request.model_dump_json().encode(), timeout=30, headers=JSON_HEADERS
    )
    headers = msg.headers or {}
    if headers.get("Sb-Error"):
        raise BenchError(f"read failed: {msg.data[:300]!r}")
    return bytes(msg.data), int(headers["Sb-Total-Size"])


async def first_bus_read(nc: Any, sound_id: str, deadline_s: float = 30) -> tuple[bytes, int]:
    """The first successful read of the mp3, retried until ``deadline_s``."""
    deadline = time.monotonic() + deadline_s
    while True:
        try:
            data, total = await bus_read(nc, sound_id, 0)
            if data:
                return data, total
        except BenchError:
            if time.monotonic() > deadline:
                raise
        await asyncio.sleep(0.005)


async def bus_download(nc: Any, sound_id: str, offset: int, total: int) -> int:
    received = offset
    while received < total:
        data, _ = await bus_read(nc, sound_id, received)
        received += len(data)
    return received


async def bus_delete(nc: Any, sound_id: str) -> None:
    request = SoundIdRequest(tenant_id=TENANT, id=sound_id)
    msg = await nc.request(
        media_rpc(TENANT, "delete"), request.model_dump_json().encode(), timeout=30, headers=JSON_HEADERS
    )
    reply_result(msg.data)


async def bus_once(nc: Any, uploads: Any, path: Path, seconds: int) -> dict[str, Any]:
    upload = uuid.uuid4().hex
    started = time.perf_counter()
    with path.open("rb") as handle:
        await uploads.put(upload, handle)
    uploaded = time.perf_counter()
    request = SoundUploadRequest(
        tenant_id=TENANT,
        upload=upload,
        file_name=path.name,
        name=f"bench {label(seconds)} {upload[:6]}",
        category=SoundCategory.CUSTOM,
    )
    msg = await nc.request(
        media_rpc(TENANT, "create"), request.model_dump_json().encode(), timeout=300, headers=JSON_HEADERS
    )
    sound = reply_result(msg.data)
    created = time.perf_counter()
    first, total = await first_bus_read(nc, sound["id"])
    playable = time.perf_counter()
    received = await bus_download(nc, sound["id"], len(first), total)
    downloaded = time.perf_counter()
    if received != total or total != sound["sizes"]["mp3"]:
        raise BenchError(f"mp3 download: {received} bytes of {total} ({sound['sizes']['mp3']} stored)")
    await bus_delete(nc, sound["id"])
    return {
        "upload_s": uploaded - started,
        "create_s": created - uploaded,
        "first_read_s": playable - created,
        "upload_to_playable_s": playable - started,
        "mp3_download_s": downloaded - playable,
        "mp3_bytes": total,
        "duration_ms": sound["duration_ms"],
    }


def summarize_runs(runs: list[dict[str, Any]], seconds: int, path: Path) -> dict[str, Any]:
    result: dict[str, Any] = {"duration_s": seconds, "upload_bytes": path.stat().st_size, "runs": len(runs)}
    for field in runs[0]:
        values = [run[field] for run in runs]
        if isinstance(values[0], float):
            result[field] = summary(values, 3)
        else:
            result[field] = values[0]
    total = [run["upload_to_playable_s"] for run in runs]
    result["x_realtime"] = {
        "best": round(seconds / min(total), 1),
        "median": round(seconds / statistics.median(total), 1),
    }
    return result


async def bench_bus(nc: Any, files: dict[int, Path], runs: int, warmup: Path) -> dict[str, Any]:
    uploads = await nc.jetstream().object_store(UPLOADS_BUCKET)
    warm = await bus_once(nc, uploads, warmup, 10)
    say(f"bus warm-up: {warm['upload_to_playable_s']:.3f} s")
    results: dict[str, Any] = {"warmup_upload_to_playable_s": round(warm["upload_to_playable_s"], 3)}
    for seconds, path in files.items():
        count = runs if seconds <= 60 else 1
        done = []
        for run in range(count):
            done.append(await bus_once(nc, uploads, path, seconds))
            say(
                f"bus {label(seconds)} run {run + 1}/{count}: upload {done[-1]['upload_s']:.3f} s, create"
                f" {done[-1]['create_s']:.3f} s, first read {done[-1]['first_read_s']:.4f} s"
                f" -> playable after {done[-1]['upload_to_playable_s']:.3f} s"
            )
        results[label(seconds)] = summarize_runs(done, seconds, path)
    return results


# --------------------------------------------------------------------------------------------
# upload to playable through the gateway


def find_routes(spec: dict[str, Any]) -> tuple[str | None, str | None, str | None]:
    """(upload path, mp3 path, delete path) of the gateway's sound routes, from its OpenAPI."""
    paths: dict[str, Any] = spec.get("paths", {})
    upload = next(
        (p for p, ops in paths.items() if p.rstrip("/").endswith("/sounds") and "post" in ops), None
    )
    if upload is None:
        return None, None, None
    base = upload.rstrip("/") + "/"
    mp3 = None
    for words in (("mp3",), ("play", "stream", "audio", "content", "file", "download")):
        candidates = [
            p
            for p, ops in paths.items()
            if p.startswith(base)
            and "get" in ops
            and p.count("{") >= 2
            and any(w in p[len(base) :] for w in words)
        ]
        if candidates:
            mp3 = sorted(candidates, key=len)[0]
            break
    delete = next(
        (
            p
            for p, ops in paths.items()
            if p.startswith(base) and "delete" in ops and p.count("/") == base.count("/")
        ),
        None,
    )
    return upload, mp3, delete


def fill(path: str, sound_id: str) -> str:
    """A route path with the tenant and the sound id filled in (the first and the second {...})."""
    head, _, rest = path.partition("{")
    result = head + TENANT
    rest = rest.partition("}")[2]
    if "{" in rest:
        head, _, rest = rest.partition("{")
        result += head + sound_id + rest.partition("}")[2]
    else:
        result += rest
    return result


async def gateway_once(
    http: httpx.AsyncClient, nc: Any, routes: tuple[str, str | None, str | None], path: Path, seconds: int
) -> dict[str, Any]:
    upload_path, mp3_path, delete_path = routes
    started = time.perf_counter()
    with path.open("rb") as handle:
        response = await http.post(
            fill(upload_path, ""),
            files={"file": (path.name, handle, "audio/mpeg")},
            data={"name": f"bench {label(seconds)} {uuid.uuid4().hex[:6]}", "category": "custom"},
        )
    if response.status_code not in (200, 201):
        raise BenchError(f"upload: HTTP {response.status_code}: {response.text[:300]}")
    created = time.perf_counter()
    sound = response.json()
    sound_id = sound["id"]
    if mp3_path is not None:
        url = fill(mp3_path, sound_id)
        deadline = time.monotonic() + 30
        while True:
            first = await http.get(url, headers={"Range": f"bytes=0-{MAX_READ_CHUNK - 1}"})
            if first.status_code in (200, 206) and first.content:
                break
            if time.monotonic() > deadline:
                raise BenchError(f"GET {url}: HTTP {first.status_code}: {first.text[:300]}")
            await asyncio.sleep(0.005)
        playable = time.perf_counter()
        received = 0
        async with http.stream("GET", url) as whole:
            if whole.status_code != 200:
                raise BenchError(f"GET {url}: HTTP {whole.status_code}")
            async for chunk in whole.aiter_bytes():
                received += len(chunk)
    else:
        data, total = await first_bus_read(nc, sound_id)
        playable = time.perf_counter()
        received = await bus_download(nc, sound_id, len(data), total)
    downloaded = time.perf_counter()
    if delete_path is not None:
        deleted = await http.delete(fill(delete_path, sound_id))
        if deleted.status_code not in (200, 204):
            raise BenchError(f"DELETE: HTTP {deleted.status_code}: {deleted.text[:300]}")
    else:
        await bus_delete(nc, sound_id)
    return {
        "upload_and_create_s": created - started,
        "first_read_s": playable - created,
        "upload_to_playable_s": playable - started,
        "mp3_download_s": downloaded - playable,
        "mp3_bytes": received,
        "duration_ms": sound.get("duration_ms"),
    }


async def bench_gateway(
    http: httpx.AsyncClient, nc: Any, files: dict[int, Path], runs: int, warmup: Path
) -> dict[str, Any]:
    spec = (await http.get("/openapi.json")).json()
    upload, mp3, delete = find_routes(spec)
    if upload is None:
        return {"skipped": "the gateway has no sound upload route (POST /v1/tenants/{tenant_id}/sounds) yet"}
    routes = (upload, mp3, delete)
    results: dict[str, Any] = {
        "upload_route": f"POST {upload}",
        "playable_via": f"GET {mp3} (Range: bytes=0-{MAX_READ_CHUNK - 1})"
        if mp3
        else "bus read (no mp3 route)",
    }
    try:
        warm = await gateway_once(http, nc, routes, warmup, 10)
    except Exception as exc:
        results["error"] = f"{type(exc).__name__}: {exc}"
        return results
    results["warmup_upload_to_playable_s"] = round(warm["upload_to_playable_s"], 3)
    say(f"gateway warm-up: {warm['upload_to_playable_s']:.3f} s")
    for seconds, path in files.items():
        count = runs if seconds <= 60 else 1
        done = []
        try:
            for run in range(count):
                done.append(await gateway_once(http, nc, routes, path, seconds))
                say(
                    f"gateway {label(seconds)} run {run + 1}/{count}: upload+create"
                    f" {done[-1]['upload_and_create_s']:.3f} s -> playable after"
                    f" {done[-1]['upload_to_playable_s']:.3f} s"
                )
        except Exception as exc:
            results[label(seconds)] = {"error": f"{type(exc).__name__}: {exc}"}
            continue
        results[label(seconds)] = summarize_runs(done, seconds, path)
    return results


async def bench_platform(
    platform: Platform, files: dict[int, Path], runs: int, phases: set[str], warmup: Path
) -> dict[str, Any]:
    results: dict[str, Any] = {}
    headers = {"Authorization": f"Bearer {Platform.OPERATOR_KEY}"}
    timeout = httpx.Timeout(300, connect=10)
    async with httpx.AsyncClient(base_url=platform.url, headers=headers, timeout=timeout) as http:
        response = await http.post(
            "/v1/tenants", json={"id": TENANT, "name": "Media bench", "sip_domain": f"{TENANT}.example.com"}
        )
        if response.status_code != 201:
            raise BenchError(f"creating the tenant: HTTP {response.status_code}: {response.text[:300]}")
        nc = await nats.connect(platform.nats.url, max_reconnect_attempts=0)
        try:
            if "bus" in phases:
                results["bus"] = await bench_bus(nc, files, runs, warmup)
            if "gateway" in phases:
                results["gateway"] = await bench_gateway(http, nc, files, runs, warmup)
        finally:
            await nc.close()
    return results


# --------------------------------------------------------------------------------------------
# main


def version_of(command: list[str]) -> str | None:
    try:
        out = subprocess.run(command, capture_output=True, text=True, timeout=20, check=False).stdout
    except OSError:
        return None
    return out.strip().splitlines()[0] if out.strip() else None


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--durations", default="10,60,600", help="input lengths in seconds (10,60,600)")
    parser.add_argument("--runs", type=int, default=5, help="conversion runs for files up to 60 s (5)")
    parser.add_argument("--e2e-runs", type=int, default=3, help="upload runs for files up to 60 s (3)")
    parser.add_argument("--small-objects", type=int, default=400, help="64 KB objects, 1 thread (x2 for 8)")
    parser.add_argument("--large-mb", type=int, default=50, help="size of the large object in MB (50)")
    parser.add_argument("--large-runs", type=int, default=3, help="large object put/get runs (3)")
    parser.add_argument("--phases", default=",".join(PHASES), help="subset of " + ",".join(PHASES))
    parser.add_argument("--work-dir", default=None, help="parent of the temp folder (system temp)")
    args = parser.parse_args(argv)
    args.phase_set = {p.strip() for p in args.phases.split(",") if p.strip()}
    unknown = args.phase_set - set(PHASES)
    if unknown:
        parser.error(f"unknown phases: {', '.join(sorted(unknown))}")
    args.duration_list = [int(d) for d in args.durations.split(",") if d.strip()]
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    began = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="sb-media-bench-", dir=args.work_dir))
    output: dict[str, Any] = {
        "benchmark": "media",
        "params": {
            "durations_s": args.duration_list,
            "conversion_runs": args.runs,
            "e2e_runs": args.e2e_runs,
            "small_objects": args.small_objects,
            "large_mb": args.large_mb,
            "large_runs": args.large_runs,
            "phases": sorted(args.phase_set, key=PHASES.index),
        },
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform_info.python_version(),
            "system": platform_info.platform(),
            "ffmpeg": version_of(["ffmpeg", "-version"]),
        },
    }
    seaweed: SeaweedFS | None = None
    platform: Platform | None = None
    try:
        say(f"work folder {work}")
        durations = sorted(set(args.duration_list) | ({10} if {"bus", "gateway"} & args.phase_set else set()))
        all_files = make_inputs(work, durations)
        files = {s: all_files[s] for s in args.duration_list}
        output["inputs"] = {label(s): describe_input(p, s) for s, p in files.items()}

        if "conversion" in args.phase_set:
            output["conversion"] = bench_conversion(work, files, args.runs)

        if {"s3", "bus", "gateway"} & args.phase_set:
            seaweed = SeaweedFS(work / "seaweedfs").start()
            say(f"SeaweedFS on {seaweed.endpoint}")
            output["machine"]["seaweedfs"] = version_of(
                [shutil.which("weed") or str(ROOT / ".venv/bin/weed"), "version"]
            )

        if "s3" in args.phase_set and seaweed is not None:
            store = seaweed.store(S3_BENCH_BUCKET)
            try:
                output["s3"] = bench_s3(store, work, args.small_objects, args.large_mb * MB, args.large_runs)
            finally:
                store.close()

        if {"bus", "gateway"} & args.phase_set and seaweed is not None:
            media_work = work / "media-work"
            media_work.mkdir()
            platform = Platform(
                work / "platform",
                request_timeout="10",
                media_env={
                    "SB_MEDIA_S3_ENDPOINT": seaweed.endpoint,
                    "SB_MEDIA_S3_ACCESS_KEY": S3_ACCESS_KEY,
                    "SB_MEDIA_S3_SECRET_KEY": S3_SECRET_KEY,
                    "SB_MEDIA_S3_BUCKET": MEDIA_BUCKET,
                    "SB_MEDIA_S3_SECURE": "false",
                    "SB_MEDIA_WORK_DIR": str(media_work),
                },
            )
            (work / "platform").mkdir()
            started = time.perf_counter()
            try:
                platform.start()
            except Exception:
                for name, service in platform.services.items():
                    tail = service.log()[-2000:] if service.log_path.exists() else ""
                    say(f"{name} log:\n{tail}")
                raise
            say(f"platform up in {time.perf_counter() - started:.1f} s at {platform.url}")
            output["upload_to_playable"] = asyncio.run(
                bench_platform(platform, files, args.e2e_runs, args.phase_set, all_files[10])
            )
        output["total_seconds"] = round(time.perf_counter() - began, 1)
        print(json.dumps(output, indent=2))
        return 0
    finally:
        if platform is not None:
            say("stopping the platform")
            platform.stop()
        if seaweed is not None:
            say("stopping SeaweedFS")
            seaweed.stop()
        shutil.rmtree(work, ignore_errors=True)
        say(f"removed {work}")


if __name__ == "__main__":
    sys.exit(main())
