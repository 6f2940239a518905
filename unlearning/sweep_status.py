"""The exit code of a sweep: the number of its jobs whose results.json says "failed"."""

from __future__ import annotations

import json
from pathlib import Path


def failed_jobs(sweep_dir: str | Path) -> int:
    n = 0
    for p in Path(sweep_dir).glob("*/results.json"):
        try:
            n += json.loads(p.read_text()).get("status") == "failed"
        except (OSError, json.JSONDecodeError):
            n += 1
    return n


def failed_jobs_from_argv() -> int:
    """Failed jobs of the sweep this process just ran (Hydra records its folder in the callback)."""
    from unlearning import sweep_state

    d = sweep_state.last_sweep_dir()
    return min(failed_jobs(d), 255) if d else 0
