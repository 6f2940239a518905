"""PDU, primal-dual unlearning (Entesari et al. 2025, "Constrained Entropic Unlearning: A Primal-Dual Framework for
Large Language Models", arXiv 2506.05314; OpenUnlearning's src/trainer/unlearn/pdu.py, configs/trainer/PDU.yaml).

Minimise gamma * L_f + lambda * (L_r - eps): L_f flattens the forget logits, mean over answer positions of
(max logit - mean logit)^2; L_r is the retain NLL; the dual variable lambda starts at `alpha` and, after
`dual_warmup_epochs` epochs, moves by projected dual ascent after every optimiser step:
lambda <- max(0, lambda + dual_step_size * (L_r - eps)).

The first method with state that changes during training: lambda lives on the method, the loop hands every step's
logged terms to `after_step` (the global batch's, the same in every process, so every process moves lambda alike), and
`state_dict` / `load_state_dict` put it into each checkpoint and back on resume. OU updates lambda after every
micro-batch, in each process on its own; here once per optimiser step on the global batch's retain NLL
(the same with one process and no accumulation). As in OU, L_f's mask is the labels' own positions, not shifted.
"""

from __future__ import annotations

import torch

from unlearning.data.base import IGNORE
from unlearning.errors import UserError
from unlearning.methods.base import Method, count, nll, reject_unknown, require_coefficients


def flatten_loss(logits: torch.Tensor, labels: torch.Tensor, batch: dict | None = None) -> torch.Tensor:
    """OU's PDU forget loss: (max - mean over the vocabulary)^2 of each logit row, averaged where labels != -100."""
    logits = logits.float().reshape(-1, logits.size(-1))
    gap = (logits.max(-1).values - logits.mean(-1)) ** 2
    mask = (labels != IGNORE).reshape(-1).float()
    return (gap * mask).sum() / max(count(batch or {}, "labelled", int(mask.sum())), 1)


def dual_step(lam: float, retain_loss: float, eps: float, step_size: float) -> float:
    """Projected dual ascent on lambda >= 0 for the constraint L_r <= eps."""
    return max(0.0, lam + step_size * (retain_loss - eps))


class PDU(Method):
    name = "pdu"
    needs_retain = True

    def __init__(self, retain_loss_eps: float = 0.3, dual_step_size: float = 1.0, dual_warmup_epochs: int = 5,
                 gamma: float = 1.0, alpha: float = 1.0, primal_dual: bool = True, **unknown):
        reject_unknown(self.name, unknown, ["retain_loss_eps", "dual_step_size", "dual_warmup_epochs", "gamma", "alpha",
                                            "primal_dual"])
        require_coefficients(self.name, retain_loss_eps=retain_loss_eps, gamma=gamma, alpha=alpha)
        if not dual_step_size > 0:
            raise UserError(f"method.dual_step_size={dual_step_size} must be > 0 (OU's default 1.0; set "
                            "method.primal_dual=false to keep lambda fixed at alpha)")
        if isinstance(dual_warmup_epochs, bool) or not isinstance(dual_warmup_epochs, int) or dual_warmup_epochs < 0:
            raise UserError(f"method.dual_warmup_epochs={dual_warmup_epochs!r} must be an integer >= 0 (epochs before "
                            "lambda starts to move; OU's default 5)")
        self.eps, self.step_size, self.warmup = float(retain_loss_eps), float(dual_step_size), dual_warmup_epochs
        self.gamma, self.alpha, self.primal_dual = float(gamma), float(alpha), bool(primal_dual)
        self.lam = self.alpha

    def loss(self, model, batch):
        f = batch["forget"]
        forget = flatten_loss(model(input_ids=f["input_ids"], attention_mask=f["attention_mask"]).logits, f["labels"], f)
        retain = nll(model, batch["retain"])
        loss = self.gamma * forget + self.lam * (retain - self.eps)
        return loss, {"forget_flatten": forget.item(), "retain_nll": retain.item()}  # the loop logs dual_lambda

    def after_step(self, step: int, epochs_done: int, terms: dict) -> None:
        """After optimiser step `step` (1-based) of an epoch that began with `epochs_done` whole epochs behind it."""
        if self.primal_dual and epochs_done >= self.warmup:
            self.lam = dual_step(self.lam, terms["retain_nll"], self.eps, self.step_size)

    def state_dict(self) -> dict:
        return {"dual_lambda": self.lam}

    def load_state_dict(self, state: dict) -> None:
        self.lam = float(state["dual_lambda"])
