"""Recording answered calls, without servers: who is recorded (tenant and employee flags),
the recording ids, the ARI requests that start and stop a bridge recording, and what the
delivery does with files that never came, hold no audio or are still written."""

from __future__ import annotations

import asyncio
import json
import wave
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import pytest
from pydantic import TypeAdapter, ValidationError
from switchboard_callflow.adapters.ari import Ari, AriError
from switchboard_callflow.adapters.recordings import SIDECAR_SUFFIX, RecordingDelivery, recording_id
from switchboard_callflow.recording import should_record, start_recording, stop_recording
from switchboard_callflow.records import Leg
from switchboard_contracts.cdr import Disposition, RecordingId
from switchboard_contracts.common import SoundFileId
from switchboard_contracts.employees import Employee, EmployeeAdvanced
from switchboard_contracts.sounds import RecordingUploadRequest
from switchboard_contracts.tenants import Tenant

NOW = datetime(2026, 11, 26, tzinfo=UTC)


def tenant(record_calls: bool = False) -> Tenant:
    return Tenant(
        id="acme",
        name="Acme",
        sip_domain="acme.pbx.test",
        settings={"record_calls": record_calls},
        created_at=NOW,
        updated_at=NOW,
    )


def employee(number: str = "101", record_calls: bool | None = None) -> Employee:
    advanced = {} if record_calls is None else {"record_calls": record_calls}
    return Employee(
        id="e" * 32, tenant_id="acme", name="Anna", number=number, sip_password="Sw1tch-board_Pass",
        advanced=advanced, revision=1, created_at=NOW, updated_at=NOW,
    )  # fmt: skip


def test_employee_recording_is_off_by_default_and_can_be_switched_on() -> None:
    assert EmployeeAdvanced().record_calls is False
    assert employee(record_calls=True).advanced.record_calls is True
    with pytest.raises(ValidationError):
        EmployeeAdvanced(record_calls="sometimes")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("tenant_records", "people", "recorded"),
    [
        (False, (), False),
        (False, (None,), False),
        (False, (employee("101"), employee("102", record_calls=False)), False),
        (True, (), True),  # tenant-wide: every answered call, outside parties included
        (True, (None, employee("102", record_calls=False)), True),
        (False, (employee("101", record_calls=True),), True),  # the caller's own setting
        (False, (employee("101"), employee("102", record_calls=True)), True),  # the callee's
        (False, (None, employee("102", record_calls=True)), True),  # a call from outside
    ],
)
def test_should_record(tenant_records: bool, people: tuple[Employee | None, ...], recorded: bool) -> None:
    assert should_record(tenant(tenant_records), *people) is recorded


def test_recording_ids_fit_the_media_service_and_the_call_record() -> None:
    ids = {recording_id() for _ in range(200)}
    assert len(ids) == 200
    for rid in ids:
        assert len(rid) == 32 and int(rid, 16) >= 0 and rid == rid.lower()
        TypeAdapter(SoundFileId).validate_python(rid)
        TypeAdapter(RecordingId).validate_python(rid)
    rid = ids.pop()
    RecordingUploadRequest(tenant_id="acme", upload="a" * 32, id=rid, linkedid="1764160000.7", leg_id="leg-7")
    leg = Leg("acme", "1764160000.7", "leg-7", caller_number="101", called_number="102", recording_id=rid)
    leg.talking()
    assert leg.record(Disposition.ANSWERED).recording_id == rid


class FakeAri:
    def __init__(self, fail: dict[str, int] | None = None) -> None:
        self.requests: list[tuple[str, str, dict[str, Any] | None]] = []
        self.fail = fail or {}

    async def request(
        self, method: str, path: str, params: dict[str, Any] | None = None, body: Any = None
    ) -> Any:
        self.requests.append((method, path, params))
        for prefix, status in self.fail.items():
            if path.startswith(prefix):
                raise AriError(status, method, path, "refused")
        return None


