"""Gradient ascent (GA): maximise the NLL of the forget answers."""

from __future__ import annotations

from unlearning.methods.base import Method, nll


class GradientAscent(Method):
    name = "ga"

    def loss(self, model, batch):
        forget_nll = nll(model, batch["forget"])
        # GA: the loss is minus the mean NLL on forget answers (Jang et al. 2023; TOFU's baseline).
        return -forget_nll, {"forget_nll": forget_nll.item()}
