"""WGA, weighted gradient ascent (Wang et al. 2025, "Rethinking LLM Unlearning Objectives: A Gradient Perspective
and Go Beyond"; OpenUnlearning's src/trainer/unlearn/wga.py): gradient ascent with each forget token's loss
weighted by its own (detached) probability p^beta, + retain NLL."""

from __future__ import annotations

import torch

from unlearning.methods.base import Method, count, reject_unknown, require_coefficients, require_positive, token_logps


def wga_loss(lp: torch.Tensor, mask: torch.Tensor, beta: float, batch: dict | None = None) -> torch.Tensor:
    """OpenUnlearning's compute_wga_loss: -mean over answer tokens of p^beta (no gradient) * NLL = mean(p^beta * log p)."""
    weight = lp.detach().exp() ** beta
    return (weight * lp)[mask].sum() / max(count(batch or {}, "targets", int(mask.sum())), 1)


class WGA(Method):
    name = "wga"

    def __init__(self, beta: float = 1.0, forget_weight: float = 1.0, retain_weight: float = 1.0, **unknown):
        reject_unknown(self.name, unknown, ["beta", "forget_weight", "retain_weight"])
        require_positive(self.name, "beta", beta)
        require_coefficients(self.name, forget_weight=forget_weight, retain_weight=retain_weight)
        self.beta, self.forget_weight, self.retain_weight = float(beta), float(forget_weight), float(retain_weight)
        self.needs_retain = self.retain_weight > 0

    def loss(self, model, batch):
        f = batch["forget"]
        lp, mask = token_logps(model(input_ids=f["input_ids"], attention_mask=f["attention_mask"]).logits, f["labels"])
        forget = wga_loss(lp, mask, self.beta, f)
        return self.with_retain_nll(model, batch, self.forget_weight * forget, {"forget_wga": forget.item()})
