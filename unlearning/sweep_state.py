"""Remembers the sweep folder of this process's multirun (set by a Hydra callback)."""

from __future__ import annotations

_SWEEP_DIR: str | None = None


def set_sweep_dir(path: str) -> None:
    global _SWEEP_DIR
    _SWEEP_DIR = path


def last_sweep_dir() -> str | None:
    return _SWEEP_DIR

