"""Tenants (SPEC section 0) and their settings, including the star codes of section 6."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any
from zoneinfo import ZoneInfo, available_timezones

from pydantic import Field, StringConstraints, field_validator, model_validator

from .common import Matches, Model, TenantId
from .trunks import IncomingRoutes, SipTrunk, SipTrunkView

SipDomain = Annotated[
    str,
    StringConstraints(
        to_lower=True,
        max_length=253,
        pattern=r"^([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,63}$",
    ),
]
StarCode = Annotated[str, Matches(r"^[*#0-9]{1,4}$", "a star code is 1 to 4 of 0-9, * and #", ("**",))]


class PromptLanguage(StrEnum):
    RU = "ru"
    EN = "en"


class StarCodes(Model):
    """Feature codes dialled during or instead of a call (SPEC section 6)."""

    blind_transfer: StarCode = "**"
    attended_transfer: StarCode = "##"
    transfer_cancel: StarCode = "*0"
    group_pickup: StarCode = "*8"
    directed_pickup: StarCode = "*8"

    @model_validator(mode="after")
    def _distinct_in_call_codes(self) -> StarCodes:
        in_call = {
            "blind_transfer": self.blind_transfer,
            "attended_transfer": self.attended_transfer,
            "transfer_cancel": self.transfer_cancel,
        }
        seen: dict[str, str] = {}
        for name, code in in_call.items():
            if code in seen:
                raise ValueError(f"{name} repeats the code of {seen[code]} ({code})")
            seen[code] = name
        return self


class TenantSettings(Model):
    """What a tenant's admin may change about the tenant."""

    timezone: str = "Europe/Moscow"
    prompt_language: PromptLanguage = PromptLanguage.RU
    record_calls: bool = False
    star_codes: StarCodes = Field(default_factory=StarCodes)
    trunk: SipTrunk | None = Field(
        default=None, description="Outbound SIP trunk; none: external calls are refused."
    )
    incoming: IncomingRoutes = Field(
        default_factory=IncomingRoutes, description="Where calls from the trunk go, by DID."
    )

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, value: str) -> str:
        if value not in _timezones():
            raise ValueError(f"unknown time zone {value!r} (expected an IANA name such as Europe/Moscow)")
        ZoneInfo(value)
        return value


_TZ_CACHE: set[str] = set()


def _timezones() -> set[str]:
    if not _TZ_CACHE:
        _TZ_CACHE.update(available_timezones())
    return _TZ_CACHE


class TenantFields(Model):
    """What the operator gives when creating a tenant."""

    id: TenantId
    name: Annotated[str, StringConstraints(min_length=1, max_length=100)]
    sip_domain: SipDomain
    settings: TenantSettings = Field(default_factory=TenantSettings)


class Tenant(TenantFields):
    revision: int = 0
    created_at: datetime
    updated_at: datetime


class TenantSettingsView(Model):
    """Settings as shown to the admin: the trunk without its password."""

    timezone: str
    prompt_language: PromptLanguage
    record_calls: bool
    star_codes: StarCodes
    trunk: SipTrunkView | None
    incoming: IncomingRoutes

    @classmethod
    def of(cls, settings: TenantSettings) -> TenantSettingsView:
        data: dict[str, Any] = settings.model_dump(exclude={"trunk"})
        trunk = SipTrunkView.of(settings.trunk) if settings.trunk is not None else None
        return cls(**data, trunk=trunk)


class TenantView(Model):
    """A tenant as the API shows it (the bus carries the whole Tenant, trunk password included,
    for the call-flow service)."""

    id: str
    name: str
    sip_domain: str
    settings: TenantSettingsView
    revision: int
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, tenant: Tenant) -> TenantView:
        data: dict[str, Any] = tenant.model_dump(exclude={"settings"})
        return cls(**data, settings=TenantSettingsView.of(tenant.settings))
