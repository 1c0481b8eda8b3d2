"""Media service settings: environment only (prefix ``SB_MEDIA_``)."""

from __future__ import annotations

from pydantic import SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SB_MEDIA_", extra="ignore")

    nats_url: str = "nats://127.0.0.1:4222"
    http_host: str = "127.0.0.1"
    http_port: int = 8103
    kv_bucket: str = "sb_media"
    #: S3 endpoint (host:port); SeaweedFS locally, MinIO in docker-compose and Kubernetes.
    s3_endpoint: str = "127.0.0.1:8333"
    s3_access_key: SecretStr = SecretStr("switchboard")
    s3_secret_key: SecretStr = SecretStr("switchboard-local-secret")
    s3_bucket: str = "switchboard-media"
    s3_secure: bool = False
    s3_region: str = "us-east-1"
    max_upload_bytes: int = 50_000_000
    max_duration_s: float = 30 * 60
    work_dir: str = ""  # temporary files; empty: the system's temp folder
