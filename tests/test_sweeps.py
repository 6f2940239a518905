"""Multirun: the sweep summary, failed jobs and the exit code, shared stages, W&B offline runs.

The end-to-end test runs a real four-job tiny sweep (`python -m unlearning -m`) with the
joblib launcher and two worker processes; nothing is mocked. W&B runs offline (no API key in
an empty HOME), which is W&B's own no-server mode.
"""

from __future__ import annotations

import csv
import json
import multiprocessing as mp
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra.core.utils import JobReturn, JobStatus

from unlearning.loggers import read_offline_run
from unlearning.report import report
from unlearning.sweep import SUMMARY_JSON, failed_jobs, finalize, job_row, load_summary, update_row

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(os.environ.get("UNLEARNING_DATA_DIR", ROOT.parent / "shared" / "data"))
TINY = ["model=tiny", "dataset.retain_authors=2", "evaluator.max_items=4", "evaluator.generate=false",
        "trainer.max_steps=2", "model.finetune.epochs=1", "save_model=false"]


def _write_rows(sweep_dir: str, worker: int, n: int) -> None:
    for i in range(n):
        update_row(sweep_dir, {"job": f"{worker * 100 + i}", "status": "ok", "wall_s": 0.1, "overrides": [],
                               "error": None, "metrics": {"m": float(i)}})


def test_summary_updates_from_parallel_processes_keep_every_row(tmp_path):
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_write_rows, args=(str(tmp_path), w, 6)) for w in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert all(p.exitcode == 0 for p in procs)
    rows = load_summary(tmp_path)
    assert sorted(int(r["job"]) for r in rows) == sorted(w * 100 + i for w in range(3) for i in range(6))
    with open(tmp_path / "summary.csv", newline="") as f:
        assert len(list(csv.DictReader(f))) == 18
    assert not list(tmp_path.glob(".*.tmp"))  # atomic writes leave no temporaries


def test_job_row_from_hydra_failure_and_missing_results(tmp_path):
    job = tmp_path / "7"
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "overrides.yaml").write_text("- method=npo\n- trainer.lr=0.1\n")
    ret = JobReturn(status=JobStatus.FAILED, _return_value=RuntimeError("CUDA out of memory\nmore"))
    row = job_row(job, tmp_path, ret, wall_s=3.0)
    assert row["status"] == "failed" and row["error"] == "RuntimeError: CUDA out of memory"
    assert row["method"] == "npo" and row["overrides"] == ["method=npo", "trainer.lr=0.1"]
    assert job_row(job, tmp_path)["status"] == "missing"
    (job / "results.json").write_text("{not json")
    assert job_row(job, tmp_path)["status"] == "failed"
    # finalize lists the folder; failed_jobs counts failed and missing jobs, not ok ones.
    ok = tmp_path / "8"
    ok.mkdir()
    (ok / "results.json").write_text(json.dumps({"status": "ok", "metrics": {"m": 1.0}, "overrides": []}))
    rows = finalize(tmp_path)
    assert [r["job"] for r in rows] == ["7", "8"]
    assert failed_jobs(tmp_path) == 1
    assert json.loads((tmp_path / SUMMARY_JSON).read_text())["counts"] == {"ok": 1, "diverged": 0, "failed": 1, "missing": 0}


@pytest.fixture(scope="module")
def tiny_sweep(tmp_path_factory):
    """Four jobs, two joblib workers: lr=1e30 makes two jobs diverge (a NaN loss at step 3).

    (lr=-1 would be refused before the sweep starts: every job of a -m launch is validated first,
    tests/test_validate.py.)"""
    tmp = tmp_path_factory.mktemp("sweep")
    home = tmp / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    env.update(HOME=str(home), HF_HUB_OFFLINE="1", UNLEARNING_DATA_DIR=str(DATA),
               UNLEARNING_CACHE=str(tmp / "cache"), TOKENIZERS_PARALLELISM="false")
    sweep_dir = tmp / "sweep"
    cmd = [sys.executable, "-m", "unlearning", "-m", "trainer.lr=1e-4,1e30", "method=ga,npo", *TINY, "trainer.max_steps=3",
           "trainer.max_grad_norm=0",
           "logger=wandb", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", f"hydra.sweep.dir={sweep_dir}",
           "hydra.callbacks.sweep_summary.table=ou_tofu_repro"]  # what experiment=tofu_ou_repro sets
    proc = subprocess.run(cmd, cwd=tmp, env=env, capture_output=True, text=True, timeout=900)
    return proc, sweep_dir, tmp / "cache"


