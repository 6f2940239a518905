"""Each new method through the whole pipeline (`unlearning.run.run`) on model=tiny: real Hydra composition,
real TOFU files from $UNLEARNING_DATA_DIR, real stages and evaluator; two unlearning steps each."""

from __future__ import annotations

import json

import pytest


@pytest.mark.parametrize("method", ["graddiff", "npo", "simnpo", "idk_dpo", "rmu"])
def test_method_runs_end_to_end(run_tiny, tmp_path, method):
    record = run_tiny(f"method={method}", out=tmp_path / method)
    assert record["status"] == "ok"
    assert "forget_quality" in record["metrics"] and "model_utility" in record["metrics"]
    saved = json.loads((tmp_path / method / "results.json").read_text())
    assert saved["config"]["method"]["_target_"].startswith(f"unlearning.methods.{method}.")
