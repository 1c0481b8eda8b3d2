"""S3 object storage of the media service, over the ``minio`` SDK.

The same code talks to SeaweedFS (``weed mini``, local runs and tests, started by
``scripts/seaweedfs.sh``) and to MinIO (docker-compose, Kubernetes); endpoint, credentials,
bucket and region come from the settings.

Bucket layout
-------------
One bucket holds every tenant's audio. Keys are only ever built by :func:`object_key`::

    tenants/<tenant>/sounds/<id>/<variant>        a sound file (SPEC section 5)
    tenants/<tenant>/recordings/<id>/<variant>    a call recording

``<tenant>`` is the tenant id (``^[a-z0-9][a-z0-9-]{1,31}$``), ``<id>`` the sound file's or the
recording's id (``^[a-z0-9]{8,64}$``) and ``<variant>`` one of :data:`VARIANTS`:

``original``  the upload as received (a recording: the wav Asterisk wrote)
``8k.wav``    8 kHz mono 16-bit PCM wav, for Asterisk
``16k.wav``   16 kHz mono 16-bit PCM wav, wideband
``mp3``       mp3, for browsers

Every part is validated, so a key cannot leave its tenant's prefix (no ``..``, no ``/``, no
other tenant); prefixes for listing and removal come from :func:`object_prefix` and always end
with ``/`` (``tenants/acme/`` does not match ``tenants/acme-2/``). What the media service knows
about a file (name, category, duration, formats, sizes) lives in its own records; the object
metadata only carries a few descriptive fields.

Behaviour
---------
The API is blocking (the service calls it through ``asyncio.to_thread``); one
:class:`ObjectStore` is safe to share between threads. Transient failures (connection refused or
reset, timeouts, HTTP 5xx, SlowDown) are retried a few times with exponential backoff on fresh
connections; what still fails raises :class:`StorageUnavailable`, anything else
:class:`StorageError` naming the operation and the key. A missing object is ``None`` from
:meth:`ObjectStore.stat` and :class:`ObjectNotFound` elsewhere.
"""

from __future__ import annotations

import itertools
import logging
import os
import random
import re
import time
import urllib.parse
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Protocol, TypeVar, cast

import certifi
import urllib3
from minio import Minio
from minio.datatypes import Object
from minio.deleteobjects import DeleteObject
from minio.error import InvalidResponseError, MinioException, S3Error, ServerError
from urllib3.exceptions import HTTPError as Urllib3HTTPError
from urllib3.exceptions import SSLError

log = logging.getLogger(__name__)

T = TypeVar("T")

KINDS: Final = frozenset({"sounds", "recordings"})
VARIANTS: Final = frozenset({"original", "8k.wav", "16k.wav", "mp3"})

_TENANT = re.compile(r"[a-z0-9][a-z0-9-]{1,31}")
_OBJECT_ID = re.compile(r"[a-z0-9]{8,64}")
_KEY = re.compile(
    r"tenants/(?P<tenant>[a-z0-9][a-z0-9-]{1,31})/(?P<kind>sounds|recordings)/(?P<id>[a-z0-9]{8,64})/"
    r"(?P<variant>[a-z0-9][a-z0-9.]{0,15})"
)
_PREFIX = re.compile(r"tenants/(?:[a-z0-9][a-z0-9-]{1,31}/(?:(?:sounds|recordings)/(?:[a-z0-9]{8,64}/)?)?)?")
_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_META_KEY = re.compile(r"[a-z0-9][a-z0-9-]{0,63}")
_CONTENT_TYPE = re.compile(r"[A-Za-z0-9][\x21-\x7e]*/[\x20-\x7e]{1,200}")
_META_PREFIX = "x-amz-meta-"
# Kept readable in the metadata headers; everything else (non-ASCII, controls) percent-encoded.
_META_SAFE = " !#$&'()*+,-./:;<=>?@[]^_`{|}~"

_TRANSIENT_S3_CODES = frozenset(
    {"InternalError", "ServiceUnavailable", "SlowDown", "RequestTimeout", "RequestTimeTooSkewed"}
)
_NOT_FOUND_CODES = frozenset({"NoSuchKey", "NotFound", "ResourceNotFound", "NoSuchObject"})
_ACCESS_CODES = frozenset({"AccessDenied", "SignatureDoesNotMatch", "InvalidAccessKeyId"})

