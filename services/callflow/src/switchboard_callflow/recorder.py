"""Recording of answered calls (SPEC section 7): switchable per tenant and per employee.
Asterisk records the bridge; afterwards the file goes to the media service in the background,
and the dialled leg carries its recording id."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from .adapters.recordings import RecordingDelivery, recording_id
from .recording import should_record, start_recording, stop_recording

if TYPE_CHECKING:
    from .calls import Call
    from .conversation import Pair
    from .service import CallService

log = logging.getLogger("switchboard.callflow.recorder")


class Recorder:
    def __init__(self, service: CallService) -> None:
        self.s = service
        self.delivery: RecordingDelivery | None = None  # set by main; None: recording off
        self._live: dict[str, tuple[str, str, str, str]] = {}  # bridge -> (id, tenant, linkedid, leg)

    async def start(self, call: Call, pair: Pair) -> None:
        if self.delivery is None:
            return
        config = call.tenant
        caller = config.employee(call.leg.caller_account) if call.leg.caller_account else None
        callee = config.employee(pair.leg.called_account) if pair.leg.called_account else None
        if not should_record(config.tenant, caller, callee):
            return
        rid = recording_id()
        if await start_recording(self.s.ari, pair.bridge_id, rid):
            pair.recording = rid
            pair.leg.recording_id = rid
            self._live[pair.bridge_id] = (rid, call.tenant_id, pair.leg.linkedid, pair.leg.leg_id)

    async def stop(self, pair: Pair) -> None:
        live = self._live.pop(pair.bridge_id, None)
        if live is None or self.delivery is None:
            return
        rid, tenant_id, linkedid, leg_id = live
        await stop_recording(self.s.ari, rid)
        self.delivery.submit(tenant_id, rid, rid, linkedid, leg_id)  # in the background
