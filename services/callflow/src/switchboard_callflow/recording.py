"""Recording answered calls: whether a call is recorded, and starting and stopping Asterisk's
recording of the bridge the two parties talk in. Asterisk writes ``<name>.wav`` into its
recording folder; adapters.recordings hands the file to the media service afterwards."""

from __future__ import annotations

import logging

from switchboard_contracts.employees import Employee
from switchboard_contracts.tenants import Tenant

from .adapters.ari import Ari, AriError

log = logging.getLogger("switchboard.callflow.recording")


def should_record(tenant: Tenant, *employees: Employee | None) -> bool:
    """An answered call is recorded when its tenant records every call, or when one of the
    employees on it (caller or callee; None for an outside party) has recording switched
    on."""
    if tenant.settings.record_calls:
        return True
    return any(employee is not None and employee.advanced.record_calls for employee in employees)


async def start_recording(ari: Ari, bridge_id: str, name: str) -> bool:
    """Record the bridge into ``<name>.wav``. False (logged) when Asterisk refused: the call
    goes on unrecorded."""
    try:
        await ari.request(
            "POST",
            f"/bridges/{bridge_id}/record",
            {"name": name, "format": "wav", "ifExists": "overwrite", "beep": False, "terminateOn": "none"},
        )
    except AriError as exc:
        log.warning("recording %s of bridge %s not started: %s", name, bridge_id, exc)
        return False
    except Exception as exc:  # Asterisk unreachable: the call must not fail for it
        log.warning("recording %s of bridge %s not started: %r", name, bridge_id, exc)
        return False
    return True


async def stop_recording(ari: Ari, name: str) -> None:
    """Stop a live recording; Asterisk then finishes the file. A recording that already
    ended (the bridge went away first) is fine."""
    try:
        await ari.request("POST", f"/recordings/live/{name}/stop")
    except AriError as exc:
        if exc.status != 404:
            log.warning("recording %s not stopped: %s", name, exc)
    except Exception as exc:
        log.warning("recording %s not stopped: %r", name, exc)
