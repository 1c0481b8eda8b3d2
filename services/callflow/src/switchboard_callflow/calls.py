"""One call from the moment it enters the Stasis application: who is calling (by the calling
endpoint's tenant, never by a header), what was dialled, and where it goes (SPEC section 8)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from switchboard_contracts.cdr import Disposition
from switchboard_contracts.common import is_internal_number
from switchboard_contracts.conferences import ConferenceRoom
from switchboard_contracts.employees import Employee
from switchboard_contracts.ivr import IvrMenu

from .dialing import dial_many, hangup
from .directory import TenantConfig
from .provisioning import endpoint_id
from .records import Leg

if TYPE_CHECKING:
    from .service import CallService

log = logging.getLogger("switchboard.callflow.calls")


@dataclass
class Call:
    """The caller's side of a call and what happened to it so far."""

    channel_id: str
    tenant: TenantConfig
    leg: Leg
    from_trunk: bool = False
    answered: bool = False
    hops: int = 0
    visited: list[str] = field(default_factory=list)
    finished: bool = False

    @property
    def tenant_id(self) -> str:
        return str(self.tenant.tenant.id)


class CallRouter:
    def __init__(self, service: CallService) -> None:
        self.s = service

    # entry ---------------------------------------------------------------------------------

    async def run(self, event: dict[str, Any]) -> None:
        channel = event["channel"]
        channel_id = channel["id"]
        origin = event.get("args", ["internal"])[0] if event.get("args") else "internal"
        try:
            call = await self._identify(channel, origin)
        except Exception:
            log.exception("call %s: cannot identify the caller", channel_id)
            await hangup(self.s.ari, channel_id, "congestion")
            return
        if call is None:
            log.info("call %s from an unknown endpoint %s refused", channel_id, channel.get("name"))
            await hangup(self.s.ari, channel_id, "congestion")
            return
        dialled = str(channel.get("dialplan", {}).get("exten", ""))
        try:
            if call.from_trunk:
                target = _incoming_target(call.tenant, dialled)
                call.leg.called_number = dialled or "0"
                if target is None:
                    await self.finish(call, Disposition.FAILED, "congestion")
                    return
                await self.route(call, target)
            else:
                call.leg.called_number = dialled
                await self.route(call, dialled)
        except Exception:
            log.exception("call %s failed", channel_id)
            await self.finish(call, Disposition.FAILED, "congestion")

    async def _identify(self, channel: dict[str, Any], origin: str) -> Call | None:
        name = str(channel.get("name", ""))
        endpoint = ""
        if name.startswith("PJSIP/"):
            endpoint = name[len("PJSIP/") :].rsplit("-", 1)[0]
        else:  # a Local channel of an ARI originate: the endpoint it stands for
            endpoint = await self.s.variable(channel["id"], "SB_ORIGIN_ENDPOINT") or ""
        caller = channel.get("caller", {})
        if endpoint.startswith("trunk-"):
            tenant = self.s.directory.get(endpoint[len("trunk-") :])
            if tenant is None:
                return None
            leg = Leg(
                tenant.tenant.id,
                channel["id"],
                channel["id"],
                caller_number=str(caller.get("number", "")),
                caller_name=str(caller.get("name", "")),
                called_number="",
            )
            return Call(channel["id"], tenant, leg, from_trunk=True)
        number, _, domain = endpoint.partition("@")
        tenant = self.s.directory.by_domain(domain) if domain else None
        if tenant is None or tenant.employee(number) is None:
            return None
        employee = tenant.employee(number)
        assert employee is not None
        leg = Leg(
            tenant.tenant.id,
            channel["id"],
            channel["id"],
            caller_number=number,
            caller_name=employee.name,
            caller_account=number,
            called_number="",
        )
        return Call(channel["id"], tenant, leg)

    # routing -------------------------------------------------------------------------------

    async def route(self, call: Call, number: str) -> None:
        """Send the call to ``number`` of its tenant, or out through the trunk."""
        call.hops += 1
        if call.hops > self.s.settings.max_forward_hops or call.visited.count(number) >= 2:
            log.info("call %s: forwarding loop at %s; stopped", call.channel_id, number)
            await self.finish(call, Disposition.FAILED, "congestion")
            return
        call.visited.append(number)
        call.leg.called_number = call.leg.called_number or number
        if await self.s.features.handle(call, number):
            return
        entity = call.tenant.by_number(number) if is_internal_number(number) else None
        if isinstance(entity, Employee):
            await self.ring_employee(call, entity)
        elif isinstance(entity, IvrMenu):
            await self.s.menus.run(call, entity)
        elif isinstance(entity, ConferenceRoom):
            await self.s.conferences.join(call, entity)
        elif entity is not None:
            await self.s.queues.enter(call, entity)
        else:
            await self.dial_external(call, number)

    async def ring_employee(self, call: Call, employee: Employee) -> None:
        tenant = call.tenant.tenant
        object_id = endpoint_id(employee.number, tenant.sip_domain)
        contacts = await self.s.contacts_of(object_id)
        routing = employee.routing
        call.leg.called_account = employee.number
        call.leg.called_name = employee.name
        if not contacts:
            target = routing.unavailable_target or routing.no_answer_target
            log.info("call %s: %s not registered -> %s", call.channel_id, employee.number, target)
            await self._no_answer(call, employee, target, unavailable=True)
            return
        limit = employee.advanced.max_parallel_calls
        if limit and self.s.presence.calls(tenant.id, employee.number) >= limit:
            await self._busy(call, employee)
            return
        destinations = [f"PJSIP/{object_id}/{uri}" for uri in contacts]
        leg = self._dialled_leg(call, employee.number, employee.name, employee.number)
        self.s.presence.add(tenant.id, employee.number)
        try:
            await self.s.ari.request("POST", f"/channels/{call.channel_id}/ring")
            ringing = self.s.features.ringing_started(call, employee.number)
            dialling = asyncio.create_task(
                dial_many(
                    self.s.ari,
                    self.s.events,
                    self.s.settings.ari_app,
                    call.channel_id,
                    destinations,
                    routing.ring_time,
                    caller_name=call.leg.caller_name,
                    caller_number=call.leg.caller_number,
                )
            )
            try:
                waiting: set[asyncio.Future[Any]] = {dialling, ringing.picked}
                await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
            finally:
                self.s.features.ringing_ended(ringing)
            if ringing.picked.done() and not ringing.picked.cancelled():
                dialling.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await dialling
                picker_id, picker = ringing.picked.result()
                self.s.publish(leg.record(Disposition.NO_ANSWER))
                picked = self._dialled_leg(call, picker.number, picker.name, picker.number)
                picked.leg_id = picker_id
                await self.s.ari.request("POST", f"/channels/{picker_id}/answer")
                await self.talk(call, picker_id, picked)
                return
            result = dialling.result()
            if result.caller_gone:
                self.s.publish(leg.record(Disposition.NO_ANSWER))
                await self.finish(call, Disposition.NO_ANSWER)
                return
            if result.answered is None:
                self.s.publish(leg.record(Disposition.BUSY if result.busy else Disposition.NO_ANSWER))
                if result.busy:
                    await self._busy(call, employee)
                else:
                    await self._no_answer(call, employee, routing.no_answer_target)
                return
            leg.leg_id = result.answered.channel_id
            await self.talk(call, result.answered.channel_id, leg)
        finally:
            self.s.presence.remove(tenant.id, employee.number)

    async def talk(self, call: Call, peer_id: str, leg: Leg) -> None:
        """The caller and an answered channel talk until one hangs up."""
        if not call.answered:
            await self.s.ari.request("POST", f"/channels/{call.channel_id}/answer")
            call.answered = True
        call.leg.called_account = leg.called_account or call.leg.called_account
        call.leg.talking()
        leg.talking()
        ended = True
        try:
            ended = await self.s.conversations.run(call, peer_id, leg)
        finally:
            if not leg.published:
                leg.published = True
                self.s.publish(leg.record(Disposition.ANSWERED))
            if ended:
                await self.finish(call, Disposition.ANSWERED)

    def continued_call(self, call: Call, channel_id: str, leg: Leg) -> Call:
        """The answered party of ``leg`` going on as a call of its own (after the caller
        transferred it): same tenant and linkedid, calling as who it is."""
        new_leg = Leg(
            call.tenant_id,
            call.leg.linkedid,
            f"{channel_id}-transferred",
            caller_number=leg.called_number,
            caller_name=leg.called_name,
            caller_account=leg.called_account,
            called_number="",
        )
        new_leg.answered()
        return Call(channel_id, call.tenant, new_leg, answered=True)

    async def destinations(self, tenant: TenantConfig, number: str) -> list[str]:
        """What to ring for ``number`` directly (an employee's phones, or an external number
        through the trunk): for attended transfers."""
        employee = tenant.employee(number) if is_internal_number(number) else None
        if employee is not None:
            object_id = endpoint_id(employee.number, tenant.tenant.sip_domain)
            return [f"PJSIP/{object_id}/{uri}" for uri in await self.s.contacts_of(object_id)]
        trunk = getattr(tenant.tenant.settings, "trunk", None)
        if trunk is not None and not is_internal_number(number) and number.lstrip("+").isdigit():
            return [f"PJSIP/{trunk.dial_string(number)}@trunk-{tenant.tenant.id}"]
        return []

    def _dialled_leg(self, call: Call, called: str, name: str, account: str | None) -> Leg:
        return Leg(
            call.tenant_id,
            call.leg.linkedid,
            f"{call.channel_id}-{len(call.visited)}-{called}",
            caller_number=call.leg.caller_number,
            caller_name=call.leg.caller_name,
            caller_account=call.leg.caller_account,
            called_number=called,
            called_name=name,
            called_account=account,
            queue_number=call.leg.queue_number,
            ivr_number=call.leg.ivr_number,
            ivr_digits=call.leg.ivr_digits,
        )

    async def _busy(self, call: Call, employee: Employee) -> None:
        target = employee.routing.busy_target
        if target:
            await self.route(call, target)
        else:
            await self.finish(call, Disposition.BUSY, "busy")

    async def _no_answer(
        self, call: Call, employee: Employee, target: str | None, unavailable: bool = False
    ) -> None:
        if target:
            await self.route(call, target)
            return
        mobile = employee.advanced.mobile_dial_string or employee.mobile
        if mobile:
            await self.dial_external(call, mobile)
            return
        await self.finish(call, Disposition.FAILED if unavailable else Disposition.NO_ANSWER, "noanswer")

    async def dial_external(self, call: Call, number: str) -> None:
        trunk = getattr(call.tenant.tenant.settings, "trunk", None)
        if trunk is None or not number or not number.lstrip("+").isdigit():
            log.info("call %s: %s is not a number of the tenant and it has no trunk", call.channel_id, number)
            await self.finish(call, Disposition.FAILED, "congestion")
            return
        dialled = trunk.dial_string(number)
        destination = f"PJSIP/{dialled}@trunk-{call.tenant_id}"
        leg = self._dialled_leg(call, number, "", None)
        await self.s.ari.request("POST", f"/channels/{call.channel_id}/ring")
        caller_number = trunk.caller_id or call.leg.caller_number
        result = await dial_many(
            self.s.ari,
            self.s.events,
            self.s.settings.ari_app,
            call.channel_id,
            [destination],
            self.s.settings.external_ring_time,
            caller_name=call.leg.caller_name,
            caller_number=caller_number,
        )
        if result.answered is None:
            disposition = Disposition.BUSY if result.busy else Disposition.NO_ANSWER
            self.s.publish(leg.record(disposition))
            await self.finish(call, disposition, "busy" if result.busy else "noanswer")
            return
        leg.leg_id = result.answered.channel_id
        await self.talk(call, result.answered.channel_id, leg)

    async def finish(self, call: Call, disposition: Disposition, reason: str = "normal") -> None:
        """Hang up the caller (if still there) and publish the caller's leg, once."""
        if call.finished:
            return
        call.finished = True
        await hangup(self.s.ari, call.channel_id, reason)
        if call.answered and disposition != Disposition.ANSWERED:
            disposition = Disposition.ANSWERED
        self.s.publish(call.leg.record(disposition))


def _incoming_target(tenant: TenantConfig, did: str) -> str | None:
    incoming = getattr(tenant.tenant.settings, "incoming", None)
    if incoming is None:
        return None
    target: str | None = incoming.target_of(did)
    return target
