"""OpenUnlearning's other methods (WGA, SatImp, CE-U, UNDIAL): each loss on hand-computed values, its YAML defaults as
OU's configs set them, and one step on the tiny model raising the forget NLL."""

from __future__ import annotations

import math

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from test_methods import CONF, FORGET, fresh, run_steps, tiny  # noqa: F401  (the shared tiny-model fixture)
from test_methods import forget_nll as nll_of

from unlearning.data.base import IGNORE
from unlearning.methods.ceu import ceu_loss
from unlearning.methods.satimp import satimp_loss
from unlearning.methods.undial import undial_loss
from unlearning.methods.wga import wga_loss

LN2, LN3, LN4 = math.log(2), math.log(3), math.log(4)


def test_wga_loss_by_hand():
    # two answer tokens, p = 1/2 and 1/4: weights p^1 = .5, .25; mean(w log p) = mean(-.5 ln2, -.25 ln4) = -ln2 / 2
    lp = torch.tensor([[-LN2, -LN4, 0.0]])
    mask = torch.tensor([[True, True, False]])
    assert wga_loss(lp, mask, beta=1.0).item() == pytest.approx(-LN2 / 2, abs=1e-7)
    # beta 2: weights .25 and .0625: mean(-.25 ln2, -.0625 ln4) = -(0.1732868 + 0.0866434) / 2 = -0.1299651
    assert wga_loss(lp, mask, beta=2.0).item() == pytest.approx(-0.1299651, abs=1e-6)


def test_satimp_loss_by_hand():
    # beta1 5, beta2 1: w = p^5 (1 - p): p = 1/2 -> 0.015625, p = 1/4 -> 0.000732421875;
    # mean(-0.015625 ln2, -0.000732421875 ln4) = mean(-0.01083042, -0.00101535) = -0.00592289
    lp = torch.tensor([[-LN2, -LN4]])
    assert satimp_loss(lp, torch.ones_like(lp, dtype=torch.bool), 5.0, 1.0).item() == pytest.approx(-0.00592289, abs=1e-7)
    # a third, masked position (p = 1/2 again) must not count: with it the mean would be -0.0075604
    lp = torch.tensor([[-LN2, -LN4, -LN2]])
    mask = torch.tensor([[True, True, False]])
    assert satimp_loss(lp, mask, 5.0, 1.0).item() == pytest.approx(-0.00592289, abs=1e-7)


def test_ceu_loss_by_hand_skips_the_first_answer_token():
    # positions: 0 prompt, 1 first answer token (skipped), 2 second answer token. Logits at position 1 predict
    # token 2: uniform over 3 -> target = softmax([0, 0, -inf]) = [.5, .5, 0]; CE = -(.5 ln 1/3 + .5 ln 1/3) = ln 3.
    # Position 0's logits (predicting the skipped first answer token) are far from uniform and must not count.
    logits = torch.tensor([[[9.0, -9.0, 0.0], [0.0, 0.0, 0.0], [5.0, 5.0, 5.0]]])
    labels = torch.tensor([[IGNORE, 0, 2]])
    assert ceu_loss(logits, labels, ignore_first=1).item() == pytest.approx(LN3, abs=1e-6)
    # ignore_first=0: position 0 counts too. Its target softmax([-inf, -9, 0]) = [0, 1.2339e-4, 0.9998766]; with
    # log-sum-exp 9 + ln(1 + e^-9 + e^-18) = 9.0001234 its CE is 1.2339e-4 * 18.0001234 + 0.9998766 * 9.0001234
    # = 9.0012339; the mean with ln 3 is 5.0499231
    assert ceu_loss(logits, labels, ignore_first=0).item() == pytest.approx(5.0499231, abs=1e-5)


def test_undial_method_uses_the_teacher_and_averages_over_answer_tokens():
    """UNDIAL.loss with a teacher other than the student and two labelled positions (sum != mean). Vocabulary 2,
    beta ln 3, labels [-, 0, 1]. Position 0 (label 0): teacher [0, 0] -> target softmax([-ln3, 0]) = [1/4, 3/4];
    student [ln3, 0] (p = [3/4, 1/4]): CE = -(1/4 ln 3/4 + 3/4 ln 1/4) = 1.1116405. Position 1 (label 1): teacher
    [ln3, 0] -> target softmax([ln3, -ln3]) = [9/10, 1/10]; student uniform: CE = ln 2. Mean 0.9023939 (the sum would be
    1.8047877; the student as its own teacher 0.7650678)."""
    import contextlib
    from types import SimpleNamespace

    from unlearning.methods.undial import UNDIAL

    class Rows(torch.nn.Module):
        def __init__(self, rows):
            super().__init__()
            self.rows = torch.tensor(rows)

        def forward(self, input_ids=None, attention_mask=None):
            return SimpleNamespace(logits=self.rows.unsqueeze(0))

    student = Rows([[LN3, 0.0], [0.0, 0.0], [5.0, -5.0]])
    teacher = Rows([[0.0, 0.0], [LN3, 0.0], [0.0, 0.0]])
    method = UNDIAL(beta=LN3)
    method.reference = lambda model: contextlib.nullcontext(teacher)
    f = {"input_ids": torch.tensor([[0, 1, 1]]), "attention_mask": torch.ones(1, 3), "labels": torch.tensor([[IGNORE, 0, 1]])}
    loss, _ = method.loss(student, {"forget": f})
    assert loss.item() == pytest.approx(0.9023939, abs=1e-6)


def test_undial_loss_by_hand():
    # teacher uniform [0, 0], label 0, beta ln 3 -> target softmax([-ln3, 0]) = [1/4, 3/4];
    # student uniform: CE = ln 2; student [ln3, 0] (p = [3/4, 1/4]): CE = -(1/4 ln 3/4 + 3/4 ln 1/4) = 1.1116405
    teacher = torch.zeros(1, 2, 2)
    labels = torch.tensor([[IGNORE, 0]])
    assert undial_loss(torch.zeros(1, 2, 2), teacher, labels, LN3).item() == pytest.approx(LN2, abs=1e-6)
    student = torch.tensor([[[LN3, 0.0], [7.0, -7.0]]])  # position 1 predicts nothing labelled: ignored
    assert undial_loss(student, teacher, labels, LN3).item() == pytest.approx(1.1116405, abs=1e-6)


@pytest.mark.parametrize("name, expected", [
    ("wga", {"beta": 1.0, "forget_weight": 1.0, "retain_weight": 1.0}),
    ("satimp", {"beta1": 5.0, "beta2": 1.0, "forget_weight": 0.1, "retain_weight": 1.0}),
    ("ceu", {"ignore_first": 1}),
    ("undial", {"beta": 10.0, "forget_weight": 1.0, "retain_weight": 0.0}),
])
def test_yaml_defaults_are_openunlearnings(name, expected):
    method = instantiate(OmegaConf.load(CONF / f"{name}.yaml"))
    assert method.name == name and {k: getattr(method, k) for k in expected} == expected


@pytest.mark.parametrize("name", ["wga", "satimp", "ceu", "undial"])
def test_one_step_raises_forget_nll(tiny, name):  # noqa: F811
    model, tok = fresh(tiny)
    before = nll_of(model, tok)
    method = instantiate(OmegaConf.load(CONF / f"{name}.yaml"), **({"retain_weight": 0.0} if name != "ceu" else {}))
    model, _ = run_steps(model, tok, method, steps=1, lr=1e-2 if name in ("satimp", "wga") else 1e-3, batch_size=4)
    assert nll_of(model, tok) > before
