"""What the call-flow service knows of every tenant's configuration: the config service's
snapshots and change events, indexed by SIP domain and by number."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TypeAlias

from switchboard_contracts.conferences import ConferenceRoom
from switchboard_contracts.employees import Employee
from switchboard_contracts.ivr import IvrMenu
from switchboard_contracts.queues import CallQueue
from switchboard_contracts.tenants import Tenant

Entity: TypeAlias = Employee | CallQueue | IvrMenu | ConferenceRoom


@dataclass
class TenantConfig:
    tenant: Tenant
    employees: dict[str, Employee] = field(default_factory=dict)  # by id
    queues: dict[str, CallQueue] = field(default_factory=dict)
    ivr_menus: dict[str, IvrMenu] = field(default_factory=dict)
    conference_rooms: dict[str, ConferenceRoom] = field(default_factory=dict)
    #: stream sequence of the snapshot this state started from
    sequence: int = 0

    def collections(
        self,
    ) -> tuple[dict[str, Employee], dict[str, CallQueue], dict[str, IvrMenu], dict[str, ConferenceRoom]]:
        return self.employees, self.queues, self.ivr_menus, self.conference_rooms

    def by_number(self, number: str) -> Entity | None:
        for collection in self.collections():
            for entity in collection.values():
                if entity.number == number:
                    return entity
        return None

    def employee(self, number: str) -> Employee | None:
        for employee in self.employees.values():
            if employee.number == number:
                return employee
        return None


class Directory:
    def __init__(self) -> None:
        self.tenants: dict[str, TenantConfig] = {}

    def get(self, tenant_id: str) -> TenantConfig | None:
        return self.tenants.get(tenant_id)

    def by_domain(self, domain: str) -> TenantConfig | None:
        domain = domain.lower()
        for config in self.tenants.values():
            if config.tenant.sip_domain == domain:
                return config
        return None

    def put(self, config: TenantConfig) -> None:
        self.tenants[config.tenant.id] = config

    def remove(self, tenant_id: str) -> TenantConfig | None:
        return self.tenants.pop(tenant_id, None)
