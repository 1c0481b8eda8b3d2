"""Star codes dialled instead of a number (SPEC section 6, per tenant settings): group pickup
(``*8``: any call ringing an employee of the tenant) and directed pickup (``*8`` plus the
number that rings)."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from switchboard_contracts.cdr import Disposition
from switchboard_contracts.employees import Employee

if TYPE_CHECKING:
    from .calls import Call
    from .service import CallService

log = logging.getLogger("switchboard.callflow.features")


@dataclass(eq=False)
class Ringing:
    """A call ringing an employee; ``picked`` gets (picker channel, picker) on a pickup."""

    call: Call
    number: str
    picked: asyncio.Future[tuple[str, Employee]] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


class Features:
    def __init__(self, service: CallService) -> None:
        self.s = service
        self.ringing: dict[str, list[Ringing]] = {}

    def ringing_started(self, call: Call, number: str) -> Ringing:
        ringing = Ringing(call, number)
        self.ringing.setdefault(call.tenant_id, []).append(ringing)
        return ringing

    def ringing_ended(self, ringing: Ringing) -> None:
        calls = self.ringing.get(ringing.call.tenant_id, [])
        if ringing in calls:
            calls.remove(ringing)

    async def handle(self, call: Call, number: str) -> bool:
        """True when ``number`` was a star code and the call was handled."""
        codes = call.tenant.tenant.settings.star_codes
        picker = call.tenant.employee(call.leg.caller_account or "") if call.leg.caller_account else None
        target: str | None
        if number == codes.group_pickup:
            target = None
        elif number.startswith(codes.directed_pickup) and number[len(codes.directed_pickup) :].isdigit():
            target = number[len(codes.directed_pickup) :]
        else:
            return False
        if picker is None:  # only an employee's phone picks up
            await self.s.router.finish(call, Disposition.FAILED, "congestion")
            return True
        candidates = [
            r for r in self.ringing.get(call.tenant_id, [])
            if not r.picked.done() and (target is None or r.number == target) and r.number != picker.number
        ]  # fmt: skip
        if not candidates:
            log.info("call %s: nothing to pick up (%s)", call.channel_id, number)
            await self.s.router.finish(call, Disposition.FAILED, "congestion")
            return True
        chosen = candidates[0]
        chosen.picked.set_result((call.channel_id, picker))
        call.finished = True  # the picked-up call's own records say who answered it
        log.info("call %s picked up %s ringing %s", call.channel_id, chosen.call.channel_id, chosen.number)
        return True
