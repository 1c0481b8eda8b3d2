"""The tenant's outbound SIP trunk (its provider) and the incoming routes of the calls that
arrive from it (SPEC section 8)."""

from __future__ import annotations

import ipaddress
import re
import warnings
from enum import StrEnum
from typing import Annotated, Any

from pydantic import (
    Field,
    SecretStr,
    ValidationInfo,
    field_serializer,
    field_validator,
)

from .common import INTERNAL_NUMBER_PATTERN, ExternalNumber, Matches, Model

_LABEL = r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_HOSTNAME = re.compile(rf"{_LABEL}(\.{_LABEL})*")
TRUNK_PASSWORD_MAX = 128
MAX_INCOMING_ROUTES = 1000


def check_host(value: str) -> str:
    """A hostname (RFC 1123 labels) or an IPv4/IPv6 address; returned in canonical form."""
    bare = value.strip()
    if bare.startswith("[") and bare.endswith("]"):
        bare = bare[1:-1]
    try:
        return str(ipaddress.ip_address(bare))
    except ValueError:
        pass
    name = bare.removesuffix(".")
    if len(name) > 253 or not _HOSTNAME.fullmatch(name):
        raise ValueError(f"{value!r} is not a host name or IP address such as sip.example.com")
    if re.fullmatch(r"[0-9.]+", name):
        raise ValueError(f"{value!r} is not a valid IP address")
    return name.lower()


# The field ``register`` has the name of ABCMeta.register, which pydantic sees on every model
# class and warns about; instances are unaffected (the metaclass method is not an instance
# attribute), so the warning is silenced for this field name only (here and for the partial
# models built from it).
warnings.filterwarnings(
    "ignore", message=r'Field name "register" in "\w+" shadows an attribute', category=UserWarning
)


class TrunkTransport(StrEnum):
    UDP = "udp"
    TCP = "tcp"
    TLS = "tls"


SipUsername = Annotated[
    str,
    Matches(
        r"^[A-Za-z0-9._~!$&'()*+,;=%-]{1,64}$",
        "must be 1 to 64 characters: letters, digits and . _ ~ ! $ & ' ( ) * + , ; = % -",
        ("acme-trunk",),
    ),
]
DialPrefix = Annotated[
    str,
    Matches(r"^(\+[0-9]{0,9}|[0-9]{0,10})$", "must be up to 10 digits, optionally starting with +", ("8",)),
]
DialledNumber = re.compile(r"\+?[0-9*#]+")


class SipTrunk(Model):
    """Where the tenant's external calls leave: one SIP provider."""

    host: str = Field(description="Provider's host name or IP address.", examples=["sip.provider.example"])
    port: int = Field(default=5060, ge=1, le=65535)
    transport: TrunkTransport = TrunkTransport.UDP
    username: SipUsername | None = Field(default=None, description="Authentication user at the provider.")
    password: SecretStr | None = Field(
        default=None, description="Authentication password at the provider (never shown back)."
    )
    register: bool = Field(
        default=False, description="Register at the provider (needs username and password)."
    )
    from_domain: str | None = Field(default=None, description="Domain of the From header, if not host.")
    caller_id: ExternalNumber | None = Field(
        default=None, description="The number presented to the provider on outgoing calls."
    )
    strip_digits: int = Field(
        default=0, ge=0, le=10, description="Characters removed from the start of a dialled number."
    )
    prefix: DialPrefix = Field(default="", description="Prepended after stripping.")

    @field_validator("host")
    @classmethod
    def _host(cls, value: str) -> str:
        return check_host(value)

    @field_validator("from_domain")
    @classmethod
    def _from_domain(cls, value: str | None) -> str | None:
        return check_host(value) if value is not None else None

    @field_validator("password")
    @classmethod
    def _password(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None:
            return None
        plain = value.get_secret_value()
        if not plain:
            raise ValueError("must not be empty (send null to remove it)")
        if len(plain) > TRUNK_PASSWORD_MAX:
            raise ValueError(f"must be at most {TRUNK_PASSWORD_MAX} characters")
        if any(ch.isspace() or not ch.isprintable() for ch in plain):
            raise ValueError("must not contain spaces or control characters")
        return value

    @field_validator("register")
    @classmethod
    def _register_needs_credentials(cls, value: bool, info: ValidationInfo) -> bool:
        if value:
            # a field that failed its own validation is absent from info.data: not named twice
            missing = [name for name in ("username", "password") if name in info.data and not info.data[name]]
            if missing:
                raise ValueError(f"registration at the provider needs {' and '.join(missing)}")
        return value

    @field_serializer("password", when_used="json")
    def _reveal_on_the_wire(self, value: SecretStr | None) -> str | None:
        # The bus and the store need the password itself; repr/str (and so logs) stay masked.
        return value.get_secret_value() if value is not None else None

    def dial_string(self, number: str) -> str:
        """What is sent to the provider for ``number``: the first ``strip_digits`` characters
        removed (a leading + counts as one), then ``prefix`` put in front."""
        number = number.strip()
        if not DialledNumber.fullmatch(number):
            raise ValueError(f"{number!r} is not a dialled number")
        rest = number[self.strip_digits :]
        if not rest:
            raise ValueError(f"{number!r} is too short to strip {self.strip_digits} digits from")
        return self.prefix + rest


class SipTrunkView(Model):
    """A trunk as shown to the admin: the password never, only whether one is set."""

    host: str
    port: int
    transport: TrunkTransport
    username: str | None
    password_set: bool = Field(description="Whether a password is stored (it is never shown).")
    register: bool
    from_domain: str | None
    caller_id: str | None
    strip_digits: int
    prefix: str

    @classmethod
    def of(cls, trunk: SipTrunk) -> SipTrunkView:
        data: dict[str, Any] = trunk.model_dump(exclude={"password"})
        return cls(**data, password_set=trunk.password is not None)


Did = Annotated[
    str,
    Matches(
        r"^\+?[0-9]{2,15}$",
        "must be a dialled number (DID): an optional + and 2 to 15 digits",
        ("74951234567",),
    ),
]
RouteTarget = Annotated[
    str,
    Matches(
        INTERNAL_NUMBER_PATTERN,
        "must be a number of the tenant (2 to 8 digits): an employee, queue, IVR menu or conference room",
        ("101",),
    ),
]


def _bare(did: str) -> str:
    return did.strip().removeprefix("+")


class IncomingRoute(Model):
    did: Did = Field(description="The number the caller dialled, as the provider sends it.")
    target: RouteTarget = Field(description="Where the call goes: a number of the tenant.")


class IncomingRoutes(Model):
    """Calls from the trunk: by DID to a tenant number, else to ``default_target``."""

    routes: list[IncomingRoute] = Field(default_factory=list, max_length=MAX_INCOMING_ROUTES)
    default_target: RouteTarget | None = Field(
        default=None, description="Where a call to any other DID goes; none: it is refused."
    )

    @field_validator("routes")
    @classmethod
    def _distinct_dids(cls, value: list[IncomingRoute]) -> list[IncomingRoute]:
        seen: dict[str, int] = {}
        for index, route in enumerate(value):
            bare = _bare(route.did)
            if bare in seen:
                raise ValueError(
                    f"DID {route.did} appears twice (routes {seen[bare]} and {index}); "
                    "a leading + does not make it different"
                )
            seen[bare] = index
        return value

    def target_of(self, did: str) -> str | None:
        """The tenant number a call to ``did`` goes to (a leading + is ignored), else the
        default target (None: no route)."""
        bare = _bare(did)
        for route in self.routes:
            if _bare(route.did) == bare:
                return route.target
        return self.default_target
