"""Numeric precision shared by training, decoding and scoring: bf16 autocast over fp32 master weights.

bf16 autocast pays only where the hardware multiplies bf16 natively (CUDA GPUs; x86 CPUs with
AVX512-BF16 or AMX). Elsewhere PyTorch emulates it: on an AVX2-only AMD EPYC here a 1024^2 bf16
matmul ran at 0.8 GFLOP/s against 40 in fp32, turning an 8-minute job into hours. So a bf16
request on such a CPU runs in fp32, says so once in the log, and `results.json` records the
precision that was really used (`provenance.bf16_effective`). `UNLEARNING_BF16_EMULATED=1`
forces emulated bf16 (to compare numbers with a bf16 machine bit for bit).
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


def bf16_effective(requested: bool, device_type: str) -> bool:
    """The precision actually used for a bf16 request on this device (see the module docstring)."""
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
