"""Shared kernel: configuration, domain enums, cross-process names and message schemas.

`core` imports nothing else of atomfleet, so every process can depend on it.
"""
