"""Employees, the tenant's internal accounts (SPEC section 1)."""

from __future__ import annotations

import ipaddress
import re
import secrets
import string
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any

from pydantic import (
    EmailStr,
    Field,
    SecretStr,
    StringConstraints,
    ValidationInfo,
    field_serializer,
    field_validator,
)

from .common import EntityId, ExternalNumber, InternalNumber, Model, StoredEntity, Target, TenantId

SIP_PASSWORD_SPECIALS = "-_[]{}@;"  # noqa: S105 - the allowed special characters
WEAK_PASSWORD_WORDS = (
    "password", "passw0rd", "admin", "secret", "qwerty", "123456", "1234", "12345",
    "letmein", "welcome", "asterisk", "pbx", "sip", "test", "changeme",
)  # fmt: skip
PJSIP_EXTRA_SECTIONS = ("endpoint", "aor", "auth", "acl")
PJSIP_EXTRA_MAX = 1024


class DtmfMode(StrEnum):
    AUTO = "auto"
    RFC4733 = "rfc4733"
    INFO = "info"
    INBAND = "inband"
    AUTO_INFO = "auto_info"


class SipTransport(StrEnum):
    UDP = "udp"
    TCP = "tcp"
    TLS = "tls"
    UDP_TCP = "udp+tcp"


def check_sip_password(password: str, number: str | None = None) -> str:
    """SPEC section 1 policy; raises ValueError naming what is missing."""
    missing = []
    if not re.search(r"[a-z]", password):
        missing.append("a lower-case letter")
    if not re.search(r"[A-Z]", password):
        missing.append("an upper-case letter")
    if not re.search(r"[0-9]", password):
        missing.append("a digit")
    if not any(ch in SIP_PASSWORD_SPECIALS for ch in password):
        missing.append(f"one of the special characters {' '.join(SIP_PASSWORD_SPECIALS)}")
    if len(password) <= 8:
        raise ValueError("SIP password must be longer than 8 characters")
    if missing:
        raise ValueError("SIP password must contain " + ", ".join(missing))
    if any(ch.isspace() or not ch.isprintable() or ord(ch) > 126 for ch in password):
        raise ValueError("SIP password may hold only printable ASCII characters without spaces")
    lowered = password.lower()
    for word in WEAK_PASSWORD_WORDS:
        if word in lowered:
            raise ValueError(f"SIP password contains the well-known weak word {word!r}")
    if number and number in password:
        raise ValueError("SIP password must not contain the employee's own number")
    return password


def generate_sip_password(length: int = 16) -> str:
    """A random password that satisfies the policy."""
    alphabet = string.ascii_letters + string.digits + SIP_PASSWORD_SPECIALS
    while True:
        candidate = "".join(secrets.choice(alphabet) for _ in range(length))
        try:
            return check_sip_password(candidate)
        except ValueError:
            continue


def check_pjsip_extra(text: str) -> str:
    """Extra PJSIP options: INI sections [endpoint], [aor], [auth], [acl] with key = value."""
    if len(text) > PJSIP_EXTRA_MAX:
        raise ValueError(f"at most {PJSIP_EXTRA_MAX} characters (got {len(text)})")
    section: str | None = None
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith((";", "#")):
            continue
        header = re.fullmatch(r"\[([A-Za-z]+)\]", line)
        if header:
            section = header.group(1).lower()
            if section not in PJSIP_EXTRA_SECTIONS:
                raise ValueError(
                    f"line {lineno}: unknown section [{header.group(1)}]; "
                    f"allowed: {', '.join('[' + s + ']' for s in PJSIP_EXTRA_SECTIONS)}"
                )
            continue
        if section is None:
            raise ValueError(f"line {lineno}: an option before any section header")
        if not re.fullmatch(r"[A-Za-z0-9_.]+\s*=\s*[^\r\n]*", line):
            raise ValueError(f"line {lineno}: expected 'key = value', got {line!r}")
    return text


