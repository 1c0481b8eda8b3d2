"""HTTP Range parsing, signed links and download names for sound playback."""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import time
import unicodedata
from datetime import UTC, datetime
from urllib.parse import quote

from switchboard_contracts.common import ErrorCode
from switchboard_contracts.sounds import (
    SoundVariant,
)

from .errors import ApiError

LINK_CONTEXT = b"switchboard-gateway sound link v1\n"
MAX_LINK_TTL = 7 * 24 * 3600
MAX_TOKEN_CHARS = 400
_TOKEN = re.compile(r"[A-Za-z0-9_-]+")


def _unsatisfiable(header: str, total: int) -> ApiError:
    return ApiError(
        416,
        "range_not_satisfiable",
        f"the range {header!r} is outside the file, which has {total} bytes",
        "Range",
        headers={"Content-Range": f"bytes */{total}"},
    )


_RANGE = re.compile(r"bytes\s*=\s*(\d*)\s*-\s*(\d*)", re.IGNORECASE)


def parse_range(header: str | None, total: int) -> tuple[int, int] | None:
    """The one byte range (first, last; inclusive) a ``Range`` header asks for, or None to send
    the whole file: no header, another unit, several ranges or a malformed one (RFC 9110 lets a
    server ignore those). Raises 416 when the range lies outside the file."""
    if not header:
        return None
    match = _RANGE.fullmatch(header.strip())
    if not match or not any(match.groups()):
        return None
    first, last = match.groups()
    if not first:  # the last n bytes
        suffix = int(last)
        if suffix == 0 or total == 0:
            raise _unsatisfiable(header, total)
        return max(0, total - suffix), total - 1
    start = int(first)
    end = int(last) if last else max(start, total - 1)
    if end < start:
        return None
    if start >= total:
        raise _unsatisfiable(header, total)
    return start, min(end, total - 1)


# --------------------------------------------------------------------------- links


class LinkSigner:
    """Short-lived links to one variant of one sound file: the token is base64url of
    ``1|tenant|id|variant|expiry`` followed by its HMAC-SHA256."""

    DIGEST = hashlib.sha256().digest_size

    def __init__(self, secret: str, operator_key: str) -> None:
        if secret:
            self._key = secret.encode()
        else:
            self._key = hmac.new(operator_key.encode(), b"switchboard sound links", hashlib.sha256).digest()

    def _mac(self, payload: bytes) -> bytes:
        return hmac.new(self._key, LINK_CONTEXT + payload, hashlib.sha256).digest()

    def sign(self, tenant_id: str, sound_id: str, variant: SoundVariant, expires: int) -> str:
        payload = f"1|{tenant_id}|{sound_id}|{variant.value}|{expires}".encode()
        return base64.urlsafe_b64encode(payload + self._mac(payload)).decode().rstrip("=")

    def verify(self, token: str, now: float | None = None) -> tuple[str, str, SoundVariant, int]:
        """(tenant, sound id, variant, expiry) of a valid token; 403 for any other."""
        invalid = ApiError(
            403,
            ErrorCode.FORBIDDEN,
            "this sound link is not valid: it was changed or is not a Switchboard link",
            "token",
        )
        if len(token) > MAX_TOKEN_CHARS or not _TOKEN.fullmatch(token):
            raise invalid
        try:
            raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        except ValueError:
            raise invalid from None
        payload, mac = raw[: -self.DIGEST], raw[-self.DIGEST :]
        if len(raw) <= self.DIGEST or not hmac.compare_digest(mac, self._mac(payload)):
            raise invalid
        try:
            version, tenant_id, sound_id, variant, expires = payload.decode().split("|")
            parsed = (tenant_id, sound_id, SoundVariant(variant), int(expires))
        except ValueError:
            raise invalid from None
        if version != "1":
            raise invalid
        if (time.time() if now is None else now) >= parsed[3]:
            when = datetime.fromtimestamp(parsed[3], UTC).isoformat()
            raise ApiError(
                403,
                ErrorCode.FORBIDDEN,
                f"this sound link expired at {when}; ask for a new one",
                "token",
            )
        return parsed


# --------------------------------------------------------------------------- download names


def _clean_name(name: str) -> str:
    cleaned = "".join(
        "_" if c in "/\\" or (unicodedata.category(c)[0] in "CZ" and c != " ") else c
        for c in unicodedata.normalize("NFC", name)
    ).strip(" .")
    return cleaned or "sound"


def content_disposition(name: str, extension: str) -> str:
    """``attachment`` with an ASCII ``filename`` for old clients and the real name, percent-encoded
    UTF-8, in ``filename*`` (RFC 6266)."""
    base = _clean_name(name)
    if base.lower().endswith("." + extension):
        base = base[: -len(extension) - 1] or "sound"
    ascii_base = unicodedata.normalize("NFKD", base).encode("ascii", "ignore").decode()
    ascii_base = re.sub(r"[^A-Za-z0-9 ._()+-]", "_", ascii_base).strip(" ._")
    if not re.search(r"[A-Za-z0-9]", ascii_base):
        ascii_base = "sound"
    full = f"{base}.{extension}"
    return f"attachment; filename=\"{ascii_base}.{extension}\"; filename*=UTF-8''{quote(full, safe='')}"


# --------------------------------------------------------------------------- routes
