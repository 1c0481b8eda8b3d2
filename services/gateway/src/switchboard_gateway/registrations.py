"""Whether employees' phones are registered: asked of the call-flow service, which knows it.
Best effort: the list must not fail or wait long because of it, so one short request per list
and ``None`` (unknown) when nobody answers in time."""

from __future__ import annotations

import json
import logging

from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeout
from pydantic import ValidationError
from switchboard_contracts.devices import RegistrationsAnswer, RegistrationsRequest
from switchboard_contracts.subjects import callflow_registrations

from .bus import Bus

log = logging.getLogger(__name__)

#: How long a list waits for the call-flow service's answer, in seconds.
REGISTRATIONS_TIMEOUT = 0.5


async def registrations(bus: Bus, tenant_id: str, numbers: list[str]) -> dict[str, bool] | None:
    """Employee number -> registered for ``numbers``; None when the status is not known (no
    call-flow service answered within the deadline, or its answer was an error)."""
    if not numbers or not bus.connected:
        return None
    request = RegistrationsRequest(tenant_id=tenant_id, numbers=numbers)
    try:
        reply = await bus.broker.request(
            request.model_dump(mode="json"),
            callflow_registrations(tenant_id),
            timeout=REGISTRATIONS_TIMEOUT,
        )
        answer = RegistrationsAnswer.model_validate(json.loads(reply.body))
    except (TimeoutError, NatsTimeout, NoRespondersError):
        return None
    except (ValidationError, ValueError):
        log.warning("malformed registrations reply for tenant %s", tenant_id)
        return None
    except Exception:  # the bus went away mid-request: the status is unknown, the list is not
        log.warning("registrations query for tenant %s failed", tenant_id, exc_info=True)
        return None
    if not answer.ok or answer.result is None:
        log.warning("registrations query failed for tenant %s: %s", tenant_id, answer.error)
        return None
    if answer.result.tenant_id != tenant_id:
        log.warning("registrations reply for tenant %s named %s", tenant_id, answer.result.tenant_id)
        return None
    return answer.result.registered
