"""CE-U, cross-entropy unlearning (Yang et al. 2025, arXiv:2503.01224; OpenUnlearning's src/trainer/unlearn/ceu.py):
at each forget answer token, cross-entropy towards the model's own (detached) distribution with the true token's
logit set to -inf, so the true token is pushed to probability zero without the unbounded loss of gradient ascent.
The first answer token(s) are left out (the paper's training-settings footnote)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from unlearning.data.base import IGNORE
from unlearning.methods.base import Method, count, reject_unknown


def scored_labels(labels: torch.Tensor, ignore_first: int) -> torch.Tensor:
    """The labels CE-U scores: each answer without its first `ignore_first` tokens."""
    answer = labels != IGNORE
    return labels.masked_fill((answer.cumsum(-1) <= ignore_first) & answer, IGNORE)


def ceu_loss(logits: torch.Tensor, labels: torch.Tensor, ignore_first: int = 1, batch: dict | None = None) -> torch.Tensor:
    """OpenUnlearning's compute_batch_ceu: mean over the answer tokens after the first `ignore_first` of
    CE(logits, softmax(logits.detach() with the label's logit at -inf))."""
    logits, labels = logits[:, :-1], scored_labels(labels, ignore_first)[:, 1:]
    valid = labels != IGNORE
    x, y = logits[valid].float(), labels[valid]
    target = x.detach().clone().scatter_(-1, y.unsqueeze(-1), float("-inf")).softmax(-1)
    return F.cross_entropy(x, target, reduction="sum") / max(count(batch or {}, "ceu_targets", int(valid.sum())), 1)


class CEU(Method):
    name = "ceu"

    def __init__(self, ignore_first_n_answer_tokens: int = 1, **unknown):
        reject_unknown(self.name, unknown, ["ignore_first_n_answer_tokens"])
        n = ignore_first_n_answer_tokens
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            from unlearning.errors import UserError

            raise UserError(f"method.ignore_first_n_answer_tokens={n!r} must be a whole number >= 0")
        self.ignore_first = n

    def counts(self, batch):
        return {**super().counts(batch),
                "ceu_targets": int((scored_labels(batch["labels"], self.ignore_first)[:, 1:] != IGNORE).sum())}

    def loss(self, model, batch):
        f = batch["forget"]
        loss = ceu_loss(model(input_ids=f["input_ids"], attention_mask=f["attention_mask"]).logits, f["labels"],
                        self.ignore_first, f)
        return loss, {"forget_ceu": loss.item()}
