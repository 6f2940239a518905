"""SimNPO: NPO with a length-normalised reward and no reference model.

Margin convention: `delta` is the paper's reward margin forget_weight, subtracted *after*
scaling by beta. OpenUnlearning writes it inside the scaling (beta * (NLL/|y| - delta)),
so its delta equals ours divided by beta.
"""

from __future__ import annotations

import torch.nn.functional as F

from unlearning.methods.base import Method, reject_unknown, require_coefficients, require_positive, rows_mean, sequence_logp


def simnpo_loss(logp, length, beta: float, delta: float, batch: dict | None = None):
    # SimNPO (Fan et al. 2024, eq. 4): -(2/beta) * mean log sigmoid(-(beta/|y|) * log p_theta(y|x) - delta).
    return -(2.0 / beta) * rows_mean(F.logsigmoid(-(beta / length.clamp(min=1)) * logp - delta), batch or {})


class SimNPO(Method):
    name = "simnpo"

    def __init__(self, beta: float = 4.5, forget_weight: float = 0.125, retain_weight: float = 1.0, delta: float = 0.0,
                 **unknown):
        reject_unknown(self.name, unknown, ["beta", "forget_weight", "retain_weight", "delta"])
        require_positive(self.name, "beta", beta)
        require_coefficients(self.name, retain_weight=retain_weight, forget_weight=forget_weight)
        self.beta, self.delta = float(beta), float(delta)
        self.forget_weight, self.retain_weight = float(forget_weight), float(retain_weight)
        self.needs_retain = self.retain_weight > 0

    def loss(self, model, batch):
        logp, length = sequence_logp(model, batch["forget"])
        forget = simnpo_loss(logp, length.float(), self.beta, self.delta, batch["forget"])
        loss = self.forget_weight * forget
        logs = {"forget_simnpo": forget.item(), "forget_avg_logp": rows_mean(logp / length.clamp(min=1), batch["forget"]).item()}
        return self.with_retain_nll(model, batch, loss, logs)