def parse_pjsip_extra(text: str) -> dict[str, dict[str, str]]:
    """The validated extra options as {section: {key: value}}."""
    result: dict[str, dict[str, str]] = {}
    section = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith((";", "#")):
            continue
        if line.startswith("["):
            section = line[1:-1].lower()
            result.setdefault(section, {})
            continue
        key, _, value = line.partition("=")
        result.setdefault(section, {})[key.strip()] = value.strip()
    return result


class EmployeeAdvanced(Model):
    mobile_dial_string: ExternalNumber | None = Field(
        default=None, description="What is dialled when forwarding to the mobile (override)."
    )
    max_parallel_calls: int | None = Field(
        default=None, ge=1, le=100, description="At this many calls the employee counts as busy."
    )
    dtmf_mode: DtmfMode = DtmfMode.AUTO
    transport: SipTransport = SipTransport.UDP_TCP
    network_filter: list[str] = Field(
        default_factory=list, max_length=32, description="Subnets allowed to register (CIDR)."
    )
    pjsip_extra: str = Field(default="", description="Extra [endpoint]/[aor]/[auth]/[acl] options.")
    record_calls: bool = Field(
        default=False,
        description="Record this employee's answered calls (besides the tenant-wide record_calls).",
    )

    @field_validator("network_filter")
    @classmethod
    def _subnets(cls, value: list[str]) -> list[str]:
        result = []
        for item in value:
            try:
                result.append(str(ipaddress.ip_network(item.strip(), strict=False)))
            except ValueError:
                raise ValueError(f"{item!r} is not a subnet such as 192.168.1.0/24") from None
        return result

    @field_validator("pjsip_extra")
    @classmethod
    def _pjsip_extra(cls, value: str) -> str:
        return check_pjsip_extra(value)


class EmployeeRouting(Model):
    ring_time: int = Field(default=45, ge=3, le=180, description="Seconds before no-answer.")
    no_answer_target: Target | None = Field(
        default=None, description="Where an unanswered call goes; empty means the mobile."
    )
    busy_target: Target | None = None
    unavailable_target: Target | None = None


Name = Annotated[str, StringConstraints(min_length=1, max_length=100)]


class EmployeeFields(Model):
    name: Name
    number: InternalNumber
    mobile: ExternalNumber | None = None
    email: EmailStr | None = None
    sip_password: SecretStr | None = Field(
        default=None, description="Omit to have a compliant one generated."
    )
    advanced: EmployeeAdvanced = Field(default_factory=EmployeeAdvanced)
    routing: EmployeeRouting = Field(default_factory=EmployeeRouting)

    @field_validator("name")
    @classmethod
    def _printable_name(cls, value: str) -> str:
        if any(not ch.isprintable() for ch in value):
            raise ValueError("name must not contain control characters")
        return value

    @field_validator("sip_password")
    @classmethod
    def _password_policy(cls, value: SecretStr | None, info: ValidationInfo) -> SecretStr | None:
        if value is not None:
            check_sip_password(value.get_secret_value(), info.data.get("number"))
        return value

    @field_serializer("sip_password", when_used="json")
    def _reveal_on_the_wire(self, value: SecretStr | None) -> str | None:
        # The bus and the store need the password itself; repr/str (and so logs) stay masked.
        return value.get_secret_value() if value is not None else None


class Employee(EmployeeFields, StoredEntity):
    """A stored Employee: its fields plus id, tenant, revision and timestamps."""


class EmployeeView(Model):
    """An employee as listed to the admin: no password, plus the device status."""

    id: EntityId
    tenant_id: TenantId
    name: str
    number: str
    mobile: str | None
    email: str | None
    advanced: EmployeeAdvanced
    routing: EmployeeRouting
    registered: bool | None = Field(
        default=None, description="Device registered (None: status not known yet)."
    )
    revision: int
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, employee: Employee, registered: bool | None = None) -> EmployeeView:
        data: dict[str, Any] = employee.model_dump(exclude={"sip_password"})
        return cls(**data, registered=registered)
