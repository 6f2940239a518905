"""Remembers the sweep folder of this process's multirun (set by a Hydra callback)."""

from __future__ import annotations

_SWEEP_DIR: str | None = None


def set_sweep_dir(path: str) -> None:
    global _SWEEP_DIR
    _SWEEP_DIR = path


def last_sweep_dir() -> str | None:
    return _SWEEP_DIR


try:
    from hydra.experimental.callback import Callback
except ImportError:  # pragma: no cover
    Callback = object


class RecordSweepDir(Callback):
    """Hydra callback: remember the sweep folder so the entrypoint can count failed jobs."""

    def on_multirun_start(self, config, **kwargs) -> None:
        set_sweep_dir(str(config.hydra.sweep.dir))
