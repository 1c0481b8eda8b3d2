"""Switchboard call history (cdr) service."""
