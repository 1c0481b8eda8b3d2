"""Generate contracts/asyncapi.json from the services' brokers (nothing connects).

python scripts/gen_asyncapi.py          # rewrite the committed document
python scripts/gen_asyncapi.py --check  # exit 1 if the committed one differs
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from faststream.specification import AsyncAPI

ROOT = Path(__file__).resolve().parent.parent
TARGET = ROOT / "contracts" / "asyncapi.json"


def build_document() -> dict[str, Any]:
    from switchboard_callflow.main import build as build_callflow
    from switchboard_callflow.settings import Settings as CallflowSettings
    from switchboard_cdr.main import build as build_cdr
    from switchboard_cdr.settings import Settings as CdrSettings
    from switchboard_config.main import build as build_config
    from switchboard_config.settings import Settings as ConfigSettings
    from switchboard_contracts.devices import document as document_devices
    from switchboard_contracts.runtime import make_broker
    from switchboard_media.main import build as build_media
    from switchboard_media.settings import Settings as MediaSettings

    _, config_broker = build_config(ConfigSettings())
    _, media_broker = build_media(MediaSettings())
    _, cdr_broker = build_cdr(CdrSettings())
    _, callflow_broker = build_callflow(CallflowSettings())
    # The call-flow service's device subjects, declared from the contracts (it publishes the
    # events and answers the registrations query; the gateway asks).
    devices_broker = make_broker(ConfigSettings().nats_url)
    document_devices(devices_broker)
    spec = AsyncAPI(
        config_broker,
        cdr_broker,
        media_broker,
        callflow_broker,
        devices_broker,
        title="Switchboard bus",
        version="1",
        description=(
            "Subjects and messages of the Switchboard services. Events: "
            "pbx.<tenant>.config.<kind>.<created|updated|deleted> on JetStream. Requests: "
            "rpc.config.<tenant>.<kind>.<action> and rpc.cdr.<tenant>.calls.search, answered with "
            "{ok, result} or {ok: false, error}. Call records: pbx.<tenant>.call.leg.ended "
            "(stream PBX_CALL_RECORDS); rejected ones: deadletter.cdr.<tenant>. "
            "Devices: pbx.<tenant>.device.registration.changed (stream PBX_DEVICES) and "
            "rpc.callflow.<tenant>.registrations."
        ),
        schema_version="3.0.0",
    )
    document: dict[str, Any] = json.loads(spec.to_specification().to_json())
    return document


def render() -> str:
    return json.dumps(build_document(), indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def main() -> int:
    text = render()
    if "--check" in sys.argv:
        if not TARGET.exists() or TARGET.read_text() != text:
            print(f"{TARGET.relative_to(ROOT)} is out of date: run python scripts/gen_asyncapi.py")
            return 1
        return 0
    TARGET.write_text(text)
    print(f"wrote {TARGET.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
