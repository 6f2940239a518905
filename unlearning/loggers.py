"""Run loggers: `LocalLogger` (train_log.jsonl in the run folder) and, later, W&B.

Interface: `start(run_dir, cfg, tags)`, `log(metrics, step)`, `summary(metrics)`, `finish()`.
"""

from __future__ import annotations

import json
from pathlib import Path


class LocalLogger:
    def __init__(self, **_):
        self._file = None

    def start(self, run_dir: Path, cfg: dict | None = None, tags: dict | None = None) -> None:
        self._file = open(Path(run_dir) / "train_log.jsonl", "a", encoding="utf-8")

    def log(self, metrics: dict, step: int | None = None) -> None:
        if self._file:
            self._file.write(json.dumps({"step": step, **metrics}) + "\n")
            self._file.flush()

    def summary(self, metrics: dict) -> None:
        pass

    def finish(self, status: str = "ok") -> None:
        if self._file:
            self._file.close()
            self._file = None
