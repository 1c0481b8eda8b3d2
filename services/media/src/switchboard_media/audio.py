"""Checks and conversion of tenants' sound files (SPEC section 5): no bus, HTTP or S3 here.

Everything in this module blocks (subprocesses and file IO): the service calls it through
``asyncio.to_thread``. It needs ``ffmpeg`` and ``ffprobe`` on PATH (``scripts/install-ffmpeg.sh``).

Flow for an upload, once its bytes are in a local file::

    name = safe_file_name(upload_name)      # AudioRejected(bad_file_name)
    info = probe(path)                      # what ffprobe says; never raises for bad content
    check(info, limits)                     # AudioRejected(reason, message) naming the problem
    result = convert(path, out_dir)         # normalised 8 kHz wav, 16 kHz wav and mp3, duration

Decisions
---------
* **Format by content.** ffprobe detects the container from the bytes (the file name is never
  looked at); the probe may only use a fixed list of demuxers and the ``file`` protocol, so a
  crafted upload (an HLS playlist or an ffconcat script named ``.mp3``) cannot make ffmpeg open
  other files or URLs.
* **Accepted** (container: codecs): mp3: mp3; wav: linear PCM and G.711 (``pcm_mulaw`` and
  ``pcm_alaw``, common in telephony prompts); ogg and webm (any Matroska): opus, vorbis;
  m4a/mp4: aac, alac; flac: flac. Everything else is refused: other containers (AIFF, AU, AMR,
  raw AAC, ...) with ``unsupported_format``, other codecs in an accepted container (ADPCM or GSM
  in wav, mp2 in an mp3 file, ...) with ``unsupported_codec``, files with real video (cover art in
  an mp3 is fine) with ``has_video``.
* **Truncated or corrupt** files: ``check`` decodes the whole first audio stream
  (``ffmpeg -v error ... -f null``) and refuses the file when the decoder or demuxer reports an
  error (cut flac, aac, webm), when the container declares a length that the decoded audio falls
  short of (mp3 with a Xing/Info header as LAME writes it, mp4), when a wav's data chunk is longer
  than the file, or when the last frame of an mp3 is shorter than its own header says (a cut
  constant-bitrate mp3 without a Xing header). A file cut exactly at a frame or page boundary of a
  format that declares no total length (Ogg, an mp3 without Xing header) is indistinguishable from
  a shorter good file and is accepted. The decoded length, not the header, is held against the
  duration cap.
* **Loudness normalisation** (pydub): the whole file's RMS level is brought to
  ``TARGET_DBFS`` (-20 dBFS; a full-scale sine is -3 dBFS), quiet files up and loud files down, but
  the gain never lifts the peak above ``PEAK_CEILING_DBFS`` (-1 dBFS, so nothing clips; there is no
  compressor) and never exceeds ``MAX_GAIN_DB`` (+30 dB, so near-silence is not turned into hiss).
  Digital silence is left alone. Plain peak normalisation (``pydub.effects.normalize``) was not
  used: it leaves prompts with different crest factors at audibly different loudness.
* **Conversion**: ffmpeg first decodes the first audio stream to a 44.1 kHz mono 16-bit wav in a
  scratch directory (pydub's own ``from_file`` picks its wav reader by file name and keeps the
  source's channels and sample format); pydub loads it, applies the gain and exports through
  ffmpeg: ``<stem>.8k.wav`` (8 kHz mono s16le, what Asterisk's ``wav`` format plays),
  ``<stem>.16k.wav`` (16 kHz mono s16le; Asterisk plays 16 kHz wav under the ``wav16`` format, i.e.
  a ``.wav16`` extension) and ``<stem>.mp3`` (44.1 kHz mono 96 kbit/s CBR with a Xing header, so
  browsers seek accurately). Resampling is ffmpeg's (filtered, no aliasing), not pydub's
  ``set_frame_rate``. The wav outputs carry no metadata chunks.
* **Memory**: pydub holds the decoded audio in memory. Decoding to mono 44.1 kHz 16-bit keeps that
  at 5.3 MB a minute: a 10-minute file is 53 MB, about 3 times that at the peak (the wav bytes, the
  samples and the gained copy); a 30-minute file (the default cap) peaks near 0.5 GB. The check's
  full decode goes to ffmpeg's null muxer and holds nothing.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
import tempfile
import unicodedata
from enum import StrEnum
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from pydub import AudioSegment
from pydub.exceptions import CouldntEncodeError
from switchboard_contracts.common import ErrorCode, ServiceError

__all__ = [
    "ACCEPTED",
    "MAX_FILE_NAME_CHARS",
    "MAX_GAIN_DB",
    "PEAK_CEILING_DBFS",
    "TARGET_DBFS",
    "AudioRejected",
    "ConversionFailed",
    "Converted",
    "ConvertedFile",
    "Limits",
    "MediaToolMissing",
    "Probe",
    "RejectReason",
    "check",
    "convert",
    "probe",
    "safe_file_name",
    "validate",
]

MAX_FILE_NAME_CHARS = 200
TARGET_DBFS = -20.0
PEAK_CEILING_DBFS = -1.0
MAX_GAIN_DB = 30.0
#: Rate of the intermediate decoded audio from which every output is made.
WORK_SAMPLE_RATE = 44100
MP3_BITRATE = "96k"

#: Accepted containers (canonical name) and the codecs accepted in each.
ACCEPTED: dict[str, frozenset[str]] = {
    "mp3": frozenset({"mp3"}),
    "wav": frozenset(
        {"pcm_s16le", "pcm_s24le", "pcm_s32le", "pcm_u8", "pcm_f32le", "pcm_f64le", "pcm_mulaw", "pcm_alaw"}
    ),
    "ogg": frozenset({"opus", "vorbis"}),
    "webm": frozenset({"opus", "vorbis"}),
    "mp4": frozenset({"aac", "alac"}),
    "flac": frozenset({"flac"}),
}
_CONTAINER_TITLES = {
    "mp3": "MP3",
    "wav": "WAV",
    "ogg": "Ogg",
    "webm": "WebM/Matroska",
    "mp4": "MP4/M4A",
    "flac": "FLAC",
}
_ACCEPTED_TEXT = "mp3, wav (PCM), ogg or webm (opus or vorbis), m4a (aac or alac) or flac"
#: ffprobe demuxer names -> canonical container names.
_DEMUXERS = {
    "mp3": "mp3",
    "wav": "wav",
    "ogg": "ogg",
    "matroska,webm": "webm",
    "mov,mp4,m4a,3gp,3g2,mj2": "mp4",
    "flac": "flac",
}
#: Demuxers ffprobe/ffmpeg may use: the accepted ones plus common audio formats, so that those get
#: an "unsupported format" answer rather than "not audio". Playlist and script demuxers (hls,
#: concat, ...) are deliberately absent.
_DEMUXER_WHITELIST = (
    "mp3,wav,ogg,matroska,webm,mov,mp4,m4a,flac,"
    "aiff,au,amr,aac,ac3,eac3,caf,w64,wv,ape,mpc,tta,voc,dts,truehd,asf"
)
_INPUT_OPTIONS = ["-protocol_whitelist", "file", "-format_whitelist", _DEMUXER_WHITELIST]


class RejectReason(StrEnum):
    EMPTY = "empty"
    NOT_AUDIO = "not_audio"
    CORRUPT = "corrupt"  # truncated or damaged
    TOO_LARGE = "too_large"
    TOO_LONG = "too_long"
    UNSUPPORTED_FORMAT = "unsupported_format"  # the container
    UNSUPPORTED_CODEC = "unsupported_codec"  # the audio codec inside an accepted container
    HAS_VIDEO = "has_video"
    BAD_SAMPLE_RATE = "bad_sample_rate"
    BAD_CHANNELS = "bad_channels"
    BAD_FILE_NAME = "bad_file_name"


class AudioRejected(ServiceError):
    """The upload is refused; ``reason`` says why and the message says it for people.

    A ``ServiceError`` with code ``validation`` (HTTP 422), ``field`` ``file`` (``file_name`` for
    a bad name) and ``details`` ``[{"reason": ...}]``, so handlers can pass it on unchanged.
    """

    def __init__(self, reason: RejectReason, message: str) -> None:
        field = "file_name" if reason is RejectReason.BAD_FILE_NAME else "file"
        super().__init__(ErrorCode.VALIDATION, message, field=field, details=[{"reason": str(reason)}])
        self.reason = reason


class MediaToolMissing(RuntimeError):
    """ffmpeg or ffprobe is not installed: a deployment problem, never the upload's fault."""


