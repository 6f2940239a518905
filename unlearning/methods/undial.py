"""UNDIAL, self-distillation with adjusted logits (Dong et al. 2025, "UNDIAL: Self-Distillation with Adjusted Logits
for Robust Unlearning in Large Language Models"; OpenUnlearning's src/trainer/unlearn/undial.py): at each forget answer
token, cross-entropy towards the frozen original model's distribution with the true token's logit lowered by beta.

Differs from OpenUnlearning's compute_undial_loss in one place, on purpose: the loss is averaged over answer tokens
only. OU averages over every position of the batch, and at prompt and padding positions (label -100) its
`mask[..., labels]` writes at vocabulary index -100, i.e. lowers the logit of the 100th-from-last token: a bug, not
a definition. The original model is the same model with LoRA adapters off, or one frozen copy (`Reference`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from unlearning.data.base import IGNORE
from unlearning.methods.base import Method, count, reject_unknown, require_coefficients, require_positive
from unlearning.methods.reference import Reference


def undial_loss(logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor, beta: float,
                batch: dict | None = None) -> torch.Tensor:
    """Mean over answer tokens of CE(student, softmax(teacher - beta * onehot(label)))."""
    logits, teacher_logits, labels = logits[:, :-1], teacher_logits[:, :-1], labels[:, 1:]
    valid = labels != IGNORE
    x, t, y = logits[valid].float(), teacher_logits[valid].float(), labels[valid]
    target = (t - beta * F.one_hot(y, t.shape[-1]).to(t.dtype)).softmax(-1)
    return F.cross_entropy(x, target, reduction="sum") / max(count(batch or {}, "targets", int(valid.sum())), 1)


class UNDIAL(Method):
    name = "undial"

    def __init__(self, beta: float = 10.0, forget_weight: float = 1.0, retain_weight: float = 0.0, **unknown):
        reject_unknown(self.name, unknown, ["beta", "forget_weight", "retain_weight"])
        require_positive(self.name, "beta", beta)
        require_coefficients(self.name, forget_weight=forget_weight, retain_weight=retain_weight)
        self.beta, self.forget_weight, self.retain_weight = float(beta), float(forget_weight), float(retain_weight)
        self.needs_retain = self.retain_weight > 0
        self.reference = None

    def prepare(self, model, tokenizer, forget, retain, ctx):
        self.reference = Reference(model, ctx)
        return forget

    def loss(self, model, batch):
        f = batch["forget"]
        logits = model(input_ids=f["input_ids"], attention_mask=f["attention_mask"]).logits
        with torch.no_grad(), self.reference(model) as ref:
            teacher = ref(input_ids=f["input_ids"], attention_mask=f["attention_mask"]).logits
        forget = undial_loss(logits, teacher, f["labels"], self.beta, f)
        return self.with_retain_nll(model, batch, self.forget_weight * forget, {"forget_undial": forget.item()})
