"""Whether the Hugging Face hub may be reached: one reading of the environment for every loader."""

from __future__ import annotations

import os


def offline(datasets: bool = False) -> bool:
    """huggingface_hub's own rule, read now rather than at its import: HF_HUB_OFFLINE (or TRANSFORMERS_OFFLINE) set to
    1/ON/YES/TRUE; for `datasets` loads HF_DATASETS_OFFLINE too. Only local copies and caches load then."""
    from huggingface_hub.constants import _is_true

    names = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE") + (("HF_DATASETS_OFFLINE",) if datasets else ())
    return any(_is_true(os.environ.get(name)) for name in names)
