"""Gateway settings: environment only (prefix ``SB_GATEWAY_``)."""

from __future__ import annotations

from pydantic import SecretStr
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
