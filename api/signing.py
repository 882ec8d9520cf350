"""Signed, expiring results links: the download carries no Authorization header.

Links are signed with one key and accepted under any of several (`ATOMFLEET_SECRET_KEY` lists
the new key first and the old ones after it), so that a rotation breaks no valid link.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Sequence


def sign(secret: str, job_id: str, expires: int) -> str:
    message = f"{job_id}:{expires}".encode()
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def verify(
    secrets: Sequence[str], job_id: str, expires: int, signature: str, now: float | None = None
) -> bool:
    """Whether `signature` signs `job_id` until `expires` under one of `secrets`, unexpired."""
    if (now if now is not None else time.time()) > expires or not signature.isascii():
        return False
    # Every key is tried, so that the time taken does not say which one matched.
    matches = [hmac.compare_digest(sign(s, job_id, expires), signature) for s in secrets]
    return any(matches)
