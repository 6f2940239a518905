"""Numeric precision shared by training, decoding and scoring: bf16 autocast over fp32 master weights.

bf16 autocast pays only where the hardware multiplies bf16 natively (CUDA GPUs; x86 CPUs with
AVX512-BF16 or AMX). Elsewhere PyTorch emulates it: on an AVX2-only AMD EPYC here a 1024^2 bf16
matmul ran at 0.8 GFLOP/s against 40 in fp32, turning an 8-minute job into hours. So a bf16
request on such a CPU runs in fp32, says so once in the log, and `results.json` records the
precision that was really used (`provenance.bf16_effective`). `UNLEARNING_BF16_EMULATED=1`
forces emulated bf16 (to compare numbers with a bf16 machine bit for bit).
`auto` (the default of `trainer.bf16` and `generation.bf16`) is the fast choice where it is safe: bf16 on
a CUDA GPU (where native), fp32 on every CPU (CPU numbers stay exact and comparable).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os

import torch

log = logging.getLogger(__name__)


@functools.lru_cache(maxsize=None)
def native_bf16(device_type: str) -> bool:
    """Whether bf16 matrix multiplies run natively (fast) on this device type."""
    if device_type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device_type != "cpu":
        return False
    capability = str(torch.backends.cpu.get_cpu_capability()).upper()
    if "AMX" in capability or "BF16" in capability:
        return True
    try:  # get_cpu_capability says AVX512 for both; the kernel flags say whether bf16 is among them
        flags = open("/proc/cpuinfo", encoding="utf-8").read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


BF16_KEYS = ("trainer.bf16", "model.finetune.bf16", "generation.bf16", "dataset.replacement.bf16")


def auto_bf16(device_type: str) -> bool:
    """What `bf16: auto` asks for on this device: bf16 on a CUDA GPU, fp32 elsewhere. Decided without
    touching the GPU (a capability query would open a CUDA context on GPU 0 in every process of a
    launch); a GPU without native bf16 (pre-Ampere) then runs fp32, as any bf16 request does there."""
    return device_type.startswith("cuda")


def device_kind(device: str) -> str:
    """cuda or cpu for a `device=` setting (auto | cpu | cuda | cuda:N), without touching the GPU."""
    device = str(device)
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device.split(":")[0]


def resolve_auto(cfg, device_type: str) -> None:
    """Replace every `bf16: auto` of the run's config by true/false for `device_type` (in place), so that
    stage keys, checkpoints and results.json record the precision that was chosen; refuse other strings."""
    from omegaconf import OmegaConf, open_dict

    from unlearning.errors import UserError

    if OmegaConf.select(cfg, "model.dtype", default=None) == "auto":  # bf16 weights on a CUDA GPU, fp32 on CPU
        with open_dict(cfg):
            OmegaConf.update(cfg, "model.dtype", "bfloat16" if device_type.startswith("cuda") else "float32", merge=False)
    for key in BF16_KEYS:
        value = OmegaConf.select(cfg, key, default=None)
        if value is None or isinstance(value, bool):
            continue
        if value != "auto":
            raise UserError(f"{key}={value!r} must be true, false or auto (auto = bf16 on a CUDA GPU, fp32 on "
                            "CPU)")
        with open_dict(cfg):
            OmegaConf.update(cfg, key, auto_bf16(device_type), merge=False)


def bf16_effective(requested, device_type: str) -> bool:
    """The precision actually used for a bf16 request (true, false or "auto") on this device (module docstring)."""
    if requested == "auto":
        requested = auto_bf16(device_type)
    if not requested:
        return False
    if native_bf16(device_type) or os.environ.get("UNLEARNING_BF16_EMULATED") == "1":
        return True
    _warn_once(device_type)
    return False


@functools.lru_cache(maxsize=None)
def _warn_once(device_type: str) -> None:
    log.warning("bf16 was asked for, but this %s has no native bf16 (emulated bf16 is ~50x slower here); running in "
                "fp32 instead (set UNLEARNING_BF16_EMULATED=1 to force bf16)", device_type)


def precision(model, bf16: bool):
    """bf16 autocast with fp32 master weights where bf16 is native; fp32 otherwise."""
    if not bf16_effective(bf16, model.device.type):
        return contextlib.nullcontext()
    return torch.autocast(device_type=model.device.type, dtype=torch.bfloat16)
