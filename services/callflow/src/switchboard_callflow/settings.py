"""Call-flow service settings: environment only (prefix ``SB_CALLFLOW_``)."""

from __future__ import annotations

from pydantic import SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SB_CALLFLOW_", extra="ignore")

    nats_url: str = "nats://127.0.0.1:4222"
    http_host: str = "127.0.0.1"
    http_port: int = 8104

    #: Asterisk's REST interface and its Stasis application name.
    ari_url: str = "http://127.0.0.1:8088"
    ari_user: str = "switchboard"
    ari_password: SecretStr = SecretStr("")
    ari_app: str = "switchboard"
    #: Asterisk's manager interface (registration status).
    ami_host: str = "127.0.0.1"
    ami_port: int = 5038
    ami_user: str = "switchboard"
    ami_password: SecretStr = SecretStr("")
    #: How often the registration status is read again besides Asterisk's contact events.
    registration_poll_interval: float = 5.0

    #: Seconds a queue call may last without scenario 1 (SPEC section 2: 300).
    queue_call_limit: int = 300
    #: Longest chain of forwarding targets a call may follow (loop protection).
    max_forward_hops: int = 8

    #: Seconds an external number (through the trunk) may ring.
    external_ring_time: int = 60
    #: Where the service keeps sound files for Asterisk, and the same folder as Asterisk
    #: sees it (they differ when Asterisk runs in a root or another container).
    sounds_dir: str = "data/callflow/sounds"
    asterisk_sounds_dir: str = ""
    #: Where Asterisk writes call recordings (its <spool>/recording) as this service sees
    #: it; empty: calls are not recorded.
    recordings_dir: str = ""
