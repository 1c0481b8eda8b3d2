"""Switchboard media service: tenants' sound files and call recordings."""
