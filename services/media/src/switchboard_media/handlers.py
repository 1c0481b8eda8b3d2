"""Thin bus subscribers of the media service."""

import contextlib
import logging
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from faststream.nats import NatsBroker, NatsResponse
from faststream.nats.annotations import NatsMessage
from switchboard_contracts.common import ErrorCode, ServiceError
from switchboard_contracts.errors import error_reply, ok_reply
from switchboard_contracts.sounds import (
    UPLOADS_BUCKET,
    RecordingUploadRequest,
    SoundCategory,
    SoundIdRequest,
    SoundListRequest,
    SoundReadRequest,
    SoundUploadRequest,
)

from .service import MediaService

log = logging.getLogger(__name__)
PATTERN = "rpc.media.*.sound."


def _check_tenant(msg: NatsMessage, tenant_id: str) -> None:
    if msg.raw_message.subject.split(".")[2] != tenant_id:
        raise ServiceError(
            ErrorCode.FORBIDDEN, "the subject's tenant differs from the message's", "tenant_id"
        )


def register(broker: NatsBroker, service: MediaService, work_dir: str = "") -> None:
    @contextlib.asynccontextmanager
    async def staged(name: str) -> AsyncIterator[Path]:
        """The staged upload as a local file; the staged copy is removed whatever happens, so
        a rejected upload leaves nothing behind."""
        js = broker.connection.jetstream()
        try:
            uploads = await js.object_store(UPLOADS_BUCKET)
            with tempfile.TemporaryDirectory(dir=work_dir or None, prefix="sb-upload-") as folder:
                path = Path(folder) / "upload"
                with path.open("wb") as handle:
                    await uploads.get(name, writeinto=handle)
                yield path
        finally:
            try:
                await (await js.object_store(UPLOADS_BUCKET)).delete(name)
            except Exception:
                log.debug("upload %s already gone", name)

    @broker.subscriber(PATTERN + "create", queue="media", title="take in an uploaded sound file")
    async def create(body: SoundUploadRequest, msg: NatsMessage) -> dict[str, Any]:
        try:
            _check_tenant(msg, body.tenant_id)
            async with staged(body.upload) as path:
                sound = await service.create(body.tenant_id, path, body.file_name, body.name, body.category)
            return ok_reply(sound.model_dump(mode="json"))
        except Exception as exc:
            return error_reply(exc)

    @broker.subscriber("rpc.media.*.recording.create", queue="media", title="take in a call recording")
    async def create_recording(body: RecordingUploadRequest, msg: NatsMessage) -> dict[str, Any]:
        try:
            _check_tenant(msg, body.tenant_id)
            async with staged(body.upload) as path:
                sound = await service.create(
                    body.tenant_id, path, f"{body.linkedid}.wav", f"Call {body.linkedid}",
                    SoundCategory.CALL_RECORDING, body.id, (body.linkedid, body.leg_id),
                )  # fmt: skip
            return ok_reply(sound.model_dump(mode="json"))
        except Exception as exc:
            return error_reply(exc)

    @broker.subscriber(PATTERN + "get", queue="media", title="get a sound file")
    async def get(body: SoundIdRequest, msg: NatsMessage) -> dict[str, Any]:
        try:
            _check_tenant(msg, body.tenant_id)
            return ok_reply((await service.get(body.tenant_id, body.id)).model_dump(mode="json"))
        except Exception as exc:
            return error_reply(exc)

    @broker.subscriber(PATTERN + "list", queue="media", title="list sound files")
    async def list_(body: SoundListRequest, msg: NatsMessage) -> dict[str, Any]:
        try:
            _check_tenant(msg, body.tenant_id)
            sounds = await service.list(body.tenant_id, body.category, body.search)
            return ok_reply({"items": [s.model_dump(mode="json") for s in sounds], "total": len(sounds)})
        except Exception as exc:
            return error_reply(exc)

    @broker.subscriber(PATTERN + "delete", queue="media", title="delete a sound file")
    async def delete(body: SoundIdRequest, msg: NatsMessage) -> dict[str, Any]:
        try:
            _check_tenant(msg, body.tenant_id)
            await service.delete(body.tenant_id, body.id)
            return ok_reply({"id": body.id, "deleted": True})
        except Exception as exc:
            return error_reply(exc)

    @broker.subscriber(PATTERN + "read", queue="media", title="read part of a sound file")
    async def read(body: SoundReadRequest, msg: NatsMessage) -> NatsResponse:
        """Success: the raw bytes, with Sb-Total-Size and Sb-Content-Type headers. Failure: the
        JSON error reply with the header Sb-Error."""
        try:
            _check_tenant(msg, body.tenant_id)
            data, total, content_type = await service.read(
                body.tenant_id, body.id, body.variant, body.offset, body.length
            )
            return NatsResponse(data, headers={"Sb-Total-Size": str(total), "Sb-Content-Type": content_type})
        except Exception as exc:
            return NatsResponse(error_reply(exc), headers={"Sb-Error": "1"})
