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


_UMASK = os.umask(0)
os.umask(_UMASK)


def atomic_write(path: str | Path, data: str | bytes) -> Path:
    """Readers see the old file or the whole new one, never half (tmp in the same folder, then os.replace)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_UMASK)  # mkstemp makes 0600 files; results are for everyone who may read the folder
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode("utf-8") if isinstance(data, str) else data)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def write_json(path: str | Path, obj, indent: int = 2) -> Path:
    """Write JSON atomically (NaN/inf written as null)."""
    return atomic_write(path, json.dumps(_clean(obj), indent=indent))


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

    from unlearning.precision import bf16_effective

    kind = device.split(":")[0]
    return {
        "torch_threads": torch.get_num_threads(), "device": device,
        "cuda": torch.cuda.get_device_name(torch.device(device)) if kind == "cuda" else None,  # cuda:N: this rank's GPU
        "model_dtype": str(cfg.model.get("dtype", "float32")),
        "train_bf16_autocast": cfg.trainer.get("bf16", False),
        "generation_bf16": cfg.generation.get("bf16", False),
        # a bf16 request runs in fp32 where bf16 is only emulated (unlearning/precision.py)
        "bf16_effective": {"train": bf16_effective(cfg.trainer.get("bf16", False), kind),
                           "generation": bf16_effective(cfg.generation.get("bf16", False), kind)},
        "git": git_state(),
    }