class ConversionFailed(RuntimeError):
    """ffmpeg could not encode an output from audio that decoded fine (a bug or a broken host)."""


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Limits(_Frozen):
    """What an upload may be. The service fills these from its settings."""

    max_bytes: int = Field(default=100_000_000, gt=0)
    max_duration_s: float = Field(default=30 * 60, gt=0)
    min_sample_rate: int = Field(default=8000, gt=0)
    max_sample_rate: int = Field(default=192_000, gt=0)
    max_channels: int = Field(default=8, gt=0)
    probe_timeout_s: float = Field(default=30, gt=0)
    decode_timeout_s: float = Field(default=180, gt=0)


class Probe(_Frozen):
    """What ffprobe says about a file (first audio stream). ``error`` is set when it could not
    read the file at all; ``check`` turns every problem into an ``AudioRejected``."""

    path: Path
    size_bytes: int
    format_name: str | None = None  # ffprobe's demuxer name, e.g. "mov,mp4,m4a,3gp,3g2,mj2"
    format_long_name: str | None = None
    container: str | None = None  # canonical: mp3, wav, ogg, webm, mp4, flac (else the demuxer)
    codec: str | None = None
    sample_rate: int | None = None
    channels: int | None = None
    duration_s: float | None = None  # as declared; None when the file does not say (browser webm)
    bit_rate: int | None = None
    audio_streams: int = 0
    has_video: bool = False  # real video; an mp3's cover picture does not count
    error: str | None = None


