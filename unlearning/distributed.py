"""The run's processes, on accelerate: the `distributed` config group and the rank-0 rules.

accelerate does all of the distribution (the process group from the launcher's environment,
DDP / FSDP / DeepSpeed wrapping, gradient sync, gathering, state save/load); this module only
turns `conf/distributed/*.yaml` into accelerate's own plugins, refuses configs that cannot
work before any weights load, and names the few rules the rest of the code follows:
every process trains (a collective), evaluation is split between the processes that hold the
whole model (`eval_share`), and only rank 0 writes.
Written by hand: `ModelView` (DDP, unlike FSDP and DeepSpeed, does not forward attribute
access to the wrapped model, and methods read `model.device`, `disable_adapter`, layers).
"""

from __future__ import annotations

import contextlib
import contextvars
import datetime
import importlib.util
import os

from unlearning.errors import UserError, reject_unknown

STRATEGIES = ("auto", "single", "ddp", "fsdp", "deepspeed")
SHARDED = ("fsdp", "deepspeed")


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def is_main() -> bool:
    return rank() == 0


def timeout() -> datetime.timedelta:
    # ranks wait at collectives while rank 0 evaluates alone; NCCL's default 10 min would kill a 7B evaluation
    return datetime.timedelta(minutes=float(os.environ.get("UNLEARNING_DIST_TIMEOUT_MIN", "180")))


def _state():
    """accelerate's process state; the first call (under a multi-process launch) creates the process group."""
    import torch
    from accelerate import PartialState

    # accelerate starts a CPU process group (gloo) only when told cpu=True
    return PartialState(cpu=not torch.cuda.is_available(), timeout=timeout())


def wait() -> None:
    """Barrier across processes (nothing in a single process)."""
    if world_size() > 1:
        _state().wait_for_everyone()


def shutdown() -> None:
    """End of a successful multi-process run: a barrier, then the process group closed.

    Without it each process tears its gloo sockets down at interpreter exit on its own; a process that
    closes first can reset a connection the other is still reading, and that one dies in gloo's
    background thread (SIGABRT, no Python traceback). Only on success: after an error the others may
    never reach the barrier (torchrun stops them)."""
    import torch.distributed as dist

    if world_size() > 1 and dist.is_initialized():
        state = _state()
        state.wait_for_everyone()
        state.destroy_process_group()


def broadcast(obj, src: int = 0):
    """`obj` as rank `src` has it, on every rank (a picklable object; itself in a single process)."""
    if world_size() == 1:
        return obj
    import torch.distributed as dist

    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def all_gather(obj) -> list:
    """Every process's `obj` (picklable), in rank order, on every process ([obj] in a single process)."""
    if world_size() == 1:
        return [obj]
    import torch.distributed as dist

    _state()  # the process group exists from here on
    parts = [None] * world_size()
    dist.all_gather_object(parts, obj)
    return parts


# Set while one process evaluates alone (`on_main`): the evaluation engine must not wait for the others then.
_ALONE = contextvars.ContextVar("unlearning_eval_alone", default=False)


def eval_share() -> tuple[int, int]:
    """(this process's index, processes) among those sharing the evaluation work; (0, 1) when it runs alone."""
    return (0, 1) if _ALONE.get() else (rank(), world_size())


@contextlib.contextmanager
def alone():
    """Evaluation inside this block runs in this process only (no collectives)."""
    token = _ALONE.set(True)
    try:
        yield
    finally:
        _ALONE.reset(token)


@contextlib.contextmanager
def main_first():
    """Rank 0 runs the block first (builds, writes); the others wait, then run it (and find the result).

    Each process runs the block on its own (`alone`): the others are at a barrier, so model work inside
    (the PII replacements a model writes) must not try to share its batches with them."""
    if not is_main():
        wait()
    with alone():
        yield
    if is_main():
        wait()


def on_main(fn, *args, **kwargs):
    """Run `fn` on rank 0 only; every rank returns rank 0's result (evaluation: the others wait)."""
    if world_size() == 1:
        return fn(*args, **kwargs)
    if not is_main():
        return broadcast(None)
    with alone():
        result = fn(*args, **kwargs)
    return broadcast(result)


