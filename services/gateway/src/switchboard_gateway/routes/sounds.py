"""Sound files (SPEC section 5) over the bus to the media service: upload, list, read, delete,
playback and download with HTTP Range, and short-lived signed links.

Upload
    ``POST /v1/tenants/{t}/sounds`` takes ``multipart/form-data`` with ``file``, ``name``
    (optional: the file name without its extension) and ``category`` (``custom`` or
    ``music_on_hold``). The body is parsed as it arrives and the file goes to a temporary file
    in pieces, counted: an upload larger than ``SB_GATEWAY_MAX_UPLOAD_BYTES`` gets 413 (at once
    when its Content-Length says so). Then the file is streamed into the NATS object store
    bucket ``UPLOADS_BUCKET`` under a random name and the media service is asked to take it in;
    it checks the content (not the name), converts it and removes the staged upload, whatever
    the outcome. If the request never reaches it, the gateway removes the upload itself, and the
    temporary file is always removed.

Playback
    ``GET .../sounds/{id}/audio.mp3`` (and ``.../audio/{variant}`` for ``8k.wav``, ``16k.wav``,
    ``original``) answers a single ``Range`` (``bytes=a-b``, ``bytes=a-``, ``bytes=-n``) with 206
    and ``Content-Range``, an unsatisfiable one with 416, anything else with 200 and the whole
    file; the body is pulled from the media service in ``MAX_READ_CHUNK`` pieces as it is sent.
    ``.../download`` is the mp3 as an attachment named after the sound file.

Signed links, and how Asterisk plays the files
    ``POST .../sounds/{id}/link`` returns ``/v1/public/sounds/<token>``: the token names the
    tenant, the sound file, the variant and an expiry, signed with HMAC-SHA256 (key
    ``SB_GATEWAY_LINK_SECRET``, or derived from the operator key so that every replica accepts
    every other's links). ``GET /v1/public/sounds/<token>`` serves it without an API key, with
    Range; a changed or expired token gets 403. A browser's ``<audio>`` element, which cannot
    send an API key, plays such a link.

    Asterisk 22 plays the same links through its HTTP media cache (res_http_media_cache): ARI
    ``sound:http://<gateway>/v1/public/sounds/<token>`` or dialplan
    ``Playback(http://<gateway>/v1/public/sounds/<token>)``. Ask for the ``8k.wav`` variant: it
    is served as ``audio/wav``, which Asterisk maps to its ``wav`` format (8 kHz 16-bit mono),
    so nothing needs transcoding on the call. The cache keeps the file by URL and fetches it
    again once it is stale (``Cache-Control: max-age`` never outlives the token), so give
    Asterisk links with an ``expires_in`` that covers how long it will play them, or new ones.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Path, Query, Request, Response
from fastapi.responses import StreamingResponse
from nats.js.api import ObjectStoreConfig, StorageType
from nats.js.errors import BucketNotFoundError
from nats.js.object_store import ObjectStore
from pydantic import BaseModel, Field
from starlette.requests import ClientDisconnect
from switchboard_contracts.common import ENTITY_ID_PATTERN, ErrorCode, ServiceError
from switchboard_contracts.sounds import (
    MAX_READ_CHUNK,
    UPLOADABLE_CATEGORIES,
    UPLOADS_BUCKET,
    SoundCategory,
    SoundFile,
    SoundUploadRequest,
    SoundVariant,
)
from switchboard_contracts.subjects import media_rpc

from ..auth import Principal
from ..errors import ApiError
from ..playback import MAX_LINK_TTL, LinkSigner, content_disposition, parse_range
from ..settings import Settings
from ..uploads import (
    FORM_OVERHEAD,
    MAX_NAME_CHARS,
    FormReader,
    boundary_of,
    default_name,
    invalid_field,
    too_large,
)
from .common import Deps, TenantPath

log = logging.getLogger(__name__)

SoundIdPath = Annotated[str, Path(pattern=ENTITY_ID_PATTERN, description="Sound file id")]
SERVICE = "media"

CONTENT_TYPES = {
    SoundVariant.MP3: "audio/mpeg",
    SoundVariant.WAV_8K: "audio/wav",
    SoundVariant.WAV_16K: "audio/wav",
    SoundVariant.ORIGINAL: "application/octet-stream",
}


UPLOAD_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {
                        "file": {
                            "type": "string",
                            "format": "binary",
                            "description": "mp3, wav, ogg or webm with opus, m4a; the format is "
                            "detected from the content",
                        },
                        "name": {
                            "type": "string",
                            "maxLength": MAX_NAME_CHARS,
                            "description": "Display name; default: the file name without its extension",
                        },
                        "category": {
                            "type": "string",
                            "enum": [c.value for c in UPLOADABLE_CATEGORIES],
                            "default": SoundCategory.CUSTOM.value,
                        },
                    },
                }
            }
        },
    }
}


_AUDIO_CONTENT: dict[str, Any] = {"audio/mpeg": {}, "audio/wav": {}, "application/octet-stream": {}}
AUDIO_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"description": "The whole file", "content": _AUDIO_CONTENT},
    206: {"description": "The range asked for (Content-Range)", "content": _AUDIO_CONTENT},
    416: {"description": "The range lies outside the file"},
}
Endpoint = Callable[..., Awaitable[Response]]


class SoundPage(BaseModel):
    items: list[SoundFile]
    total: int


class LinkRequest(BaseModel):
    variant: SoundVariant = Field(
        default=SoundVariant.MP3, description="mp3 for browsers, 8k.wav for Asterisk"
    )
    expires_in: int | None = Field(
        default=None,
        ge=10,
        le=MAX_LINK_TTL,
        description="Lifetime in seconds; default SB_GATEWAY_LINK_TTL",
    )


class SignedLink(BaseModel):
    url: str = Field(description="Path of the link on this gateway; no API key needed")
    variant: SoundVariant
    expires_at: datetime


# --------------------------------------------------------------------------- errors


def build(deps: Deps, settings: Settings) -> list[APIRouter]:
    """The tenant's sound-file routes and the public (signed-link) route."""
    router = APIRouter(prefix="/v1/tenants/{tenant_id}/sounds", tags=["sound files"])
    public = APIRouter(prefix="/v1/public/sounds", tags=["public links"])
    guard = Depends(deps.tenant_guard())
    signer = LinkSigner(settings.link_secret.get_secret_value(), settings.operator_key.get_secret_value())
    limit = settings.max_upload_bytes
    store: dict[str, ObjectStore] = {}

    async def uploads() -> ObjectStore:
        if "uploads" not in store:
            js = deps.bus.broker.connection.jetstream()
            try:
                store["uploads"] = await js.object_store(UPLOADS_BUCKET)
            except BucketNotFoundError:
                config = ObjectStoreConfig(
                    ttl=3600, storage=StorageType.FILE, description="Uploads in transit"
                )
                try:
                    store["uploads"] = await js.create_object_store(UPLOADS_BUCKET, config)
                except Exception:  # the media service created it meanwhile
                    store["uploads"] = await js.object_store(UPLOADS_BUCKET)
        return store["uploads"]

    async def stage(path: str) -> tuple[ObjectStore, str]:
        """Stream the temporary file into the uploads bucket under a random name."""
        upload = uuid.uuid4().hex
        try:
            bucket = await uploads()
            with open(path, "rb") as handle:  # noqa: ASYNC230 - nats-py reads it in a thread
                await bucket.put(upload, handle)
        except Exception:
            log.warning("staging an upload in %s failed", UPLOADS_BUCKET, exc_info=True)
            store.pop("uploads", None)
            raise ApiError(
                503,
                ErrorCode.UNAVAILABLE,
                "the upload could not be handed to the media service; retry shortly",
                headers={"Retry-After": "2"},
            ) from None
        return bucket, upload

    async def get_sound(tenant_id: str, sound_id: str) -> SoundFile:
        found = await deps.bus.request(
            media_rpc(tenant_id, "get"), {"tenant_id": tenant_id, "id": sound_id}, service=SERVICE
        )
        return SoundFile.model_validate(found)

    @router.post(
        "",
        status_code=201,
        response_model=SoundFile,
        summary="Upload a sound file",
        description=(
            "multipart/form-data with `file` (mp3, wav, ogg/webm with opus, m4a; the format is "
            "detected from the content), `name` (default: the file name without its extension) "
            "and `category` (`custom` or `music_on_hold`). The media service converts it to 8 kHz "
            "and 16 kHz wav and mp3 and keeps the original. A rejected file gets 422 naming the "
            "problem (`details[0].reason`: empty, not_audio, corrupt, too_long, ...), a too large "
            "one 413; nothing of a rejected upload is kept."
        ),
        openapi_extra=UPLOAD_BODY,
    )
    async def upload(
        tenant_id: TenantPath, request: Request, response: Response, principal: Principal = guard
    ) -> Any:
        boundary = boundary_of(request.headers.get("content-type"))
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit + FORM_OVERHEAD:
            raise too_large(limit, int(declared))
        if not deps.bus.connected:
            raise ApiError(503, ErrorCode.UNAVAILABLE, "the message bus is not reachable; retry shortly")
        fd, path = tempfile.mkstemp(prefix="sb-upload-")
        try:
            with os.fdopen(fd, "wb") as handle:
                try:
                    form = await FormReader(boundary, handle, limit).read(request.stream())
                except ClientDisconnect:
                    raise ApiError(400, ErrorCode.BAD_REQUEST, "the upload was interrupted") from None
            if form.file_name is None:
                raise invalid_field("file", "no file in the upload (send it in the field 'file')")
            name = (form.fields.get("name") or "").strip() or default_name(form.file_name)
            if len(name) > MAX_NAME_CHARS:
                raise invalid_field("name", f"at most {MAX_NAME_CHARS} characters")
            category = (form.fields.get("category") or "").strip() or SoundCategory.CUSTOM.value
            if category not in {c.value for c in UPLOADABLE_CATEGORIES}:
                raise invalid_field(
                    "category", f"must be one of {', '.join(c.value for c in UPLOADABLE_CATEGORIES)}"
                )
            bucket, upload_name = await stage(path)
            message = SoundUploadRequest(
                tenant_id=tenant_id,
                upload=upload_name,
                file_name=form.file_name,
                name=name,
                category=SoundCategory(category),
            )
            try:
                sound = await deps.bus.request(
                    media_rpc(tenant_id, "create"),
                    message.model_dump(mode="json"),
                    service=SERVICE,
                    timeout=settings.upload_timeout,
                )
            except ServiceError:
                raise  # the media service answered: it has removed the upload
            except Exception:
                with contextlib.suppress(Exception):
                    await bucket.delete(upload_name)
                raise
        finally:
            with contextlib.suppress(OSError):
                os.unlink(path)
        created = SoundFile.model_validate(sound)
        response.headers["Location"] = f"/v1/tenants/{tenant_id}/sounds/{created.id}"
        return created

    @router.get("", response_model=SoundPage, summary="List sound files")
    async def list_(
        tenant_id: TenantPath,
        category: SoundCategory | None = None,
        search: Annotated[str | None, Query(max_length=100, description="Substring of the name")] = None,
        principal: Principal = guard,
    ) -> Any:
        body = {"tenant_id": tenant_id, "category": category.value if category else None, "search": search}
        return await deps.bus.request(media_rpc(tenant_id, "list"), body, service=SERVICE)

    @router.get("/{sound_id}", response_model=SoundFile, summary="Read a sound file's metadata")
    async def read(tenant_id: TenantPath, sound_id: SoundIdPath, principal: Principal = guard) -> Any:
        return await get_sound(tenant_id, sound_id)

    @router.delete(
        "/{sound_id}",
        status_code=204,
        summary="Delete a sound file",
        description="409 naming the IVR menus and queues that still use it.",
    )
    async def delete(tenant_id: TenantPath, sound_id: SoundIdPath, principal: Principal = guard) -> Response:
        await deps.bus.request(
            media_rpc(tenant_id, "delete"), {"tenant_id": tenant_id, "id": sound_id}, service=SERVICE
        )
        return Response(status_code=204)

    async def serve(
        request: Request,
        tenant_id: str,
        sound_id: str,
        variant: SoundVariant,
        *,
        cache_seconds: int,
        attachment: bool = False,
    ) -> Response:
        """One variant with Range support, streamed from the media service piece by piece."""
        sound = await get_sound(tenant_id, sound_id)
        total = sound.sizes.get(variant, 0)
        if total <= 0:
            raise ApiError(
                404, ErrorCode.NOT_FOUND, f"sound file {sound_id!r} has no {variant.value} version", "variant"
            )
        etag = f'"{sound.id}-{variant.value}-{total}"'
        headers = {
            "Accept-Ranges": "bytes",
            "ETag": etag,
            "Cache-Control": f"private, max-age={max(0, cache_seconds)}",
        }
        if attachment:
            headers["Content-Disposition"] = content_disposition(sound.name, "mp3")
        if_range = request.headers.get("if-range")
        wanted = None
        if if_range is None or if_range.strip() == etag:
            wanted = parse_range(request.headers.get("range"), total)
        start, end = wanted or (0, total - 1)
        length = end - start + 1
        status = 206 if wanted else 200
        if wanted:
            headers["Content-Range"] = f"bytes {start}-{end}/{total}"
        headers["Content-Length"] = str(length)
        content_type = CONTENT_TYPES[variant]
        if request.method == "HEAD":
            return Response(status_code=status, headers=headers, media_type=content_type)

        subject = media_rpc(tenant_id, "read")

        async def piece(offset: int, size: int) -> bytes:
            request_body = {
                "tenant_id": tenant_id,
                "id": sound_id,
                "variant": variant.value,
                "offset": offset,
                "length": min(size, MAX_READ_CHUNK),
            }
            data, _ = await deps.bus.request_raw(subject, request_body, service=SERVICE)
            if not data or len(data) > size:
                log.error("the media service returned %d bytes for %d at %d", len(data), size, offset)
                raise ApiError(502, ErrorCode.INTERNAL, "the media service returned a wrong piece")
            return data

        first = await piece(start, length)  # errors still become a proper error response

        async def body() -> AsyncIterator[bytes]:
            yield first
            sent = len(first)
            while sent < length:
                try:
                    data = await piece(start + sent, length - sent)
                except (ApiError, ServiceError) as exc:
                    log.warning("stream of %s/%s stopped at %d of %d bytes: %s",
                                tenant_id, sound_id, sent, length, exc)  # fmt: skip
                    raise
                sent += len(data)
                yield data

        return StreamingResponse(body(), status, headers=headers, media_type=content_type)

    audio_doc = (
        "HTTP Range (`bytes=a-b`, `bytes=a-`, `bytes=-n`): 206 with Content-Range, 416 when "
        "outside the file, 200 with the whole file otherwise."
    )

    def get_and_head(target: APIRouter, path: str, **options: Any) -> Callable[[Endpoint], Endpoint]:
        """GET (documented, with the audio content types) and HEAD (same headers, no body)."""

        def register(endpoint: Endpoint) -> Endpoint:
            target.get(path, responses=AUDIO_RESPONSES, response_class=StreamingResponse, **options)(endpoint)
            target.head(path, include_in_schema=False, **options)(endpoint)
            return endpoint

        return register

    @get_and_head(router, "/{sound_id}/audio.mp3", summary="Play the mp3", description=audio_doc)
    async def play_mp3(
        tenant_id: TenantPath, sound_id: SoundIdPath, request: Request, principal: Principal = guard
    ) -> Response:
        return await serve(request, tenant_id, sound_id, SoundVariant.MP3, cache_seconds=3600)

    @get_and_head(
        router,
        "/{sound_id}/audio/{variant}",
        summary="Read a variant (mp3, 8k.wav, 16k.wav, original)",
        description=audio_doc,
    )
    async def play_variant(
        tenant_id: TenantPath,
        sound_id: SoundIdPath,
        variant: SoundVariant,
        request: Request,
        principal: Principal = guard,
    ) -> Response:
        return await serve(request, tenant_id, sound_id, variant, cache_seconds=3600)

    @get_and_head(
        router,
        "/{sound_id}/download",
        summary="Download the mp3",
        description="The mp3 as an attachment named after the sound file; Range works as for playback.",
    )
    async def download(
        tenant_id: TenantPath, sound_id: SoundIdPath, request: Request, principal: Principal = guard
    ) -> Response:
        return await serve(
            request, tenant_id, sound_id, SoundVariant.MP3, cache_seconds=3600, attachment=True
        )

    @router.post(
        "/{sound_id}/link",
        response_model=SignedLink,
        summary="Make a short-lived signed link",
        description=(
            "A link that plays the file without an API key until `expires_at` (browsers' `<audio>`, "
            "Asterisk's `sound:http://...` through its HTTP media cache: use variant `8k.wav` "
            "there). Relative to this gateway's address."
        ),
    )
    async def link(
        tenant_id: TenantPath,
        sound_id: SoundIdPath,
        body: Annotated[LinkRequest | None, Body()] = None,
        principal: Principal = guard,
    ) -> Any:
        wanted = body or LinkRequest()
        sound = await get_sound(tenant_id, sound_id)
        if sound.sizes.get(wanted.variant, 0) <= 0:
            raise invalid_field("variant", f"the sound file has no {wanted.variant.value} version")
        expires = int(time.time()) + (wanted.expires_in or settings.link_ttl)
        token = signer.sign(tenant_id, sound_id, wanted.variant, expires)
        return SignedLink(
            url=f"/v1/public/sounds/{token}",
            variant=wanted.variant,
            expires_at=datetime.fromtimestamp(expires, UTC),
        )

    @get_and_head(
        public,
        "/{token}",
        summary="Play a signed link (no API key)",
        description=audio_doc + " 403 when the link was changed or has expired.",
    )
    async def play_link(token: str, request: Request) -> Response:
        tenant_id, sound_id, variant, expires = signer.verify(token)
        left = expires - int(time.time())
        return await serve(request, tenant_id, sound_id, variant, cache_seconds=min(left, 3600))

    recordings = APIRouter(prefix="/v1/tenants/{tenant_id}/recordings", tags=["call history"])

    @get_and_head(recordings, "/{recording_id}/audio.mp3", summary="Play a call recording",
                  description="The `recording_id` of a call record. " + audio_doc)  # fmt: skip
    async def play_recording(
        tenant_id: TenantPath, recording_id: SoundIdPath, request: Request, principal: Principal = guard
    ) -> Response:
        await recording(tenant_id, recording_id)
        return await serve(request, tenant_id, recording_id, SoundVariant.MP3, cache_seconds=3600)

    @get_and_head(recordings, "/{recording_id}/download", summary="Download a call recording (mp3)")
    async def download_recording(
        tenant_id: TenantPath, recording_id: SoundIdPath, request: Request, principal: Principal = guard
    ) -> Response:
        await recording(tenant_id, recording_id)
        return await serve(
            request, tenant_id, recording_id, SoundVariant.MP3, cache_seconds=3600, attachment=True
        )

    async def recording(tenant_id: str, recording_id: str) -> None:
        if (await get_sound(tenant_id, recording_id)).category is not SoundCategory.CALL_RECORDING:
            raise ApiError(
                404, ErrorCode.NOT_FOUND, f"recording {recording_id!r} does not exist", "recording_id"
            )

    return [router, public, recordings]
