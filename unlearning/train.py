"""One training loop for every method (and for building the fine-tuned stages).

Forget-anchored epochs: each epoch walks the forget set once in a seeded shuffled
order; when the method wants a retain batch, one is drawn per step from a seeded
generator (offset by the data-parallel rank where there is one). Optimiser and
schedule come from torch/transformers (`get_scheduler`; `cosine_with_min_lr` is the
ORPO+CFG paper's cosine-with-floor); LoRA from peft; bf16 autocast is a switch.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import random
import time
from dataclasses import dataclass, field

import torch

from unlearning.data.base import collate
from unlearning.errors import Diverged, UserError
from unlearning.precision import precision

log = logging.getLogger(__name__)


@dataclass
class LoraSettings:
    enabled: bool = False
    r: int = 16
    alpha: int = 32
    dropout: float = 0.05
    target_modules: list[str] | str = "all-linear"


@dataclass
class TrainSettings:
    lr: float = 1e-5
    epochs: float = 1
    max_steps: int = -1
    batch_size: int = 4
    retain_batch_size: int | None = None
    grad_accum: int = 1
    warmup_ratio: float = 0.0
    weight_decay: float = 0.0
    scheduler: str = "linear"
    scheduler_kwargs: dict = field(default_factory=dict)
    max_grad_norm: float = 1.0
    bf16: bool = False
    seed: int = 0
    log_every: int = 1
    lora: LoraSettings = field(default_factory=LoraSettings)

    @classmethod
    def from_cfg(cls, cfg, where: str = "trainer") -> "TrainSettings":
        d = dict(cfg)
        lora_d = dict(d.pop("lora", {}) or {})
        unknown = set(lora_d) - set(LoraSettings.__dataclass_fields__)
        if unknown:
            raise UserError(f"unknown {where}.lora option(s) {sorted(unknown)}; known: "
                            f"{sorted(LoraSettings.__dataclass_fields__)}")
        known = set(cls.__dataclass_fields__)
        unknown = set(d) - known
        if unknown:
            raise UserError(f"unknown {where} option(s) {sorted(unknown)}; known: {sorted(known)}")
        d = {k: _typed(f"{where}.{k}", v, cls.__dataclass_fields__[k]) for k, v in d.items()}
        lora_d = {k: _typed(f"{where}.lora.{k}", v, LoraSettings.__dataclass_fields__[k]) for k, v in lora_d.items()}
        s = cls(lora=LoraSettings(**lora_d), **d)
        if not s.lr > 0:
            raise UserError(f"{where}.lr={s.lr} must be > 0")
        for key in ("batch_size", "grad_accum"):
            if getattr(s, key) < 1:
                raise UserError(f"{where}.{key}={getattr(s, key)} must be >= 1")
        if s.retain_batch_size is not None and s.retain_batch_size < 1:
            raise UserError(f"{where}.retain_batch_size={s.retain_batch_size} must be >= 1 (or null = batch_size)")
        if not 0 <= s.warmup_ratio < 1:
            raise UserError(f"{where}.warmup_ratio={s.warmup_ratio} must be in [0, 1)")
        if s.log_every < 1:
            raise UserError(f"{where}.log_every={s.log_every} must be >= 1")
        return s


def _typed(key: str, value, f):
    """The value as the type of its field's default (the CLI gives a string for `abc`); one line naming the key if not."""
    default = f.default
    if default is None and str(f.type).startswith("int"):
        default = 0
    if value is None or default is None or default is dataclasses.MISSING or isinstance(default, (str, list, dict)):
        return value
    declared = str(f.type).split(" ")[0]
    kind = {"float": float, "int": int, "bool": bool}.get(declared, type(default))
    if kind is bool:
        if isinstance(value, bool):
            return value
        raise UserError(f"{key}={value!r} must be true or false")
    if isinstance(value, bool):
        raise UserError(f"{key}={value!r} must be a number")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise UserError(f"{key}={value!r} must be a number") from None
    if kind is int:
        if number != int(number):
            raise UserError(f"{key}={value!r} must be a whole number")
        return int(number)
    return number


