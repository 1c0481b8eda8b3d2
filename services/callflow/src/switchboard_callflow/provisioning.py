"""The PJSIP objects (endpoint, AOR, auth) an employee becomes on Asterisk, as the field lists
ARI's dynamic configuration takes. Pure functions: no I/O here."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

from switchboard_contracts.employees import DtmfMode, Employee, SipTransport, parse_pjsip_extra
from switchboard_contracts.tenants import Tenant

INTERNAL_CONTEXT = "sb-internal"
TRUNK_CONTEXT = "sb-trunk"
CODECS = "alaw,ulaw,g722"
#: Extra options may not change what ties an endpoint to its tenant and credentials.
PROTECTED = {
    "endpoint": {"context", "aors", "auth", "outbound_auth", "accountcode", "set_var", "transport"},
    "aor": {"contact"},
    "auth": {"username", "password", "auth_type", "md5_cred"},
}
DTMF = {
    DtmfMode.AUTO: "auto",
    DtmfMode.RFC4733: "rfc4733",
    DtmfMode.INFO: "info",
    DtmfMode.INBAND: "inband",
    DtmfMode.AUTO_INFO: "auto_info",
}
TRANSPORTS = {
    SipTransport.UDP: "transport-udp",
    SipTransport.TCP: "transport-tcp",
    SipTransport.TLS: "transport-tls",
    SipTransport.UDP_TCP: None,  # the phone's own choice
}

Fields = list[tuple[str, str]]


@dataclass(frozen=True)
class PjsipObjects:
    """One endpoint with its AOR and auth, all named ``object_id``."""

    object_id: str
    endpoint: Fields
    aor: Fields
    auth: Fields

    @property
    def digest(self) -> str:
        """Kept in the endpoint's accountcode, so a restarted service knows what Asterisk
        already holds without rewriting it."""
        data = json.dumps([self.endpoint, self.aor, self.auth]).encode()
        return hashlib.sha256(data).hexdigest()[:20]

    def endpoint_fields(self) -> Fields:
        return [*self.endpoint, ("accountcode", self.digest)]


def endpoint_id(number: str, sip_domain: str) -> str:
    return f"{number}@{sip_domain}"


def split_endpoint_id(object_id: str) -> tuple[str, str] | None:
    """``101@acme.pbx`` -> (``101``, ``acme.pbx``)."""
    number, at, domain = object_id.partition("@")
    return (number, domain) if at and number and domain else None


def _acl(subnets: list[str], prefix: str = "") -> Fields:
    if not subnets:
        return []
    return [(f"{prefix}deny", "0.0.0.0/0.0.0.0"), (f"{prefix}deny", "::/0")] + [
        (f"{prefix}permit", subnet) for subnet in subnets
    ]


def _merge(base: Fields, extra: dict[str, str], section: str) -> Fields:
    allowed = {k: v for k, v in extra.items() if k not in PROTECTED.get(section, set())}
    kept = [(k, v) for k, v in base if k not in allowed]
    return kept + list(allowed.items())


def employee_objects(tenant: Tenant, employee: Employee) -> PjsipObjects:
    object_id = endpoint_id(employee.number, tenant.sip_domain)
    advanced = employee.advanced
    extra = parse_pjsip_extra(advanced.pjsip_extra)
    endpoint: Fields = [
        ("context", INTERNAL_CONTEXT),
        ("aors", object_id),
        ("auth", object_id),
        ("disallow", "all"),
        ("allow", CODECS),
        ("dtmf_mode", DTMF[advanced.dtmf_mode]),
        ("direct_media", "no"),
        ("rtp_symmetric", "yes"),
        ("force_rport", "yes"),
        ("rewrite_contact", "yes"),
        ("callerid", f'"{_quote(employee.name)}" <{employee.number}>'),
        ("language", tenant.settings.prompt_language.value),
        ("allow_subscribe", "no"),
    ]
    transport = TRANSPORTS[advanced.transport]
    if transport:
        endpoint.append(("transport", transport))
    if advanced.transport == SipTransport.TLS:
        endpoint.append(("media_encryption", "no"))
    if advanced.max_parallel_calls:
        endpoint.append(("device_state_busy_at", str(advanced.max_parallel_calls)))
    endpoint += _acl(advanced.network_filter) + _acl(advanced.network_filter, "contact_")
    acl_extra = extra.get("acl", {})
    endpoint = _merge(endpoint, {**extra.get("endpoint", {}), **acl_extra}, "endpoint")
    aor = _merge(
        [("max_contacts", "5"), ("remove_existing", "yes"), ("qualify_frequency", "0")],
        extra.get("aor", {}),
        "aor",
    )
    password = employee.sip_password.get_secret_value() if employee.sip_password else ""
    auth = _merge(
        [("auth_type", "userpass"), ("username", employee.number), ("password", password)],
        extra.get("auth", {}),
        "auth",
    )
    return PjsipObjects(object_id, endpoint, aor, auth)


def _quote(name: str) -> str:
    return name.replace("\\", "").replace('"', "'")
