"""Calls for the intake sandbox's tests (importable by its processes)."""

from __future__ import annotations


def spin() -> None:
    while True:
        pass


def spin_in_c() -> None:
    """Burn CPU inside one long C call (a signal handler cannot run until it returns)."""
    import re

    re.match(r"(a+)+$", "a" * 64 + "b")


def hog() -> list[bytearray]:
    return [bytearray(10**8) for _ in range(100)]


def echo(value: int) -> int:
    return value