class ConvertedFile(_Frozen):
    path: Path
    size_bytes: int


class Converted(_Frozen):
    wav_8k: ConvertedFile  # 8 kHz mono 16-bit PCM (Asterisk "wav")
    wav_16k: ConvertedFile  # 16 kHz mono 16-bit PCM (Asterisk "wav16")
    mp3: ConvertedFile  # 44.1 kHz mono 96 kbit/s, for browsers
    duration_ms: int
    loudness_before_dbfs: float | None  # RMS level; None for digital silence
    gain_db: float


# --------------------------------------------------------------------------- file names

_FORBIDDEN_CATEGORIES = {"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"}


def safe_file_name(name: str) -> str:
    """The upload's file name as it may be shown and offered for download, or ``AudioRejected``
    (``bad_file_name``). Letters of any script are kept; surrounding spaces are trimmed and the
    name is put in Unicode NFC form."""
    cleaned = unicodedata.normalize("NFC", name).strip()
    if not cleaned:
        raise AudioRejected(RejectReason.BAD_FILE_NAME, "the file name is empty")
    if len(cleaned) > MAX_FILE_NAME_CHARS:
        raise AudioRejected(
            RejectReason.BAD_FILE_NAME,
            f"the file name is {len(cleaned)} characters long; at most {MAX_FILE_NAME_CHARS} are allowed",
        )
    if "/" in cleaned or "\\" in cleaned:
        raise AudioRejected(
            RejectReason.BAD_FILE_NAME, "the file name must not contain a path (a / or \\ character)"
        )
    if set(cleaned) == {"."}:
        raise AudioRejected(RejectReason.BAD_FILE_NAME, f"{cleaned!r} is not a file name")
    for char in cleaned:
        if unicodedata.category(char) in _FORBIDDEN_CATEGORIES:
            raise AudioRejected(
                RejectReason.BAD_FILE_NAME,
                f"the file name contains a control or invisible character (U+{ord(char):04X})",
            )
    return cleaned


