"""Dispatch policies: the dispatcher asks a policy which backlog jobs go next on a device.

One module per policy behind `base.Policy`; `strict.py` is HIGH > MEDIUM > LOW, then
first-in first-out.
"""
