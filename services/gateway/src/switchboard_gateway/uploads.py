"""Reading a multipart upload as it arrives: the file goes to disk in pieces, counted against
the size limit; the small fields and the file name are checked on the way."""

from __future__ import annotations

import asyncio
import logging
import re
import unicodedata
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import BinaryIO
from urllib.parse import unquote

from switchboard_contracts.common import ErrorCode

from .errors import ApiError

log = logging.getLogger(__name__)

#: Room in a multipart body for boundaries, part headers and the small fields.
FORM_OVERHEAD = 64 * 1024
MAX_FIELD_BYTES = 1024
MAX_HEADER_BYTES = 8 * 1024
MAX_PARTS = 8
MAX_FILE_NAME_CHARS = 255
MAX_NAME_CHARS = 200
#: Bytes gathered in memory before they are written to the temporary file.
WRITE_BATCH = 1024 * 1024


def invalid_field(field_name: str, message: str, reason: str | None = None) -> ApiError:
    error = ApiError(422, ErrorCode.VALIDATION, f"{field_name}: {message}", field_name)
    if reason:
        error.body["error"]["details"] = [{"field": field_name, "reason": reason, "message": message}]
    return error


def bad_form(message: str) -> ApiError:
    return ApiError(400, ErrorCode.BAD_REQUEST, f"malformed multipart/form-data body: {message}")


def _megabytes(size: int) -> str:
    return f"{size / 1_000_000:g} MB"


def too_large(limit: int, declared: int | None = None) -> ApiError:
    said = f" (Content-Length: {declared} bytes)" if declared is not None else ""
    error = ApiError(
        413,
        "too_large",
        f"the upload is larger than the limit of {_megabytes(limit)} ({limit} bytes){said}",
        "file",
        headers={"Connection": "close"},
    )
    error.body["error"]["details"] = [{"field": "file", "reason": "too_large", "limit_bytes": limit}]
    return error


# --------------------------------------------------------------------------- multipart form

_PARAM = re.compile(r';\s*([^\s=;]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^;]*)')


def header_params(value: str) -> tuple[str, dict[str, str]]:
    """``type; key=value; key="quoted"`` -> (type, {key: value}); keys in lower case."""
    main, _, rest = value.partition(";")
    params: dict[str, str] = {}
    for match in _PARAM.finditer(";" + rest):
        raw = match.group(2).strip()
        if len(raw) >= 2 and raw[0] == raw[-1] == '"':
            # only \" and \\ are escapes; a backslash before anything else stays (a Windows path)
            raw = re.sub(r'\\(["\\])', r"\1", raw[1:-1])
        params[match.group(1).lower()] = raw
    return main.strip().lower(), params


def boundary_of(content_type: str | None) -> bytes:
    kind, params = header_params(content_type or "")
    if kind != "multipart/form-data":
        raise ApiError(
            415,
            "unsupported_media_type",
            "send the sound file as multipart/form-data with the fields file, name and category",
        )
    boundary = params.get("boundary", "")
    if not 1 <= len(boundary) <= 70 or not boundary.isascii():
        raise bad_form("the Content-Type has no valid boundary")
    return boundary.encode()


def check_file_name(name: str) -> str:
    """A light version of the media service's check, so that a hostile name is refused before
    the upload is stored anywhere; the media service checks again."""
    cleaned = unicodedata.normalize("NFC", name).strip()
    problem = None
    if not cleaned:
        problem = "the file name is empty"
    elif len(cleaned) > MAX_FILE_NAME_CHARS:
        problem = (
            f"the file name is {len(cleaned)} characters long; at most {MAX_FILE_NAME_CHARS} are allowed"
        )
    elif "/" in cleaned or "\\" in cleaned:
        problem = "the file name must not contain a path (a / or \\ character)"
    elif set(cleaned) == {"."}:
        problem = f"{cleaned!r} is not a file name"
    else:
        for char in cleaned:
            if unicodedata.category(char) in {"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"}:
                problem = f"the file name contains a control or invisible character (U+{ord(char):04X})"
                break
    if problem:
        raise invalid_field("file_name", problem, "bad_file_name")
    return cleaned


@dataclass
class _Part:
    name: str
    file_name: str | None
    data: bytearray = field(default_factory=bytearray)


@dataclass
class UploadForm:
    fields: dict[str, str] = field(default_factory=dict)
    file_name: str | None = None
    file_size: int = 0


