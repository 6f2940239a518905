"""Stages given by hub id (OpenUnlearning's published TOFU targets and retain models): resolved to a local snapshot,
recorded with the commit, refused in one line when the hub is offline and nothing is cached.

The hub is unreachable here, so the test writes a Hugging Face cache in the hub client's own layout
(models--org--name/snapshots/<commit>, refs/main) and lets huggingface_hub find the snapshot offline: only the
hub server is missing, the client code is real.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest
from conftest import ROOT, compose, write_tiny_checkpoint

from unlearning.errors import UserError

COMMIT = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture(scope="module")
def hub_cache(tmp_path_factory, data_dir):
    root = tmp_path_factory.mktemp("hf") / "hub"
    for repo in ("open-unlearning/tofu_Tiny-Model_full", "open-unlearning/tofu_Tiny-Model_retain99"):
        entry = root / f"models--{repo.replace('/', '--')}"
        write_tiny_checkpoint(entry / "snapshots" / COMMIT, data_dir)
        (entry / "refs").mkdir(parents=True)
        (entry / "refs" / "main").write_text(COMMIT)
    local = root.parent / "Tiny-Model"
    shutil.copytree(root / "models--open-unlearning--tofu_Tiny-Model_full" / "snapshots" / COMMIT, local)
    return root, local


def test_the_resolver_names_openunlearnings_models():
    cfg = compose(["experiment=tofu_ou_repro", "model.path=/models/Llama-3.2-1B-Instruct", "dataset.forget_split=forget05"])
    assert cfg.stage.target_path == "open-unlearning/tofu_Llama-3.2-1B-Instruct_full"
    assert cfg.stage.reference_path == "open-unlearning/tofu_Llama-3.2-1B-Instruct_retain95"
    # OU: 4 per device x 2 GPUs x 4 accumulation steps = 32 per optimiser step, the global batch
    assert cfg.evaluator.compat == "openunlearning" and (cfg.trainer.batch_size, cfg.trainer.grad_accum) == (32, 4)


def test_a_hub_id_not_cached_offline_is_one_line(data_dir, monkeypatch, tmp_path):
    from unlearning.validate import validate

    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty"))
    with pytest.raises(UserError, match=r"stage\.target_path=open-unlearning/tofu_x_full is a hub id, but the hub is "
                                        r"offline .* not in the local Hugging Face cache"):
        validate(compose(["stage.target_path=open-unlearning/tofu_x_full"]))


def test_hub_stages_resolve_from_the_cache_and_record_the_commit(hub_cache, tmp_path):
    root, local = hub_cache
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(root)}
    code = "import sys; from unlearning.__main__ import eval_main; sys.exit(eval_main())"
    r = subprocess.run([sys.executable, "-c", code, "experiment=tofu_ou_repro", "model=hf", f"model.path={local}",
                        "dataset.retain_authors=2", "evaluator.max_items=2", "evaluator.max_new_tokens=4",
                        "evaluator.compat=null", f"hydra.run.dir={tmp_path / 'ev'}"],
                       capture_output=True, text=True, cwd=ROOT, env=env, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    record = json.loads((tmp_path / "ev" / "results.json").read_text())
    hub = record["config"]["stage"]["hub"]
    assert hub == {"target": {"id": "open-unlearning/tofu_Tiny-Model_full", "revision": COMMIT},
                   "reference": {"id": "open-unlearning/tofu_Tiny-Model_retain99", "revision": COMMIT}}
    assert record["config"]["stage"]["reference_path"].endswith(f"snapshots/{COMMIT}")
    # the evaluated model, the target and the reference are the same weights: identical numbers, forget_quality 1
    assert record["metrics"]["forget_quality"] == 1.0
    assert record["baselines"]["target"]["forget_Q_A_Prob"] == record["metrics"]["forget_Q_A_Prob"]
