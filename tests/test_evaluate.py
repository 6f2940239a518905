"""`unlearning-eval`: a model evaluated as it is, through the real entrypoint (subprocesses), on a tiny Llama folder."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT, write_tiny_checkpoint

FAST = ["dataset.retain_authors=2", "evaluator.max_items=4", "evaluator.max_new_tokens=8"]


def cli_eval(*args, entry="eval_main"):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    env.pop("UNLEARNING_TRACEBACK", None)
    code = f"import sys; from unlearning.__main__ import {entry}; sys.exit({entry}())"
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, cwd=ROOT, env=env,
                          timeout=300)


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory, data_dir) -> Path:
    """An HF-format folder, as a published checkpoint would be."""
    return write_tiny_checkpoint(tmp_path_factory.mktemp("published") / "model", data_dir)


@pytest.fixture(scope="module")
def evaluated(tiny_folder, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("eval") / "run"
    r = cli_eval("model=hf", f"model.path={tiny_folder}", f"stage.reference_path={tiny_folder}", *FAST,
                 f"hydra.run.dir={out}")
    assert r.returncode == 0, r.stderr[-2000:]
    return out


def test_evaluates_the_model_as_it_is_against_its_reference(evaluated):
    record = json.loads((evaluated / "results.json").read_text())
    assert record["status"] == "ok" and record["stages"] == {}
    # the model is its own reference: identical truth-ratio samples, KS statistic 0, p-value exactly 1
    assert record["metrics"]["forget_quality"] == 1.0
    # ... and every other number of the model equals the reference row's (same weights, same evaluator)
    assert {k: v for k, v in record["metrics"].items() if k != "forget_quality"} == \
        {k: v for k, v in record["baselines"]["reference"].items() if k != "forget_quality"}
    per_item = json.loads((evaluated / "eval" / "tofu.json").read_text())["per_item"]
    assert [len(per_item[s]) for s in ("forget", "retain", "real_authors", "world_facts")] == [4, 4, 4, 4]


def test_a_reference_result_file_replaces_evaluating_the_reference(evaluated, tiny_folder, tmp_path):
    r = cli_eval("model=hf", f"model.path={tiny_folder}", f"reference_result={evaluated}", *FAST,
                 f"hydra.run.dir={tmp_path / 'again'}")
    assert r.returncode == 0, r.stderr[-2000:]
    record = json.loads((tmp_path / "again" / "results.json").read_text())
    assert record["metrics"]["forget_quality"] == 1.0
    assert "reference" in record["baselines"] and "target" not in record["baselines"]
    assert "reusing cached evaluation" not in r.stderr and "reference: " not in r.stderr


@pytest.mark.parametrize("args, message", [
    (["reference_result=/nonexistent/tofu.json"], "error: reference_result=/nonexistent/tofu.json cannot be read"),
    (["reference_result=/x.json", "stage.reference_path={model}"], "error: give stage.reference_path (a model to evaluate)"),
    (["evaluator.compat=ou"], "error: evaluator.compat='ou' is unknown"),
])
def test_bad_input_is_one_line_before_any_work(args, message, tmp_path, tiny_folder):
    r = cli_eval(*[a.format(model=tiny_folder) for a in args], *FAST, f"hydra.run.dir={tmp_path / 'bad'}")
    assert r.returncode == 2
    assert r.stderr.strip().splitlines()[-1].startswith(message), r.stderr
    assert "Traceback" not in r.stderr and not (tmp_path / "bad" / "results.json").exists()


def test_a_run_refuses_reference_result(tmp_path):
    r = cli_eval("reference_result=/x.json", *FAST, f"hydra.run.dir={tmp_path / 'run'}", entry="main")
    assert r.returncode == 2
    assert r.stderr.strip().splitlines()[-1].startswith("error: reference_result is read by unlearning-eval only")
