"""Same seed, same machine -> identical numbers; provenance in results.json; a diverging run is a result, not a crash.

The reproducibility tests build everything from an empty cache twice (tiny model fine-tuned, unlearned,
evaluated) and compare every metric exactly, so a hidden source of nondeterminism (unseeded shuffles,
set ordering, Faker without a seed) fails them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from conftest import TINY, compose

from unlearning.run import run

ROOT = Path(__file__).resolve().parent.parent
PII_TINY = ["model=tiny", "dataset=synthetic_pii", "evaluator=pii", "dataset.people=2",
            "dataset.dialogues_per_person=1", "dataset.heldout_per_person=1", "dataset.pii_free_train=4",
            "dataset.pii_free_heldout=2", "model.hidden_size=32", "model.num_layers=1", "model.num_heads=2",
            "model.intermediate_size=64", "model.vocab_size=400", "model.finetune.epochs=2", "trainer.max_steps=2",
            "trainer.lr=1e-3", "evaluator.max_probes_per_kind=2", "evaluator.max_new_tokens=4",
            "evaluator.utility_max_new_tokens=4", "objective=leakage_rate"]


def _fresh_run(tmp_path: Path, name: str, overrides: list[str]) -> dict:
    overrides = overrides + [f"cache_dir={tmp_path / name / 'cache'}"]
    return run(compose(overrides), tmp_path / name / "run", overrides)


def _numbers(record: dict) -> dict:
    return {"metrics": record["metrics"], "baselines": record["baselines"], "objective": record["objective"]}


def test_whole_tiny_tofu_run_twice_from_empty_caches_gives_identical_metrics(tmp_path, data_dir):
    overrides = TINY + ["method=npo", "save_model=false"]
    first, second = (_fresh_run(tmp_path, n, overrides) for n in ("a", "b"))
    assert first["stages"]["target"]["built"] and second["stages"]["target"]["built"]  # nothing was shared
    assert first["metrics"]["forget_Q_A_Prob"] < first["baselines"]["target"]["forget_Q_A_Prob"]  # NPO unlearned
    assert _numbers(first) == _numbers(second)


def test_pii_generation_target_and_orpo_twice_give_identical_metrics(tmp_path):
    overrides = PII_TINY + ["method=orpo", "save_model=false"]
    first, second = (_fresh_run(tmp_path, n, overrides) for n in ("a", "b"))
    assert first["stages"]["target"]["built"] and second["stages"]["target"]["built"]
    # the generated benchmark itself is identical, not only the numbers computed from it
    per_item = [json.loads((tmp_path / n / "run" / "eval" / "pii.json").read_text())["per_item"] for n in "ab"]
    assert per_item[0] == per_item[1]
    assert _numbers(first) == _numbers(second)


def test_results_record_what_determines_the_numbers(run_tiny, tmp_path):
    import torch

    rec = run_tiny("save_model=false", "stage.evaluate_target=false", out=tmp_path / "prov")
    prov = json.loads((tmp_path / "prov" / "results.json").read_text())["provenance"]
    assert prov["torch_threads"] == torch.get_num_threads() and prov["device"] == "cpu"
    assert prov["model_dtype"] == "float32" and prov["train_bf16_autocast"] is False
    assert rec["versions"]["torch"] == torch.__version__
    # this checkout is a git repository: the commit is recorded (40 hex digits)
    assert prov["git"] is not None and len(prov["git"]["commit"]) == 40 and isinstance(prov["git"]["dirty"], bool)


def _cli(args: list[str], cwd: Path, env_extra: dict | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, **(env_extra or {})}
    env.pop("UNLEARNING_TRACEBACK", None)
    return subprocess.run([sys.executable, "-m", "unlearning", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=600)


def test_a_diverging_run_stops_with_status_diverged_and_one_line(tmp_path, data_dir, session_cache):
    out = tmp_path / "div"
    proc = _cli([*TINY, "trainer.lr=1e30", "trainer.max_steps=6", "trainer.max_grad_norm=0", "save_model=false",
                 f"hydra.run.dir={out}"], ROOT)
    assert proc.returncode == 3, proc.stderr[-2000:]
    err = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(err) == 1 and "diverged at step" in err[0] and "Traceback" not in proc.stderr
    rec = json.loads((out / "results.json").read_text())
    assert rec["status"] == "diverged" and rec["diverged"]["step"] >= 1 and rec["diverged"]["term"]
    assert "target" in rec["baselines"]  # what was computed before the divergence is kept


def test_a_sweep_goes_on_after_a_diverging_job(tmp_path, data_dir, session_cache):
    sweep = tmp_path / "sweep"
    proc = _cli(["-m", *TINY, "trainer.max_steps=6", "trainer.max_grad_norm=0", "save_model=false",
                 "evaluator.generate=false", "trainer.lr=1e30,1e-3", f"hydra.sweep.dir={sweep}"], ROOT)
    summary = json.loads((sweep / "summary.json").read_text())
    jobs = sorted(summary["jobs"], key=lambda r: int(r["job"]))  # job 0 has lr 1e30, job 1 has lr 1e-3
    assert [r["status"] for r in jobs] == ["diverged", "ok"]
    assert "diverged at step" in jobs[0]["error"] and jobs[1]["metrics"]
    assert summary["counts"]["diverged"] == 1 and proc.returncode == 1


def test_check_finite_names_the_term_that_broke():
    import math

    import pytest

    from unlearning.errors import Diverged
    from unlearning.train import check_finite

    check_finite(1, {"loss": 1.0, "forget_nll": 2.0})
    with pytest.raises(Diverged) as e:
        check_finite(7, {"loss": math.nan, "forget_nll": math.inf, "retain_nll": 1.0})
    assert (e.value.step, e.value.term) == (7, "forget_nll") and "trainer.lr" in str(e.value)
