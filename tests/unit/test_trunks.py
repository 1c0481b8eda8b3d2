"""The tenant's SIP trunk, incoming routes and device-registration messages as the contracts
enforce them (pure logic, no servers)."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError
from switchboard_contracts import subjects
from switchboard_contracts.devices import (
    DeviceRegistration,
    RegistrationsAnswer,
    RegistrationsReply,
    RegistrationsRequest,
)
from switchboard_contracts.partial import partial_model
from switchboard_contracts.tenants import Tenant, TenantSettings, TenantView
from switchboard_contracts.trunks import IncomingRoutes, SipTrunk, SipTrunkView

SECRET = "Pr0vider-Secret!"


def field_error(exc: pytest.ExceptionInfo[ValidationError]) -> tuple[str, str]:
    first = exc.value.errors()[0]
    return ".".join(str(p) for p in first["loc"]), str(first["msg"])


def test_trunk_defaults() -> None:
    trunk = SipTrunk(host="sip.provider.example")
    assert (trunk.port, trunk.transport, trunk.register) == (5060, "udp", False)
    assert (trunk.username, trunk.password, trunk.strip_digits, trunk.prefix) == (None, None, 0, "")
    assert TenantSettings().trunk is None
    assert TenantSettings().incoming == IncomingRoutes()


@pytest.mark.parametrize(
    ("host", "canonical"),
    [
        ("SIP.Provider.Example", "sip.provider.example"),
        ("sip.provider.example.", "sip.provider.example"),
        ("203.0.113.7", "203.0.113.7"),
        ("2001:DB8::1", "2001:db8::1"),
        ("[2001:db8::1]", "2001:db8::1"),
        ("provider", "provider"),
    ],
)
def test_trunk_host_accepts_names_and_addresses(host: str, canonical: str) -> None:
    assert SipTrunk(host=host).host == canonical


@pytest.mark.parametrize(
    ("data", "field", "problem"),
    [
        ({"host": "sip provider"}, "host", "host name or IP"),
        ({"host": "300.1.1.1"}, "host", "IP address"),
        ({"host": "-bad.example"}, "host", "host name"),
        ({"host": "a" * 64 + ".example"}, "host", "host name"),
        ({"host": ""}, "host", "host name"),
        ({"port": 0}, "port", "greater than or equal to 1"),
        ({"port": 65536}, "port", "less than or equal to 65535"),
        ({"transport": "udp+tcp"}, "transport", "'udp', 'tcp' or 'tls'"),
        ({"transport": "ws"}, "transport", "'udp', 'tcp' or 'tls'"),
        ({"username": "user name"}, "username", "1 to 64"),
        ({"username": "u@x"}, "username", "1 to 64"),
        ({"password": "with space"}, "password", "spaces"),
        ({"password": "bell\x07x"}, "password", "control"),
        ({"password": ""}, "password", "empty"),
        ({"password": "x" * 129}, "password", "128"),
        ({"register": True}, "register", "username and password"),
        ({"register": True, "username": "acme"}, "register", "password"),
        ({"register": True, "password": SECRET}, "register", "username"),
        ({"from_domain": "not a domain"}, "from_domain", "host name"),
        ({"caller_id": "0123"}, "caller_id", "phone number"),
        ({"caller_id": "+7 495"}, "caller_id", "phone number"),
        ({"strip_digits": -1}, "strip_digits", "greater than or equal to 0"),
        ({"strip_digits": 11}, "strip_digits", "less than or equal to 10"),
        ({"prefix": "9a"}, "prefix", "up to 10 digits"),
        ({"prefix": "12345678901"}, "prefix", "up to 10 digits"),
        ({"prefix": "1+"}, "prefix", "starting with +"),
        ({"colour": "red"}, "colour", "Extra inputs"),
    ],
)
def test_trunk_errors_name_the_field(data: dict[str, Any], field: str, problem: str) -> None:
    with pytest.raises(ValidationError) as exc:
        SipTrunk.model_validate({"host": "sip.provider.example", **data})
    assert field_error(exc)[0] == field
    assert problem in field_error(exc)[1]


def test_trunk_errors_inside_settings_name_the_path() -> None:
    with pytest.raises(ValidationError) as exc:
        TenantSettings.model_validate({"trunk": {"host": "sip.provider.example", "port": 99999}})
    assert field_error(exc)[0] == "trunk.port"
    with pytest.raises(ValidationError) as exc:
        TenantSettings.model_validate({"incoming": {"default_target": "+74951234567"}})
    assert field_error(exc)[0] == "incoming.default_target"


def test_register_with_credentials() -> None:
    trunk = SipTrunk(host="sip.provider.example", username="acme", password=SECRET, register=True)  # type: ignore[arg-type]
    assert trunk.register is True
    # an invalid password is reported once, on the password, not again on register
    with pytest.raises(ValidationError) as exc:
        SipTrunk.model_validate(
            {"host": "sip.provider.example", "username": "acme", "password": "a b", "register": True}
        )
    assert [".".join(map(str, e["loc"])) for e in exc.value.errors()] == ["password"]


def test_trunk_password_masked_in_repr_but_sent_on_the_wire() -> None:
    trunk = SipTrunk(host="sip.provider.example", username="acme", password=SECRET)  # type: ignore[arg-type]
    settings = TenantSettings(trunk=trunk)
    for text in (repr(trunk), str(trunk), repr(settings)):
        assert SECRET not in text
    assert f'"password":"{SECRET}"' in trunk.model_dump_json()
    assert settings.model_dump(mode="json")["trunk"]["password"] == SECRET
    # what the wire carries reads back as the same trunk
    assert SipTrunk.model_validate_json(trunk.model_dump_json()) == trunk


def test_trunk_view_shows_only_whether_a_password_is_set() -> None:
    with_password = SipTrunk(host="sip.provider.example", username="acme", password=SECRET)  # type: ignore[arg-type]
    view = SipTrunkView.of(with_password).model_dump(mode="json")
    assert view["password_set"] is True and "password" not in view
    assert SECRET not in SipTrunkView.of(with_password).model_dump_json()
    assert SipTrunkView.of(SipTrunk(host="sip.provider.example")).password_set is False
    tenant = Tenant.model_validate(
        {"id": "acme", "name": "Acme", "sip_domain": "acme.example", "revision": 3,
         "created_at": "2024-05-01T10:00:00Z", "updated_at": "2024-05-01T10:00:00Z",
         "settings": {"trunk": with_password.model_dump(mode="json"),
                      "incoming": {"routes": [{"did": "74951234567", "target": "101"}]}}}
    )  # fmt: skip
    shown = TenantView.of(tenant).model_dump(mode="json")
    assert SECRET not in str(shown)
    assert shown["settings"]["trunk"]["password_set"] is True
    assert shown["settings"]["incoming"]["routes"] == [{"did": "74951234567", "target": "101"}]
    assert shown["revision"] == 3 and shown["settings"]["star_codes"]["blind_transfer"] == "**"


@pytest.mark.parametrize(
    ("strip", "prefix", "number", "dialled"),
    [
        (0, "", "89161234567", "89161234567"),
        (1, "7", "89161234567", "79161234567"),
        (1, "+7", "89161234567", "+79161234567"),
        (0, "9", "4951234567", "94951234567"),
        (1, "", "+79161234567", "79161234567"),  # a leading + counts as one character
        (2, "0", "9989161234567", "089161234567"),
        (0, "+", "79161234567", "+79161234567"),
    ],
)
def test_dial_string_strips_then_prefixes(strip: int, prefix: str, number: str, dialled: str) -> None:
    trunk = SipTrunk(host="sip.provider.example", strip_digits=strip, prefix=prefix)
    assert trunk.dial_string(number) == dialled


def test_dial_string_refuses_what_is_not_a_number() -> None:
    trunk = SipTrunk(host="sip.provider.example", strip_digits=3)
    with pytest.raises(ValueError, match="too short"):
        trunk.dial_string("123")
    with pytest.raises(ValueError, match="not a dialled number"):
        trunk.dial_string("12ab45")


def test_incoming_routes_target_of() -> None:
    incoming = IncomingRoutes.model_validate(
        {"routes": [{"did": "74951234567", "target": "101"}, {"did": "+74957654321", "target": "300"}],
         "default_target": "200"}
    )  # fmt: skip
    assert incoming.target_of("74951234567") == "101"
    assert incoming.target_of("+74951234567") == "101"  # a leading + does not matter
    assert incoming.target_of("74957654321") == "300"
    assert incoming.target_of("+74957654321") == "300"
    assert incoming.target_of("84951234567") == "200"  # no route: the default
    assert IncomingRoutes(routes=incoming.routes).target_of("84951234567") is None
    assert IncomingRoutes().target_of("74951234567") is None


@pytest.mark.parametrize(
    ("data", "field", "problem"),
    [
        ({"routes": [{"did": "7495-123", "target": "101"}]}, "routes.0.did", "DID"),
        ({"routes": [{"did": "1", "target": "101"}]}, "routes.0.did", "DID"),
        ({"routes": [{"did": "74951234567", "target": "+79161234567"}]}, "routes.0.target", "2 to 8"),
        ({"routes": [{"did": "74951234567", "target": "1"}]}, "routes.0.target", "2 to 8"),
        ({"routes": [{"did": "74951234567"}]}, "routes.0.target", "required"),
        ({"default_target": "abc"}, "default_target", "number of the tenant"),
        ({"routes": [{"did": "74951234567", "target": "101", "note": "x"}]}, "routes.0.note", "Extra"),
    ],
)
def test_incoming_route_errors_name_the_field(data: dict[str, Any], field: str, problem: str) -> None:
    with pytest.raises(ValidationError) as exc:
        IncomingRoutes.model_validate(data)
    assert field_error(exc)[0] == field
    assert problem in field_error(exc)[1]


def test_duplicate_did_is_named() -> None:
    with pytest.raises(ValidationError) as exc:
        IncomingRoutes.model_validate(
            {"routes": [{"did": "74951234567", "target": "101"}, {"did": "74950000000", "target": "102"},
                        {"did": "+74951234567", "target": "103"}]}
        )  # fmt: skip
    field, message = field_error(exc)
    assert field == "routes"
    assert "+74951234567 appears twice" in message and "routes 0 and 2" in message


def test_settings_patch_model_is_partial_for_the_trunk() -> None:
    patch = partial_model(TenantSettings)
    assert patch.model_validate({"trunk": {"port": 5080}}).model_dump(exclude_unset=True) == {
        "trunk": {"port": 5080}
    }
    assert patch.model_validate({"trunk": None}).model_dump(exclude_unset=True) == {"trunk": None}
    with pytest.raises(ValidationError):
        patch.model_validate({"trunk": {"port": 0}})
    with pytest.raises(ValidationError):
        patch.model_validate({"trunk": {"password_set": True}})


def test_device_messages_and_subjects() -> None:
    event = DeviceRegistration(
        tenant_id="acme",
        number="101",
        registered=True,
        contacts=["sip:101@192.0.2.10:5062;ob"],
        user_agent="Yealink T46U",
    )
    assert event.version == 1 and event.occurred_at.tzinfo is not None
    with pytest.raises(ValidationError) as exc:
        DeviceRegistration.model_validate({"tenant_id": "acme", "number": "1x", "registered": False})
    assert field_error(exc)[0] == "number"
    assert RegistrationsRequest(tenant_id="acme").numbers is None
    reply = RegistrationsReply(tenant_id="acme", registered={"101": True, "102": False})
    answer = RegistrationsAnswer.model_validate({"ok": True, "result": reply.model_dump(mode="json")})
    assert answer.result == reply
    assert subjects.DEVICE_EVENTS_STREAM == "PBX_DEVICES"
    assert subjects.DEVICE_EVENTS_SUBJECTS == ["pbx.*.device.>"]
    assert subjects.device_registration_changed("acme") == "pbx.acme.device.registration.changed"
    assert subjects.callflow_registrations("acme") == "rpc.callflow.acme.registrations"
    assert subjects.CALLFLOW_REGISTRATIONS_PATTERN.format(tenant_id="acme") == (
        subjects.callflow_registrations("acme")
    )
    # the device subjects lie in the device stream, the query outside every stream
    assert subjects.device_registration_changed("acme").startswith("pbx.acme.device.")
    assert not subjects.callflow_registrations("acme").startswith("pbx.")
