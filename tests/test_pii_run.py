"""A whole tiny run on the synthetic PII benchmark: generate, fine-tune the tiny target, GA, evaluate."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from unlearning.errors import UserError
from unlearning.run import run

ROOT = Path(__file__).resolve().parent.parent
SMALL = ["dataset.people=2", "dataset.dialogues_per_person=1", "dataset.heldout_per_person=1",
         "dataset.pii_free_train=4", "dataset.pii_free_heldout=2"]


def test_whole_tiny_run(tmp_path):
    overrides = ["model=tiny", "dataset=synthetic_pii", "evaluator=pii", "method=ga", f"cache_dir={tmp_path / 'cache'}",
                 *SMALL, "model.hidden_size=32", "model.num_layers=1", "model.num_heads=2",
                 "model.intermediate_size=64", "model.vocab_size=400", "model.finetune.epochs=2",
                 "trainer.max_steps=2", "trainer.lr=1e-3", "evaluator.max_probes_per_kind=2",
                 "evaluator.max_new_tokens=4", "evaluator.utility_max_new_tokens=4", "objective=leakage_rate"]
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base=None):
        cfg = compose("config", overrides=overrides)
    record = run(cfg, tmp_path / "run", overrides)
    assert record["status"] == "ok" and record["dataset"] == "synthetic_pii"
    assert record["objective"] == record["metrics"]["leakage_rate"]
    assert "leakage_rate" in record["baselines"]["target"]
    assert record["stages"]["target"]["built"] is True
    saved = json.loads((tmp_path / "run" / "results.json").read_text())
    assert saved["metrics"] == record["metrics"]
    per_item = json.loads((tmp_path / "run" / "eval" / "pii.json").read_text())["per_item"]
    assert len(per_item["probes"]) == 6 and {"answer", "leaked", "partial", "detected", "offtopic",
                                              "cross_leaked"} <= set(per_item["probes"][0])
    # what the objective check trusts (metric_names) is what evaluate() really produced
    from unlearning.validate import validate

    parts = validate(cfg)
    assert parts.evaluator.metric_names(parts.data) == set(record["metrics"])


def test_bad_pii_config_reaches_the_run_as_one_clear_line(tmp_path):
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base=None):
        cfg = compose("config", overrides=["model=tiny", "dataset=synthetic_pii", "evaluator=pii",
                                           "dataset.pii_types=[email,blood_type]", f"cache_dir={tmp_path}"])
    with pytest.raises(UserError) as e:  # unwrapped from Hydra's InstantiationException by run.build
        run(cfg, tmp_path / "run")
    assert "blood_type" in str(e.value) and "dataset.pii_types" in str(e.value) and "\n" not in str(e.value)
