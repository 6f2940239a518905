"""Evaluation during unlearning and checkpoint selection (trainer.eval_every / eval / select)."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import compose

from unlearning.errors import UserError
from unlearning.selection import EvalDuringTraining, best_index
from unlearning.train import TrainSettings


def test_best_index_on_a_hand_made_curve():
    curve = [0.5, 0.3, 0.7, 0.7, None, 0.6]
    assert best_index(curve, higher=True) == 2      # the first of the two 0.7s
    assert best_index(curve, higher=False) == 1
    assert best_index([None, None], higher=True) is None


class Scripted:
    """An evaluator whose forget_Q_A_Prob follows a hand-made curve, one value per evaluation."""

    name = "scripted"

    def __init__(self, values):
        self.values = list(values)

    def evaluate(self, model, tok, data, ctx, reference=None):
        return {"aggregates": {"forget_Q_A_Prob": self.values.pop(0), "note": "text is not a metric"}}


def test_the_selected_step_is_the_one_the_curve_says_and_its_weights_come_back():
    settings = TrainSettings(eval_every=2, select="forget_Q_A_Prob:min")
    tracker = EvalDuringTraining(Scripted([0.6, 0.2, 0.4]), settings, None, None, None, None)
    model = torch.nn.Linear(2, 1, bias=False)
    weights = {}
    for step in range(1, 6):  # 5 steps: evaluated at 2, 4 and (the last) 5
        with torch.no_grad():
            model.weight.fill_(float(step))
        weights[step] = model.weight.detach().clone()
        tracker(step, 5, model)
    assert [c["step"] for c in tracker.curve] == [2, 4, 5]
    assert [c["forget_Q_A_Prob"] for c in tracker.curve] == [0.6, 0.2, 0.4] and "note" not in tracker.curve[0]
    tracker.restore(model)
    assert torch.equal(model.weight, weights[4])  # step 4 had the lowest value
    sel = tracker.record()["selection"]
    assert (sel["step"], sel["value"], sel["direction"]) == (4, 0.2, "min") and "3 evaluations" in sel["why"]


def test_a_whole_run_keeps_the_selected_weights(run_tiny, tmp_path):
    """GA lowers forget_Q_A_Prob step by step, so `:max` keeps an early step: the final evaluation (same items,
    likelihood metrics identical with or without generation) must equal the curve at that step."""
    rec = run_tiny("trainer.max_steps=3", "trainer.eval_every=1", "trainer.eval.generate=false",
                   "trainer.select=forget_Q_A_Prob:max", "save_model=false", out=tmp_path / "sel")
    curve, sel = rec["curve"], rec["selection"]
    assert [c["step"] for c in curve] == [1, 2, 3]
    values = [c["forget_Q_A_Prob"] for c in curve]
    assert sel["step"] == curve[values.index(max(values))]["step"] and sel["value"] == max(values)
    assert rec["metrics"]["forget_Q_A_Prob"] == sel["value"]
    assert "forget_Q_A_ROUGE" not in curve[0]  # the cheaper evaluation: no generation
    logged = [json.loads(line) for line in (tmp_path / "sel" / "train_log.jsonl").read_text().splitlines()]
    assert sorted(r["step"] for r in logged if "eval/forget_Q_A_Prob" in r) == [1, 2, 3]


@pytest.mark.parametrize("overrides, message", [
    (["trainer.eval_every=999"], r"trainer\.eval_every=999 is larger than the run"),
    (["trainer.select=forget_Q_A_Prob:min"], r"needs trainer\.eval_every=N"),
    (["trainer.eval_every=1", "trainer.select=nope:max"], r"trainer\.select=nope:max: nope is not a metric"),
    (["trainer.eval_every=1", "trainer.select=forget_Q_A_Prob"], r"must be METRIC:max or METRIC:min"),
    (["trainer.eval_every=1", "+trainer.eval.bogus=1"], r"trainer\.eval\.bogus: evaluator=tofu has no option"),
    (["trainer.eval_every=-1"], r"trainer\.eval_every=-1 must be >= 0"),
])
def test_bad_input_is_one_line_before_any_work(overrides, message, data_dir):
    from unlearning.validate import validate

    with pytest.raises(UserError, match=message):
        validate(compose(overrides))
