"""Evaluation during unlearning and checkpoint selection (trainer.eval_every / eval / select)."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import compose
from test_methods import fresh, tiny  # noqa: F401  (the shared tiny-model fixture)

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


def test_evaluations_every_n_steps_and_at_each_epochs_end():
    # 3 steps per epoch, 8 steps in all (a cap mid-epoch 3): every 2 -> 2, 4, 6, 8; epochs' ends 3, 6; the last, 8
    settings = TrainSettings(eval_every=2, eval_each_epoch=True)
    tracker = EvalDuringTraining(Scripted([0.5] * 6), settings, None, None, None, None, steps_per_epoch=3)
    for step in range(1, 9):
        tracker(step, 8, None)
    assert [c["step"] for c in tracker.curve] == [2, 3, 4, 6, 8]
    only_epochs = EvalDuringTraining(Scripted([0.5] * 3), TrainSettings(eval_each_epoch=True), None, None, None,
                                     None, steps_per_epoch=3)
    for step in range(1, 9):
        only_epochs(step, 8, None)
    assert [c["step"] for c in only_epochs.curve] == [3, 6, 8]


def test_checkpoints_from_before_eval_each_epoch_still_resume(data_dir):
    """A checkpoint's fingerprint has no trainer.eval_each_epoch if it was written before the key existed: at its
    default the key stays out of the fingerprint, so such a checkpoint matches; set, it is part of it."""
    from unlearning.run import training_fingerprint

    assert "eval_each_epoch" not in training_fingerprint(compose([]))["trainer"]
    assert training_fingerprint(compose(["trainer.eval_each_epoch=true"]))["trainer"]["eval_each_epoch"] is True


def test_a_whole_run_evaluates_at_each_epochs_end(run_tiny, tmp_path):
    """40 forget01 questions in batches of 20: 2 steps per epoch, 2 epochs -> evaluations after steps 2 and 4."""
    rec = run_tiny("trainer.batch_size=20", "trainer.epochs=2", "trainer.max_steps=-1", "trainer.eval_each_epoch=true",
                   "trainer.eval.generate=false", "trainer.select=forget_Q_A_Prob:min", "save_model=false",
                   out=tmp_path / "epochs")
    assert [c["step"] for c in rec["curve"]] == [2, 4]
    assert rec["selection"]["step"] in (2, 4)
    values = [c["forget_Q_A_Prob"] for c in rec["curve"]]
    assert rec["selection"]["step"] == rec["curve"][values.index(min(values))]["step"]
    assert rec["metrics"]["forget_Q_A_Prob"] == min(values)  # the final evaluation ran on the selected weights


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


def test_a_whole_run_stops_at_the_rule_against_the_retain_reference(run_tiny, tmp_path):
    """The tiny target was fine-tuned on the forget answers, so after one GA step its forget_Q_A_Prob is still above
    the retain reference's: `above:reference` stops at the first evaluation, and the final evaluation uses those
    weights (likelihood metrics equal the curve's)."""
    rec = run_tiny("trainer.max_steps=3", "trainer.eval_every=1", "trainer.eval.generate=false",
                   "trainer.stop=forget_Q_A_Prob:above:reference", "save_model=false", out=tmp_path / "stop")
    reference = rec["baselines"]["reference"]["forget_Q_A_Prob"]
    assert [c["step"] for c in rec["curve"]] == [1]
    assert rec["stopped"]["step"] == 1 and rec["stopped"]["threshold"] == pytest.approx(reference)
    assert rec["stopped"]["value"] == rec["curve"][0]["forget_Q_A_Prob"] > reference
    assert rec["metrics"]["forget_Q_A_Prob"] == rec["stopped"]["value"]
    logged = [json.loads(line) for line in (tmp_path / "stop" / "train_log.jsonl").read_text().splitlines()]
    assert max(r["step"] for r in logged) == 1  # no step after the rule fired


@pytest.mark.parametrize("overrides, message", [
    (["trainer.eval_every=999"], r"trainer\.eval_every=999 is larger than the run"),
    (["trainer.select=forget_Q_A_Prob:min"], r"needs trainer\.eval_every=N or trainer\.eval_each_epoch=true"),
    (["trainer.eval_every=1", "trainer.select=nope:max"], r"trainer\.select=nope:max: nope is not a metric"),
    (["trainer.eval_every=1", "trainer.select=forget_Q_A_Prob"], r"must be METRIC:max or METRIC:min"),
    (["trainer.eval_every=1", "+trainer.eval.bogus=1"], r"trainer\.eval\.bogus: evaluator=tofu has no option"),
    (["trainer.eval_every=-1"], r"trainer\.eval_every=-1 must be >= 0"),
    (["trainer.stop=forget_Q_A_Prob:below:0.1"], r"trainer\.stop=forget_Q_A_Prob:below:0.1 needs trainer\.eval_every"),
    (["trainer.eval_every=1", "trainer.stop=forget_Q_A_Prob:under:0.1"], r"must be METRIC:below:VALUE or"),
    (["trainer.eval_every=1", "trainer.stop=forget_Q_A_Prob:below:abc"], r"must be METRIC:below:VALUE or"),
    (["trainer.eval_every=1", "trainer.stop=nope:below:0.1"], r"trainer\.stop=nope:below:0\.1: nope is not a metric"),
    (["evaluator=pii", "dataset=synthetic_pii", "trainer.eval_every=1", "trainer.stop=leakage_rate:below:reference"],
     r"evaluates no retain reference"),
])
def test_bad_input_is_one_line_before_any_work(overrides, message, data_dir):
    from unlearning.validate import validate

    with pytest.raises(UserError, match=message):
        validate(compose(overrides))


def test_the_stop_rule_ends_at_the_first_evaluation_past_the_threshold():
    settings = TrainSettings(eval_every=1, stop="forget_Q_A_Prob:below:0.3")
    tracker = EvalDuringTraining(Scripted([0.6, 0.4, 0.2, 0.1]), settings, None, None, None, None)
    model = torch.nn.Linear(2, 1, bias=False)
    assert [bool(tracker(step, 4, model)) for step in (1, 2, 3)] == [False, False, True]
    assert tracker.record()["stopped"] == {"step": 3, "metric": "forget_Q_A_Prob", "value": 0.2, "threshold": 0.3,
                                           "rule": "forget_Q_A_Prob < 0.3"}
    # `reference`: the retain reference's value of the metric is the threshold
    ref = EvalDuringTraining(Scripted([0.5, 0.45]), TrainSettings(eval_every=1, stop="forget_Q_A_Prob:below:reference"),
                             None, None, None, {"aggregates": {"forget_Q_A_Prob": 0.47}})
    assert [bool(ref(step, 4, model)) for step in (1, 2)] == [False, True]


class WeightSum:
    """A deterministic evaluation of the model itself: the sum of its output layer's weights."""

    name = "weightsum"

    def evaluate(self, model, tok, data, ctx, reference=None):
        return {"aggregates": {"w": float(model.lm_head.weight.detach().double().sum())}}


def test_the_loop_stops_when_the_stop_rule_says_so(tiny):  # noqa: F811
    from test_methods import FORGET, items

    from unlearning.methods.ga import GradientAscent
    from unlearning.train import train

    model, tok = fresh(tiny)
    steps = []
    train(model, GradientAscent(), items(tok, FORGET), None, TrainSettings(lr=1e-3, epochs=3, max_steps=5, batch_size=2),
          tok.pad_token_id, on_step=lambda step, total, m: steps.append(step) or step == 2)
    assert steps == [1, 2]  # step 2 said stop: steps 3-5 never ran


def test_resume_in_the_middle_keeps_the_curve_and_the_best_so_far(tiny, tmp_path):  # noqa: F811
    """4 steps evaluated after each, `w:min` (GA raises w here, so step 1 is chosen); run B resumes run A's step-2
    checkpoint with a fresh tracker: the curve and the chosen step and weights must be run A's."""
    from test_methods import FORGET, items

    from unlearning.methods.ga import GradientAscent
    from unlearning.train import Checkpoints, train

    settings = TrainSettings(lr=1e-2, epochs=2, max_steps=4, batch_size=2, eval_every=1, select="w:min", max_grad_norm=0)

    def run(checkpoints):
        model, tok = fresh(tiny)
        tracker = EvalDuringTraining(WeightSum(), settings, tok, None, None, None)
        model = train(model, GradientAscent(), items(tok, FORGET), None, settings, tok.pad_token_id,
                      checkpoints=checkpoints, on_step=tracker)
        tracker.restore(model)
        return tracker, model

    a, model_a = run(Checkpoints(tmp_path / "ck", every=2))
    assert (tmp_path / "ck" / "step-2" / "loop_state.pt").is_file()
    b, model_b = run(Checkpoints(tmp_path / "ck2", every=0, resume_from=tmp_path / "ck" / "step-2"))
    assert [c["step"] for c in b.curve] == [1, 2, 3, 4]
    assert [c["w"] for c in b.curve] == pytest.approx([c["w"] for c in a.curve], abs=1e-9)
    assert b.record()["selection"]["step"] == a.record()["selection"]["step"] == 1  # chosen before the resume point
    assert torch.equal(model_a.lm_head.weight, model_b.lm_head.weight)  # the same chosen weights came back


def test_the_sharded_evaluation_copy_is_rebuilt_once_and_refreshed_each_time(tiny):  # noqa: F811
    """What FSDP / ZeRO-3 evaluation during training does on rank 0 once accelerate has gathered the full weights
    (the gather itself needs GPUs: tests/test_gpu.py): one copy built by `rebuild` on the first evaluation, then the
    current weights loaded into that same copy at every later one, LoRA adapters included. One CPU process: a real
    Accelerator, whose get_state_dict of an unsharded model is its state dict; `sharded` is set by hand."""
    from types import SimpleNamespace

    from accelerate import Accelerator

    from unlearning.train import LoraSettings, apply_lora, eval_view

    for lora in (False, True):
        settings = TrainSettings(lora=LoraSettings(enabled=lora, r=2, alpha=4, dropout=0.0))
        trained, _ = fresh(tiny)
        trained = apply_lora(trained, settings.lora) if lora else trained
        builds = []

        def rebuild(builds=builds):
            builds.append(1)
            return fresh(tiny)[0]

        acc, holder = Accelerator(cpu=True), {}
        sharded = SimpleNamespace(sharded=True, effective="fsdp")
        first = eval_view(acc, trained, sharded, settings, rebuild, holder)
        assert first is not trained and not first.training
        with torch.no_grad():
            for p in trained.parameters():
                if p.requires_grad:
                    p.add_(0.5)  # a training step's worth of change
        second = eval_view(acc, trained, sharded, settings, rebuild, holder)
        assert second is first and len(builds) == 1
        for (name, p), q in zip(trained.state_dict().items(), second.state_dict().values()):
            assert torch.equal(p, q), name