class ModelView:
    """A DDP-wrapped model as methods expect it: calls go through DDP (gradients sync), attributes to the model."""

    def __init__(self, wrapped):
        self.__dict__["_wrapped"] = wrapped

    def __call__(self, *args, **kwargs):
        return self._wrapped(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self._wrapped.module, name)


class MainOnly:
    """An evaluator whose `evaluate` runs on rank 0 alone; every rank gets rank 0's result (the others wait).

    For FSDP / ZeRO-3, where only rank 0 holds the whole unlearned model after training."""

    def __init__(self, inner):
        self.__dict__["_inner"] = inner

    def evaluate(self, *args, **kwargs):
        return on_main(self._inner.evaluate, *args, **kwargs)

    def guided(self):
        """The part of the evaluator guidance applies to, still on rank 0 alone."""
        return MainOnly(self._inner.guided()) if hasattr(self._inner, "guided") else self

    def __getattr__(self, name):
        return getattr(self._inner, name)


def pick_device(name: str) -> str:
    """cpu or cuda; under a multi-process launch each process takes the GPU of its local rank."""
    import torch

    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name not in ("cpu", "cuda"):
        raise UserError(f"device={name!r} is unknown; use auto, cpu or cuda")
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("device=cuda but no CUDA GPU is visible; use device=auto or device=cpu")
    if name == "cuda" and world_size() > 1:
        return f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
    return name


