"""Each new method through the whole pipeline (`unlearning.run.run`) on model=tiny: real Hydra composition,
real TOFU files from $UNLEARNING_DATA_DIR, real stages and evaluator; two unlearning steps each."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

METHODS = sorted(p.stem for p in (Path(__file__).resolve().parents[1] / "conf" / "method").glob("*.yaml"))
# What a method needs of the tiny set-up: rmu_ou's default layer 7 is past the tiny model's 4; ORPO needs the chosen /
# rejected pairs only the synthetic PII benchmark has (two people, a few probes: seconds). The rest run on TOFU.
NEEDS = {"rmu_ou": ["method.layer=2"]}
PII = ["model=tiny", "dataset=synthetic_pii", "evaluator=pii", "dataset.people=2", "dataset.dialogues_per_person=2",
       "model.finetune.epochs=2", "trainer.max_steps=2", "trainer.lr=1e-3", "evaluator.max_probes_per_kind=2",
       "evaluator.max_new_tokens=4", "evaluator.utility_max_new_tokens=4", "save_model=false"]
# every run a little smaller than TINY's defaults: one evaluation of the unlearned model, no target row, no save
SMALL = ["evaluator.max_items=3", "evaluator.max_new_tokens=4", "stage.evaluate_target=false", "save_model=false"]


@pytest.mark.parametrize("method", METHODS)
def test_method_runs_end_to_end(run_tiny, tmp_path, method):
    from conftest import compose
    from hydra.utils import instantiate

    pairs = instantiate(compose([f"method={method}"]).method, _convert_="all").needs_pairs
    if pairs:
        from unlearning.run import run

        record = run(compose(PII + [f"method={method}"]), tmp_path / method, [f"method={method}"])
    else:
        record = run_tiny(f"method={method}", *SMALL, *NEEDS.get(method, []), out=tmp_path / method)
    assert record["status"] == "ok"
    headline = "leakage_rate" if pairs else "forget_quality"
    assert headline in record["metrics"] and record["objective"] == record["metrics"][headline]
    saved = json.loads((tmp_path / method / "results.json").read_text())
    assert saved["config"]["method"]["_target_"].startswith("unlearning.methods.")
