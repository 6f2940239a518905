"""One training loop for every method (and for building the fine-tuned stages).

Forget-anchored epochs: each epoch walks the forget set once in a seeded shuffled
order, `batch_size` examples per optimiser step (the last step of an epoch takes what
is left); when the method wants a retain batch, `retain_batch_size` examples are drawn
per step from one seeded generator. Those are the global batch: the processes and the
accumulation micro-batches split it, every mean a loss takes is over the whole of it
(`Method.counts`), so the numbers do not depend on the layout. Optimiser and schedule
come from torch/transformers (`get_scheduler`; `cosine_with_min_lr` is the ORPO+CFG
paper's cosine-with-floor); LoRA from peft; bf16 autocast is a switch.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import random
import shutil
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

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
    batch_size: int = 4                  # forget examples per optimiser step, all processes and micro-batches together
    retain_batch_size: int | None = None
    grad_accum: int = 1                  # micro-batches per process and step: memory, never the numbers
    warmup_ratio: float = 0.0
    weight_decay: float = 0.0
    scheduler: str = "linear"
    scheduler_kwargs: dict = field(default_factory=dict)
    max_grad_norm: float = 1.0
    bf16: bool = False
    seed: int = 0
    log_every: int = 1
    save_every: int = 0                  # checkpoint every N optimiser steps (0 = never); resume=true continues
    gradient_checkpointing: bool = False  # recompute activations in backward: less memory, ~30% more compute
    tf32: bool = True                    # TF32 matmuls on CUDA (no effect on CPU)
    compile: bool = False                # torch.compile the model's forward
    lora: LoraSettings = field(default_factory=LoraSettings)
    eval_every: int = 0                  # evaluate every N optimiser steps during unlearning (0 = never)
    eval_each_epoch: bool = False        # and/or at the end of each epoch
    eval: dict = field(default_factory=dict)  # evaluator options for those evaluations (e.g. max_items, generate)
    select: str | None = None            # "metric:max|min": keep the weights of the best evaluation seen
    stop: str | None = None              # "metric:below|above:value|reference": end training once an evaluation crosses it

    def evaluates_during(self) -> bool:
        return self.eval_every > 0 or self.eval_each_epoch

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
        if s.save_every < 0:
            raise UserError(f"{where}.save_every={s.save_every} must be >= 0 (0 = no checkpoints)")
        if s.log_every < 1:
            raise UserError(f"{where}.log_every={s.log_every} must be >= 1")
        if s.max_steps == 0 or s.max_steps < -1:
            raise UserError(f"{where}.max_steps={s.max_steps} must be >= 1, or -1 for no cap (epochs decide)")
        for key in ("weight_decay", "max_grad_norm"):
            if getattr(s, key) < 0:
                raise UserError(f"{where}.{key}={getattr(s, key)} must be >= 0 (0 = off)")
        if s.eval_every < 0:
            raise UserError(f"{where}.eval_every={s.eval_every} must be >= 0 (0 = no evaluation during training)")
        if s.select is not None:
            metric, _, direction = str(s.select).partition(":")
            if not metric or direction not in ("max", "min"):
                raise UserError(f"{where}.select={s.select!r} must be METRIC:max or METRIC:min "
                                "(e.g. forget_Q_A_Prob:min)")
            if not s.evaluates_during():
                raise UserError(f"{where}.select={s.select} needs {where}.eval_every=N or {where}.eval_each_epoch=true: "
                                "it picks among the evaluations made during training")
        if s.stop is not None:
            from unlearning.selection import parse_stop

            parse_stop(s.stop, where)
            if not s.evaluates_during():
                raise UserError(f"{where}.stop={s.stop} needs {where}.eval_every=N or {where}.eval_each_epoch=true: it "
                                "reads the evaluations made during training")
        check_scheduler(s.scheduler, s.scheduler_kwargs, where)
        if s.lora.r < 1 or not s.lora.alpha > 0 or not 0 <= s.lora.dropout < 1:
            raise UserError(f"{where}.lora: r={s.lora.r} must be >= 1, alpha={s.lora.alpha} > 0 and "
                            f"dropout={s.lora.dropout} in [0, 1)")
        return s


def check_scheduler(name, kwargs, where: str) -> None:
    """The schedule and its extra arguments as transformers' `get_scheduler` takes them, before any model loads."""
    if name == TrainSettings.scheduler and not kwargs:
        # the default needs no check, and importing transformers' schedules pulls in peft (4 of --check's 7 s)
        return
    import inspect

    from transformers import SchedulerType
    from transformers.optimization import TYPE_TO_SCHEDULER_FUNCTION

    try:
        kind = SchedulerType(name)
    except ValueError:
        raise UserError(f"{where}.scheduler={name!r} is not one of transformers' schedules "
                        f"{[t.value for t in SchedulerType]}") from None
    from collections.abc import Mapping

    if kwargs is not None and not isinstance(kwargs, Mapping):
        raise UserError(f"{where}.scheduler_kwargs={kwargs!r} must be a mapping of the schedule's arguments")
    params = inspect.signature(TYPE_TO_SCHEDULER_FUNCTION[kind]).parameters
    fixed = {"optimizer", "num_warmup_steps", "num_training_steps", "last_epoch"}
    unknown = sorted(set(kwargs or {}) - set(params))
    if unknown and not any(p.kind == p.VAR_KEYWORD for p in params.values()):
        raise UserError(f"{where}.scheduler_kwargs: {unknown} are not arguments of the {name} schedule; it takes "
                        f"{sorted(set(params) - fixed) or 'none'}")


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


