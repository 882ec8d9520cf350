"""The composition root: the `atomfleet` command and the one-machine launcher.

It is the only package that may import every other one; nothing imports it.
"""
