"""Call history: one search box and a date range, over the bus to the cdr service."""

import asyncio
import time
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Response
from pydantic import ValidationError
from switchboard_contracts.cdr import CallSearchPage, CallSearchRequest, parse_call_query
from switchboard_contracts.common import ErrorCode
from switchboard_contracts.subjects import Action, cdr_search, config_rpc

from ..auth import Principal
from ..errors import ApiError
from .common import Deps, TenantPath

TIMEZONE_TTL = 30.0
TIMEZONE_STALE = 3600.0


def build(deps: Deps) -> APIRouter:
    router = APIRouter(prefix="/v1/tenants/{tenant_id}/calls", tags=["call history"])
    guard = Depends(deps.tenant_guard())
    zones: dict[str, tuple[float, str]] = {}

    refreshing: dict[str, asyncio.Task[Any]] = {}

    async def fetch_timezone(tenant_id: str) -> str:
        tenant = await deps.bus.request(config_rpc(tenant_id, "tenant", Action.GET), {"tenant_id": tenant_id})
        zone = str(tenant["settings"]["timezone"])
        zones[tenant_id] = (time.monotonic(), zone)
        return zone

    async def timezone_of(tenant_id: str) -> str:
        """The tenant's time zone, cached: an entry older than TIMEZONE_TTL still answers (one
        more search) while a refresh runs in the background, so a search waits for the config
        service only the first time it sees a tenant or after TIMEZONE_STALE."""
        cached = zones.get(tenant_id)
        if cached is None or time.monotonic() - cached[0] >= TIMEZONE_STALE:
            return await fetch_timezone(tenant_id)
        if time.monotonic() - cached[0] >= TIMEZONE_TTL and tenant_id not in refreshing:
            task = asyncio.create_task(fetch_timezone(tenant_id))
            refreshing[tenant_id] = task
            task.add_done_callback(lambda done: (refreshing.pop(tenant_id, None), done.exception()))
        return cached[1]

    @router.get(
        "",
        response_model=CallSearchPage,
        summary="Search call history",
        description=(
            "`q` is the search box: empty (every call), one number (either side of any leg), two "
            "numbers separated by a space (answered calls between them, either direction), or a "
            "linkedid (its legs, whatever the dates). Dates are `YYYY-MM-DD` (whole days in the "
            "tenant's time zone, `date_to` inclusive) or ISO date-times; the default is today. "
            "Calls come newest first, grouped by linkedid with their legs; `missed` marks calls "
            "no leg answered. Pass `next_cursor` back as `cursor` for the next page."
        ),
    )
    async def search(
        tenant_id: TenantPath,
        q: Annotated[str, Query(max_length=200, description="Number, two numbers, or a linkedid")] = "",
        date_from: Annotated[str | None, Query(description="YYYY-MM-DD or ISO date-time")] = None,
        date_to: Annotated[str | None, Query(description="YYYY-MM-DD or ISO date-time")] = None,
        cursor: Annotated[str | None, Query(max_length=512)] = None,
        limit: Annotated[int, Query(ge=1, le=200)] = 50,
        principal: Principal = guard,
    ) -> Any:
        try:
            parse_call_query(q)
        except ValueError as exc:
            raise ApiError(422, ErrorCode.VALIDATION, f"q: {exc}", "q") from None
        timezone = await timezone_of(tenant_id)
        body = {"tenant_id": tenant_id, "query": q, "date_from": date_from, "date_to": date_to,
                "timezone": timezone, "cursor": cursor, "limit": limit}  # fmt: skip
        try:
            request = CallSearchRequest.model_validate(body)
        except ValidationError as exc:
            error = exc.errors()[0]
            field = str(error["loc"][0]) if error["loc"] else "date_from"
            message = str(error["msg"]).removeprefix("Value error, ")
            raise ApiError(422, ErrorCode.VALIDATION, f"{field}: {message}", field) from None
        # The page goes out as the cdr service encoded it (a CallSearchPage): validating and
        # encoding up to a thousand legs again cost milliseconds a search.
        page = await deps.bus.request_result_json(
            cdr_search(tenant_id), request.model_dump(mode="json"), service="call history"
        )
        return Response(page, media_type="application/json")

    return router
