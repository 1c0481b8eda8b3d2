"""The media service's audio module on real ffmpeg: checks, refusals and conversion of small files
that the tests generate with ffmpeg's lavfi sources (no fixtures on disk, no espeak-ng needed).

The unsupported-codec case is ADPCM (``adpcm_ima_wav``) in a WAV file; the unsupported-container
case is AIFF. G.711 (``pcm_mulaw``) in WAV is accepted on purpose: telephony prompts often are.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from switchboard_contracts.common import ErrorCode, ServiceError
from switchboard_media.audio import (
    MAX_FILE_NAME_CHARS,
    TARGET_DBFS,
    AudioRejected,
    Converted,
    Limits,
    MediaToolMissing,
    RejectReason,
    check,
    convert,
    probe,
    safe_file_name,
    validate,
)

SINE = "sine=frequency=440:sample_rate=44100:duration=2"


@pytest.fixture(scope="module", autouse=True)
def _ffmpeg_installed() -> None:
    if shutil.which("ffmpeg") is None or shutil.which("ffprobe") is None:
        pytest.fail("ffmpeg/ffprobe are missing: run scripts/install-ffmpeg.sh (Debian's ffmpeg)")


def ff(*args: str) -> None:
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", *args], check=True)


def streams(path: Path) -> list[dict[str, Any]]:
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-show_streams", "-show_format", "-of", "json", str(path)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    data = json.loads(out)
    for stream in data["streams"]:
        stream["format_duration"] = float(data["format"]["duration"])
    return list(data["streams"])


def mean_volume(path: Path) -> float:
    """ffmpeg volumedetect's mean (RMS) level in dB; a full-scale sine is -3 dB."""
    err = subprocess.run(
        ["ffmpeg", "-nostdin", "-i", str(path), "-af", "volumedetect", "-f", "null", "-"],
        check=True,
        capture_output=True,
        text=True,
    ).stderr
    found = re.search(r"mean_volume: (-?[\d.]+) dB", err)
    assert found, err
    return float(found.group(1))


def cut(src: Path, dst: Path, size: int) -> Path:
    dst.write_bytes(src.read_bytes()[:size])
    return dst


class Samples:
    """Generates each sample once per module, named by the test."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def make(self, name: str, *ffmpeg_args: str) -> Path:
        path = self.root / name
        if not path.exists():
            ff(*ffmpeg_args, str(path))
        return path


@pytest.fixture(scope="module")
def samples(tmp_path_factory: pytest.TempPathFactory) -> Samples:
    return Samples(tmp_path_factory.mktemp("samples"))


# Accepted formats: file name, ffmpeg arguments (before the output), container and codec probed.
ACCEPTED: dict[str, tuple[str, list[str], str, str]] = {
    "mp3": (
        "a.mp3",
        ["-f", "lavfi", "-i", SINE, "-ac", "2", "-c:a", "libmp3lame", "-b:a", "128k"],
        "mp3",
        "mp3",
    ),
    "wav": ("a.wav", ["-f", "lavfi", "-i", SINE, "-ac", "2", "-c:a", "pcm_s16le"], "wav", "pcm_s16le"),
    "wav-ulaw": (
        "ulaw.wav",
        ["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=8000:duration=2", "-c:a", "pcm_mulaw"],
        "wav",
        "pcm_mulaw",
    ),
    "ogg-opus": ("a.ogg", ["-f", "lavfi", "-i", SINE, "-ac", "2", "-c:a", "libopus"], "ogg", "opus"),
    "ogg-vorbis": ("v.ogg", ["-f", "lavfi", "-i", SINE, "-c:a", "libvorbis"], "ogg", "vorbis"),
    "webm-opus": ("a.webm", ["-f", "lavfi", "-i", SINE, "-c:a", "libopus"], "webm", "opus"),
    "m4a-aac": ("a.m4a", ["-f", "lavfi", "-i", SINE, "-ac", "2", "-c:a", "aac"], "mp4", "aac"),
    "flac": ("a.flac", ["-f", "lavfi", "-i", SINE, "-c:a", "flac"], "flac", "flac"),
    # What ffmpeg detects from the content, whatever the name says.
    "mp3-named-wav": (
        "mp3-really.wav",
        ["-f", "lavfi", "-i", SINE, "-c:a", "libmp3lame", "-f", "mp3"],
        "mp3",
        "mp3",
    ),
    "ogg-named-mp3": (
        "ogg-really.mp3",
        ["-f", "lavfi", "-i", SINE, "-c:a", "libopus", "-f", "ogg"],
        "ogg",
        "opus",
    ),
}


def sample(samples: Samples, kind: str) -> Path:
    name, args, _, _ = ACCEPTED[kind]
    return samples.make(name, *args)


def browser_webm(samples: Samples, seconds: int = 2) -> Path:
    """Like a browser's MediaRecorder output: written to a pipe, so no duration and no cues."""
    path = samples.root / f"browser-{seconds}.webm"
    if not path.exists():
        with path.open("wb") as out:
            subprocess.run(
                [
                    *("ffmpeg", "-nostdin", "-v", "error", "-f", "lavfi", "-i", f"sine=duration={seconds}"),
                    *("-c:a", "libopus", "-f", "webm", "pipe:1"),
                ],
                check=True,
                stdout=out,
            )
    return path