def test_sweep_end_prints_ous_repro_table(tiny_sweep):
    proc, sweep_dir, _ = tiny_sweep
    text = (sweep_dir / "ou_repro.md").read_text()
    assert text.strip() in proc.stdout
    lines = {line.split(" | ")[0].strip("| "): line for line in text.splitlines() if line.startswith("| ")}
    assert lines["Method"].startswith("| Method | forget01 forget_quality | forget01 model_utility | forget01 "
                                      "forget_truth_ratio |")  # forget01 only: OU's other splits were not run
    ga = json.loads((sweep_dir / "0" / "results.json").read_text())
    cells = lines["GradAscent"].strip("| ").split(" | ")[1:]
    finetuned = lines["Finetuned"].strip("| ").split(" | ")[1:]
    for cell, want in ((cells[0], ga["metrics"]["forget_quality"]), (cells[2], ga["metrics"]["forget_Truth_Ratio"]),
                       (finetuned[0], ga["baselines"]["target"]["forget_quality"])):
        ours, theirs = cell.split(" / ")
        assert float(ours) == pytest.approx(want, rel=5e-3) and theirs == "-"  # the tiny model has no OU table
    assert set(lines) == {"Method", "Finetuned", "Retain", "GradAscent", "NPO"}


def test_sweep_summary_and_exit_code(tiny_sweep):
    proc, sweep_dir, _ = tiny_sweep
    assert proc.returncode == 2, proc.stderr[-3000:]  # two jobs did not end ok
    rows = {r["job"]: r for r in load_summary(sweep_dir)}
    assert set(rows) == {"0", "1", "2", "3"}
    assert [rows[j]["status"] for j in "0123"] == ["ok", "ok", "diverged", "diverged"]
    assert [rows[j]["method"] for j in "0123"] == ["ga", "npo", "ga", "npo"]
    for j in "23":
        assert "trainer.lr=1e+30" in rows[j]["overrides"] and "diverged at step" in rows[j]["error"]
    for j in "01":
        assert rows[j]["wall_s"] > 0 and 0 <= rows[j]["metrics"]["forget_quality"] <= 1
        assert rows[j]["objective"] == rows[j]["metrics"]["forget_quality"]
    with open(sweep_dir / "summary.csv", newline="") as f:
        csv_rows = list(csv.DictReader(f))
    assert [r["status"] for r in csv_rows] == ["ok", "ok", "diverged", "diverged"]
    assert float(csv_rows[1]["forget_quality"]) == rows["1"]["metrics"]["forget_quality"]
    assert failed_jobs(sweep_dir) == 2


def test_sweep_shares_one_target_build(tiny_sweep):
    _, sweep_dir, cache = tiny_sweep
    stages = [json.loads((sweep_dir / j / "results.json").read_text())["stages"] for j in "01"]
    assert sorted(s["target"]["built"] for s in stages) == [False, True]
    assert stages[0]["target"]["path"] == stages[1]["target"]["path"]
    assert len([p for p in (cache / "stages" / "target").iterdir() if p.is_dir()]) == 1


def test_sweep_wandb_offline_runs(tiny_sweep):
    _, sweep_dir, _ = tiny_sweep
    groups = set()
    for j, method in (("0", "ga"), ("1", "npo")):
        runs = list((sweep_dir / j / "wandb").glob("offline-run-*"))
        assert len(runs) == 1
        rec = read_offline_run(runs[0])
        groups.add(rec["run"]["group"])
        assert set(rec["run"]["tags"]) >= {method, "tiny"}
        assert rec["config"]["trainer"]["lr"] == 1e-4
        steps = [h for h in rec["history"] if "unlearn/loss" in h]
        assert [h["unlearn/step"] for h in steps] == [1, 2, 3] and all("unlearn/lr" in h for h in steps)
        results = json.loads((sweep_dir / j / "results.json").read_text())
        assert rec["summary"]["forget_quality"] == pytest.approx(results["metrics"]["forget_quality"])
        assert rec["exit_code"] == 0
    assert groups == {f"{sweep_dir.parent.name}/{sweep_dir.name}"}  # one W&B group for the sweep


