"""Puts PJSIP objects on Asterisk live, through ARI's dynamic configuration (sorcery memory):
no files, no reloads. Only what changed is sent."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable

from .adapters.ari import Ari, AriError
from .provisioning import Fields, PjsipObjects

log = logging.getLogger("switchboard.callflow.provisioner")
DYNAMIC = "/asterisk/config/dynamic/res_pjsip"


class Provisioner:
    def __init__(self, ari: Ari) -> None:
        self.ari = ari
        #: endpoint id -> digest of what Asterisk holds (only endpoints we put)
        self.held: dict[str, str] = {}
        self._lock = asyncio.Lock()

    async def _put(self, kind: str, object_id: str, fields: Fields) -> None:
        body = {"fields": [{"attribute": k, "value": v} for k, v in fields]}
        await self.ari.request("PUT", f"{DYNAMIC}/{kind}/{_quote(object_id)}", body=body)

    async def _delete(self, kind: str, object_id: str) -> None:
        try:
            await self.ari.request("DELETE", f"{DYNAMIC}/{kind}/{_quote(object_id)}")
        except AriError as exc:
            if exc.status != 404:
                raise

    async def _recognise(self, object_id: str) -> str | None:
        """The digest Asterisk holds for an endpoint (its accountcode), None if absent."""
        try:
            fields = await self.ari.request("GET", f"{DYNAMIC}/endpoint/{_quote(object_id)}")
        except AriError as exc:
            if exc.status == 404:
                return None
            raise
        for item in fields or []:
            if item.get("attribute") == "accountcode":
                return str(item.get("value") or "")
        return ""

    async def apply(self, objects: PjsipObjects, extra: Iterable[tuple[str, Fields]] = ()) -> bool:
        """Create or replace one endpoint (plus its AOR and auth, and ``extra`` objects such
        as a trunk's identify and registration); False when Asterisk already had it."""
        async with self._lock:
            digest = objects.digest
            if self.held.get(objects.object_id) == digest:
                return False
            held = await self._recognise(objects.object_id)
            if held == digest:
                self.held[objects.object_id] = digest
                return False
            # Asterisk 22 refuses to update an endpoint held in sorcery memory (500
            # "Allocation failed"): delete it and create it again. AORs and auths update.
            if held is not None:
                await self._delete("endpoint", objects.object_id)
            await self._put("auth", objects.object_id, objects.auth)
            await self._put("aor", objects.object_id, objects.aor)
            await self._put("endpoint", objects.object_id, objects.endpoint_fields())
            for kind, fields in extra:
                await self._delete(kind, objects.object_id)
                await self._put(kind, objects.object_id, fields)
            self.held[objects.object_id] = digest
            log.info("provisioned %s", objects.object_id)
            return True

    async def remove(self, object_id: str, extra_kinds: Iterable[str] = ()) -> None:
        async with self._lock:
            for kind in (*extra_kinds, "endpoint", "aor", "auth"):
                await self._delete(kind, object_id)
            self.held.pop(object_id, None)
            log.info("removed %s", object_id)

    async def endpoints_on_asterisk(self) -> list[str]:
        try:
            endpoints = await self.ari.request("GET", "/endpoints/PJSIP")
        except AriError as exc:
            if exc.status == 404:  # "No Endpoints found": none at all
                return []
            raise
        return [str(item["resource"]) for item in endpoints or []]

    def forget(self) -> None:
        """Asterisk restarted: it holds nothing of what we put."""
        self.held.clear()


def _quote(object_id: str) -> str:
    from urllib.parse import quote

    return quote(object_id, safe="")