@dataclass
class Checkpoints:
    """Where and how often the loop saves its whole state, and the checkpoint it resumes from."""

    folder: Path                      # <run folder>/checkpoints (a stage: <stage>.partial/checkpoints)
    every: int = 0                    # save every N optimiser steps; 0 = never
    resume_from: Path | None = None   # a checkpoint folder written by `save` (step-N)
    fingerprint: dict = field(default_factory=dict)  # the config that determines training, checked on resume


def train(model, method, forget: list[dict], retain: list[dict] | None, settings: TrainSettings,
          pad_id: int, logger=None, desc: str = "unlearn", wrap_lora: bool = True, distributed=None,
          device: str | None = None, checkpoints: Checkpoints | None = None, rebuild=None, on_step=None):
    """Optimise `method.loss` over forget-anchored epochs on accelerate; returns the trained model.

    Every process of a distributed launch calls this (it is a collective): every process draws the same global
    batches, takes its micro-batches of each (`micro_batches`), and accelerate syncs the gradients.
    The model comes back unwrapped; under FSDP / ZeRO-3 the full weights are gathered into `rebuild()`
    on rank 0 (the other ranks get None: they only train).
    """
    from tqdm.auto import tqdm
    from transformers import get_scheduler

    from unlearning.distributed import Distributed, ModelView

    if not forget:
        raise UserError("the forget set is empty: nothing to train on (check the dataset's split and subset options)")
    distributed = distributed or Distributed()
    device = device or model.device.type
    torch.manual_seed(settings.seed)
    if settings.lora.enabled and wrap_lora:
        model = apply_lora(model, settings.lora)
    method.trainable(model)
    speed_switches(model, settings, device)
    acc = distributed.accelerator(settings.grad_accum, device, settings.max_grad_norm)
    n, r = acc.num_processes, acc.process_index
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=settings.lr, weight_decay=settings.weight_decay)
    check_layout(settings, n)
    total = total_steps(settings, len(forget))
    scheduler = get_scheduler(settings.scheduler, optimizer, num_warmup_steps=int(settings.warmup_ratio * total),
                              num_training_steps=total, scheduler_specific_kwargs=dict(settings.scheduler_kwargs))
    # the scheduler stays unprepared: accelerate would step it once per process
    wrapped, optimizer = acc.prepare(model, optimizer)
    acc.register_for_checkpointing(scheduler)
    if distributed.sharded and getattr(method, "reference", None) is not None:
        method.reference.shard(acc, distributed.effective)  # GradDiff-KL's frozen copy, sharded like the model
    view = ModelView(wrapped) if isinstance(wrapped, torch.nn.parallel.DistributedDataParallel) else wrapped
    use_retain = bool(method.needs_retain and retain)
    steps = global_batches(forget, retain if use_retain else None, settings)
    gathered: dict = {}  # FSDP / ZeRO-3: rank 0's full copy for the evaluations during training
    stateful = {"method": method, "on_step": on_step}  # what carries state between steps (PDU's dual variable, ...)
    first = resume(acc, checkpoints, total, desc, stateful) if checkpoints and checkpoints.resume_from else 0
    for _ in range(first):  # the data position: replay the seeded draws, no compute
        next(steps)
    wrapped.train()
    t0 = time.perf_counter()
    bar = tqdm(range(first, total), desc=desc, leave=False, disable=not acc.is_main_process)
    for step in bar:
        epoch, forget_items, retain_items = next(steps)
        logs_acc: dict = {}
        # the state the step's loss used (PDU's lambda), logged beside its terms
        state = {k: float(v) for k, v in method.state_dict().items()} if hasattr(method, "state_dict") else {}
        for batch, weight in micro_batches(method, forget_items, retain_items, pad_id, n, r, settings.grad_accum):
            with acc.accumulate(wrapped):
                batch = {side: _to(b, acc.device) for side, b in batch.items()}
                with precision(view, settings.bf16):
                    loss, logs = method.loss(view, batch)
                # each micro-batch's terms are its part of the global batch's: they add up over micro-batches
                # and processes; a stand-in micro-batch (weight 0) adds nothing
                terms = _sum_over_ranks(acc, {k: weight * float(v) for k, v in {"loss": loss, **logs}.items()})
                for k, v in terms.items():
                    logs_acc[k] = logs_acc.get(k, 0.0) + v
                check_finite(step + 1, logs_acc)
                # DDP / FSDP / ZeRO average the processes' gradients and accelerate divides by the accumulation
                # steps: scaled back, the gradient is the global batch's loss's
                acc.backward(loss * (weight * n * settings.grad_accum))
                if acc.sync_gradients and settings.max_grad_norm:
                    acc.clip_grad_norm_(wrapped.parameters(), settings.max_grad_norm)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
        scheduler.step()
        logs_acc.update(state)
        if hasattr(method, "after_step"):  # between steps: e.g. PDU's dual ascent, on terms every process shares
            method.after_step(step + 1, epoch, logs_acc)
        logs_acc["lr"] = scheduler.get_last_lr()[0]
        bar.set_postfix(loss=f"{logs_acc['loss']:.3f}")
        if logger is not None and ((step + 1) % settings.log_every == 0 or step + 1 == total):
            logger.log({f"{desc}/{k}": v for k, v in logs_acc.items()}, step=step + 1)
        stop = False
        if on_step is not None:  # evaluation during training (every process: split between them, or rank 0 alone)
            view_model = eval_view(acc, wrapped, distributed, settings, rebuild, gathered)
            stop = bool(on_step(step + 1, total, view_model))  # True: its stop rule says enough
            wrapped.train()
        if checkpoints and checkpoints.every and (step + 1) % checkpoints.every == 0 and step + 1 < total and not stop:
            save(acc, checkpoints, step + 1, stateful)
        _fault_injection(step + 1)
        if stop:
            log.info("%s: stopped after step %d of %d (trainer.stop)", desc, step + 1, total)
            break
    log.info("%s: %d steps in %.1f s", desc, total - first, time.perf_counter() - t0)
    return finish(acc, wrapped, distributed, settings, rebuild)


