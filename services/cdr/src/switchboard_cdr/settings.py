"""Call-history service settings: environment only (prefix ``SB_CDR_``)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SB_CDR_", extra="ignore")

    nats_url: str = "nats://127.0.0.1:4222"
    http_host: str = "127.0.0.1"
    http_port: int = 8102

    #: ``chdb``: embedded ClickHouse, data under ``chdb_path`` (the default); ``server``: a
    #: ClickHouse server over the native protocol (docker-compose, Kubernetes).
    backend: Literal["chdb", "server"] = "chdb"
    chdb_path: str = "data/cdr"
    #: chDB connections that only read (searches, health): that many searches run at once,
    #: and none waits behind an insert, which has a connection of its own.
    chdb_readers: int = Field(default=2, ge=1, le=16)
    clickhouse_host: str = "127.0.0.1"
    clickhouse_port: int = 9000
    clickhouse_database: str = "switchboard"
    clickhouse_user: str = "default"
    clickhouse_password: SecretStr = SecretStr("")

    #: Ingestion: a batch is written when it holds this many records, or when the oldest
    #: record in it has waited ``batch_max_wait`` seconds. Every insert writes a part per
    #: partition (month, year) in each table, which merges then rewrite: fewer, larger
    #: batches ingest faster and leave fewer parts for the searches to read.
    batch_size: int = 50_000
    batch_max_wait: float = 2.0
    #: Processes that validate and encode record batches (chDB backend; 0: a thread of the
    #: service's own process, where that work holds the GIL the event loop and searches need).
    parse_workers: int = Field(default=1, ge=0, le=8)
    #: Seconds after which the store's engine merges the parts of a partition that are all
    #: older than that into one (0: ClickHouse's ordinary merges only). Fewer parts make every
    #: search faster; each compaction rewrites a partition. Needs ClickHouse 22.10+ or chDB;
    #: an older server ignores it (health reports ``compaction``).
    compact_after: int = Field(default=6 * 3600, ge=0)
    consumer_name: str = "cdr-ingest"
    #: Call history kept per tenant, in months (whole months are deleted); 0 keeps everything.
    retention_months: int = 36
    retention_check_interval: float = 6 * 3600
