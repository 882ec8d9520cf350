"""What the API reads from a client's headers about its SDK, so that intake never sees them.

pasqal-cloud up to 0.22 (with pulser-pasqal) sends `runs: 1` on an emulator meaning
"unset": the API says so with a flag (`Caller.sends_placeholder_runs`) and intake lets the
batch's configuration decide.
"""

from __future__ import annotations

import re

_LEGACY_SDK = re.compile(r"PasqalCloudSDK/0\.(\d+)")


def sends_placeholder_runs(user_agent: str) -> bool:
    """True for pasqal-cloud up to 0.22, from its User-Agent."""
    m = _LEGACY_SDK.search(user_agent)
    return m is not None and int(m.group(1)) <= 22