def steps_per_epoch(settings: TrainSettings, n_forget: int) -> int:
    """Optimiser steps in one pass over the forget set: one per `batch_size` examples, the last one shorter."""
    return math.ceil(n_forget / settings.batch_size)


def total_steps(settings: TrainSettings, n_forget: int) -> int:
    """Optimiser steps of a run: forget-anchored epochs of the global batch, capped by max_steps (a fractional
    epoch count rounds up to whole steps)."""
    total = math.ceil(settings.epochs * steps_per_epoch(settings, n_forget))
    if settings.max_steps > 0:
        total = min(total, settings.max_steps) if settings.epochs > 0 else settings.max_steps
    return max(total, 1)


def check_layout(settings: TrainSettings, processes: int, where: str = "trainer") -> None:
    """The global batches split evenly into `processes` x `grad_accum` micro-batches (one line if not)."""
    parts = processes * settings.grad_accum
    for key in ("batch_size", "retain_batch_size"):
        value = getattr(settings, key)
        if value is not None and value % parts:
            raise UserError(f"{where}.{key}={value} is the batch of one optimiser step, which {processes} process(es) "
                            f"x {where}.grad_accum={settings.grad_accum} micro-batches do not divide: use a multiple of "
                            f"{parts}, or another grad_accum"
                            + (" (`+model.finetune.grad_accum=N`)" if where == "model.finetune" else ""))