def apply_lora(model, lora: LoraSettings):
    from peft import LoraConfig, get_peft_model

    targets = lora.target_modules if isinstance(lora.target_modules, str) else list(lora.target_modules)
    config = LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                        target_modules=targets, task_type="CAUSAL_LM")
    return get_peft_model(model, config)


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def train(model, method, forget: list[dict], retain: list[dict] | None, settings: TrainSettings,
          pad_id: int, logger=None, desc: str = "unlearn", wrap_lora: bool = True):
    """Optimise `method.loss` over forget-anchored epochs; returns the (possibly LoRA-wrapped) model."""
    from tqdm.auto import tqdm
    from transformers import get_scheduler

    if not forget:
        raise UserError("the forget set is empty: nothing to train on (check the dataset's split and subset options)")
    torch.manual_seed(settings.seed)
    if settings.lora.enabled and wrap_lora:
        model = apply_lora(model, settings.lora)
    method.trainable(model)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=settings.lr, weight_decay=settings.weight_decay)
    steps_per_epoch = math.ceil(len(forget) / settings.batch_size / settings.grad_accum)
    total = math.ceil(settings.epochs * steps_per_epoch)
    if settings.max_steps > 0:
        total = min(total, settings.max_steps) if settings.epochs > 0 else settings.max_steps
    total = max(total, 1)
    scheduler = get_scheduler(settings.scheduler, optimizer, num_warmup_steps=int(settings.warmup_ratio * total),
                              num_training_steps=total, scheduler_specific_kwargs=dict(settings.scheduler_kwargs))
    order_rng = random.Random(settings.seed)
    retain_rng = random.Random(settings.seed * 1000003 + 7919 * (rank() + 1))
    retain_bs = settings.retain_batch_size or settings.batch_size
    use_retain = bool(method.needs_retain and retain)

    def forget_batches():
        while True:
            order = list(range(len(forget)))
            order_rng.shuffle(order)
            for i in range(0, len(order), settings.batch_size):
                yield [forget[j] for j in order[i : i + settings.batch_size]]

    batches = forget_batches()
    model.train()
    t0 = time.perf_counter()
    bar = tqdm(range(total), desc=desc, leave=False)
    for step in bar:
        logs_acc: dict = {}
        for _ in range(settings.grad_accum):
            batch = {"forget": _to(collate(next(batches), pad_id), model)}
            if use_retain:
                batch["retain"] = _to(collate(retain_rng.sample(retain, min(retain_bs, len(retain))), pad_id), model)
            with precision(model, settings.bf16):
                loss, logs = method.loss(model, batch)
            check_finite(step + 1, {"loss": loss.item(), **logs})
            (loss / settings.grad_accum).backward()
            logs_acc["loss"] = logs_acc.get("loss", 0.0) + loss.item() / settings.grad_accum
            for k, v in logs.items():
                logs_acc[k] = logs_acc.get(k, 0.0) + float(v) / settings.grad_accum
        if settings.max_grad_norm:
            torch.nn.utils.clip_grad_norm_(params, settings.max_grad_norm)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        logs_acc["lr"] = scheduler.get_last_lr()[0]
        logs_acc["step"] = step + 1
        bar.set_postfix(loss=f"{logs_acc['loss']:.3f}")
        if logger is not None and ((step + 1) % settings.log_every == 0 or step + 1 == total):
            logger.log({f"{desc}/{k}": v for k, v in logs_acc.items() if k != "step"}, step=step + 1)
    model.eval()
    log.info("%s: %d steps in %.1f s", desc, total, time.perf_counter() - t0)
    return model


def check_finite(step: int, terms: dict) -> None:
    """Stop before a NaN/inf loss term reaches the weights (the total first, then the term that caused it)."""
    bad = [(k, float(v)) for k, v in terms.items() if not math.isfinite(float(v))]
    if bad:
        term, value = next(((k, v) for k, v in bad if k != "loss"), bad[0])
        raise Diverged(step, term, value)


def _to(batch: dict, model) -> dict:
    return {k: (v.to(model.device) if isinstance(v, torch.Tensor) else v) for k, v in batch.items()}
