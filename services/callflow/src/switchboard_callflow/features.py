"""Star codes dialled instead of a number (SPEC section 6): pickup."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .calls import Call
    from .service import CallService


class Features:
    def __init__(self, service: CallService) -> None:
        self.s = service

    async def handle(self, call: Call, number: str) -> bool:
        """True when ``number`` was a star code and the call was handled."""
        return False
