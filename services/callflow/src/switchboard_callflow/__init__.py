"""Switchboard call-flow service."""