MIN_PART_SIZE: Final = 5 * 1024 * 1024
DEFAULT_PART_SIZE: Final = 16 * 1024 * 1024
CHUNK_SIZE: Final = 64 * 1024
MAX_PRESIGN: Final = timedelta(days=7)


class Readable(Protocol):
    """A binary stream to upload from: a file, a SpooledTemporaryFile, a socket reader."""

    def read(self, size: int = ..., /) -> bytes | None: ...


class StorageError(Exception):
    """An object storage operation failed (not retried further)."""


class StorageUnavailable(StorageError):
    """The S3 server could not be reached or kept failing with transient errors."""


class ObjectNotFound(StorageError):
    """The object does not exist."""


class RangeNotSatisfiable(StorageError):
    """The requested range starts at or beyond the end of the object."""


class InvalidKeyError(ValueError):
    """A part of an object key or prefix is not acceptable."""


# --------------------------------------------------------------------------------------------
# keys


def _check(pattern: re.Pattern[str], value: object, what: str) -> str:
    if not isinstance(value, str) or not pattern.fullmatch(value):
        raise InvalidKeyError(f"invalid {what}: {value!r}")
    return value


def _check_kind(kind: object) -> str:
    if kind not in KINDS:
        raise InvalidKeyError(f"invalid kind: {kind!r} (one of {', '.join(sorted(KINDS))})")
    return kind


def object_key(tenant_id: str, kind: str, object_id: str, variant: str) -> str:
    """The key of one stored file: ``tenants/<tenant>/<sounds|recordings>/<id>/<variant>``."""
    _check(_TENANT, tenant_id, "tenant id")
    _check_kind(kind)
    _check(_OBJECT_ID, object_id, "object id")
    if variant not in VARIANTS:
        raise InvalidKeyError(f"invalid variant: {variant!r} (one of {', '.join(sorted(VARIANTS))})")
    return f"tenants/{tenant_id}/{kind}/{object_id}/{variant}"


def object_prefix(tenant_id: str, kind: str | None = None, object_id: str | None = None) -> str:
    """The prefix of a tenant's objects, of one kind of them, or of one file's variants; always
    ends with ``/``."""
    prefix = f"tenants/{_check(_TENANT, tenant_id, 'tenant id')}/"
    if kind is None:
        if object_id is not None:
            raise InvalidKeyError("an object id needs a kind")
        return prefix
    prefix += f"{_check_kind(kind)}/"
    if object_id is None:
        return prefix
    return prefix + f"{_check(_OBJECT_ID, object_id, 'object id')}/"


@dataclass(frozen=True)
class KeyParts:
    tenant_id: str
    kind: str
    object_id: str
    variant: str


def parse_key(key: str) -> KeyParts:
    """The parts of a key built by :func:`object_key`; InvalidKeyError for anything else."""
    match = _KEY.fullmatch(key) if isinstance(key, str) else None
    if match is None or match["variant"] not in VARIANTS:
        raise InvalidKeyError(f"not an object key of the bucket layout: {key!r}")
    return KeyParts(match["tenant"], match["kind"], match["id"], match["variant"])


def _checked_key(key: str) -> str:
    parse_key(key)
    return key


def _checked_prefix(prefix: str, allow_root: bool) -> str:
    if not isinstance(prefix, str) or not _PREFIX.fullmatch(prefix):
        raise InvalidKeyError(f"not a prefix of the bucket layout: {prefix!r}")
    if prefix == "tenants/" and not allow_root:
        raise InvalidKeyError("refusing the prefix of all tenants")
    return prefix


# --------------------------------------------------------------------------------------------
# results


@dataclass(frozen=True)
class ObjectInfo:
    size: int
    etag: str
    content_type: str
    metadata: dict[str, str] = field(default_factory=dict)
    last_modified: datetime | None = None


@dataclass(frozen=True)
class ObjectEntry:
    key: str
    size: int
    etag: str
    last_modified: datetime | None = None


