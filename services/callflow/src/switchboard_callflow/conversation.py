"""Two parties talking: one mixing bridge, until one hangs up."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .dialing import bridge_and_wait

if TYPE_CHECKING:
    from .calls import Call
    from .records import Leg
    from .service import CallService


class Conversations:
    def __init__(self, service: CallService) -> None:
        self.s = service

    async def run(self, call: Call, peer_id: str, leg: Leg) -> None:
        await bridge_and_wait(self.s.ari, self.s.events, call.channel_id, peer_id)
