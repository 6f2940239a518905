"""WandbLogger writes real offline W&B runs; the tests read the run's .wandb record file back.

No W&B server exists here, so nothing is mocked: offline mode is W&B's own no-server path,
and `wandb sync` of these folders is the (untested here) upload step.
"""

from __future__ import annotations

import json

import pytest

from unlearning.errors import UserError
from unlearning.loggers import LocalLogger, WandbLogger, read_offline_run, resolve_mode


@pytest.fixture
def no_wandb_key(monkeypatch, tmp_path):
    # An empty HOME: no ~/.netrc from `wandb login`, no ~/.config/wandb settings.
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    (tmp_path / "home").mkdir()
    for var in ("WANDB_API_KEY", "WANDB_MODE", "WANDB_DIR", "WANDB_PROJECT", "WANDB_ENTITY"):
        monkeypatch.delenv(var, raising=False)


def test_mode_offline_without_key_online_with_key(no_wandb_key, monkeypatch, tmp_path):
    assert resolve_mode("auto") == "offline"
    assert resolve_mode(None) == "offline"
    (tmp_path / "home" / ".netrc").write_text("machine api.wandb.ai\n  login user\n  password abc123\n")
    (tmp_path / "home" / ".netrc").chmod(0o600)
    assert resolve_mode("auto") == "online"
    assert resolve_mode("offline") == "offline"
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert resolve_mode("auto") == "disabled"
    with pytest.raises(UserError, match="logger.mode='sometimes'"):
        resolve_mode("sometimes")


def test_offline_run_holds_config_history_summary_and_table(no_wandb_key, tmp_path):
    run_dir = tmp_path / "job"
    run_dir.mkdir()
    logger = WandbLogger(project="proj", entity=None, mode="auto", group="sweep-A", tags=["extra"])
    assert logger.mode == "offline"
    cfg = {"trainer": {"lr": 1e-5}, "method": {"_target_": "unlearning.methods.ga.GradientAscent"}}
    logger.start(run_dir, cfg, {"method": "ga", "dataset": "tofu", "model": "tiny"})
    for step in (1, 2, 3):
        logger.log({"unlearn/loss": -float(step), "unlearn/lr": 1e-5 * (4 - step)}, step=step)
    logger.summary({"forget_quality": 0.25, "model_utility": 0.5})
    logger.finish("ok")

    runs = list((run_dir / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    rec = read_offline_run(runs[0])
    assert rec["run"]["project"] == "proj" and rec["run"]["group"] == "sweep-A"
    assert set(rec["run"]["tags"]) == {"ga", "tofu", "tiny", "extra"}
    assert rec["config"]["trainer"] == {"lr": 1e-5}
    losses = [(h["unlearn/step"], h["unlearn/loss"]) for h in rec["history"] if "unlearn/loss" in h]
    assert losses == [(1, -1.0), (2, -2.0), (3, -3.0)]
    assert [h["unlearn/lr"] for h in rec["history"] if "unlearn/lr" in h] == pytest.approx([3e-5, 2e-5, 1e-5])
    assert rec["step_metrics"]["unlearn/*"] == "unlearn/step"
    assert rec["summary"]["forget_quality"] == 0.25 and rec["summary"]["model_utility"] == 0.5
    assert rec["summary"]["status"] == "ok" and rec["exit_code"] == 0
    table_path = runs[0] / "files" / rec["summary"]["final_metrics/path"]
    table = json.loads(table_path.read_text())
    assert table["columns"] == ["metric", "value"]
    assert sorted(map(tuple, table["data"])) == [("forget_quality", 0.25), ("model_utility", 0.5)]
    # The local log is kept alongside W&B.
    lines = (run_dir / "train_log.jsonl").read_text().splitlines()
    assert [json.loads(x)["step"] for x in lines] == [1, 2, 3]


def test_failed_run_exit_code_and_wandb_dir_env(no_wandb_key, monkeypatch, tmp_path):
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wb"))
    logger = WandbLogger(mode="offline")
    logger.start(tmp_path, {"x": 1}, None)
    logger.log({"unlearn/loss": 1.0}, step=1)
    logger.finish("failed")
    runs = list((tmp_path / "wb" / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    rec = read_offline_run(runs[0])
    assert rec["run"]["project"] == "unlearning-lab"
    assert rec["exit_code"] == 1 and rec["summary"]["status"] == "failed"


def test_local_logger_unchanged(tmp_path):
    lg = LocalLogger()
    lg.start(tmp_path)
    lg.log({"a": 1.0}, step=7)
    lg.summary({"m": 1})
    lg.finish()
    assert json.loads((tmp_path / "train_log.jsonl").read_text()) == {"step": 7, "a": 1.0}
