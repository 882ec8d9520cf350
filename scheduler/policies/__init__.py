"""Dispatch policies: the dispatcher asks a policy which backlog jobs go next on a device.

One module per policy behind `base.Policy`: `fair_share.py` (the default: levels, then
fair share across projects by weight) and `strict.py` (levels, then first in first out).
Both read the backlog as per-(level, project) queues (`backlog.py`), honour aging and the
projects' running caps.
"""

from __future__ import annotations

from core.config import Settings
from scheduler.policies.base import Policy
from scheduler.policies.fair_share import FairShare
from scheduler.policies.strict import StrictPriority
from scheduler.run_times import RunTimes


def make_policy(settings: Settings, run_times: RunTimes | None = None) -> Policy:
    if settings.policy == "strict":
        return StrictPriority(settings.aging_s)
    return FairShare(
        settings.fair_share_half_life_s, settings.aging_s, (run_times or RunTimes()).typical
    )
