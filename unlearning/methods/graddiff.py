"""Gradient difference: ascend on forget answers, descend on retain (NLL) or stay close to the reference (KL)."""

from __future__ import annotations

import torch.nn.functional as F

from unlearning.data.base import IGNORE
from unlearning.errors import UserError
from unlearning.methods.base import Method, count, nll, reject_unknown, require_coefficients
from unlearning.methods.reference import Reference

RETAIN_LOSSES = ("nll", "kl", "kl_answers")


def retain_kl_ou(logits, ref_logits, batch: dict | None = None):
    """KL(p_ref || p_theta) summed over the vocabulary, averaged over every position of the batch (prompt and padding
    included): OpenUnlearning's compute_kl_divergence (src/trainer/utils.py), from the TOFU code it descends from."""
    v = logits.shape[-1]
    lp = F.log_softmax(logits.float(), -1).reshape(-1, v)
    ref = F.log_softmax(ref_logits.float(), -1).reshape(-1, v)
    return F.kl_div(lp, ref, reduction="sum", log_target=True) / count(batch or {}, "positions", lp.shape[0])


def retain_kl(logits, ref_logits, labels, batch: dict | None = None):
    """Mean over labelled retain tokens of KL(p_theta || p_ref) over the vocabulary (padding masked): `kl_answers`."""
    mask = labels[:, 1:] != IGNORE
    lp = F.log_softmax(logits[:, :-1].float(), -1)[mask]
    ref = F.log_softmax(ref_logits[:, :-1].float(), -1)[mask]
    # kl_div(input=log q, target=log p, log_target) = sum p (log p - log q): p = model, q = ref.
    return F.kl_div(ref, lp, reduction="sum", log_target=True) / max(count(batch or {}, "targets", int(mask.sum())), 1)


class GradDiff(Method):
    """L = forget_weight * (-NLL_forget) + retain_weight * L_retain (Liu et al. 2022; TOFU's GradDiff / KL baselines)."""

    name = "graddiff"

    def __init__(self, forget_weight: float = 1.0, retain_weight: float = 1.0, retain_loss: str = "nll", **unknown):
        reject_unknown(self.name, unknown, ["forget_weight", "retain_weight", "retain_loss"])
        if retain_loss not in RETAIN_LOSSES:
            raise UserError(f"method.retain_loss={retain_loss!r} must be one of {list(RETAIN_LOSSES)} "
                            "(conf/method/graddiff.yaml)")
        require_coefficients(self.name, retain_weight=retain_weight, forget_weight=forget_weight)
        self.forget_weight, self.retain_weight, self.retain_loss = float(forget_weight), float(retain_weight), retain_loss
        self.needs_retain = self.retain_weight > 0
        self.reference = None

    def prepare(self, model, tokenizer, forget, retain, ctx):
        if self.needs_retain and self.retain_loss != "nll":
            self.reference = Reference(model, ctx)
        return forget

    def loss(self, model, batch):
        forget_nll = nll(model, batch["forget"])
        loss = -self.forget_weight * forget_nll
        logs = {"forget_nll": forget_nll.item()}
        if self.needs_retain and self.retain_loss == "nll":
            return self.with_retain_nll(model, batch, loss, logs)
        if self.needs_retain:  # kl / kl_answers: stay close to the model before unlearning on the retain batch
            r = batch["retain"]
            logits = model(input_ids=r["input_ids"], attention_mask=r["attention_mask"]).logits
            with self.reference(model) as ref:
                ref_logits = ref(input_ids=r["input_ids"], attention_mask=r["attention_mask"]).logits
            term = (retain_kl_ou(logits, ref_logits, r) if self.retain_loss == "kl"
                    else retain_kl(logits, ref_logits, r["labels"], r))
            loss = loss + self.retain_weight * term
            logs["retain_kl"] = term.item()
        return loss, logs
