"""Turning exceptions into the structured error replies every request gets."""

from __future__ import annotations

import logging
from typing import Any

from pydantic import ValidationError

from .common import ErrorCode, ErrorInfo, Reply, ServiceError

log = logging.getLogger(__name__)


def field_of(loc: tuple[int | str, ...], drop: tuple[str, ...] = ("data", "changes", "body")) -> str | None:
    parts = [str(p) for p in loc]
    while parts and parts[0] in drop:
        parts.pop(0)
    return ".".join(parts) or None


def validation_info(exc: ValidationError, drop: tuple[str, ...] = ("data", "changes", "body")) -> ErrorInfo:
    errors = exc.errors(include_url=False, include_input=False, include_context=False)
    first = errors[0] if errors else {"loc": (), "msg": str(exc)}
    field = field_of(tuple(first["loc"]), drop)
    message = str(first["msg"]).removeprefix("Value error, ")
    details = [
        {
            "field": field_of(tuple(e["loc"]), drop),
            "message": str(e["msg"]).removeprefix("Value error, "),
        }
        for e in errors
    ]
    return ErrorInfo(
        code=ErrorCode.VALIDATION,
        message=f"{field}: {message}" if field else message,
        field=field,
        details=details,
    )


def error_reply(exc: BaseException) -> dict[str, Any]:
    """The reply body for an exception raised while serving a request."""
    if isinstance(exc, ServiceError):
        info = exc.info
    elif isinstance(exc, ValidationError):
        info = validation_info(exc)
    else:
        log.error("request failed", exc_info=exc)
        info = ErrorInfo(code=ErrorCode.INTERNAL, message="internal error; the operator was notified")
    body: dict[str, Any] = Reply[Any](ok=False, error=info).model_dump(mode="json")
    return body


def ok_reply(result: Any) -> dict[str, Any]:
    body: dict[str, Any] = Reply[Any](ok=True, result=result).model_dump(mode="json")
    return body
