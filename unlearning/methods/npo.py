"""Negative Preference Optimization (NPO) with the reference log-probs cached before training."""

from __future__ import annotations

import torch.nn.functional as F

from unlearning.errors import UserError
from unlearning.methods.base import Method, reject_unknown, require_coefficients, require_positive, rows_mean, sequence_logp
from unlearning.methods.reference import attach_ref_logps, train_bf16


def npo_loss(logp, ref_logp, beta: float, batch: dict | None = None):
    # NPO (Zhang et al. 2024, eq. 3): -(2/beta) * mean log sigmoid(-beta * (log p_theta - log p_ref)).
    return -(2.0 / beta) * rows_mean(F.logsigmoid(-beta * (logp - ref_logp)), batch or {})


class NPO(Method):
    name = "npo"

    def __init__(self, beta: float = 0.1, forget_weight: float = 1.0, retain_weight: float = 1.0, ref_batch_size: int = 8,
                 **unknown):
        reject_unknown(self.name, unknown, ["beta", "forget_weight", "retain_weight", "ref_batch_size"])
        require_positive(self.name, "beta", beta)
        require_coefficients(self.name, retain_weight=retain_weight, forget_weight=forget_weight)
        self.beta, self.forget_weight, self.retain_weight = float(beta), float(forget_weight), float(retain_weight)
        self.ref_batch_size = int(ref_batch_size)
        if self.ref_batch_size < 1:
            raise UserError(f"method.ref_batch_size={ref_batch_size} must be >= 1 (forget answers scored per batch "
                            "for the reference log-probs)")
        self.needs_retain = self.retain_weight > 0

    def prepare(self, model, tokenizer, forget, retain, ctx):
        return attach_ref_logps(model, forget, tokenizer.pad_token_id, batch_size=self.ref_batch_size,
                                bf16=train_bf16(ctx))

    def loss(self, model, batch):
        f = batch["forget"]
        logp, _ = sequence_logp(model, f)
        forget = npo_loss(logp, f["ref_logp"], self.beta, f)
        loss = self.forget_weight * forget
        logs = {"forget_npo": forget.item(), "forget_logratio": rows_mean(logp - f["ref_logp"], f).item()}
        return self.with_retain_nll(model, batch, loss, logs)
