"""SimNPO: NPO with a length-normalised reward and no reference model.

Margin convention: `delta` is the paper's reward margin gamma, subtracted *after*
scaling by beta. OpenUnlearning writes it inside the scaling (beta * (NLL/|y| - delta)),
so its delta equals ours divided by beta.
"""

from __future__ import annotations

import torch.nn.functional as F

from unlearning.methods.base import Method, nll, reject_unknown, require_positive, require_coefficients, sequence_logp


def simnpo_loss(logp, length, beta: float, delta: float):
    # SimNPO (Fan et al. 2024, eq. 4): -(2/beta) * mean log sigmoid(-(beta/|y|) * log p_theta(y|x) - delta).
    return -(2.0 / beta) * F.logsigmoid(-(beta / length.clamp(min=1)) * logp - delta).mean()


class SimNPO(Method):
    name = "simnpo"

    def __init__(self, beta: float = 4.5, gamma: float = 0.125, alpha: float = 1.0, delta: float = 0.0,
                 **unknown):
        reject_unknown(self.name, unknown, ["beta", "gamma", "alpha", "delta"])
        require_positive(self.name, "beta", beta)
        require_coefficients(self.name, alpha=alpha, gamma=gamma)
        self.beta, self.gamma, self.alpha, self.delta = float(beta), float(gamma), float(alpha), float(delta)
        self.needs_retain = self.alpha > 0

    def loss(self, model, batch):
        logp, length = sequence_logp(model, batch["forget"])
        forget = simnpo_loss(logp, length.float(), self.beta, self.delta)
        loss = self.gamma * forget
        logs = {"forget_simnpo": forget.item(), "forget_avg_logp": (logp / length.clamp(min=1)).mean().item()}
        if self.needs_retain:
            retain = nll(model, batch["retain"])
            loss = loss + self.alpha * retain
            logs["retain_nll"] = retain.item()
        return loss, logs