def assert_outputs(result: Converted, seconds: float) -> None:
    assert abs(result.duration_ms - seconds * 1000) <= 50, result.duration_ms
    expected = {
        result.wav_8k.path: ("pcm_s16le", 8000),
        result.wav_16k.path: ("pcm_s16le", 16000),
        result.mp3.path: ("mp3", 44100),
    }
    for path, (codec, rate) in expected.items():
        assert path.exists() and path.stat().st_size > 0
        [stream] = streams(path)
        assert stream["codec_name"] == codec, path
        assert int(stream["sample_rate"]) == rate, path
        assert stream["channels"] == 1, path
        assert abs(stream["format_duration"] - seconds) <= 0.1, (path, stream["format_duration"])
    [mp3] = streams(result.mp3.path)
    assert 64_000 <= int(mp3["bit_rate"]) <= 128_000
    assert result.wav_8k.size_bytes == result.wav_8k.path.stat().st_size
    assert result.mp3.path.name.endswith(".mp3")
    assert result.wav_8k.path.name.endswith(".8k.wav") and result.wav_16k.path.name.endswith(".16k.wav")
    # No metadata chunks in the wav files: a plain 44-byte header, as Asterisk's reader expects.
    head = result.wav_8k.path.read_bytes()[:44]
    assert head[:4] == b"RIFF" and head[36:40] == b"data"


# --------------------------------------------------------------------------- accepted


@pytest.mark.parametrize("kind", list(ACCEPTED))
def test_accepted_format_is_checked_and_converted(kind: str, samples: Samples, tmp_path: Path) -> None:
    src = sample(samples, kind)
    _, _, container, codec = ACCEPTED[kind]
    info = validate(src)
    assert (info.container, info.codec) == (container, codec)
    assert info.audio_streams == 1 and not info.has_video
    assert_outputs(convert(src, tmp_path / "out", stem="s1"), 2.0)


def test_browser_webm_without_duration_is_accepted(samples: Samples, tmp_path: Path) -> None:
    src = browser_webm(samples)
    info = validate(src)
    assert info.container == "webm" and info.duration_s is None
    assert_outputs(convert(src, tmp_path), 2.0)


def test_mp3_with_cover_art_is_audio(samples: Samples, tmp_path: Path) -> None:
    cover = samples.make("cover.png", "-f", "lavfi", "-i", "color=c=red:s=32x32:d=1", "-frames:v", "1")
    src = samples.make(
        "art.mp3", "-f", "lavfi", "-i", SINE, "-i", str(cover), "-map", "0", "-map", "1",
        "-c:a", "libmp3lame", "-c:v", "png", "-disposition:v", "attached_pic",
    )  # fmt: skip
    info = validate(src)
    assert not info.has_video
    assert_outputs(convert(src, tmp_path), 2.0)


# --------------------------------------------------------------------------- refused


def rejected(path: Path, limits: Limits | None = None) -> AudioRejected:
    with pytest.raises(AudioRejected) as caught:
        validate(path, limits)
    return caught.value


def test_empty_file(tmp_path: Path) -> None:
    (tmp_path / "empty.mp3").write_bytes(b"")
    error = rejected(tmp_path / "empty.mp3")
    assert error.reason is RejectReason.EMPTY and "empty" in str(error)