def test_report_from_sweep(tiny_sweep):
    _, sweep_dir, _ = tiny_sweep
    out = report(sweep_dir, utility="retain_Q_A_Prob")  # generate=false: no ROUGE, no model_utility
    assert out["params"] == ["method", "trainer.lr"]
    assert set(out["pareto"]) <= {"0", "1"} and out["pareto"]
    md = (sweep_dir / "report.md").read_text()
    assert "4 jobs: 2 ok, 2 diverged, 0 failed, 0 missing" in md and "| 2 | diverged |" in md and "| 3 | diverged |" in md
    assert (sweep_dir / "plots" / "tradeoff.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (sweep_dir / "plots" / "param_trainer.lr.png").is_file()


def test_presets_compose():
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=["hydra/launcher=slurm", "hydra.launcher.partition=gpu",
                                           "hydra.launcher.timeout_min=30"], return_hydra_config=True)
        launcher = cfg.hydra.launcher
        assert launcher._target_.endswith("submitit_launcher.SlurmLauncher")
        assert (launcher.partition, launcher.timeout_min, launcher.gpus_per_node) == ("gpu", 30, 1)
        cfg = compose("config", overrides=["experiment=optuna_npo"], return_hydra_config=True)
        assert cfg.hydra.sweeper._target_.endswith("OptunaSweeper") and cfg.hydra.sweeper.direction == "maximize"
        assert set(cfg.hydra.sweeper.params) == {"trainer.lr", "method.beta"}
        assert cfg.method._target_ == "unlearning.methods.npo.NPO"
        assert "sweep_summary" in cfg.hydra.callbacks


def test_optuna_sweep_with_a_failed_trial(tiny_sweep, tmp_path):
    """Three Optuna trials over NPO's beta; lr=1e30 diverges a trial, the search goes on, exit code = 1.

    (lr=-1 would be refused before the sweep starts: every job of a -m launch is validated first.)"""
    _, _, cache = tiny_sweep
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    # One torch thread: on a shared small CPU, two spinning OpenMP threads per job are many times slower.
    env.update(HF_HUB_OFFLINE="1", UNLEARNING_DATA_DIR=str(DATA), UNLEARNING_CACHE=str(cache), OMP_NUM_THREADS="1")
    sweep_dir = tmp_path / "optuna"
    cmd = [sys.executable, "-m", "unlearning", "-m", "experiment=optuna_npo", "hydra.sweeper.n_trials=3",
           "hydra.sweeper.n_jobs=1", "trainer.lr=choice(1e30,0.0001)", *TINY, "trainer.max_grad_norm=0",
           "trainer.max_steps=6", f"hydra.sweep.dir={sweep_dir}"]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    rows = load_summary(sweep_dir)
    assert len(rows) == 3 and {r["method"] for r in rows} == {"npo"}
    failed = [r for r in rows if r["status"] != "ok"]
    assert len(failed) >= 1 and proc.returncode == len(failed), proc.stderr[-3000:]  # seed 0: a trial draws lr=1e30
    for r in rows:
        ov = dict(o.split("=", 1) for o in r["overrides"])
        assert float(ov["trainer.lr"]) in (1e30, 0.0001) and 0.01 <= float(ov["method.beta"]) <= 1.0
        assert (r["status"] == "diverged") == (float(ov["trainer.lr"]) == 1e30)
    from omegaconf import OmegaConf

    best = OmegaConf.load(sweep_dir / "optimization_results.yaml")
    assert best.best_value == pytest.approx(max(r["objective"] for r in rows if r["status"] == "ok"))
