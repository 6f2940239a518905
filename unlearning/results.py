"""Result files: atomic JSON writes and the run's record (versions, provenance, timings)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import tempfile
from importlib import metadata
from pathlib import Path


def _clean(obj):
    """JSON-safe: NaN/inf -> None, numpy scalars -> Python numbers."""
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if hasattr(obj, "item") and not isinstance(obj, (str, bytes)):
        try:
            obj = obj.item()
        except (ValueError, AttributeError):
            return str(obj)
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def write_json(path: str | Path, obj, indent: int = 2) -> Path:
    """Write JSON atomically: a reader sees the old file or the whole new one, never half."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o644)  # mkstemp makes 0600 files; results are meant to be read by others
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(_clean(obj), f, indent=indent)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def versions() -> dict:
    out = {}
    for pkg in ("unlearning-lab", "torch", "transformers", "trl", "peft", "datasets", "hydra-core", "wandb"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = None
    return out


def git_state(where: str | Path | None = None) -> dict | None:
    """The commit (and whether the tree had uncommitted changes) of the checkout the code runs from; None outside git."""
    where = Path(where or Path(__file__).resolve().parent)
    try:
        def git(*args):
            return subprocess.run(["git", *args], cwd=where, capture_output=True, text=True, timeout=10, check=True).stdout

        commit = git("rev-parse", "HEAD").strip()
        dirty = bool(git("status", "--porcelain", "--untracked-files=no").strip())
    except (OSError, subprocess.SubprocessError):
        return None
    return {"commit": commit, "dirty": dirty}


def provenance(cfg, device: str) -> dict:
    """What determines the numbers besides the config: threads, device, precisions, code version."""
    import torch

    return {
        "torch_threads": torch.get_num_threads(), "device": device,
        "cuda": torch.cuda.get_device_name(0) if device == "cuda" else None,
        "model_dtype": str(cfg.model.get("dtype", "float32")),
        "train_bf16_autocast": bool(cfg.trainer.get("bf16", False)),
        "generation_bf16": bool(cfg.generation.get("bf16", False)),
        "git": git_state(),
    }