def test_text_file_renamed_mp3(tmp_path: Path) -> None:
    path = tmp_path / "notes.mp3"
    path.write_text("Meeting notes\nThis is not a sound file, just text.\n" * 20)
    error = rejected(path)
    assert error.reason is RejectReason.NOT_AUDIO
    assert "not audio" in str(error) and "mp3" in str(error)


def test_playlist_is_not_opened(tmp_path: Path) -> None:
    """An HLS playlist named .mp3 must not make ffmpeg read the files or URLs it lists."""
    path = tmp_path / "playlist.mp3"
    path.write_text("#EXTM3U\n#EXT-X-TARGETDURATION:1\n#EXTINF:1,\nfile:///etc/passwd\n#EXT-X-ENDLIST\n")
    error = rejected(path)
    assert error.reason is RejectReason.NOT_AUDIO and "hls" in str(error)


def _lame_mp3(samples: Samples) -> Path:
    return samples.make(
        "lame.mp3", "-f", "lavfi", "-i", "sine=duration=4", "-c:a", "libmp3lame", "-b:a", "128k"
    )


def test_truncated_mp3_cut_in_half(samples: Samples, tmp_path: Path) -> None:
    good = _lame_mp3(samples)
    validate(good)  # the whole file is fine
    error = rejected(cut(good, tmp_path / "half.mp3", good.stat().st_size // 2))
    assert error.reason is RejectReason.CORRUPT and "truncated" in str(error)


def test_truncated_mp3_cut_between_frames(samples: Samples, tmp_path: Path) -> None:
    """Cut exactly after a frame: caught by the Xing header's length against the decoded one."""
    good = _lame_mp3(samples)
    packets = json.loads(
        subprocess.run(
            ["ffprobe", "-v", "error", "-show_entries", "packet=pos,size", "-of", "json", str(good)],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
    )["packets"]
    middle = packets[len(packets) // 2]
    error = rejected(cut(good, tmp_path / "frames.mp3", int(middle["pos"]) + int(middle["size"])))
    assert error.reason is RejectReason.CORRUPT and "truncated" in str(error), str(error)
    assert "4.0 s" in str(error)


def test_truncated_mp3_without_xing_header(samples: Samples, tmp_path: Path) -> None:
    """A constant-bitrate mp3 without a Xing header cut mid-frame: the short last frame shows it."""
    good = samples.make(
        "noxing.mp3", "-f", "lavfi", "-i", "sine=duration=4", "-c:a", "libmp3lame", "-b:a", "128k",
        "-write_xing", "0",
    )  # fmt: skip
    validate(good)
    error = rejected(cut(good, tmp_path / "noxing-cut.mp3", good.stat().st_size // 2 + 7))
    assert error.reason is RejectReason.CORRUPT


def test_variable_bitrate_mp3_without_xing_header_is_not_called_truncated(samples: Samples) -> None:
    """Without a Xing header ffprobe guesses the length from the first (silent, small) frame:
    6.4 s for this 4 s file. The guess must not count as a declared length."""
    src = samples.make(
        "vbr-noxing.mp3", "-f", "lavfi", "-i", "aevalsrc=if(lt(t\\,1)\\,0\\,0.5*random(0)):s=44100:d=4",
        "-c:a", "libmp3lame", "-q:a", "2", "-write_xing", "0",
    )  # fmt: skip
    info = validate(src, Limits(max_duration_s=5))
    assert info.duration_s is not None and info.duration_s > 5  # the estimate


@pytest.mark.parametrize(
    ("name", "args"),
    [
        ("t.m4a", ["-f", "lavfi", "-i", "sine=duration=4", "-c:a", "aac"]),  # moov at the end
        ("fast.m4a", ["-f", "lavfi", "-i", "sine=duration=4", "-c:a", "aac", "-movflags", "+faststart"]),
        ("t.webm", ["-f", "lavfi", "-i", "sine=duration=4", "-c:a", "libopus"]),
        ("t.wav", ["-f", "lavfi", "-i", "sine=duration=4", "-c:a", "pcm_s16le"]),
        ("t.flac", ["-f", "lavfi", "-i", "sine=duration=4", "-c:a", "flac"]),
    ],
)
def test_truncated_files(name: str, args: list[str], samples: Samples, tmp_path: Path) -> None:
    good = samples.make(name, *args)
    validate(good)
    error = rejected(cut(good, tmp_path / name, good.stat().st_size // 2 + 7))
    assert error.reason is RejectReason.CORRUPT, str(error)


def test_too_large(samples: Samples) -> None:
    src = sample(samples, "mp3")
    error = rejected(src, Limits(max_bytes=1000))
    assert error.reason is RejectReason.TOO_LARGE
    assert "the limit is 1.0 kB" in str(error), str(error)


def test_too_long(samples: Samples) -> None:
    src = sample(samples, "wav")
    error = rejected(src, Limits(max_duration_s=1.5))
    assert error.reason is RejectReason.TOO_LONG and "2.0 s" in str(error) and "1.5 s" in str(error)


def test_too_long_without_declared_duration(samples: Samples) -> None:
    """A browser recording does not say how long it is: the decoded length is what counts."""
    error = rejected(browser_webm(samples, 3), Limits(max_duration_s=1.0))
    assert error.reason is RejectReason.TOO_LONG and "more than" in str(error)


def test_unsupported_container(samples: Samples) -> None:
    src = samples.make("a.aiff", "-f", "lavfi", "-i", SINE, "-c:a", "pcm_s16be")
    error = rejected(src)
    assert error.reason is RejectReason.UNSUPPORTED_FORMAT and "not accepted" in str(error)


def test_unsupported_codec(samples: Samples) -> None:
    src = samples.make("adpcm.wav", "-f", "lavfi", "-i", SINE, "-c:a", "adpcm_ima_wav")
    error = rejected(src)
    assert error.reason is RejectReason.UNSUPPORTED_CODEC and "adpcm_ima_wav" in str(error)


def test_video_only_is_not_audio(samples: Samples) -> None:
    src = samples.make("video.mp4", "-f", "lavfi", "-i", "testsrc=size=64x48:rate=5:d=1", "-c:v", "mpeg4")
    error = rejected(src)
    assert error.reason is RejectReason.NOT_AUDIO and "video" in str(error)


def test_video_with_sound_is_refused(samples: Samples) -> None:
    src = samples.make(
        "film.mp4", "-f", "lavfi", "-i", "testsrc=size=64x48:rate=5:d=2", "-f", "lavfi", "-i", SINE,
        "-c:v", "mpeg4", "-c:a", "aac",
    )  # fmt: skip
    assert rejected(src).reason is RejectReason.HAS_VIDEO


def test_absurd_sample_rate(samples: Samples) -> None:
    src = samples.make("4k.wav", "-f", "lavfi", "-i", "sine=sample_rate=4000:duration=1", "-c:a", "pcm_s16le")
    error = rejected(src)
    assert error.reason is RejectReason.BAD_SAMPLE_RATE and "4000 Hz" in str(error)


def test_absurd_channel_count(samples: Samples) -> None:
    twelve = "|".join(["sin(440*2*PI*t)"] * 12)
    src = samples.make("12ch.wav", "-f", "lavfi", "-i", f"aevalsrc={twelve}:d=1", "-c:a", "pcm_s16le")
    error = rejected(src)
    assert error.reason is RejectReason.BAD_CHANNELS and "12" in str(error)


def test_rejection_is_a_validation_error(tmp_path: Path) -> None:
    (tmp_path / "e.wav").write_bytes(b"")
    error = rejected(tmp_path / "e.wav")
    assert isinstance(error, ServiceError)
    assert error.info.code is ErrorCode.VALIDATION and error.info.field == "file"
    assert error.info.details == [{"reason": "empty"}]


def test_probe_and_check_separately(samples: Samples) -> None:
    info = probe(sample(samples, "mp3"))
    assert info.sample_rate == 44100 and info.channels == 2 and info.bit_rate
    assert info.duration_s is not None and abs(info.duration_s - 2.0) < 0.1
    check(info, Limits())
    with pytest.raises(AudioRejected):
        check(info, Limits(max_duration_s=1))


def test_missing_ffmpeg_is_not_the_uploads_fault(samples: Samples, monkeypatch: pytest.MonkeyPatch) -> None:
    src = sample(samples, "mp3")
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(MediaToolMissing, match="install-ffmpeg"):
        probe(src)


# --------------------------------------------------------------------------- file names


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("Приветствие.mp3", "Приветствие.mp3"),
        ("  музыка на удержании (v2).wav ", "музыка на удержании (v2).wav"),
        ("e\u0301te\u0301.ogg", "\u00e9t\u00e9.ogg"),  # NFD becomes NFC
        ("a..b.mp3", "a..b.mp3"),
        ("x" * MAX_FILE_NAME_CHARS, "x" * MAX_FILE_NAME_CHARS),
    ],
)
def test_good_file_names(name: str, expected: str) -> None:
    assert safe_file_name(name) == expected


@pytest.mark.parametrize(
    "name",
    [
        "",
        "   ",
        "../../etc/passwd",
        "sounds/hello.mp3",
        "..\\hello.mp3",
        "C:\\Users\\x.wav",
        "..",
        ".",
        "hello\x00.mp3",
        "hello\n.mp3",
        "bell\x07.wav",
        "evil\u202e3pm.exe",  # right-to-left override
        "zero\u200bwidth.mp3",
        "x" * (MAX_FILE_NAME_CHARS + 1),
    ],
)
def test_hostile_file_names(name: str) -> None:
    with pytest.raises(AudioRejected) as caught:
        safe_file_name(name)
    assert caught.value.reason is RejectReason.BAD_FILE_NAME
    assert caught.value.info.field == "file_name"


# --------------------------------------------------------------------------- loudness


def _tone(samples: Samples, name: str, amplitude: float) -> Path:
    return samples.make(
        name, "-f", "lavfi", "-i", f"aevalsrc={amplitude}*sin(440*2*PI*t):s=44100:d=2", "-c:a", "pcm_s16le"
    )


def test_quiet_input_comes_out_louder(samples: Samples, tmp_path: Path) -> None:
    src = _tone(samples, "quiet.wav", 0.01)  # about -43 dB
    before = mean_volume(src)
    result = convert(src, tmp_path)
    assert result.gain_db > 15
    for path in (result.wav_8k.path, result.wav_16k.path, result.mp3.path):
        after = mean_volume(path)
        assert after > before + 15, (path, before, after)
        assert abs(after - TARGET_DBFS) <= 1.5, (path, after)


def test_loud_input_comes_out_quieter(samples: Samples, tmp_path: Path) -> None:
    src = _tone(samples, "loud.wav", 0.9)  # about -4 dB
    result = convert(src, tmp_path)
    assert result.gain_db < -10
    assert abs(mean_volume(result.wav_8k.path) - TARGET_DBFS) <= 1.5


def test_gain_never_clips(samples: Samples, tmp_path: Path) -> None:
    """A quiet tone with one loud click: the peak, not the average, limits the gain."""
    src = samples.make(
        "click.wav", "-f", "lavfi", "-i",
        "aevalsrc=0.01*sin(440*2*PI*t)+0.5*between(t\\,1\\,1.001):s=44100:d=2", "-c:a", "pcm_s16le",
    )  # fmt: skip
    result = convert(src, tmp_path)
    assert 0 < result.gain_db <= 6.1  # a 0.51 peak may rise to -1 dBFS, not further
    assert mean_volume(result.wav_16k.path) < TARGET_DBFS - 10


def test_silence_is_left_alone(samples: Samples, tmp_path: Path) -> None:
    src = samples.make(
        "silence.wav", "-f", "lavfi", "-i", "anullsrc=r=44100:cl=mono", "-t", "1", "-c:a", "pcm_s16le"
    )
    validate(src)
    result = convert(src, tmp_path)
    assert result.gain_db == 0 and result.loudness_before_dbfs is None
    assert abs(result.duration_ms - 1000) <= 10


def test_convert_refuses_undecodable_input(tmp_path: Path) -> None:
    path = tmp_path / "junk.bin"
    path.write_bytes(b"\x00junk" * 100)
    with pytest.raises(AudioRejected) as caught:
        convert(path, tmp_path / "out")
    assert caught.value.reason is RejectReason.CORRUPT
    assert not list((tmp_path / "out").iterdir())  # nothing left behind
