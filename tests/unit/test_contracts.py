"""Field rules of SPEC sections 0-4 as the contracts enforce them (pure logic, no servers)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError
from switchboard_contracts.conferences import ConferenceRoomFields
from switchboard_contracts.employees import (
    EmployeeAdvanced,
    EmployeeFields,
    check_sip_password,
    generate_sip_password,
    parse_pjsip_extra,
)
from switchboard_contracts.ivr import IvrMenuFields
from switchboard_contracts.partial import partial_model
from switchboard_contracts.queues import CallQueueFields
from switchboard_contracts.tenants import StarCodes, TenantFields, TenantSettings


def field_error(exc: pytest.ExceptionInfo[ValidationError]) -> tuple[str, str]:
    first = exc.value.errors()[0]
    return ".".join(str(p) for p in first["loc"]), str(first["msg"])


@pytest.mark.parametrize(
    ("password", "problem"),
    [
        ("Ab1-defg", "longer than 8"),
        ("abcdefgh1-", "upper-case"),
        ("ABCDEFGH1-", "lower-case"),
        ("Abcdefghi-", "digit"),
        ("Abcdefgh12", "special"),
        ("Password1-x", "weak word 'password'"),
        ("Adm1n{admin}", "weak word 'admin'"),
        ("Qwerty-12345", "weak word"),
        ("Ab 1-defghij", "printable ASCII"),
    ],
)
def test_sip_password_policy(password: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        check_sip_password(password)


def test_password_may_not_hold_own_number() -> None:
    with pytest.raises(ValidationError) as exc:
        EmployeeFields(name="Ivan", number="2024", sip_password="Xy-2024abcd")  # type: ignore[arg-type]
    assert field_error(exc)[0] == "sip_password"
    assert "own number" in field_error(exc)[1]


def test_generated_passwords_pass_the_policy() -> None:
    for _ in range(200):
        assert check_sip_password(generate_sip_password())


def test_password_masked_in_repr_but_sent_on_the_wire() -> None:
    employee = EmployeeFields(name="Ivan", number="101", sip_password="Str0ng-Pass{1}")  # type: ignore[arg-type]
    assert "Str0ng-Pass{1}" not in repr(employee)
    assert "Str0ng-Pass{1}" not in str(employee)
    assert '"sip_password":"Str0ng-Pass{1}"' in employee.model_dump_json()


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"number": "1"}, "number"),
        ({"number": "123456789"}, "number"),
        ({"number": "10a"}, "number"),
        ({"mobile": "+0123"}, "mobile"),
        ({"mobile": "8 916 457"}, "mobile"),
        ({"email": "nobody"}, "email"),
        ({"name": "x" * 101}, "name"),
        ({"name": "bell\x07"}, "name"),
        ({"routing": {"ring_time": 2}}, "routing.ring_time"),
        ({"routing": {"ring_time": 181}}, "routing.ring_time"),
        ({"routing": {"busy_target": "abc"}}, "routing.busy_target"),
        ({"advanced": {"dtmf_mode": "sip"}}, "advanced.dtmf_mode"),
        ({"advanced": {"transport": "ws"}}, "advanced.transport"),
        ({"advanced": {"network_filter": ["300.1.1.0/24"]}}, "advanced.network_filter"),
        ({"advanced": {"max_parallel_calls": 0}}, "advanced.max_parallel_calls"),
    ],
)
def test_employee_fields(data: dict[str, object], field: str) -> None:
    with pytest.raises(ValidationError) as exc:
        EmployeeFields.model_validate({"name": "Ivan", "number": "101", **data})
    assert field_error(exc)[0] == field


def test_employee_defaults_follow_the_spec() -> None:
    employee = EmployeeFields(name="Иван Петров", number="101")
    assert employee.routing.ring_time == 45
    assert employee.advanced.dtmf_mode == "auto"
    assert employee.advanced.transport == "udp+tcp"


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("[transport]\nx = 1", "unknown section"),
        ("direct_media = no", "before any section"),
        ("[endpoint]\njust words", "key = value"),
        ("[endpoint]\n" + "a = b\n" * 200, "1024"),
    ],
)
def test_pjsip_extra_rejects(text: str, problem: str) -> None:
    with pytest.raises(ValidationError, match=problem):
        EmployeeAdvanced(pjsip_extra=text)


def test_pjsip_extra_accepts_known_sections() -> None:
    text = "[endpoint]\ndirect_media = no\n; comment\n[aor]\nqualify_frequency=30\n[ACL]\ndeny=0.0.0.0/0"
    assert parse_pjsip_extra(EmployeeAdvanced(pjsip_extra=text).pjsip_extra) == {
        "endpoint": {"direct_media": "no"},
        "aor": {"qualify_frequency": "30"},
        "acl": {"deny": "0.0.0.0/0"},
    }


def test_queue_rules() -> None:
    queue = CallQueueFields(name="Sales", number="200")
    assert (queue.strategy, queue.agent_ring_time, queue.wrapup_time) == ("ringall", 15, 15)
    assert queue.waiting_sound == "ringback"
    with pytest.raises(ValidationError, match="set together"):
        CallQueueFields(name="Sales", number="200", max_wait_time=60)
    with pytest.raises(ValidationError, match="twice"):
        CallQueueFields(name="Sales", number="200", agents=["101", "101"])
    with pytest.raises(ValidationError) as exc:
        CallQueueFields.model_validate({"name": "Sales", "number": "200", "strategy": "roundrobin"})
    assert field_error(exc)[0] == "strategy"


def test_ivr_rules() -> None:
    menu = IvrMenuFields(name="Main", number="300", default_target="101")
    assert (menu.repeats, menu.timeout, menu.allow_internal_dialing) == (3, 7, False)
    with pytest.raises(ValidationError, match="twice"):
        IvrMenuFields.model_validate({"name": "M", "number": "300", "default_target": "101",
                                      "actions": [{"digits": "1", "target": "101"}, {"digits": "1", "target": "102"}]})  # fmt: skip
    with pytest.raises(ValidationError) as exc:
        IvrMenuFields.model_validate({"name": "M", "number": "300", "default_target": "101",
                                      "actions": [{"digits": "1a", "target": "101"}]})  # fmt: skip
    assert field_error(exc)[0] == "actions.0.digits"
    with pytest.raises(ValidationError) as exc:
        IvrMenuFields.model_validate({"name": "M", "number": "300", "default_target": "101", "repeats": 11})
    assert field_error(exc)[0] == "repeats"


def test_conference_pin_digits_only() -> None:
    assert ConferenceRoomFields(name="Daily", number="700", pin="0042").pin == "0042"
    for pin in ("", "12a", "12 34"):
        with pytest.raises(ValidationError) as exc:
            ConferenceRoomFields.model_validate({"name": "Daily", "number": "700", "pin": pin})
        assert field_error(exc)[0] == "pin"


def test_tenant_rules() -> None:
    tenant = TenantFields(id="acme", name="Acme", sip_domain="PBX.Acme.Example")
    assert tenant.sip_domain == "pbx.acme.example"
    assert tenant.settings.star_codes == StarCodes(
        blind_transfer="**",
        attended_transfer="##",
        transfer_cancel="*0",
        group_pickup="*8",
        directed_pickup="*8",
    )
    for data, field in [
        ({"id": "Acme"}, "id"),
        ({"id": "a.b"}, "id"),
        ({"sip_domain": "no_domain"}, "sip_domain"),
    ]:
        with pytest.raises(ValidationError) as exc:
            TenantFields.model_validate({"id": "acme", "name": "Acme", "sip_domain": "acme.example", **data})
        assert field_error(exc)[0] == field
    with pytest.raises(ValidationError, match="time zone"):
        TenantSettings(timezone="Mars/Olympus")
    with pytest.raises(ValidationError, match="repeats the code"):
        StarCodes(blind_transfer="##")


def test_partial_models_keep_formats_but_not_requirements() -> None:
    patch = partial_model(EmployeeFields)
    assert patch.model_validate({}).model_dump(exclude_unset=True) == {}
    assert patch.model_validate({"routing": {"ring_time": 20}}).model_dump(exclude_unset=True) == {
        "routing": {"ring_time": 20}
    }
    with pytest.raises(ValidationError):
        patch.model_validate({"number": "1"})
    with pytest.raises(ValidationError):
        patch.model_validate({"unknown": 1})