class FormReader:
    """Reads a multipart/form-data body as it arrives: the ``file`` part goes to ``out`` in
    batches, counted against ``limit``; the small text fields are kept. Nothing is buffered
    beyond a batch and a boundary's length."""

    TEXT_FIELDS = ("name", "category")

    def __init__(self, boundary: bytes, out: BinaryIO, limit: int) -> None:
        self._delimiter = b"\r\n--" + boundary
        self._out = out
        self._limit = limit
        self._pending = bytearray()
        self.form = UploadForm()
        self._parts = 0

    async def _flush(self) -> None:
        if self._pending:
            data, self._pending = bytes(self._pending), bytearray()
            await asyncio.to_thread(self._out.write, data)

    def _start(self, head: bytes) -> _Part:
        self._parts += 1
        if self._parts > MAX_PARTS:
            raise bad_form(f"more than {MAX_PARTS} parts")
        try:
            text = head.decode()
        except UnicodeDecodeError:
            text = head.decode("latin-1")
        disposition = None
        for line in text.split("\r\n"):
            key, _, value = line.partition(":")
            if key.strip().lower() == "content-disposition":
                disposition = value
        if disposition is None:
            raise bad_form("a part has no Content-Disposition header")
        kind, params = header_params(disposition)
        name = params.get("name")
        if kind != "form-data" or not name:
            raise bad_form("a part is not form-data with a name")
        file_name = params.get("filename")
        extended = params.get("filename*")
        if extended and extended.count("'") >= 2:
            charset, _, encoded = extended.split("'", 2)
            try:
                file_name = unquote(encoded, encoding=charset or "utf-8", errors="strict")
            except (LookupError, UnicodeDecodeError):
                raise invalid_field("file_name", "the file name is not valid text", "bad_file_name") from None
        if name == "file":
            if self.form.file_name is not None:
                raise invalid_field("file", "send one file per upload")
            if file_name is None:
                raise invalid_field("file_name", "the file part has no file name", "bad_file_name")
            self.form.file_name = check_file_name(file_name)
        elif name not in self.TEXT_FIELDS:
            raise invalid_field(name, f"unknown field; expected file, {', '.join(self.TEXT_FIELDS)}")
        elif name in self.form.fields:
            raise invalid_field(name, "given more than once")
        return _Part(name, file_name)

    async def _feed(self, part: _Part, data: bytes | bytearray) -> None:
        if not data:
            return
        if part.name == "file":
            self.form.file_size += len(data)
            if self.form.file_size > self._limit:
                raise too_large(self._limit)
            self._pending += data
            if len(self._pending) >= WRITE_BATCH:
                await self._flush()
            return
        part.data += data
        if len(part.data) > MAX_FIELD_BYTES:
            raise invalid_field(part.name, f"longer than {MAX_FIELD_BYTES} bytes")

    def _finish(self, part: _Part) -> None:
        if part.name == "file":
            return
        try:
            self.form.fields[part.name] = part.data.decode()
        except UnicodeDecodeError:
            raise invalid_field(part.name, "not valid UTF-8 text") from None

    async def read(self, chunks: AsyncIterator[bytes]) -> UploadForm:
        delimiter = self._delimiter
        keep = len(delimiter) - 1
        buf = bytearray(b"\r\n")  # so that the first boundary looks like every other one
        state = "preamble"
        part: _Part | None = None
        async for chunk in chunks:
            buf += chunk
            while True:
                if state == "preamble":
                    at = buf.find(delimiter)
                    if at < 0:
                        if len(buf) > MAX_HEADER_BYTES:
                            raise bad_form("no boundary where the body starts")
                        break
                    del buf[: at + len(delimiter)]
                    state = "boundary"
                elif state == "boundary":
                    if len(buf) < 2:
                        break
                    if buf[:2] == b"--":
                        state = "done"
                        continue
                    at = buf.find(b"\r\n")
                    if at < 0:
                        if len(buf) > 256:
                            raise bad_form("a boundary line does not end")
                        break
                    if buf[:at].strip(b" \t"):
                        raise bad_form("text after a boundary")
                    del buf[: at + 2]
                    state = "headers"
                elif state == "headers":
                    if buf.startswith(b"\r\n"):
                        at, head = 0, b""
                    else:
                        at = buf.find(b"\r\n\r\n")
                        if at < 0:
                            if len(buf) > MAX_HEADER_BYTES:
                                raise bad_form(f"part headers longer than {MAX_HEADER_BYTES} bytes")
                            break
                        head = bytes(buf[:at])
                        at += 2
                    del buf[: at + 2]
                    part = self._start(head)
                    state = "body"
                elif state == "body":
                    assert part is not None
                    at = buf.find(delimiter)
                    if at < 0:
                        if len(buf) > keep:
                            await self._feed(part, buf[: len(buf) - keep])
                            del buf[: len(buf) - keep]
                        break
                    await self._feed(part, buf[:at])
                    del buf[: at + len(delimiter)]
                    self._finish(part)
                    part = None
                    state = "boundary"
                else:  # done: the epilogue is ignored
                    buf.clear()
                    break
        if state != "done":
            raise bad_form("the body ends before the closing boundary")
        await self._flush()
        return self.form


def default_name(file_name: str) -> str:
    stem, dot, _ = file_name.rpartition(".")
    name = stem.strip() if dot and stem.strip() else file_name
    return name[:MAX_NAME_CHARS]


# --------------------------------------------------------------------------- ranges
