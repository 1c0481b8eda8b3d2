"""Waits until every service says it is ready, then prints where the platform is and how to
use it. Runs under honcho next to the services and then idles (honcho stops all on exit)."""

from __future__ import annotations

import os
import signal
import time
import urllib.error
import urllib.request

CHECKS = {
    "config": f"http://127.0.0.1:{os.environ['SB_CONFIG_HTTP_PORT']}/readyz",
    "cdr": f"http://127.0.0.1:{os.environ['SB_CDR_HTTP_PORT']}/readyz",
    "media": f"http://127.0.0.1:{os.environ['SB_MEDIA_HTTP_PORT']}/readyz",
    "gateway": f"http://127.0.0.1:{os.environ['SB_GATEWAY_HTTP_PORT']}/readyz",
}
# scripts/run.sh sets SB_TELEPHONY to on when it starts Asterisk and the call-flow service.
TELEPHONY = os.environ.get("SB_TELEPHONY") == "on"
if TELEPHONY:
    CHECKS["callflow"] = f"http://127.0.0.1:{os.environ['SB_CALLFLOW_HTTP_PORT']}/readyz"


def ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:  # noqa: S310 - loopback URL
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def telephony() -> str:
    if not TELEPHONY:
        return "Telephony:    off (see the line `run: telephony is off: ...` above)"
    host = os.environ.get("SB_ASTERISK_SIP_BIND") or "127.0.0.1"
    if host in ("0.0.0.0", "::", "[::]"):
        host = "<this host>"
    return (
        f"SIP:          {host}:{os.environ['SB_ASTERISK_SIP_PORT']} (udp, tcp), "
        f"{host}:{os.environ['SB_ASTERISK_TLS_PORT']} (tls); user = employee number, "
        "domain = the tenant's sip_domain"
    )


def main() -> None:
    deadline = time.monotonic() + 120
    pending = dict(CHECKS)
    while pending and time.monotonic() < deadline:
        pending = {name: url for name, url in pending.items() if not ready(url)}
        if pending:
            time.sleep(0.3)
    gateway = f"http://127.0.0.1:{os.environ['SB_GATEWAY_HTTP_PORT']}"
    if pending:
        print(f"NOT READY after 120 s: {', '.join(pending)} (see the lines above)", flush=True)
    else:
        print(
            "\n  Switchboard is up.\n"
            f"  Gateway:      {gateway}   (API docs: {gateway}/docs)\n"
            f"  Operator key: {os.environ['SB_GATEWAY_OPERATOR_KEY']}\n"
            f"  Try:          curl -H 'Authorization: Bearer <operator key>' {gateway}/v1/tenants\n"
            f"  {telephony()}\n"
            f"  Data:         {os.environ['SB_DATA_DIR']}   Stop: Ctrl-C\n",
            flush=True,
        )
    signal.pause()


if __name__ == "__main__":
    main()
