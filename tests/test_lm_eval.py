"""lm-evaluation-harness as an evaluator (evaluator=lm_eval, or lm_eval=<preset> beside the benchmark's).

The hub's tasks (mmlu, wmdp_*) are unreachable here, so every task is defined by the test itself: a YAML task over a
local JSON-lines file, the way lm-eval takes user tasks (include_path). The model is the real tiny Llama with its
real BPE tokenizer; the expected accuracies are derived by hand (a model with all weights zero gives every token
the same probability 1/V, so a choice's log-likelihood is -n_tokens * ln V) or from log-probabilities the test
computes itself with plain forward passes.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import compose

from unlearning.errors import UserError

ROWS = [  # (choices, label): with a uniform model the choice of fewest tokens wins, the first of equals
    (["cat", "cat cat cat"], 0),      # 1 vs 3 tokens: picks 0 = label          -> correct
    (["dog dog", "dog"], 0),          # 2 vs 1: picks 1                         -> wrong
    (["sun sun sun", "moon", "sun"], 1),  # 3, 1, 1: picks 1 (first of the two) -> correct
    (["cat dog sun", "cat dog"], 0),  # 3 vs 2: picks 1                         -> wrong
]


def write_task(folder: Path, rows=ROWS, name: str = "tiny_mc") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    data = folder / f"{name}.jsonl"
    data.write_text("".join(json.dumps({"question": "pick", "choices": c, "label": y}) + "\n" for c, y in rows))
    (folder / f"{name}.yaml").write_text(f"""task: {name}
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: multiple_choice
doc_to_text: "Q: {{{{question}}}}\\nA:"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: "{{{{label}}}}"
metric_list:
  - metric: acc
  - metric: acc_norm