async def test_start_recording_records_the_bridge_as_wav() -> None:
    ari = FakeAri()
    assert await start_recording(cast(Ari, ari), "bridge-1", "abc123") is True
    [(method, path, params)] = ari.requests
    assert (method, path) == ("POST", "/bridges/bridge-1/record")
    assert params is not None
    assert (params["name"], params["format"], params["ifExists"]) == ("abc123", "wav", "overwrite")


async def test_start_recording_failure_is_reported_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    ari = FakeAri({"/bridges/": 404})
    assert await start_recording(cast(Ari, ari), "gone", "abc123") is False
    assert "not started" in caplog.text


async def test_stop_recording_ignores_a_recording_that_already_ended(
    caplog: pytest.LogCaptureFixture,
) -> None:
    ari = FakeAri({"/recordings/live/": 404})
    await stop_recording(cast(Ari, ari), "abc123")
    assert ari.requests == [("POST", "/recordings/live/abc123/stop", None)]
    assert "not stopped" not in caplog.text
    await stop_recording(cast(Ari, FakeAri({"/recordings/live/": 500})), "abc123")  # logged only
    assert "not stopped" in caplog.text


def files_in(folder: Path) -> list[str]:
    return sorted(path.name for path in folder.iterdir())


def no_bus() -> Any:
    raise AssertionError("the bus must not be used")


def delivery(folder: Path, **options: Any) -> RecordingDelivery:
    return RecordingDelivery(no_bus, str(folder), poll_interval=0.02, **options)


@pytest.mark.parametrize("name", ["../etc/passwd", "/abs", "a/../b", "", ".hidden", "a b", "x/" * 5 + "y"])
def test_recording_names_stay_in_the_folder(tmp_path: Path, name: str) -> None:
    with pytest.raises(ValueError, match="not a valid recording name"):
        delivery(tmp_path).path_of(name)


def test_recording_path(tmp_path: Path) -> None:
    assert delivery(tmp_path).path_of("abc") == tmp_path / "abc.wav"
    assert delivery(tmp_path).path_of("acme/abc-1.2") == tmp_path / "acme" / "abc-1.2.wav"


async def test_a_recording_that_never_appears_is_given_up(tmp_path: Path) -> None:
    rid = recording_id()
    assert await delivery(tmp_path, finish_timeout=0.2).deliver("acme", rid, rid, "1.1", "leg") is False
    assert files_in(tmp_path) == []  # no sidecar left: nothing to resume


async def test_a_recording_without_audio_is_dropped_without_asking_media(tmp_path: Path) -> None:
    rid = recording_id()
    with wave.open(str(tmp_path / f"{rid}.wav"), "wb") as out:  # what a hung-up-at-once call leaves
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(8000)
    assert await delivery(tmp_path).deliver("acme", rid, rid, "1.1", "leg") is False
    assert files_in(tmp_path) == []


async def test_a_recording_still_written_is_left_for_later(tmp_path: Path) -> None:
    """Asterisk writes the sizes into the header only when it closes the file; one that keeps
    growing is not delivered half-written, and its sidecar stays for ``resume``."""
    rid = recording_id()
    path = tmp_path / f"{rid}.wav"
    path.write_bytes(b"RIFF\x00\x00\x00\x00WAVEfmt " + b"\x00" * 32)
    worker = delivery(tmp_path, finish_timeout=0.6, settle_time=5)

    async def grow() -> None:
        for _ in range(40):
            with path.open("ab") as handle:
                handle.write(b"\x01" * 320)
            await asyncio.sleep(0.02)

    writer = asyncio.create_task(grow())
    assert await worker.deliver("acme", rid, rid, "1.1", "leg") is False
    await writer
    assert path.exists()
    sidecar = json.loads((tmp_path / f"{rid}{SIDECAR_SUFFIX}").read_text())
    assert sidecar == {
        "tenant_id": "acme",
        "recording_id": rid,
        "name": rid,
        "linkedid": "1.1",
        "leg_id": "leg",
    }
