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
SPLIT = "dataset.forget_split=forget01"
OU_EVAL = ROOT.parent / "shared" / "reference" / "ou_tofu_forget01_smollm2" / "TOFU_EVAL.json"


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
    r = cli_eval("model=hf", f"model.path={tiny_folder}", f"stage.reference_path={tiny_folder}", *FAST, SPLIT,
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
    r = cli_eval("model=hf", f"model.path={tiny_folder}", f"reference_result={evaluated}", *FAST, SPLIT,
                 f"hydra.run.dir={tmp_path / 'again'}")
    assert r.returncode == 0, r.stderr[-2000:]
    record = json.loads((tmp_path / "again" / "results.json").read_text())
    assert record["metrics"]["forget_quality"] == 1.0
    assert "reference" in record["baselines"] and "target" not in record["baselines"]
    assert "reusing cached evaluation" not in r.stderr and "reference: " not in r.stderr


@pytest.mark.parametrize("args, message", [
    (["reference_result=/nonexistent/tofu.json"], "error: reference_result=/nonexistent/tofu.json does not exist; give the "
     "retain reference's eval/<evaluator>.json"),
    (["reference_result=/x.json", "stage.reference_path={model}"], "error: give stage.reference_path (a model to evaluate)"),
    (["evaluator.compat=ou", SPLIT], "error: evaluator.compat='ou' is unknown"),
    # the forget split must be named: the default forget01 would score a forget10 checkpoint on the wrong questions
    (["model=hf", "model.path={model}"], "error: unlearning-eval on TOFU scores the forget split "
     "dataset.forget_split=forget01 (the default); name the split"),
    # a retainNN reference (OU's hub names) checked against the split: retain90 is forget10's
    (["model=hf", "model.path={model}", "stage.reference_path=open-unlearning/tofu_Llama-3.2-1B-Instruct_retain90",
      SPLIT], "error: stage.reference_path=open-unlearning/tofu_Llama-3.2-1B-Instruct_retain90 is named for retain90 "
     "(TOFU forget10), but dataset.forget_split=forget01"),
    # OU's own TOFU_EVAL.json of forget01 (40 forget items) given for forget05
    (["model=hf", "model.path={model}", "reference_result={ou}", "dataset.forget_split=forget05"],
     "error: reference_result={ou} holds 40 forget items, TOFU forget01's, but dataset.forget_split=forget05"),
])
def test_bad_input_is_one_line_before_any_work(args, message, tmp_path, tiny_folder):
    message = message.format(ou=OU_EVAL)
    r = cli_eval(*[a.format(model=tiny_folder, ou=OU_EVAL) for a in args], *FAST, f"hydra.run.dir={tmp_path / 'bad'}")
    assert r.returncode == 2
    assert r.stderr.strip().splitlines()[-1].startswith(message), r.stderr
    assert "Traceback" not in r.stderr and not (tmp_path / "bad").exists()  # a refused run leaves no folder


def test_a_run_refuses_reference_result(tmp_path):
    r = cli_eval("reference_result=/x.json", *FAST, f"hydra.run.dir={tmp_path / 'run'}", entry="main")
    assert r.returncode == 2
    assert r.stderr.strip().splitlines()[-1].startswith("error: reference_result is read by unlearning-eval only")


def test_openunlearnings_own_tofu_eval_json_is_a_reference_result(tiny_folder, tmp_path):
    """OU's TOFU_EVAL.json (its evaluation of SmolLM2 on forget01) as the reference: its aggregates become the
    reference row, and forget_quality is the KS test of the model's forget truth ratios against OU's per item."""
    from scipy.stats import ks_2samp

    r = cli_eval("model=hf", f"model.path={tiny_folder}", f"reference_result={OU_EVAL.parent}", *FAST,
                 f"hydra.run.dir={tmp_path / 'ou'}")  # the split is implied by the file's 40 forget items
    assert r.returncode == 0, r.stderr[-2000:]
    record = json.loads((tmp_path / "ou" / "results.json").read_text())
    reference = record["baselines"]["reference"]
    # OU's agg_values, copied from the file by hand; OU's forget_truth_ratio under this project's name
    assert reference["forget_Truth_Ratio"] == 0.7933194430774702 and reference["model_utility"] == 0.24048035291250372
    assert reference["forget_Q_A_Prob"] == 0.1281316801905632 and "forget_quality" not in reference
    per_item = json.loads((tmp_path / "ou" / "eval" / "tofu.json").read_text())["per_item"]
    ours = [row["truth_ratio"] for row in per_item["forget"]]
    theirs = [0.6924388792714714, 0.4283347446510899, 0.7622771253922366, 1.0430524370973153]  # OU's items 0-3
    assert len(ours) == 4
    assert record["metrics"]["forget_quality"] == pytest.approx(ks_2samp(ours, theirs).pvalue, abs=1e-12)


def test_eval_help_is_its_own():
    r = cli_eval("--help")
    assert r.returncode == 0, r.stderr[-1500:]
    assert r.stdout.startswith("unlearning-eval: evaluate a model as it is")
    assert "reference_result=" in r.stdout and "dataset.forget_split=forget01" in r.stdout


def test_ous_own_evaluation_without_compat_is_warned_about_at_check(tiny_folder):
    args = ("--check", "model=hf", f"model.path={tiny_folder}", f"reference_result={OU_EVAL}")
    r = cli_eval(*args)
    assert r.returncode == 0, r.stderr[-1500:]
    assert "warning: reference_result is OpenUnlearning's own evaluation" in r.stderr
    assert "evaluator.compat=openunlearning" in r.stderr
    quiet = cli_eval(*args, "evaluator.compat=openunlearning")
    assert quiet.returncode == 0 and "OpenUnlearning's own evaluation" not in quiet.stderr, quiet.stderr[-1500:]


def test_a_reference_result_named_for_another_split_is_refused(tmp_path, tiny_folder):
    """OU's retain logs are named for their retain split (tofu_<model>_retain90/TOFU_EVAL.json): that name is
    checked against the forget split like a model's."""
    import shutil

    folder = tmp_path / "tofu_Llama-3.2-1B-Instruct_retain90"
    folder.mkdir()
    shutil.copy(OU_EVAL, folder / "TOFU_EVAL.json")
    r = cli_eval("--check", "model=hf", f"model.path={tiny_folder}", f"reference_result={folder / 'TOFU_EVAL.json'}")
    assert r.returncode == 2
    assert r.stderr.strip().splitlines()[-1].startswith(
        f"error: reference_result={folder / 'TOFU_EVAL.json'} is named for retain90 (TOFU forget10), but "
        "dataset.forget_split=forget01"), r.stderr[-1500:]
