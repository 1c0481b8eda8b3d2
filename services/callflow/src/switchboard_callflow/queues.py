"""Call queues (SPEC section 2)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from switchboard_contracts.cdr import Disposition
from switchboard_contracts.queues import CallQueue

if TYPE_CHECKING:
    from .calls import Call
    from .service import CallService

log = logging.getLogger("switchboard.callflow.queues")


class Queues:
    def __init__(self, service: CallService) -> None:
        self.s = service

    async def enter(self, call: Call, queue: CallQueue) -> None:
        call.leg.queue_number = queue.number
        log.warning("call %s: queue %s: queues are not served yet", call.channel_id, queue.number)
        await self.s.router.finish(call, Disposition.FAILED, "congestion")
