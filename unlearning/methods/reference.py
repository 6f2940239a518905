"""Reference-model statistics without a second model in memory.

The forget set is fixed, so log p_ref(y|x) of every forget (and chosen) answer is
computed once, before training, and attached to the items as a float field
(`ref_logp`, `chosen_ref_logp`); `collate` stacks it, so NPO / IdkDPO train with
one model. Methods that need the reference on fresh batches every step (GradDiff's
retain KL, RMU's frozen activations) use `Reference`: with LoRA the reference is
the same model with its adapters disabled (no copy); without LoRA it is one frozen
copy made before training, which under FSDP / ZeRO-3 the loop shards like the model it
trains (`Reference.shard`, with TRL's `prepare_fsdp` / `prepare_deepspeed`).
Written by hand: the once-only batched pass and the LoRA/copy switch (peft's
`disable_adapter` does the adapter part).
"""

from __future__ import annotations

import contextlib
import copy

import torch

from unlearning.data.base import collate
from unlearning.methods.base import sequence_logp
from unlearning.precision import precision


def is_peft(model) -> bool:
    return hasattr(model, "disable_adapter") and hasattr(model, "peft_config")


def lora_planned(model, ctx) -> bool:
    """Will the loop train LoRA adapters? (it wraps the model after `prepare`)."""
    if is_peft(model):
        return True
    try:
        return bool(ctx.cfg.trainer.lora.enabled)
    except AttributeError:
        return False


def train_bf16(ctx):
    """Score the reference in the precision the loop trains in, so log-ratios start at ~0 (true, false or "auto")."""
    try:
        return ctx.cfg.trainer.bf16
    except AttributeError:
        return False


@contextlib.contextmanager
def as_reference(model):
    """The model as it was before unlearning: adapters off for a LoRA model, else itself."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), (model.disable_adapter() if is_peft(model) else contextlib.nullcontext()):
            yield model
    finally:
        model.train(was_training)


def attach_ref_logps(model, items: list[dict], pad_id: int, prefix: str = "", batch_size: int = 8,
                     bf16: bool = False) -> list[dict]:
    """Add `{prefix}ref_logp` = log p_ref(y|x) (sum over answer tokens) to each item, in place."""
    from unlearning.distributed import all_gather, rank, world_size

    keys = (prefix + "input_ids", prefix + "labels")
    # Length-sorted batches waste little on padding; results are written back by index.
    order = sorted(range(len(items)), key=lambda i: len(items[i][keys[0]]))
    batches = [order[s : s + batch_size] for s in range(0, len(order), batch_size)]
    # Under a distributed launch each process scores every N-th batch (the same batches as one process,
    # so the same numbers) and all processes exchange them: each log-prob is computed once, N times faster.
    values = {}
    with as_reference(model) as ref:
        for idx in batches[rank() :: world_size()]:
            batch = collate([{k: items[i][k] for k in keys} for i in idx], pad_id)
            batch = {k: v.to(ref.device) for k, v in batch.items()}
            with precision(ref, bf16):
                lp, _ = sequence_logp(ref, batch, prefix)
            values.update({i: float(v) for i, v in zip(idx, lp.tolist())})
    for part in all_gather(values):
        for i, v in part.items():
            items[i][prefix + "ref_logp"] = v
    return items


class Reference:
    """Per-step reference forward passes: adapters disabled (LoRA) or one frozen copy."""

    def __init__(self, model, ctx=None):
        self.copy = None
        if not lora_planned(model, ctx):
            self.copy = copy.deepcopy(model).eval()
            self.copy.requires_grad_(False)

    def shard(self, accelerator, strategy: str) -> None:
        """Under FSDP / ZeRO-3, shard the frozen copy as the trained model is (each process holds 1/N of it)."""
        if self.copy is None:
            return
        from trl.models.utils import prepare_deepspeed, prepare_fsdp

        # TRL shards its DPO reference model the same way (ZeRO-3 inference engine / fully_shard, no optimizer)
        self.copy = (prepare_fsdp if strategy == "fsdp" else prepare_deepspeed)(self.copy, accelerator)
        self.copy.eval()

    @contextlib.contextmanager
    def __call__(self, model):
        if self.copy is not None:
            with torch.no_grad():
                yield self.copy
        else:
            with as_reference(model) as ref:
                yield ref