def global_batches(forget: list[dict], retain: list[dict] | None, settings: TrainSettings):
    """(epoch, forget examples, retain examples) of each optimiser step, the same in every process: each epoch
    walks the forget set once in a seeded order, `batch_size` at a time (the last step takes what is left); the
    retain examples are drawn for each step from one seeded generator."""
    order_rng = random.Random(settings.seed)
    retain_rng = random.Random(settings.seed * 1000003 + 7919)
    retain_bs = settings.retain_batch_size or settings.batch_size
    epoch = 0
    while True:
        order = list(range(len(forget)))
        order_rng.shuffle(order)
        for i in range(0, len(order), settings.batch_size):
            drawn = retain_rng.sample(retain, min(retain_bs, len(retain))) if retain else None
            yield epoch, [forget[j] for j in order[i : i + settings.batch_size]], drawn
        epoch += 1


def split(items: list, parts: int) -> list[list]:
    """`items` in `parts` contiguous runs whose sizes differ by at most one (the first ones longer)."""
    size, extra = divmod(len(items), parts)
    out, start = [], 0
    for i in range(parts):
        end = start + size + (i < extra)
        out.append(items[start:end])
        start = end
    return out


def micro_batches(method, forget_items: list[dict], retain_items: list[dict] | None, pad_id: int, processes: int,
                  rank: int, grad_accum: int):
    """This process's `grad_accum` micro-batches of one global batch, each as (batch, weight).

    Micro-batch m of process r is part r * grad_accum + m of each side's examples; every part is padded to the
    global batch's width and carries the global batch's counts, so that the means the loss takes are the global
    batch's. A short last step of an epoch may leave a process fewer parts than micro-batches: it then repeats its
    first part (or the step's) with weight 0, so that every process still joins every gradient sync."""
    sides = {"forget": forget_items, **({"retain": retain_items} if retain_items else {})}
    whole = {side: collate(items, pad_id) for side, items in sides.items()}
    widths = {side: {k: v.shape[1] for k, v in b.items() if k.endswith(("input_ids", "labels"))}
              for side, b in whole.items()}
    counts = {side: method.counts(b) for side, b in whole.items()}
    used = min(processes * grad_accum, *(len(items) for items in sides.values()))
    parts = {side: split(items, used) + [[]] * (processes * grad_accum - used) for side, items in sides.items()}
    for m in range(grad_accum):
        i = rank * grad_accum + m
        weight = 1.0 if i < used else 0.0
        batch = {side: {**collate(p[i] or p[0], pad_id, widths=widths[side]), "counts": counts[side]}
                 for side, p in parts.items()}
        yield batch, weight


def speed_switches(model, settings: TrainSettings, device: str) -> None:
    """Activation checkpointing, TF32 matmuls (CUDA) and torch.compile, as the trainer config asks."""
    if settings.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if device.startswith("cuda"):
        torch.backends.cuda.matmul.allow_tf32 = settings.tf32
        torch.backends.cudnn.allow_tf32 = settings.tf32
    if settings.compile:
        model.compile()


def eval_view(acc, wrapped, distributed, settings: TrainSettings, rebuild, holder: dict):
    """The model an evaluation during training sees: the unwrapped model, or (FSDP / ZeRO-3) the current full
    weights gathered into one copy on rank 0 (rebuilt once, then refreshed; the other ranks get None and wait)."""
    if not distributed.sharded:
        return acc.unwrap_model(wrapped)
    state = acc.get_state_dict(wrapped)  # a collective: full weights on rank 0
    if not acc.is_main_process:
        return None
    if "model" not in holder:
        if rebuild is None:
            raise UserError(f"distributed.strategy={distributed.effective} needs the run to say how to rebuild the model")
        copy_ = rebuild()
        holder["model"] = (apply_lora(copy_, settings.lora) if settings.lora.enabled else copy_).to(acc.device)
    holder["model"].load_state_dict(state)
    return holder["model"].eval()