class RangeReader:
    """The body of one GET, as an iterator of byte chunks. Closes and releases its HTTP response
    when exhausted, on :meth:`close` or at the end of a ``with`` block; a caller that stops early
    must close it.

    ``start`` and ``length`` describe the bytes this body holds, ``total_size`` the whole object.
    """

    def __init__(self, key: str, response: urllib3.BaseHTTPResponse, start: int, chunk_size: int) -> None:
        self.key = key
        self._response: urllib3.BaseHTTPResponse | None = response
        self._chunk_size = chunk_size
        headers = response.headers
        self.etag = str(headers.get("etag", "")).strip('"')
        self.content_type = str(headers.get("content-type", "application/octet-stream"))
        self.length = int(headers.get("content-length", "0"))
        self.start = start
        self.total_size = self.length
        content_range = headers.get("content-range")
        if content_range:
            match = re.fullmatch(r"bytes (\d+)-(\d+)/(\d+|\*)", str(content_range).strip())
            if match:
                self.start = int(match[1])
                if match[3] != "*":
                    self.total_size = int(match[3])
        self._chunks: Iterator[bytes] | None = None

    def __iter__(self) -> RangeReader:
        return self

    def __next__(self) -> bytes:
        if self._response is None:
            raise StopIteration
        if self._chunks is None:
            self._chunks = self._response.stream(self._chunk_size, decode_content=False)
        try:
            chunk = next(self._chunks)
        except StopIteration:
            self.close()
            raise
        except (Urllib3HTTPError, OSError) as exc:
            self.close()
            raise StorageUnavailable(f"reading {self.key}: the connection failed: {_describe(exc)}") from exc
        return chunk

    def read_all(self) -> bytes:
        """The whole body (for small objects)."""
        return b"".join(self)

    def close(self) -> None:
        response, self._response = self._response, None
        if response is not None:
            response.close()
            response.release_conn()

    def __enter__(self) -> RangeReader:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


# --------------------------------------------------------------------------------------------
# the store


def _describe(exc: BaseException) -> str:
    if isinstance(exc, S3Error):
        return f"{exc.code}: {exc.message}"
    reason = getattr(exc, "reason", None)  # urllib3 wraps the cause
    text = str(reason or exc) or type(exc).__name__
    return f"{type(exc).__name__}: {text}"


def _status(exc: BaseException) -> int | None:
    if isinstance(exc, S3Error):
        return int(exc.response.status)
    if isinstance(exc, ServerError):
        return exc.status_code
    if isinstance(exc, InvalidResponseError):
        code = getattr(exc, "_code", None)
        return code if isinstance(code, int) else None
    return None


def _transient(exc: BaseException) -> bool:
    if isinstance(exc, SSLError):
        return False
    if isinstance(exc, Urllib3HTTPError | ConnectionError | TimeoutError):
        return True
    if isinstance(exc, S3Error) and exc.code in _TRANSIENT_S3_CODES:
        return True
    status = _status(exc)
    return status is not None and status >= 500


def _split_endpoint(endpoint: str, secure: bool) -> tuple[str, bool]:
    """``host:port`` or ``http(s)://host:port``; a scheme decides ``secure``."""
    if "://" in endpoint:
        parsed = urllib.parse.urlsplit(endpoint)
        if parsed.scheme not in ("http", "https") or not parsed.netloc or parsed.path not in ("", "/"):
            raise ValueError(f"invalid S3 endpoint {endpoint!r} (expected host:port or http(s)://host:port)")
        return parsed.netloc, parsed.scheme == "https"
    if not endpoint or "/" in endpoint:
        raise ValueError(f"invalid S3 endpoint {endpoint!r} (expected host:port or http(s)://host:port)")
    return endpoint, secure


def _encode_metadata(metadata: Mapping[str, str] | None) -> dict[str, str]:
    headers: dict[str, str] = {}
    for name, value in (metadata or {}).items():
        if not isinstance(name, str) or not _META_KEY.fullmatch(name):
            raise ValueError(f"invalid metadata name {name!r} (lower-case letters, digits and -)")
        if not isinstance(value, str):
            raise ValueError(f"metadata {name!r} must be a string")
        headers[_META_PREFIX + name] = urllib.parse.quote(value, safe=_META_SAFE)
    if sum(len(k) + len(v) for k, v in headers.items()) > 2000:
        raise ValueError("metadata too large (at most 2 KB)")
    return headers


def _decode_metadata(headers: Mapping[str, Any]) -> dict[str, str]:
    metadata: dict[str, str] = {}
    for name, value in headers.items():
        lower = str(name).lower()
        if lower.startswith(_META_PREFIX):
            metadata[lower[len(_META_PREFIX) :]] = urllib.parse.unquote(str(value))
    return metadata


def _check_content_type(content_type: str) -> str:
    if not isinstance(content_type, str) or not _CONTENT_TYPE.fullmatch(content_type):
        raise ValueError(f"invalid content type {content_type!r}")
    return content_type


