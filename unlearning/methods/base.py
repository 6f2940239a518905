"""What every method shares: the `Method` interface and the log-likelihood helpers its losses use.

A method is a loss over a batch: `batch["forget"]` always, `batch["retain"]` when
`needs_retain`, plus any per-example fields that `prepare` attached to the forget
items (reference log-probs, chosen/rejected ids). The training loop in
`unlearning/train.py` owns everything else (optimiser, schedule, LoRA, logging).

Every mean a loss takes divides by `count(side, unit, local)`: in training, the count over the optimiser step's
whole batch (every process and micro-batch, counted by the loop with `Method.counts` before the step), so that
the micro-batches' losses add up to the loss of the global batch and a config gives the same numbers on any
number of processes and any accumulation split; called on a lone batch (tests, benchmarks), the batch's own.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from unlearning.data.base import IGNORE
from unlearning.errors import UserError


def count(batch: dict, unit: str, local, prefix: str = "") -> float:
    """The denominator of a mean over the step's global batch: the loop's count of `prefix + unit` (a key of
    `Method.counts`) when the batch carries counts, else `local`, this batch's own."""
    counts = batch.get("counts")
    if counts is None:
        return local
    return counts[prefix + unit]


def rows_mean(values: torch.Tensor, batch: dict, prefix: str = "") -> torch.Tensor:
    """Mean over the global batch's sequences of one value per sequence of this batch."""
    return values.sum() / count(batch, "rows", values.shape[0], prefix)


def share(batch: dict, unit: str, local, prefix: str = "") -> float:
    """This batch's part of the global batch's count: rescales a mean a library computed over this batch alone."""
    return local / max(count(batch, unit, local, prefix), 1)


def standard_counts(batch: dict) -> dict:
    """Per ids field (prefix ""/"chosen_"/...): sequences, labelled positions, labelled positions after the causal
    shift (`targets`: the tokens an LM loss scores), attended positions and all padded positions."""
    out = {}
    for key, labels in batch.items():
        if not key.endswith("labels") or not isinstance(labels, torch.Tensor):
            continue
        prefix = key[: -len("labels")]
        out[prefix + "rows"] = labels.shape[0]
        out[prefix + "labelled"] = int((labels != IGNORE).sum())
        out[prefix + "targets"] = int((labels[:, 1:] != IGNORE).sum())
        out[prefix + "positions"] = labels.numel()
        if prefix + "attention_mask" in batch:
            out[prefix + "attended"] = int(batch[prefix + "attention_mask"].sum())
    return out


def token_logps(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token log p(label) after the causal shift, and the mask of labelled positions."""
    logits, labels = logits[:, :-1], labels[:, 1:]
    mask = labels != IGNORE
    # cross_entropy fuses log_softmax + gather (no full-vocabulary log-prob tensor kept for backward)
    lp = -F.cross_entropy(logits.float().reshape(-1, logits.size(-1)), labels.reshape(-1), ignore_index=IGNORE,
                          reduction="none").view(labels.shape)
    return lp * mask, mask


def sequence_logp(model, batch: dict, prefix: str = "") -> tuple[torch.Tensor, torch.Tensor]:
    """Sum of answer-token log-probs per sequence, log p(y|x), and the answer lengths |y|."""
    out = model(input_ids=batch[prefix + "input_ids"], attention_mask=batch[prefix + "attention_mask"])
    lp, mask = token_logps(out.logits, batch[prefix + "labels"])
    return lp.sum(-1), mask.sum(-1)


def nll(model, batch: dict, prefix: str = "") -> torch.Tensor:
    """Mean token NLL over the batch's labelled tokens (the standard LM loss)."""
    out = model(input_ids=batch[prefix + "input_ids"], attention_mask=batch[prefix + "attention_mask"])
    logits, labels = out.logits[:, :-1], batch[prefix + "labels"][:, 1:]
    total = F.cross_entropy(logits.float().reshape(-1, logits.size(-1)), labels.reshape(-1), ignore_index=IGNORE,
                            reduction="sum")
    local = int((labels != IGNORE).sum())
    return total / max(count(batch, "targets", local, prefix), 1)


class Method:
    """Base class: subclasses set `needs_retain` and implement `loss`."""

    name = "method"
    needs_retain = False
    needs_chat = False    # trains on question/answer turns (not on raw text chunks)
    needs_pairs = False   # needs a chosen and a rejected answer per forget example

    def prepare(self, model, tokenizer, forget: list[dict], retain: list[dict] | None, ctx) -> list[dict]:
        """Runs once before training; may attach per-example fields to the forget items."""
        return forget

    def trainable(self, model) -> None:
        """Optionally restrict which parameters train (RMU); default: all (or LoRA's)."""

    def loss(self, model, batch: dict) -> tuple[torch.Tensor, dict]:
        """The loss and its logged terms; each a mean whose denominator is `count(...)`, so that it adds up."""
        raise NotImplementedError

    def counts(self, batch: dict) -> dict:
        """The denominators this method's means use, counted on one side's batch (forget or retain); the loop sums
        them over the step's global batch. A method with a mean over other units adds its own keys."""
        return standard_counts(batch)

    # A method whose state changes during training (PDU's dual variable) also defines
    #   after_step(step, epochs_done, terms): called by the loop after each optimiser step with the step's logged
    #     terms (summed over micro-batches and processes: the global batch's, the same in every process);
    #   state_dict() -> dict / load_state_dict(dict): saved into every checkpoint, put back on resume.

    def with_retain_nll(self, model, batch: dict, loss: torch.Tensor, logs: dict) -> tuple[torch.Tensor, dict]:
        """`loss + retain_weight * NLL(retain)` when the retain term is on (the methods' shared retain term)."""
        if self.needs_retain:
            retain = nll(model, batch["retain"])
            loss = loss + self.retain_weight * retain
            logs["retain_nll"] = retain.item()
        return loss, logs

    def check(self, has_retain: bool) -> None:
        if self.needs_retain and not has_retain:
            raise UserError(f"method={self.name} needs a retain set, but this dataset has none; "
                            "pick a dataset with one or set method.retain_weight=0")


class FineTune(Method):
    """Plain NLL on the given examples: builds the target and retain-reference stages."""

    name = "finetune"

    def loss(self, model, batch):
        loss = nll(model, batch["forget"])
        return loss, {"nll": loss.item()}


def reject_unknown(method: str, unknown: dict, known) -> None:
    from unlearning.errors import reject_unknown as reject

    reject("method", method, unknown, known)


def require_positive(method: str, key: str, value: float) -> None:
    if not value > 0:
        raise UserError(f"method.{key}={value} must be > 0 for method={method} "
                        f"(set it in conf/method/{method}.yaml or override method.{key}=...)")


def require_coefficients(method: str, **coefficients: float) -> None:
    """Loss-term coefficients (retain_weight, forget_weight, ...) must be >= 0; 0 switches the term off."""
    for key, value in coefficients.items():
        if not value >= 0:
            raise UserError(f"method.{key}={value} must be >= 0 for method={method} "
                            f"(set it in conf/method/{method}.yaml or override method.{key}=...)")
