"""Which employees' phones are registered, from Asterisk's contact table (AMI), and the
changes published on the bus."""

from __future__ import annotations

from collections.abc import Callable

from switchboard_contracts.devices import DeviceRegistration

from .adapters.ami import Contacts
from .directory import Directory
from .provisioning import split_endpoint_id


class Registry:
    def __init__(self, directory: Directory, publish: Callable[[DeviceRegistration], None]) -> None:
        self.directory = directory
        self.publish = publish
        self._contacts: Contacts = {}
        self.known = False

    def contacts(self, object_id: str) -> list[str]:
        return list(self._contacts.get(object_id, []))

    def registered(self, tenant_id: str) -> dict[str, bool]:
        config = self.directory.get(tenant_id)
        if config is None or not self.known:
            return {}
        domain = config.tenant.sip_domain
        return {e.number: bool(self._contacts.get(f"{e.number}@{domain}")) for e in config.employees.values()}

    def update(self, contacts: Contacts) -> None:
        before, self._contacts = self._contacts, contacts
        self.known = True
        for object_id in set(before) | set(contacts):
            was, now = bool(before.get(object_id)), bool(contacts.get(object_id))
            if was == now and sorted(before.get(object_id, [])) == sorted(contacts.get(object_id, [])):
                continue
            parts = split_endpoint_id(object_id)
            if parts is None:
                continue
            number, domain = parts
            tenant = self.directory.by_domain(domain)
            if tenant is None or not number.isdigit():
                continue
            self.publish(
                DeviceRegistration(
                    tenant_id=tenant.tenant.id,
                    number=number,
                    registered=now,
                    contacts=contacts.get(object_id, [])[:32],
                )
            )


class Presence:
    """Calls each employee is on (ringing or talking), for the maximum of parallel calls."""

    def __init__(self) -> None:
        self._calls: dict[tuple[str, str], int] = {}

    def calls(self, tenant_id: str, number: str) -> int:
        return self._calls.get((tenant_id, number), 0)

    def add(self, tenant_id: str, number: str) -> None:
        self._calls[(tenant_id, number)] = self.calls(tenant_id, number) + 1

    def remove(self, tenant_id: str, number: str) -> None:
        left = self.calls(tenant_id, number) - 1
        if left > 0:
            self._calls[(tenant_id, number)] = left
        else:
            self._calls.pop((tenant_id, number), None)
