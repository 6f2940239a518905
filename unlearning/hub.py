"""Whether the Hugging Face hub may be reached: one reading of the environment for every loader."""

from __future__ import annotations

import os

TRUE = ("1", "true", "yes")


def offline(datasets: bool = False) -> bool:
    """HF_HUB_OFFLINE (and, for `datasets` loads, HF_DATASETS_OFFLINE) set: only local copies and caches load."""
    names = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE") if datasets else ("HF_HUB_OFFLINE",)
    return any(os.environ.get(name, "0").lower() in TRUE for name in names)
