"""Gateway settings: environment only (prefix ``SB_GATEWAY_``)."""

from __future__ import annotations

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SB_GATEWAY_", extra="ignore")

    nats_url: str = "nats://127.0.0.1:4222"
    http_host: str = "127.0.0.1"
    http_port: int = 8000
    #: The platform operator's key: manages tenants and issues tenant keys. Required.
    operator_key: SecretStr
    #: Deadline of every request to a service over the bus, in seconds.
    request_timeout: float = 3.0
    keys_bucket: str = "sb_gateway_keys"
    kv_replicas: int = 1
    #: Largest sound-file upload the gateway accepts, in bytes (larger ones get 413 before they
    #: reach the media service).
    max_upload_bytes: int = Field(default=50_000_000, gt=0)
    #: Key of the signed sound links (HMAC-SHA256). Empty: derived from the operator key, so every
    #: gateway replica with the same operator key accepts the others' links.
    link_secret: SecretStr = SecretStr("")
    #: Default lifetime of a signed sound link, in seconds.
    link_ttl: int = Field(default=3600, ge=10, le=7 * 24 * 3600)
    #: Deadline of the media service's answer to an upload (it converts the audio), in seconds.
    upload_timeout: float = Field(default=120.0, gt=0)
