"""Building blocks shared by every contract: base models, identifiers, errors and replies."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, Field, GetCoreSchemaHandler, GetJsonSchemaHandler
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema, core_schema

CONTRACT_VERSION = 1

#: Tenant ids are used as a NATS subject token and in object keys: lower-case, no dots.
TENANT_ID_PATTERN = r"^[a-z0-9][a-z0-9-]{1,31}$"
#: Internal numbers (extensions) of employees, queues, IVR menus and conference rooms.
INTERNAL_NUMBER_PATTERN = r"^[0-9]{2,8}$"
#: E.164-like external numbers, as SPEC section 1 gives for mobiles.
EXTERNAL_NUMBER_PATTERN = r"^\+?[1-9][0-9]{1,14}$"
ENTITY_ID_PATTERN = r"^[a-z0-9]{8,32}$"


@dataclass(frozen=True)
class Matches:
    """Annotated metadata: the string must match ``pattern``, else ``message`` is the error
    (instead of pydantic's regex dump). The JSON schema still carries the pattern."""

    pattern: str
    message: str
    examples: tuple[str, ...] = ()

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler) -> CoreSchema:
        compiled = re.compile(self.pattern)
        message = self.message

        def check(value: str) -> str:
            if not compiled.fullmatch(value):
                raise ValueError(message)
            return value

        return core_schema.no_info_after_validator_function(check, handler(source))

    def __get_pydantic_json_schema__(
        self, schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        json_schema = handler(schema)
        json_schema["pattern"] = self.pattern
        if self.examples:
            json_schema["examples"] = list(self.examples)
        return json_schema


TenantId = Annotated[
    str,
    Matches(
        TENANT_ID_PATTERN,
        "must be 2-32 lower-case letters, digits or dashes, starting with a letter or digit",
        ("acme",),
    ),
]
InternalNumber = Annotated[str, Matches(INTERNAL_NUMBER_PATTERN, "must be 2 to 8 digits", ("101",))]
ExternalNumber = Annotated[
    str,
    Matches(
        EXTERNAL_NUMBER_PATTERN,
        "must be a phone number: an optional + and 2 to 15 digits",
        ("+79161234567",),
    ),
]
EntityId = Annotated[
    str, Matches(ENTITY_ID_PATTERN, "is not a valid id", ("3f2a9c0d1b7e4f6a8c5d2e1f0a9b8c7d",))
]
#: A routing target: a number of the tenant (2-8 digits, must exist) or an external number.
Target = Annotated[
    str,
    Matches(
        r"^(\+?[1-9][0-9]{1,14}|[0-9]{2,8})$",
        "must be a tenant number (2 to 8 digits) or an external phone number",
        ("102", "+79161234567"),
    ),
]
SoundFileId = Annotated[
    str, Matches(ENTITY_ID_PATTERN, "is not a valid sound file id", ("5b0c7e2a9d1f4c3b",))
]


def is_internal_number(value: str) -> bool:
    return re.fullmatch(INTERNAL_NUMBER_PATTERN, value) is not None


def utcnow() -> datetime:
    return datetime.now(UTC)


class Model(BaseModel):
    """Base of every contract model: unknown fields are refused, so typos surface as errors."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class Message(Model):
    """Base of every bus message: it carries the contract version and its tenant."""

    version: int = CONTRACT_VERSION
    tenant_id: TenantId


class StoredEntity(Model):
    """What every stored telephony object has besides its own fields."""

    id: EntityId
    tenant_id: TenantId
    name: str
    number: str
    revision: int = 0
    created_at: datetime
    updated_at: datetime


class ErrorCode(StrEnum):
    VALIDATION = "validation"  # a field is malformed (HTTP 422)
    BAD_REQUEST = "bad_request"  # the request as a whole makes no sense (HTTP 400)
    NOT_FOUND = "not_found"  # HTTP 404
    CONFLICT = "conflict"  # duplicate number, still referenced (HTTP 409)
    STALE_REVISION = "stale_revision"  # optimistic concurrency: someone else wrote first (409)
    FORBIDDEN = "forbidden"  # HTTP 403
    UNAVAILABLE = "unavailable"  # a dependency did not answer (HTTP 503)
    INTERNAL = "internal"  # a bug; never caused by input (HTTP 500)


class ErrorInfo(Model):
    code: ErrorCode
    message: str
    field: str | None = None
    details: list[dict[str, Any]] = Field(default_factory=list)


T = TypeVar("T")


class Reply(Model, Generic[T]):
    """Every request/reply answer: either ``result`` or ``error``, never a bare exception."""

    version: int = CONTRACT_VERSION
    ok: bool
    result: T | None = None
    error: ErrorInfo | None = None


class Page(Model, Generic[T]):
    items: list[T]
    total: int
    offset: int
    limit: int


class SortOrder(StrEnum):
    ASC = "asc"
    DESC = "desc"


class ServiceError(Exception):
    """Raised by service logic; handlers turn it into an error reply."""

    def __init__(
        self,
        code: ErrorCode,
        message: str,
        field: str | None = None,
        details: list[dict[str, Any]] | None = None,
    ) -> None:
        super().__init__(message)
        self.info = ErrorInfo(code=code, message=message, field=field, details=details or [])


def error_from_reply(info: ErrorInfo) -> ServiceError:
    return ServiceError(info.code, info.message, info.field, info.details)