# --------------------------------------------------------------------------- tools


def _tool(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        raise MediaToolMissing(f"{name} is not installed: run scripts/install-ffmpeg.sh (Debian's ffmpeg)")
    return found


def _run(args: list[str], timeout_s: float) -> subprocess.CompletedProcess[str]:
    """Run ffmpeg/ffprobe without a shell; TimeoutExpired is left to the caller."""
    return subprocess.run(  # noqa: S603 - fixed tool path, arguments are ours, no shell
        [_tool(args[0]), *args[1:]],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        errors="replace",
        timeout=timeout_s,
        check=False,
    )


def _input(path: Path) -> str:
    # "file:" so that a name can never be taken for an option or another protocol.
    return "file:" + str(path.resolve())


_LOG_PREFIX = re.compile(r"^\[[^\]]+ @ 0x[0-9a-f]+\]\s*")
_NOT_WHITELISTED = re.compile(r"^\[(\S+) @ 0x[0-9a-f]+\] Format not on whitelist", re.MULTILINE)


def _first_error(stderr: str, path: Path) -> str:
    """ffmpeg's first complaint, without its "[demuxer @ 0x...]" prefix and the file's path."""
    for raw in stderr.splitlines():
        line = _LOG_PREFIX.sub("", raw.strip())
        for shown in (_input(path), str(path.resolve()), str(path)):
            line = line.replace(shown + ": ", "").replace(shown, "the file")
        if line:
            return line[:300]
    return "unknown error"


def _int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _float(value: Any) -> float | None:
    try:
        result = float(value)
    except (TypeError, ValueError):
        return None
    return result if math.isfinite(result) else None


# --------------------------------------------------------------------------- probe


def probe(path: str | os.PathLike[str], timeout_s: float = 30) -> Probe:
    """Run ``ffprobe -show_format -show_streams`` on ``path``. Problems with the content are
    reported in the result (``error``, no audio stream, ...) for ``check`` to judge; only a
    missing ffprobe (``MediaToolMissing``) or an unreadable path (``OSError``) raise."""
    file = Path(path)
    size = file.stat().st_size
    if size == 0:
        return Probe(path=file, size_bytes=0, error="the file is empty")
    args = ["ffprobe", "-v", "error", *_INPUT_OPTIONS, "-show_format", "-show_streams", "-of", "json"]
    try:
        done = _run([*args, _input(file)], timeout_s)
    except subprocess.TimeoutExpired:
        return Probe(path=file, size_bytes=size, error=f"ffprobe did not finish within {timeout_s:g} s")
    if done.returncode != 0:
        refused = _NOT_WHITELISTED.search(done.stderr)  # detected, but not a demuxer we may use
        return Probe(
            path=file,
            size_bytes=size,
            format_name=refused.group(1) if refused else None,
            error=_first_error(done.stderr, file),
        )
    try:
        data = json.loads(done.stdout or "{}")
    except json.JSONDecodeError:
        return Probe(path=file, size_bytes=size, error="ffprobe printed something unreadable")
    fmt: dict[str, Any] = data.get("format") or {}
    streams: list[dict[str, Any]] = data.get("streams") or []
    audio = [s for s in streams if s.get("codec_type") == "audio"]
    video = [
        s
        for s in streams
        if s.get("codec_type") == "video" and not (s.get("disposition") or {}).get("attached_pic")
    ]
    format_name = fmt.get("format_name")
    first: dict[str, Any] = audio[0] if audio else {}
    return Probe(
        path=file,
        size_bytes=size,
        format_name=format_name,
        format_long_name=fmt.get("format_long_name"),
        container=_DEMUXERS.get(format_name, format_name) if format_name else None,
        codec=first.get("codec_name"),
        sample_rate=_int(first.get("sample_rate")),
        channels=_int(first.get("channels")),
        duration_s=_float(first.get("duration")) or _float(fmt.get("duration")),
        bit_rate=_int(first.get("bit_rate")) or _int(fmt.get("bit_rate")),
        audio_streams=len(audio),
        has_video=bool(video),
    )


# --------------------------------------------------------------------------- check


def _megabytes(size: int) -> str:
    if size >= 1_000_000:
        return f"{size / 1_000_000:.1f} MB"
    return f"{size / 1000:.1f} kB" if size >= 1000 else f"{size} bytes"


def _seconds(value: float) -> str:
    minutes, seconds = divmod(round(value), 60)
    return f"{minutes} min {seconds} s" if minutes else f"{value:.1f} s"


def _sniff(path: Path) -> str | None:
    """The audio container the first bytes look like, for telling "corrupt" from "not audio"."""
    with path.open("rb") as f:
        head = f.read(12)
    if head.startswith(b"ID3") or (len(head) >= 2 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0):
        return "MP3"
    if head.startswith(b"RIFF") and head[8:12] == b"WAVE":
        return "WAV"
    if head.startswith(b"OggS"):
        return "Ogg"
    if head.startswith(b"\x1a\x45\xdf\xa3"):
        return "WebM/Matroska"
    if head[4:8] == b"ftyp":
        return "MP4/M4A"
    if head.startswith(b"fLaC"):
        return "FLAC"
    return None


def check(info: Probe, limits: Limits | None = None) -> None:
    """Refuse the probed file with ``AudioRejected`` unless it is an accepted, intact audio file
    within ``limits``. Decodes the whole audio stream (see the module notes), so it takes about a
    second per 10 minutes of mp3."""
    limits = limits or Limits()
    if info.size_bytes == 0:
        raise AudioRejected(RejectReason.EMPTY, "the file is empty")
    if info.size_bytes > limits.max_bytes:
        raise AudioRejected(
            RejectReason.TOO_LARGE,
            f"the file is {_megabytes(info.size_bytes)}; the limit is {_megabytes(limits.max_bytes)}",
        )
    if info.error is not None:
        looks_like = _sniff(info.path)
        if looks_like is not None:
            raise AudioRejected(
                RejectReason.CORRUPT,
                f"the file looks like {looks_like} audio but cannot be read, it is truncated or damaged"
                f" ({info.error})",
            )
        what = f" (it looks like {info.format_name})" if info.format_name else ""
        raise AudioRejected(
            RejectReason.NOT_AUDIO, f"the file is not audio in a known format{what}; upload {_ACCEPTED_TEXT}"
        )
    if info.audio_streams == 0:
        message = "the file contains video but no sound" if info.has_video else "the file contains no audio"
        raise AudioRejected(RejectReason.NOT_AUDIO, message)
    if info.has_video:
        raise AudioRejected(
            RejectReason.HAS_VIDEO, f"the file contains video; upload audio only: {_ACCEPTED_TEXT}"
        )
    container = info.container or "unknown"
    if container not in ACCEPTED:
        title = info.format_long_name or container
        raise AudioRejected(
            RejectReason.UNSUPPORTED_FORMAT, f"{title} files are not accepted; upload {_ACCEPTED_TEXT}"
        )
    if info.codec not in ACCEPTED[container]:
        allowed = ", ".join(sorted(ACCEPTED[container]))
        raise AudioRejected(
            RejectReason.UNSUPPORTED_CODEC,
            f"{info.codec or 'unknown'} audio in a {_CONTAINER_TITLES[container]} file is not accepted"
            f" ({_CONTAINER_TITLES[container]} must hold {allowed})",
        )
    if info.sample_rate is None or not limits.min_sample_rate <= info.sample_rate <= limits.max_sample_rate:
        raise AudioRejected(
            RejectReason.BAD_SAMPLE_RATE,
            f"the sample rate is {info.sample_rate or 'unknown'} Hz; accepted are"
            f" {limits.min_sample_rate} to {limits.max_sample_rate} Hz",
        )
    if info.channels is None or not 1 <= info.channels <= limits.max_channels:
        raise AudioRejected(
            RejectReason.BAD_CHANNELS,
            f"the file has {info.channels or 'no'} audio channels; at most {limits.max_channels} are accepted",
        )
    declared = _declared_duration(info)
    if declared is not None and declared > limits.max_duration_s:
        raise AudioRejected(RejectReason.TOO_LONG, _too_long(declared, limits))
    _check_structure(info, limits)
    decoded_s = _decode_all(info, limits)
    if decoded_s > limits.max_duration_s:
        raise AudioRejected(RejectReason.TOO_LONG, _too_long(decoded_s, limits, at_least=True))
    if declared is not None and declared - decoded_s > max(0.5, 0.02 * declared):
        raise AudioRejected(
            RejectReason.CORRUPT,
            f"the file says it lasts {_seconds(declared)} but only {_seconds(decoded_s)} of audio could be"
            " decoded: it is truncated",
        )


def validate(path: str | os.PathLike[str], limits: Limits | None = None) -> Probe:
    """``probe`` and ``check`` in one: the probe of an accepted file, else ``AudioRejected``."""
    limits = limits or Limits()
    info = probe(path, timeout_s=limits.probe_timeout_s)
    check(info, limits)
    return info


def _too_long(seconds: float, limits: Limits, at_least: bool = False) -> str:
    length = ("more than " if at_least else "") + _seconds(seconds)
    return f"the recording lasts {length}; the limit is {_seconds(limits.max_duration_s)}"


def _declared_duration(info: Probe) -> float | None:
    """The length the file itself states, or None. An mp3 states it only in a Xing/Info/VBRI
    header; without one ffprobe's duration is an estimate from the first frame's bit rate, far
    off for variable bit rates, so it is not held against the file."""
    if info.container == "mp3" and not _mp3_declares_length(info.path):
        return None
    return info.duration_s


def _mp3_declares_length(path: Path) -> bool:
    with path.open("rb") as f:
        head = f.read(10)
        offset = 0
        if len(head) == 10 and head[:3] == b"ID3":  # skip an ID3v2 tag (syncsafe size)
            size = (head[6] & 0x7F) << 21 | (head[7] & 0x7F) << 14 | (head[8] & 0x7F) << 7 | head[9] & 0x7F
            offset = 10 + size + (10 if head[5] & 0x10 else 0)
        f.seek(offset)
        data = f.read(64 * 1024)
    sync = data.find(b"\xff")
    while sync != -1 and (sync + 1 >= len(data) or data[sync + 1] & 0xE0 != 0xE0):
        sync = data.find(b"\xff", sync + 1)
    if sync == -1:
        return False
    first_frame = data[sync : sync + 200]
    return any(tag in first_frame for tag in (b"Xing", b"Info", b"VBRI"))


def _decode_all(info: Probe, limits: Limits) -> float:
    """Decode the first audio stream to nowhere; the decoded length in seconds, or CORRUPT."""
    args = [
        "ffmpeg", "-nostdin", "-v", "error", *_INPUT_OPTIONS, "-i", _input(info.path),
        "-map", "0:a:0", "-t", f"{limits.max_duration_s + 1:g}",
        "-f", "null", "-progress", "pipe:1", "-nostats", "-",
    ]  # fmt: skip
    try:
        done = _run(args, limits.decode_timeout_s)
    except subprocess.TimeoutExpired:
        raise AudioRejected(
            RejectReason.CORRUPT, f"the audio could not be decoded within {limits.decode_timeout_s:g} s"
        ) from None
    if done.returncode != 0 or done.stderr.strip():
        raise AudioRejected(
            RejectReason.CORRUPT,
            f"the audio is truncated or damaged: {_first_error(done.stderr, info.path)}",
        )
    times = re.findall(r"^out_time_us=(\d+)$", done.stdout, re.MULTILINE)
    decoded = int(times[-1]) / 1e6 if times else 0.0
    if decoded <= 0:
        raise AudioRejected(RejectReason.CORRUPT, "no audio could be decoded from the file")
    return decoded


def _check_structure(info: Probe, limits: Limits) -> None:
    """Truncation that decoding does not report: a wav's data chunk longer than the file, an
    mp3 whose last frame is cut."""
    if info.container == "wav":
        short = _wav_data_shortfall(info.path)
        if short is not None:
            declared, present = short
            raise AudioRejected(
                RejectReason.CORRUPT,
                f"the WAV file declares {declared} bytes of audio but holds only {present}: it is truncated",
            )
    elif info.container == "mp3" and _mp3_last_frame_cut(info, limits):
        raise AudioRejected(
            RejectReason.CORRUPT, "the MP3 file ends in the middle of a frame: it is truncated"
        )


def _wav_data_shortfall(path: Path) -> tuple[int, int] | None:
    """(declared, present) bytes of a RIFF/WAVE data chunk when the file is shorter than the
    chunk says. Streaming writers leave the size 0 or 0xFFFFFFFF: those are not judged."""
    size = path.stat().st_size
    with path.open("rb") as f:
        head = f.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            return None
        offset = 12
        for _ in range(64):
            f.seek(offset)
            chunk = f.read(8)
            if len(chunk) < 8:
                return None
            length = int.from_bytes(chunk[4:8], "little")
            if chunk[:4] == b"data":
                present = size - offset - 8
                if 0 < length < 0xFFFFFF00 and length > present:
                    return length, present
                return None
            offset += 8 + length + (length & 1)
    return None


_MP3_BITRATES = {  # kbit/s by (MPEG-1?, layer)
    (True, 1): (0, 32, 64, 96, 128, 160, 192, 224, 256, 288, 320, 352, 384, 416, 448),
    (True, 2): (0, 32, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320, 384),
    (True, 3): (0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320),
    (False, 1): (0, 32, 48, 56, 64, 80, 96, 112, 128, 144, 160, 176, 192, 224, 256),
    (False, 2): (0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160),
    (False, 3): (0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160),
}
_MP3_RATES = {3: (44100, 48000, 32000), 2: (22050, 24000, 16000), 0: (11025, 12000, 8000)}


def _mpeg_frame_length(header: bytes) -> int | None:
    """Length in bytes of the MPEG audio frame starting with ``header``; None if not one."""
    if len(header) < 4 or header[0] != 0xFF or header[1] & 0xE0 != 0xE0:
        return None
    version = (header[1] >> 3) & 0x03  # 3: MPEG-1, 2: MPEG-2, 0: MPEG-2.5
    layer = 4 - ((header[1] >> 1) & 0x03)  # 1, 2, 3 (4 is reserved)
    bitrate_index = header[2] >> 4
    rate_index = (header[2] >> 2) & 0x03
    padding = (header[2] >> 1) & 0x01
    if version == 1 or layer == 4 or bitrate_index in (0, 15) or rate_index == 3:
        return None
    mpeg1 = version == 3
    bitrate = _MP3_BITRATES[(mpeg1, layer)][bitrate_index] * 1000
    rate = _MP3_RATES[version][rate_index]
    if layer == 1:
        return (12 * bitrate // rate + padding) * 4
    if layer == 3 and not mpeg1:
        return 72 * bitrate // rate + padding
    return 144 * bitrate // rate + padding


def _mp3_last_frame_cut(info: Probe, limits: Limits) -> bool:
    start = max(0.0, (info.duration_s or 0.0) - 5.0)
    args = [
        "ffprobe", "-v", "error", *_INPUT_OPTIONS, "-read_intervals", f"{start:.3f}%",
        "-select_streams", "a:0", "-show_entries", "packet=pos,size", "-of", "json", _input(info.path),
    ]  # fmt: skip
    try:
        done = _run(args, limits.probe_timeout_s)
        packets = json.loads(done.stdout or "{}").get("packets") or []
    except (subprocess.TimeoutExpired, json.JSONDecodeError):
        return False
    if done.returncode != 0 or not packets:
        return False
    pos, size = _int(packets[-1].get("pos")), _int(packets[-1].get("size"))
    if pos is None or size is None:
        return False
    with info.path.open("rb") as f:
        f.seek(pos)
        expected = _mpeg_frame_length(f.read(4))
    return expected is not None and size < expected


# --------------------------------------------------------------------------- convert

_STEM = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
_WAV_CLEAN = ["-map_metadata", "-1", "-fflags", "+bitexact"]


def _gain_for(segment: Any) -> tuple[float | None, float]:
    """(RMS level in dBFS or None for silence, gain in dB) for loudness normalisation."""
    if segment.rms == 0:
        return None, 0.0
    level = float(segment.dBFS)
    peak = float(segment.max_dBFS)
    gain = min(TARGET_DBFS - level, PEAK_CEILING_DBFS - peak, MAX_GAIN_DB)
    return level, round(gain, 2)


def convert(
    src: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    stem: str = "sound",
    timeout_s: float = 180,
) -> Converted:
    """Make ``<stem>.8k.wav``, ``<stem>.16k.wav`` and ``<stem>.mp3`` in ``out_dir`` from the
    first audio stream of ``src`` (which ``check`` accepted), loudness-normalised. Existing
    outputs are replaced. ``AudioRejected`` (corrupt) when ``src`` cannot be decoded,
    ``ConversionFailed`` when an output cannot be written."""
    if not _STEM.match(stem):
        raise ValueError(f"stem {stem!r} must be 1-64 ASCII letters, digits, - or _")
    source = Path(src)
    target = Path(out_dir)
    target.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".convert-", dir=target) as scratch:
        decoded = Path(scratch) / "decoded.wav"
        args = [
            "ffmpeg", "-nostdin", "-v", "error", *_INPUT_OPTIONS, "-i", _input(source),
            "-map", "0:a:0", "-ac", "1", "-ar", str(WORK_SAMPLE_RATE), "-c:a", "pcm_s16le",
            *_WAV_CLEAN, "-f", "wav", "-y", _input(decoded),
        ]  # fmt: skip
        try:
            done = _run(args, timeout_s)
        except subprocess.TimeoutExpired:
            raise AudioRejected(
                RejectReason.CORRUPT, f"the audio could not be decoded within {timeout_s:g} s"
            ) from None
        if done.returncode != 0 or not decoded.exists():
            raise AudioRejected(
                RejectReason.CORRUPT, f"the audio cannot be decoded: {_first_error(done.stderr, source)}"
            )
        segment = AudioSegment.from_wav(str(decoded))
        decoded.unlink()
        duration_ms = len(segment)
        if duration_ms == 0:
            raise AudioRejected(RejectReason.CORRUPT, "no audio could be decoded from the file")
        level, gain = _gain_for(segment)
        if gain:
            segment = segment.apply_gain(gain)
        outputs = {
            "wav_8k": (target / f"{stem}.8k.wav", {"format": "wav", "codec": "pcm_s16le",
                       "parameters": ["-ar", "8000", "-ac", "1", *_WAV_CLEAN]}),
            "wav_16k": (target / f"{stem}.16k.wav", {"format": "wav", "codec": "pcm_s16le",
                        "parameters": ["-ar", "16000", "-ac", "1", *_WAV_CLEAN]}),
            "mp3": (target / f"{stem}.mp3", {"format": "mp3", "codec": "libmp3lame", "bitrate": MP3_BITRATE,
                    "parameters": ["-ac", "1", "-map_metadata", "-1"]}),
        }  # fmt: skip
        made: dict[str, ConvertedFile] = {}
        for key, (path, options) in outputs.items():
            partial = Path(scratch) / path.name
            try:
                segment.export(str(partial), **options).close()
            except CouldntEncodeError as exc:
                raise ConversionFailed(f"could not write {path.name}: {str(exc)[-300:]}") from exc
            partial.replace(path)
            made[key] = ConvertedFile(path=path, size_bytes=path.stat().st_size)
    return Converted(
        wav_8k=made["wav_8k"],
        wav_16k=made["wav_16k"],
        mp3=made["mp3"],
        duration_ms=int(duration_ms),
        loudness_before_dbfs=None if level is None else round(level, 2),
        gain_db=gain,
    )