""")
    return folder


TRAINED_ROWS = [(["cat", "dog", "sun"], 2), (["moon", "sun"], 0), (["dog cat", "cat dog"], 1), (["sun", "moon"], 1),
                (["cat", "moon"], 0), (["dog", "sun sun"], 1)]


@pytest.fixture(scope="module")
def tasks(tmp_path_factory) -> Path:
    """One folder of task YAMLs for the module: lm-eval indexes its ~15k built-in tasks once per folder (seconds)."""
    folder = write_task(tmp_path_factory.mktemp("lm_eval_tasks"))
    return write_task(folder, TRAINED_ROWS, name="tiny_mc6")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, data_dir):
    from unlearning.data.tofu import load_tofu
    from unlearning.models import TinyLlama

    corpus = load_tofu(data_dir=str(data_dir), retain_authors=2).corpus + ["pick cat dog sun moon"] * 20
    return TinyLlama().load(corpus)


def context(tmp_path):
    from omegaconf import OmegaConf

    from unlearning.run import RunContext

    return RunContext(cfg=OmegaConf.create({}), out_dir=tmp_path, cache_dir=str(tmp_path), device="cpu", max_length=128,
                      generation=OmegaConf.create({"batch_size": 4, "bf16": False}))


def test_uniform_model_accuracies_are_the_ones_counted_by_hand(tiny, tasks, tmp_path):
    from unlearning.eval.lm_eval_harness import LmEvalEvaluator

    model, tok = tiny
    zero = type(model)(model.config)
    for p in zero.parameters():
        p.data.zero_()  # logits all 0: every token has probability 1/V
    for choices, _ in ROWS:  # the premise of the hand count: these words are one token each after a space
        assert [len(tok(" " + c, add_special_tokens=False).input_ids) for c in choices] == [len(c.split()) for c in choices]
    ev = LmEvalEvaluator(tasks=["tiny_mc"], include_path=str(tasks))
    out = ev.evaluate(zero, tok, None, context(tmp_path))
    assert out["aggregates"]["lm_eval/tiny_mc/acc"] == pytest.approx(0.5)  # rows 0 and 2 correct (ROWS comments)
    # acc_norm divides each log-likelihood by the choice's length in characters (lm-eval: len(choice)):
    # row 0: -lnV/3 vs -3lnV/11 -> 1 (wrong); row 1: -2lnV/7 vs -lnV/3 -> 0 (correct);
    # row 2: -3lnV/11, -lnV/4, -lnV/3 -> 1 (correct); row 3: -3lnV/11 vs -2lnV/7 -> 0 (correct)
    assert out["aggregates"]["lm_eval/tiny_mc/acc_norm"] == pytest.approx(0.75)
    assert [r["acc"] for r in out["per_item"]["lm_eval"]["tiny_mc"]] == [1.0, 0.0, 1.0, 0.0]
    assert ev.objective == "lm_eval/tiny_mc/acc"


def choice_logliks(model, tok, question: str, choices: list[str]) -> list[float]:
    """sum log p(choice tokens | "Q: ...\\nA:") by plain forward passes, one sequence per choice."""
    ctx_ids = tok(f"Q: {question}\nA:", add_special_tokens=False).input_ids
    out = []
    for c in choices:
        cont = tok(" " + c, add_special_tokens=False).input_ids
        ids = torch.tensor([ctx_ids + cont])
        with torch.no_grad():
            logp = torch.log_softmax(model(ids).logits[0].float(), -1)
        out.append(sum(logp[len(ctx_ids) + i - 1, t].item() for i, t in enumerate(cont)))
    return out


def direct_accuracy(model, tok, rows=ROWS) -> float:
    correct = 0
    for choices, label in rows:
        ll = choice_logliks(model, tok, "pick", choices)
        correct += ll.index(max(ll)) == label  # the first of equal maxima, as lm-eval's argmax
    return correct / len(rows)


def test_a_trained_model_scores_as_its_own_log_probabilities_say(tiny, tasks, tmp_path):
    from unlearning.eval.lm_eval_harness import LmEvalEvaluator

    model, tok = tiny
    ev = LmEvalEvaluator(tasks=["tiny_mc6"], include_path=str(tasks))
    model.train()  # as during training: lm-eval must score in eval mode and hand the mode back
    got = ev.evaluate(model, tok, None, context(tmp_path))["aggregates"]["lm_eval/tiny_mc6/acc"]
    assert model.training is True
    assert got == pytest.approx(direct_accuracy(model.eval(), tok, TRAINED_ROWS))


def test_a_run_reports_lm_eval_beside_tofu_for_every_model_it_evaluates(run_tiny, tasks, tmp_path):
    record = run_tiny("lm_eval=local", f"lm_eval.include_path={tasks}", "lm_eval.tasks=[tiny_mc]", "save_model=true",
                      "attack=[quant8]", out=tmp_path / "run")
    from unlearning.models import load_folder

    model, tok = load_folder(tmp_path / "run" / "model")
    assert record["metrics"]["lm_eval/tiny_mc/acc"] == pytest.approx(direct_accuracy(model.eval(), tok))
    assert "forget_quality" in record["metrics"] and record["objective"] == record["metrics"]["forget_quality"]
    target = record["baselines"]["target"]
    assert target["lm_eval/tiny_mc/acc"] in (0.0, 0.25, 0.5, 0.75, 1.0)  # 4 documents
    assert "lm_eval/tiny_mc/acc@quant8" in record["metrics"]           # a weight attack measures `all`
    assert "lm_eval/tiny_mc/acc@quant8_recovery" not in record["metrics"]  # utility: no recovery
    saved = json.loads((tmp_path / "run" / "eval" / "tofu.json").read_text())
    assert len(saved["per_item"]["lm_eval"]["tiny_mc"]) == 4


def validate(*overrides):
    from unlearning.validate import validate as check

    return check(compose(["model=tiny", "dataset=tofu", *overrides]))


def test_bad_lm_eval_settings_are_one_line_each_before_any_work(tasks, data_dir):
    from unlearning.eval.lm_eval_harness import LmEvalEvaluator

    # the evaluator's own checks, then those that need the composed run (presets, other groups)
    with pytest.raises(UserError, match="'no_such_task' is not one lm-eval knows"):
        LmEvalEvaluator(tasks=["no_such_task"], include_path=str(tasks))
    with pytest.raises(UserError, match="limit=1.5 must be"):
        LmEvalEvaluator(tasks=["tiny_mc"], include_path=str(tasks), limit=1.5)
    with pytest.raises(UserError, match="tasks=\\[\\] names no task"):
        LmEvalEvaluator(tasks=[])
    with pytest.raises(UserError, match="include_path=.* is not a folder"):
        LmEvalEvaluator(tasks=["tiny_mc"], include_path="/no/such/folder")
    with pytest.raises(UserError, match="hub dataset cais/mmlu .* the hub is offline"):
        validate("lm_eval=mmlu")
    with pytest.raises(UserError, match="hub dataset cais/wmdp"):
        validate("lm_eval=wmdp")
    with pytest.raises(UserError, match="tasks=\\[\\] names no task"):
        validate("lm_eval=local")
    with pytest.raises(UserError, match="evaluator=lm_eval already runs lm-eval"):
        validate("evaluator=lm_eval", f"evaluator.include_path={tasks}", "evaluator.tasks=[tiny_mc]", "lm_eval=mmlu")
    with pytest.raises(UserError, match="guidance .* does not apply"):
        validate("evaluator=lm_eval", f"evaluator.include_path={tasks}", "evaluator.tasks=[tiny_mc]",
                 "generation.eval_scales=[2]")
    with pytest.raises(UserError, match="unknown option"):
        validate("lm_eval=local", f"lm_eval.include_path={tasks}", "lm_eval.tasks=[tiny_mc]", "+lm_eval.shots=3")
    with pytest.raises(UserError, match="objective=lm_eval/tiny_mc/accuracy is not a metric"):
        validate("lm_eval=local", f"lm_eval.include_path={tasks}", "lm_eval.tasks=[tiny_mc]",
                 "objective=lm_eval/tiny_mc/accuracy")
    # and the good ones pass: the metric names are known before any work
    parts = validate("lm_eval=local", f"lm_eval.include_path={tasks}", "lm_eval.tasks=[tiny_mc]",
                     "objective=lm_eval/tiny_mc/acc_norm", "trainer.eval_every=1", "trainer.select=lm_eval/tiny_mc/acc:max")
    assert {"lm_eval/tiny_mc/acc", "lm_eval/tiny_mc/acc_norm", "forget_quality"} <= parts.evaluator.metric_names(parts.data)
