"""Call-history storage: one interface, two ClickHouse backends, one schema and one set of
queries."""

from __future__ import annotations

from .base import CallStore, StoreError

__all__ = ["CallStore", "StoreError"]
