"""Config service settings: environment only (prefix ``SB_CONFIG_``)."""

from __future__ import annotations

from pydantic import SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SB_CONFIG_", extra="ignore")

    nats_url: str = "nats://127.0.0.1:4222"
    http_host: str = "127.0.0.1"
    http_port: int = 8101
    kv_bucket: str = "sb_config"
    kv_replicas: int = 1
    #: Fernet key (urlsafe base64, 32 bytes) that encrypts SIP passwords at rest in the bucket.
    #: Empty: stored as given (still never logged).
    secret_key: SecretStr = SecretStr("")