class Distributed:
    """`distributed=` config group: how the processes of one run share the work (accelerate plugins)."""

    def __init__(self, strategy: str = "auto", processes: int = 1, find_unused_parameters: bool = False,
                 fsdp: dict | None = None, deepspeed: dict | None = None, **unknown):
        reject_unknown("distributed", strategy, unknown,
                       ["strategy", "processes", "find_unused_parameters", "fsdp", "deepspeed"])
        if strategy not in STRATEGIES:
            raise UserError(f"distributed.strategy={strategy!r} is unknown; use one of {', '.join(STRATEGIES)}")
        if int(processes) < 1:
            raise UserError(f"distributed.processes={processes} must be >= 1 (processes, i.e. GPUs, per job)")
        self.strategy, self.processes = strategy, int(processes)
        self.find_unused_parameters = bool(find_unused_parameters)
        self.fsdp, self.deepspeed = dict(fsdp or {}), dict(deepspeed or {})

    @property
    def effective(self) -> str:
        """The strategy this launch runs: `auto` is single in one process and DDP under a multi-process launch."""
        if self.strategy == "auto":
            return "ddp" if world_size() > 1 else "single"
        return self.strategy

    @property
    def sharded(self) -> bool:
        return self.effective in SHARDED

    def check(self, submitting: bool = False) -> None:
        """Refuse what cannot work here, before any weights load. `submitting`: validated on the host that submits a
        multi-process Slurm sweep, where the launch's processes and GPUs do not exist yet (each job checks again)."""
        n = world_size()
        if self.strategy == "single" and n > 1:
            raise UserError(f"distributed=single, but this launch started {n} processes (WORLD_SIZE={n}); they would "
                            "race for one output folder: use distributed=ddp (or auto), or launch one process")
        if self.strategy in ("ddp", *SHARDED) and n == 1 and not submitting:
            raise UserError(f"distributed.strategy={self.strategy} needs a multi-process launch, but WORLD_SIZE is 1: "
                            "start it with `torchrun --nproc_per_node N -m unlearning ...` or `accelerate launch "
                            "--num_processes N -m unlearning ...`, or use distributed=auto for one process")
        if self.sharded and not submitting:
            import torch

            if not torch.cuda.is_available():  # accelerate wires FSDP and DeepSpeed on GPUs only; on CPU it would run DDP
                raise UserError(f"distributed.strategy={self.effective} needs CUDA GPUs (accelerate runs FSDP and DeepSpeed "
                                "on GPUs only; on CPU it would silently run DDP): use distributed=ddp here")
        if self.effective == "deepspeed" and importlib.util.find_spec("deepspeed") is None:
            raise UserError("distributed.strategy=deepspeed, but DeepSpeed is not installed: `pip install deepspeed` "
                            "(on a CUDA machine), or use distributed=fsdp")
        if self.effective == "fsdp":
            check_plugin("fsdp", self.fsdp)
        if self.effective == "deepspeed":
            check_plugin("deepspeed", self.deepspeed)

    def describe(self, batch_size: int, grad_accum: int) -> dict:
        """What results.json records: the strategy, the global batch (`trainer.batch_size`) and how it was split
        (processes x accumulation micro-batches of `micro_batch`), which changes no number."""
        n = world_size()
        return {"strategy": self.effective, "processes": n, "global_batch": batch_size, "grad_accum": grad_accum,
                "micro_batch": batch_size // (n * grad_accum)}

    def accelerator(self, grad_accum: int, device: str, max_grad_norm: float = 1.0):
        """A fresh `accelerate.Accelerator` for one training loop (stage fine-tune, unlearning, relearn attack)."""
        from accelerate import Accelerator
        from accelerate.state import AcceleratorState, GradientState
        from accelerate.utils import DistributedDataParallelKwargs, InitProcessGroupKwargs

        if world_size() == 1:
            # one process: nothing to keep between loops, and a loop on cpu after one on cuda must not inherit it
            AcceleratorState._reset_state(reset_partial_state=True)
            GradientState._reset_state()
        else:
            _state()
        kwargs = {"gradient_accumulation_steps": grad_accum, "cpu": device == "cpu",
                  "kwargs_handlers": [DistributedDataParallelKwargs(find_unused_parameters=self.find_unused_parameters),
                                      InitProcessGroupKwargs(timeout=timeout())]}
        if self.effective == "fsdp":
            from accelerate.utils import FullyShardedDataParallelPlugin

            kwargs["fsdp_plugin"] = FullyShardedDataParallelPlugin(**self.fsdp)
        elif self.effective == "deepspeed":
            from accelerate.utils import DeepSpeedPlugin

            kwargs["deepspeed_plugin"] = DeepSpeedPlugin(**{"gradient_accumulation_steps": grad_accum,
                                                            "gradient_clipping": max_grad_norm, **self.deepspeed})
        return Accelerator(**kwargs)


def check_plugin(key: str, given: dict) -> None:
    """`distributed.fsdp` / `.deepspeed`: accelerate's plugin built once at validation, so a bad value (an unknown
    wrap policy, a ZeRO stage of 5) is one line before any weights load, not an error at the first training loop."""
    from accelerate.utils import DeepSpeedPlugin, FullyShardedDataParallelPlugin

    plugin = FullyShardedDataParallelPlugin if key == "fsdp" else DeepSpeedPlugin
    unknown = sorted(set(given) - set(plugin.__dataclass_fields__))
    if unknown:
        raise UserError(f"distributed.{key} has unknown option(s) {unknown}: it takes the arguments of accelerate's "
                        f"{plugin.__name__} (e.g. {sorted(plugin.__dataclass_fields__)[:6]} ...)")
    version = given.get("fsdp_version")
    if key == "fsdp" and version is not None and version not in (1, 2):
        raise UserError(f"distributed.fsdp.fsdp_version={version!r} must be 1 or 2")
    stage = given.get("zero_stage")
    if key == "deepspeed" and stage is not None and stage not in (0, 1, 2, 3):
        raise UserError(f"distributed.deepspeed.zero_stage={stage!r} must be 0, 1, 2 or 3")
    try:
        plugin(**given)
    except Exception as e:  # accelerate's __post_init__ raises ValueError, KeyError, ImportError, RuntimeError, ...
        raise UserError(f"distributed.{key}: accelerate's {plugin.__name__} refuses these options ({type(e).__name__}: "
                        f"{str(e).splitlines()[0] if str(e) else e!r}); see conf/distributed/{key}.yaml") from None

