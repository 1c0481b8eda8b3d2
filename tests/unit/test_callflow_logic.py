"""Pure logic of the call-flow service: IVR digit decisions, PJSIP objects of an employee and
a trunk, call records (billsec without IVR time), registrations."""

from __future__ import annotations

from datetime import UTC, datetime

from switchboard_callflow.directory import Directory, TenantConfig
from switchboard_callflow.menus import decide
from switchboard_callflow.provisioning import employee_objects, split_endpoint_id
from switchboard_callflow.records import Leg
from switchboard_callflow.registry import Presence, Registry
from switchboard_callflow.trunking import trunk_objects
from switchboard_contracts.cdr import Disposition
from switchboard_contracts.employees import Employee
from switchboard_contracts.ivr import IvrMenu
from switchboard_contracts.tenants import Tenant

NOW = datetime(2026, 11, 26, tzinfo=UTC)


def tenant(**settings: object) -> Tenant:
    return Tenant(
        id="acme", name="Acme", sip_domain="acme.pbx.test", settings=settings, created_at=NOW, updated_at=NOW
    )


def employee(number: str = "101", **fields: object) -> Employee:
    return Employee(
        id="e" * 32, tenant_id="acme", name="Anna", number=number, sip_password="Sw1tch-board_Pass",
        revision=1, created_at=NOW, updated_at=NOW, **fields,
    )  # fmt: skip


def menu(**fields: object) -> IvrMenu:
    base = {"name": "Main", "number": "500", "default_target": "101", "actions": [{"digits": "1", "target": "101"},
            {"digits": "12", "target": "102"}]}  # fmt: skip
    return IvrMenu(
        id="m" * 32, tenant_id="acme", revision=1, created_at=NOW, updated_at=NOW, **{**base, **fields}
    )


def test_ivr_waits_while_a_longer_action_may_follow() -> None:
    m = menu()
    assert decide(m, "1", False, complete=False) is None
    assert decide(m, "12", False, complete=False) == "102"
    assert decide(m, "1", False, complete=True) == "101"
    assert decide(m, "9", False, complete=False) == ""  # wrong input: the next attempt


def test_ivr_internal_dialing_only_with_the_flag_and_a_known_number() -> None:
    assert decide(menu(), "104", True, complete=True) == ""
    flagged = menu(allow_internal_dialing=True)
    assert decide(flagged, "10", False, complete=False) is None
    assert decide(flagged, "104", True, complete=True) == "104"
    assert decide(flagged, "109", False, complete=True) == ""


def test_employee_objects_carry_spec_settings_and_refuse_protected_extras() -> None:
    objects = employee_objects(
        tenant(prompt_language="en"),
        employee(advanced={"dtmf_mode": "info", "transport": "tcp", "network_filter": ["10.0.0.0/8"],
                           "max_parallel_calls": 2, "pjsip_extra": "[endpoint]\ncontext = evil\nrtp_timeout = 30"}),
    )  # fmt: skip
    endpoint = objects.endpoint
    assert objects.object_id == "101@acme.pbx.test"
    assert ("context", "sb-internal") in endpoint and ("context", "evil") not in endpoint
    assert ("rtp_timeout", "30") in endpoint
    assert ("dtmf_mode", "info") in endpoint and ("transport", "transport-tcp") in endpoint
    assert ("device_state_busy_at", "2") in endpoint and ("language", "en") in endpoint
    assert ("deny", "0.0.0.0/0.0.0.0") in endpoint and ("permit", "10.0.0.0/8") in endpoint
    assert ("contact_permit", "10.0.0.0/8") in endpoint
    assert ("password", "Sw1tch-board_Pass") in objects.auth and ("username", "101") in objects.auth
    assert objects.digest != employee_objects(tenant(), employee()).digest
    assert split_endpoint_id("101@acme.pbx.test") == ("101", "acme.pbx.test")


def test_trunk_objects_identify_by_address_and_port_with_optional_registration() -> None:
    assert trunk_objects(tenant()) is None
    trunk = {
        "host": "sip.provider.test",
        "port": 5080,
        "username": "acc",
        "password": "Pr0vider-pass",
        "register": True,
    }
    objects, extra = trunk_objects(tenant(trunk=trunk)) or (None, [])
    assert objects is not None and objects.object_id == "trunk-acme"
    kinds = dict(extra)
    assert ("match", "sip.provider.test:5080") in kinds["identify"]
    assert ("server_uri", "sip:sip.provider.test:5080") in kinds["registration"]
    assert ("context", "sb-trunk") in objects.endpoint


def test_billsec_counts_talk_only() -> None:
    leg = Leg("acme", "L1", "L1", caller_number="101", called_number="500")
    leg.answered()  # the IVR answered: no talk yet
    record = leg.record()
    assert record.disposition == Disposition.ANSWERED and record.billsec == 0
    missed = Leg("acme", "L2", "L2", caller_number="+7495", called_number="102").record(Disposition.NO_ANSWER)
    assert missed.answer is None and missed.billsec == 0


def test_registry_publishes_changes_only() -> None:
    directory = Directory()
    directory.put(TenantConfig(tenant(), employees={"e": employee()}))
    published = []
    registry = Registry(directory, published.append)
    registry.update({"101@acme.pbx.test": ["sip:101@127.0.0.1:5062"]})
    registry.update({"101@acme.pbx.test": ["sip:101@127.0.0.1:5062"]})
    registry.update({})
    assert [(p.number, p.registered) for p in published] == [("101", True), ("101", False)]
    assert registry.registered("acme") == {"101": False}
    presence = Presence()
    presence.add("acme", "101")
    presence.add("acme", "101")
    presence.remove("acme", "101")
    assert presence.calls("acme", "101") == 1
