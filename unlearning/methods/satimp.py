"""SatImp (Yang et al. 2025, "Exploring Criteria of Loss Reweighting to Enhance LLM Unlearning"; OpenUnlearning's
src/trainer/unlearn/satimp.py): gradient ascent with each forget token's loss weighted by saturation p^beta1 times
importance (1 - p)^beta2 (both detached), + retain NLL."""

from __future__ import annotations

import torch

from unlearning.methods.base import Method, count, reject_unknown, require_coefficients, require_positive, token_logps


def satimp_loss(lp: torch.Tensor, mask: torch.Tensor, beta1: float, beta2: float,
                batch: dict | None = None) -> torch.Tensor:
    """OpenUnlearning's compute_satimp_loss: mean over answer tokens of p^beta1 (1 - p)^beta2 (no gradient) * log p."""
    p = lp.detach().exp()
    return ((p ** beta1) * ((1 - p) ** beta2) * lp)[mask].sum() / max(count(batch or {}, "targets", int(mask.sum())), 1)


class SatImp(Method):
    name = "satimp"

    def __init__(self, beta1: float = 5.0, beta2: float = 1.0, forget_weight: float = 0.1, retain_weight: float = 1.0,
                 **unknown):
        reject_unknown(self.name, unknown, ["beta1", "beta2", "forget_weight", "retain_weight"])
        require_positive(self.name, "beta1", beta1)
        require_positive(self.name, "beta2", beta2)
        require_coefficients(self.name, forget_weight=forget_weight, retain_weight=retain_weight)
        self.beta1, self.beta2 = float(beta1), float(beta2)
        self.forget_weight, self.retain_weight = float(forget_weight), float(retain_weight)
        self.needs_retain = self.retain_weight > 0

    def loss(self, model, batch):
        f = batch["forget"]
        lp, mask = token_logps(model(input_ids=f["input_ids"], attention_mask=f["attention_mask"]).logits, f["labels"])
        forget = satimp_loss(lp, mask, self.beta1, self.beta2, f)
        return self.with_retain_nll(model, batch, self.forget_weight * forget, {"forget_satimp": forget.item()})