def finish(acc, wrapped, distributed, settings: TrainSettings, rebuild):
    """The trained model as a plain module: unwrapped, or (FSDP / ZeRO-3) gathered into a fresh copy on rank 0."""
    if not distributed.sharded:
        model = acc.unwrap_model(wrapped)
        model.eval()
        return model
    state = acc.get_state_dict(wrapped)  # a collective: full weights on rank 0
    if not acc.is_main_process:
        return None
    if rebuild is None:
        raise UserError(f"distributed.strategy={distributed.effective} needs the run to say how to rebuild the model")
    model = rebuild()
    if settings.lora.enabled:
        model = apply_lora(model, settings.lora)
    model.load_state_dict(state)
    model.eval()
    return model


def _sum_over_ranks(acc, terms: dict) -> dict:
    """The processes' parts of the loss terms added up."""
    if acc.num_processes == 1:
        return terms
    keys = sorted(terms)
    t = acc.reduce(torch.tensor([terms[k] for k in keys], dtype=torch.float64, device=acc.device), "sum")
    return dict(zip(keys, t.tolist()))


def save(acc, checkpoints: Checkpoints, step: int, stateful: dict | None = None) -> Path:
    """The loop's whole state (model, optimizer, scheduler, RNGs, and the `state_dict` of the method and the
    evaluation during training) into step-N, atomically: tmp folder, then rename."""
    from unlearning.distributed import broadcast, wait
    from unlearning.results import write_json

    folder = checkpoints.folder / f"step-{step}"
    tmp = checkpoints.folder / f".step-{step}.tmp"
    if acc.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    tmp = Path(broadcast(str(tmp)))
    wait()
    acc.save_state(str(tmp))  # every rank: its RNG state; rank 0 (or every shard holder) the rest
    wait()
    if acc.is_main_process:
        torch.save({k: v.state_dict() for k, v in (stateful or {}).items() if hasattr(v, "state_dict")},
                   tmp / "loop_state.pt")
        write_json(tmp / "loop.json", {"step": step, "fingerprint": checkpoints.fingerprint})
        shutil.rmtree(folder, ignore_errors=True)
        os.replace(tmp, folder)
        for old in checkpoints.folder.glob("step-*"):  # the newest complete checkpoint is all a resume needs
            if old != folder and old.is_dir():
                shutil.rmtree(old, ignore_errors=True)
        log.info("checkpoint: %s", folder)
    wait()
    return folder


def resume(acc, checkpoints: Checkpoints, total: int, desc: str, stateful: dict | None = None) -> int:
    """Load a checkpoint's state into the prepared objects (and the method / evaluation-during-training state);
    returns the step it ends at."""
    path = Path(checkpoints.resume_from)
    step = int(json.loads((path / "loop.json").read_text())["step"])
    if step >= total:
        raise UserError(f"checkpoint {path} is at step {step}, but this run trains for {total} steps")
    acc.load_state(str(path))
    # mmap: a process that drops what it loads (DDP ranks > 0 drop the selection's best weights) never reads it in
    saved = (torch.load(path / "loop_state.pt", weights_only=True, mmap=True) if (path / "loop_state.pt").is_file()
             else {})
    for key, obj in (stateful or {}).items():
        if key in saved and hasattr(obj, "load_state_dict"):
            obj.load_state_dict(saved[key])
    log.info("%s: resumed from %s (step %d of %d)", desc, path, step, total)
    return step


def latest_checkpoint(folder: Path) -> Path | None:
    """The newest complete checkpoint in a checkpoints folder (a folder still named .tmp was never finished)."""
    done = [p for p in Path(folder).glob("step-*") if (p / "loop.json").is_file()]
    return max(done, key=lambda p: int(p.name.split("-")[1]), default=None)


def _fault_injection(step: int) -> None:
    # for the kill -9 / resume test: the process kills itself hard after this step, as a crash would
    if os.environ.get("UNLEARNING_FAULT_KILL_AFTER_STEP") == str(step):
        os.kill(os.getpid(), signal.SIGKILL)


def check_finite(step: int, terms: dict) -> None:
    """Stop before a NaN/inf loss term reaches the weights (the total first, then the term that caused it)."""
    bad = [(k, float(v)) for k, v in terms.items() if not math.isfinite(float(v))]
    if bad:
        term, value = next(((k, v) for k, v in bad if k != "loss"), bad[0])
        raise Diverged(step, term, value)


def _to(batch: dict, device) -> dict:
    return {k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in batch.items()}
