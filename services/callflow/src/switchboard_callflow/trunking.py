"""A tenant's outbound SIP trunk on Asterisk: ``trunk-<tenant>`` endpoint, AOR, auth, an
identify matching the provider's address and port (tenants may share a provider), and the
optional outbound registration."""

from __future__ import annotations

import hashlib

from switchboard_contracts.tenants import Tenant

from .provisioning import CODECS, TRUNK_CONTEXT, Fields, PjsipObjects

TRANSPORTS = {"udp": "transport-udp", "tcp": "transport-tcp", "tls": "transport-tls"}


def trunk_id(tenant_id: str) -> str:
    return f"trunk-{tenant_id}"


def trunk_objects(tenant: Tenant) -> tuple[PjsipObjects, list[tuple[str, Fields]]] | None:
    trunk = getattr(tenant.settings, "trunk", None)
    if trunk is None:
        return None
    object_id = trunk_id(tenant.id)
    transport = str(getattr(trunk.transport, "value", trunk.transport))
    hostport = f"{trunk.host}:{trunk.port}"
    uri_params = "" if transport == "udp" else f";transport={transport}"
    password = trunk.password.get_secret_value() if trunk.password else ""
    endpoint: Fields = [
        ("context", TRUNK_CONTEXT),
        ("aors", object_id),
        ("transport", TRANSPORTS[transport]),
        ("disallow", "all"),
        ("allow", CODECS),
        ("dtmf_mode", "auto"),
        ("direct_media", "no"),
        ("rtp_symmetric", "yes"),
        ("force_rport", "yes"),
        ("rewrite_contact", "yes"),
        ("language", tenant.settings.prompt_language.value),
    ]
    if trunk.username:
        endpoint += [("outbound_auth", object_id), ("from_user", trunk.username)]
    if trunk.from_domain:
        endpoint.append(("from_domain", trunk.from_domain))
    aor: Fields = [("contact", f"sip:{hostport}{uri_params}"), ("qualify_frequency", "0")]
    auth: Fields = [
        ("auth_type", "userpass"),
        ("username", trunk.username or "anonymous"),
        ("password", password),
    ]
    extra: list[tuple[str, Fields]] = [("identify", [("endpoint", object_id), ("match", hostport)])]
    if trunk.register and trunk.username:
        extra.append(
            (
                "registration",
                [
                    ("server_uri", f"sip:{hostport}{uri_params}"),
                    ("client_uri", f"sip:{trunk.username}@{trunk.host}"),
                    ("outbound_auth", object_id),
                    ("transport", TRANSPORTS[transport]),
                    ("retry_interval", "60"),
                ],
            )
        )
    objects = PjsipObjects(object_id, endpoint, aor, auth)
    return _with_extra_digest(objects, extra), extra


def _with_extra_digest(objects: PjsipObjects, extra: list[tuple[str, Fields]]) -> PjsipObjects:
    """The identify and registration count in the digest, so changing them re-provisions."""
    marker = ("set_var", "SB_TRUNK_EXTRA=" + hashlib.sha256(repr(extra).encode()).hexdigest()[:12])
    return PjsipObjects(objects.object_id, [*objects.endpoint, marker], objects.aor, objects.auth)
