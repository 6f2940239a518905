"""Model subtraction, the optional pre-step of Smirnov 2024: theta = theta_base - alpha (theta_target - theta_base).

The fine-tuning delta (target minus base) is negated and scaled (task-vector negation,
Ilharco et al. 2023); alpha = 0.5 by default because the paper found alpha = 1 breaks
the model. Weights come from safetensors folders (HF format) or from loaded models.
Written by hand: the per-tensor arithmetic and the architecture check (a few lines; no
library applies a negated task vector to an in-memory model with a clear mismatch error).

Library use: `subtract(target_model, base, alpha)` changes the target in place.
Command line: `python -m unlearning.subtraction --base DIR --target DIR --out DIR [--scale 0.5]`
writes the subtracted model (with the target's config and tokenizer files) atomically.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
from pathlib import Path

import torch

from unlearning.errors import UserError


def _check_alpha(alpha, key: str) -> float:
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not math.isfinite(alpha) or alpha <= 0:
        raise UserError(f"{key}={alpha!r} must be a number > 0 (the paper uses 0.5; 1.0 broke its model)")
    return float(alpha)


def read_weights(folder: str | Path, key: str = "subtraction.base_path") -> dict[str, torch.Tensor]:
    """All tensors of an HF safetensors folder (single file or shards)."""
    from safetensors.torch import load_file

    folder = Path(folder).expanduser()
    files = sorted(folder.glob("*.safetensors")) if folder.is_dir() else []
    if not files:
        raise UserError(f"{key}={str(folder)!r} holds no *.safetensors files; give an HF-format model folder")
    weights: dict[str, torch.Tensor] = {}
    for f in files:
        weights.update(load_file(str(f)))
    return weights


def _model_type(folder: Path) -> str | None:
    cfg = folder / "config.json"
    return json.loads(cfg.read_text()).get("model_type") if cfg.is_file() else None


@torch.no_grad()
def subtract(target, base, alpha: float = 0.5, key: str = "subtraction") -> object:
    """In place on `target` (a torch module): p <- b - alpha (p - b) for every parameter.

    `base`: a folder (safetensors), a module or a state dict with the same architecture.
    """
    alpha = _check_alpha(alpha, f"{key}.scale")
    if isinstance(base, (str, Path)):
        base_type = _model_type(Path(base).expanduser())
        target_type = getattr(getattr(target, "config", None), "model_type", None)
        if base_type and target_type and base_type != target_type:
            raise UserError(f"{key}.base_path={str(base)!r} is a {base_type} model but the target is {target_type}; "
                            "subtraction needs the target's own base model")
        base_sd = read_weights(base, f"{key}.base_path")
    elif isinstance(base, dict):
        base_sd = base
    else:
        base_sd = base.state_dict()
    for name, p in target.named_parameters():   # tied weights appear once
        b = base_sd.get(name)
        if b is None:
            raise UserError(f"{key}: the base model has no tensor {name!r} that the target has; "
                            "the two models differ in architecture (give the target's own base model)")
        if tuple(b.shape) != tuple(p.shape):
            raise UserError(f"{key}: tensor {name!r} is {tuple(b.shape)} in the base but {tuple(p.shape)} in the target; "
                            "the two models differ in architecture (give the target's own base model)")
        b = b.to(device=p.device, dtype=torch.float32)
        # Smirnov 2024, sec. 3 (model subtraction): theta = theta_base - alpha (theta_target - theta_base).
        p.copy_((b - alpha * (p.float() - b)).to(p.dtype))
    return target


def subtract_folders(base: str | Path, target: str | Path, out: str | Path, alpha: float = 0.5) -> Path:
    """Write base - alpha (target - base) as an HF folder (target's config and tokenizer), atomically."""
    from transformers import AutoModelForCausalLM

    target, out = Path(target).expanduser(), Path(out).expanduser()
    if not (target / "config.json").is_file():
        raise UserError(f"--target {str(target)!r} holds no config.json; give an HF-format model folder")
    _check_alpha(alpha, "subtraction.scale")
    read_weights(base, "--base")  # fail on a bad base folder before loading the target
    model = AutoModelForCausalLM.from_pretrained(str(target), dtype=torch.float32)
    subtract(model, base, alpha, key="subtraction")
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    for f in target.iterdir():  # tokenizer, chat template...: the target's, unchanged
        if f.is_file() and not (tmp / f.name).exists() and not f.name.endswith((".safetensors", ".index.json")):
            shutil.copy2(f, tmp / f.name)
    if out.exists():
        shutil.rmtree(out)
    os.replace(tmp, out)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m unlearning.subtraction", description=__doc__.splitlines()[0])
    ap.add_argument("--base", required=True, help="the base (pre-fine-tuning) model folder")
    ap.add_argument("--target", required=True, help="the fine-tuned model folder")
    ap.add_argument("--out", required=True, help="where to write the subtracted model")
    ap.add_argument("--scale", type=float, default=0.5, help="the paper's alpha")
    args = ap.parse_args(argv)
    try:
        print(subtract_folders(args.base, args.target, args.out, args.scale))
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return UserError.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
