"""GPU paths: bf16 weights, sdpa attention, 1 and 2 GPUs (DDP, FSDP). Marked `gpu`: they run where CUDA is visible.

The same tests run on CPU with gloo in test_distributed.py; these check what only a GPU has
(bf16 kernels, NCCL, one device per process).
"""

from __future__ import annotations

import json

import pytest
import torch
from conftest import compose
from test_distributed import BASE, cli, losses, numbers, torchrun

pytestmark = pytest.mark.gpu
CORE = [a for a in BASE if not a.startswith("attack=")]  # attacks are refused under FSDP / ZeRO-3


def test_bf16_weights_and_sdpa_on_one_gpu(tmp_path, data_dir):
    from unlearning.models import load_folder
    from unlearning.run import run

    record = run(compose(CORE + ["device=cuda", "model.dtype=bfloat16", "model.attn_implementation=sdpa",
                                 "trainer.batch_size=4"]), tmp_path / "run", [])
    assert record["status"] == "ok" and record["provenance"]["device"].startswith("cuda")
    # the defaults are the fast ones on a GPU: bf16 autocast (trainer.bf16 / generation.bf16 = auto)
    assert record["provenance"]["bf16_effective"] == {"train": torch.cuda.is_bf16_supported(),
                                                      "generation": torch.cuda.is_bf16_supported()}
    model, _ = load_folder(tmp_path / "run" / "model", dtype="bfloat16")
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    assert model.config._attn_implementation == "sdpa"


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs 2 GPUs")
@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_two_gpus_equal_one(strategy, tmp_path, data_dir):
    one, two = tmp_path / "one", tmp_path / "two"
    p1 = cli(*CORE, "device=cuda", "trainer.batch_size=4", f"hydra.run.dir={one}")
    p2 = cli(*CORE, "device=cuda", f"distributed={strategy}", "trainer.batch_size=2", f"hydra.run.dir={two}",
             launcher=torchrun(2))
    assert p1.returncode == 0 and p2.returncode == 0, (p1.stderr[-2000:], p2.stderr[-2000:])
    a, b = (json.loads((d / "results.json").read_text()) for d in (one, two))
    assert b["training"]["global_batch"] == 4 and b["training"]["strategy"] == strategy
    assert losses(two) == pytest.approx(losses(one), abs=1e-4)
    assert numbers(b) == pytest.approx(numbers(a), abs=1e-3)


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs 2 GPUs")
def test_graddiff_kl_frozen_copy_sharded(tmp_path, data_dir):
    """GradDiff-KL with full fine-tuning: under FSDP its frozen copy is sharded too, with DDP's losses (the same
    per-rank retain draws; a single process would draw other retain batches)."""
    ddp, fsdp = tmp_path / "ddp", tmp_path / "fsdp"
    args = [*[a for a in CORE if not a.startswith("method")], "device=cuda", "method=graddiff",
            "method.retain_loss=kl", "trainer.batch_size=2"]
    p1 = cli(*args, "distributed=ddp", f"hydra.run.dir={ddp}", launcher=torchrun(2))
    p2 = cli(*args, "distributed=fsdp", f"hydra.run.dir={fsdp}", launcher=torchrun(2))
    assert p1.returncode == 0 and p2.returncode == 0, (p1.stderr[-2000:], p2.stderr[-2000:])
    assert "retain_kl" in (fsdp / "train_log.jsonl").read_text()
    assert losses(fsdp) == pytest.approx(losses(ddp), abs=1e-4)


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs 2 GPUs")
def test_fsdp_evaluates_during_training_on_rank_0_with_ddps_curve(tmp_path, data_dir):
    """Under FSDP the weights are gathered into one copy on rank 0 for each evaluation during training; its curve and
    the step `select` keeps must be DDP's (where every process evaluates its share)."""
    ddp, fsdp = tmp_path / "ddp", tmp_path / "fsdp"
    args = [*CORE, "device=cuda", "trainer.batch_size=2", "trainer.eval_every=1", "trainer.eval.generate=false",
            "trainer.select=forget_Q_A_Prob:max"]
    p1 = cli(*args, "distributed=ddp", f"hydra.run.dir={ddp}", launcher=torchrun(2))
    p2 = cli(*args, "distributed=fsdp", f"hydra.run.dir={fsdp}", launcher=torchrun(2))
    assert p1.returncode == 0 and p2.returncode == 0, (p1.stderr[-2000:], p2.stderr[-2000:])
    a, b = (json.loads((d / "results.json").read_text()) for d in (ddp, fsdp))
    assert [c["step"] for c in b["curve"]] == [c["step"] for c in a["curve"]] == [1, 2, 3]
    for x, y in zip(b["curve"], a["curve"]):
        assert x == pytest.approx(y, abs=1e-3)
    assert b["selection"]["step"] == a["selection"]["step"]