def _content_disposition(filename: str) -> str:
    """``attachment`` with an ASCII fallback name and the exact one as RFC 5987 ``filename*``."""
    cleaned = "".join(ch for ch in filename if ch.isprintable() and ch not in '/\\"') or "download"
    ascii_name = cleaned.encode("ascii", "replace").decode("ascii").replace("?", "_")
    return f"attachment; filename=\"{ascii_name}\"; filename*=UTF-8''{urllib.parse.quote(cleaned, safe='')}"


class ObjectStore:
    """One bucket of an S3 server (SeaweedFS, MinIO, AWS). Blocking; thread-safe.

    ``endpoint`` is ``host:port`` (``secure`` chooses https) or ``http(s)://host:port``.
    ``public_endpoint`` is where browsers reach the same server, used to sign
    :meth:`presigned_get` links (the signature covers the host); by default the endpoint.
    Each operation is tried ``attempts`` times in all, waiting ``backoff`` seconds doubled each
    time (with some jitter) between tries.
    """

    def __init__(
        self,
        endpoint: str,
        *,
        access_key: str,
        secret_key: str,
        bucket: str,
        secure: bool = False,
        region: str = "us-east-1",
        public_endpoint: str | None = None,
        connect_timeout: float = 5.0,
        read_timeout: float = 60.0,
        attempts: int = 4,
        backoff: float = 0.2,
        max_connections: int = 16,
        part_size: int = DEFAULT_PART_SIZE,
    ) -> None:
        if not _BUCKET.fullmatch(bucket) or ".." in bucket:
            raise ValueError(f"invalid bucket name {bucket!r}")
        if not access_key or not secret_key:
            raise ValueError("S3 access key and secret key are required")
        if attempts < 1:
            raise ValueError("attempts must be at least 1")
        if part_size < MIN_PART_SIZE:
            raise ValueError(f"part_size must be at least {MIN_PART_SIZE} bytes")
        self.bucket = bucket
        self.region = region
        self.endpoint, self.secure = _split_endpoint(endpoint, secure)
        self._attempts = attempts
        self._backoff = backoff
        self._part_size = part_size

        def client(endpoint: str, secure: bool, http: urllib3.PoolManager | None) -> Minio:
            return Minio(
                endpoint,
                access_key=access_key,
                secret_key=secret_key,
                secure=secure,
                region=region,
                http_client=http,
            )

        self._client = client(
            self.endpoint, self.secure, self._pool(connect_timeout, read_timeout, max_connections)
        )
        # Readiness probes must answer quickly: own client with short timeouts.
        self._probe = client(
            self.endpoint, self.secure, self._pool(min(connect_timeout, 2.0), min(read_timeout, 5.0), 2)
        )
        if public_endpoint:
            # Signing needs no connection (the region is given).
            self._signer = client(*_split_endpoint(public_endpoint, self.secure), None)
        else:
            self._signer = self._client

    @staticmethod
    def _pool(connect_timeout: float, read_timeout: float, size: int) -> urllib3.PoolManager:
        # No urllib3 retries: retrying is ours (_call), with backoff and on fresh connections.
        # A pooled connection the server has dropped is detected and replaced by urllib3.
        return urllib3.PoolManager(
            timeout=urllib3.Timeout(connect=connect_timeout, read=read_timeout),
            maxsize=size,
            retries=False,
            cert_reqs="CERT_REQUIRED",
            ca_certs=os.environ.get("SSL_CERT_FILE") or certifi.where(),
        )

    def __repr__(self) -> str:
        scheme = "https" if self.secure else "http"
        return f"ObjectStore({scheme}://{self.endpoint}/{self.bucket})"

    # ---- retrying ---------------------------------------------------------------------------

    def _call(self, operation: str, key: str | None, action: Callable[[], T], *, retry: bool = True) -> T:
        what = f"{operation} {key}" if key else operation
        attempts = self._attempts if retry else 1
        delay = self._backoff
        for attempt in range(1, attempts + 1):
            try:
                return action()
            except (MinioException, Urllib3HTTPError, OSError) as exc:
                if isinstance(exc, S3Error) and exc.code in _NOT_FOUND_CODES:
                    raise ObjectNotFound(f"{what}: no such object") from exc
                if not _transient(exc):
                    raise self._error(what, exc) from exc
                if attempt == attempts:
                    raise StorageUnavailable(
                        f"{what}: S3 at {self.endpoint} unavailable after {attempts} attempt(s): {_describe(exc)}"
                    ) from exc
                log.warning("%s: attempt %d failed (%s); retrying", what, attempt, _describe(exc))
            time.sleep(delay * (1 + random.random() / 4))  # noqa: S311 (jitter, not crypto)
            delay *= 2
        raise AssertionError("unreachable")

    def _error(self, what: str, exc: BaseException) -> StorageError:
        if isinstance(exc, S3Error):
            if exc.code == "NoSuchBucket":
                return StorageError(f"{what}: bucket {self.bucket!r} does not exist (ensure_bucket)")
            if exc.code in _ACCESS_CODES:
                return StorageError(f"{what}: access refused by S3 ({exc.code}); check the credentials")
            if exc.code == "InvalidRange":
                return RangeNotSatisfiable(f"{what}: range not satisfiable")
        return StorageError(f"{what}: {_describe(exc)}")

    # ---- bucket -----------------------------------------------------------------------------

    def ensure_bucket(self) -> None:
        """Create the bucket unless it exists (idempotent, safe against concurrent creation)."""

        def create() -> None:
            if self._client.bucket_exists(self.bucket):
                return
            try:
                self._client.make_bucket(self.bucket)
            except S3Error as exc:
                if exc.code not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                    raise
                if not self._client.bucket_exists(self.bucket):  # someone else's bucket
                    raise

        self._call("ensure_bucket", self.bucket, create)

    def ping(self) -> bool:
        """True when the server answers, accepts the credentials and the bucket exists. One quick
        attempt, never raises (for readiness probes)."""
        try:
            return bool(self._probe.bucket_exists(self.bucket))
        except Exception as exc:
            log.debug("S3 ping of %s failed: %s", self.endpoint, _describe(exc))
            return False

    # ---- writing ----------------------------------------------------------------------------

    def put_file(
        self,
        key: str,
        path: str | os.PathLike[str],
        content_type: str,
        metadata: Mapping[str, str] | None = None,
    ) -> str:
        """Upload a local file (multipart when large, read from disk part by part); its etag."""
        _checked_key(key)
        _check_content_type(content_type)
        headers = _encode_metadata(metadata)
        file_path = Path(path)
        if not file_path.is_file():
            raise StorageError(f"put {key}: no such file {file_path}")

        def upload() -> str:
            result = self._client.fput_object(
                self.bucket,
                key,
                str(file_path),
                content_type=content_type,
                metadata=cast(Any, headers),
                part_size=self._part_size,
            )
            return str(result.etag or "").strip('"')

        return self._call("put", key, upload)

    def put_stream(
        self,
        key: str,
        stream: Readable,
        length: int,
        content_type: str,
        metadata: Mapping[str, str] | None = None,
        part_size: int | None = None,
    ) -> str:
        """Upload from a readable binary stream; its etag. ``length`` -1 for an unknown length:
        then uploaded in parts of ``part_size`` bytes (default the store's, at least 5 MiB), each
        held in memory while sent. Retried only when the stream is seekable (rewound on retry)."""
        _checked_key(key)
        _check_content_type(content_type)
        headers = _encode_metadata(metadata)
        if length < -1:
            raise ValueError("length must be -1 (unknown) or the number of bytes")
        size = part_size or self._part_size
        if size < MIN_PART_SIZE:
            raise ValueError(f"part_size must be at least {MIN_PART_SIZE} bytes")
        seekable = bool(getattr(stream, "seekable", lambda: False)())
        position = getattr(stream, "tell")() if seekable else 0  # noqa: B009 (not in the protocol)

        def upload() -> str:
            if seekable:
                getattr(stream, "seek")(position)  # noqa: B009
            result = self._client.put_object(
                self.bucket,
                key,
                cast(Any, stream),
                length,
                content_type=content_type,
                metadata=cast(Any, headers),
                part_size=size if length == -1 or length > size else 0,
            )
            return str(result.etag or "").strip('"')

        return self._call("put", key, upload, retry=seekable)

    def remove(self, key: str) -> None:
        """Remove one object (no error when it does not exist)."""
        _checked_key(key)
        self._call("remove", key, lambda: self._client.remove_object(self.bucket, key))

    def remove_prefix(self, prefix: str) -> int:
        """Remove every object under a prefix from :func:`object_prefix` (a tenant's, a kind's
        or one file's variants); the number removed."""
        _checked_prefix(prefix, allow_root=False)
        removed = 0
        previous: list[str] = []
        while True:
            keys = self._call(
                "list",
                prefix,
                lambda: [
                    obj.object_name
                    for obj in itertools.islice(
                        self._client.list_objects(self.bucket, prefix=prefix, recursive=True), 1000
                    )
                    if obj.object_name and not obj.is_dir
                ],
            )
            if not keys:
                return removed
            if keys == previous:
                raise StorageError(f"remove_prefix {prefix}: objects still listed after removal: {keys[0]}")
            previous = keys

            def delete(batch: list[str] = keys) -> None:
                errors = list(self._client.remove_objects(self.bucket, [DeleteObject(k) for k in batch]))
                if errors:
                    first = errors[0]
                    raise StorageError(
                        f"remove {first.name}: {first.code}: {first.message} ({len(errors)} object(s) not removed)"
                    )

            self._call("remove_prefix", prefix, delete)
            removed += len(keys)

    # ---- reading ----------------------------------------------------------------------------

    def stat(self, key: str) -> ObjectInfo | None:
        """Size, etag, content type and metadata of an object; None when it does not exist."""
        _checked_key(key)
        try:
            obj: Object = self._call("stat", key, lambda: self._client.stat_object(self.bucket, key))
        except ObjectNotFound:
            return None
        return ObjectInfo(
            size=int(obj.size or 0),
            etag=str(obj.etag or "").strip('"'),
            content_type=str(obj.content_type or "application/octet-stream"),
            metadata=_decode_metadata(obj.metadata or {}),
            last_modified=obj.last_modified,
        )

    def open_range(
        self, key: str, start: int = 0, length: int | None = None, chunk_size: int = CHUNK_SIZE
    ) -> RangeReader:
        """The bytes ``start`` .. ``start + length - 1`` (to the end when ``length`` is None) as an
        iterator of chunks. The request is made here, so a missing object raises ObjectNotFound
        and a start beyond the end RangeNotSatisfiable before any byte is returned."""
        _checked_key(key)
        if start < 0:
            raise ValueError("start must not be negative")
        if length is not None and length < 1:
            raise ValueError("length must be positive")
        response = self._call(
            "get",
            key,
            lambda: self._client.get_object(self.bucket, key, offset=start, length=length or 0),
        )
        return RangeReader(key, response, start, chunk_size)

    def get_bytes(self, key: str) -> bytes:
        """A whole (small) object in memory."""
        with self.open_range(key) as reader:
            return reader.read_all()

    def list_prefix(self, prefix: str) -> list[ObjectEntry]:
        """Every object under a prefix from :func:`object_prefix` (or ``tenants/`` for all), by
        key."""
        _checked_prefix(prefix, allow_root=True)

        def listing() -> list[ObjectEntry]:
            return [
                ObjectEntry(
                    key=obj.object_name,
                    size=int(obj.size or 0),
                    etag=str(obj.etag or "").strip('"'),
                    last_modified=obj.last_modified,
                )
                for obj in self._client.list_objects(self.bucket, prefix=prefix, recursive=True)
                if obj.object_name and not obj.is_dir
            ]

        return sorted(self._call("list", prefix, listing), key=lambda entry: entry.key)

    def presigned_get(
        self,
        key: str,
        expires: timedelta | float,
        download_name: str | None = None,
        content_type: str | None = None,
    ) -> str:
        """A signed GET URL valid for ``expires`` (a timedelta or seconds, 1 s to 7 days), signed
        for the public endpoint. ``download_name`` makes the server answer with a
        ``Content-Disposition: attachment`` of that name, ``content_type`` overrides the type."""
        _checked_key(key)
        ttl = expires if isinstance(expires, timedelta) else timedelta(seconds=expires)
        if not timedelta(seconds=1) <= ttl <= MAX_PRESIGN:
            raise ValueError("expires must be between 1 second and 7 days")
        response_headers: dict[str, str] = {}
        if download_name is not None:
            response_headers["response-content-disposition"] = _content_disposition(download_name)
        if content_type is not None:
            response_headers["response-content-type"] = _check_content_type(content_type)
        return self._call(
            "presign",
            key,
            lambda: self._signer.presigned_get_object(
                self.bucket, key, expires=ttl, response_headers=cast(Any, response_headers or None)
            ),
            retry=False,
        )

    def close(self) -> None:
        """Close the pooled connections (the store reconnects when used again)."""
        for client in (self._client, self._probe, self._signer):
            http = getattr(client, "_http", None)
            if isinstance(http, urllib3.PoolManager):
                http.clear()
