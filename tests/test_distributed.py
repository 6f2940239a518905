"""Distributed training, checkpoints and resume, with real processes on this CPU.

Two gloo processes started by torchrun run the tiny model exactly as a GPU cluster would run a
7B one (same code path: accelerate's DDP, forget shards, rank-0 writes); a run killed with
SIGKILL resumes from its last checkpoint to the very numbers of a run never interrupted.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import ROOT, compose

# NPO without a retain term (tests/test_same_numbers.py has it with one, and the accumulation splits).
BASE = ["model=tiny", "dataset=tofu", "dataset.retain_authors=2", "evaluator.max_items=6",
        "evaluator.max_new_tokens=16", "model.finetune.epochs=2", "trainer.max_steps=3", "trainer.lr=1e-3",
        "method=npo", "method.retain_weight=0", "attack=[quant8,paraphrase]"]
# evaluation during training (likelihood metrics only) after steps 2 and 3: its curve is compared too. NPO lowers
# forget_Q_A_Prob, so `:max` selects step 2: the final evaluation runs on weights put back after training (under DDP
# rank 0 alone keeps that copy and sends it to the others; a process that missed it would score its share wrong)
EVAL = ["trainer.eval_every=2", "trainer.eval.generate=false", "trainer.select=forget_Q_A_Prob:max"]


def cli(*args: str, env: dict | None = None, launcher: list[str] | None = None, timeout: int = 300):
    cmd = (launcher or [sys.executable, "-m", "unlearning"]) + list(args)
    return subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=timeout,
                          env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})})


def torchrun(n: int) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={n}", "-m", "unlearning"]


def losses(run_dir: Path) -> list[float]:
    rows = map(json.loads, (run_dir / "train_log.jsonl").read_text().splitlines())
    return [row["unlearn/loss"] for row in rows if "unlearn/loss" in row]  # not the eval/* rows


def numbers(record: dict) -> dict:
    return {k: v for k, v in record["metrics"].items() if isinstance(v, (int, float))}


@pytest.fixture(scope="module")
def single(tmp_path_factory, data_dir):
    """The uninterrupted one-process run, global batch 4."""
    from unlearning.run import run

    out = tmp_path_factory.mktemp("single")
    record = run(compose(BASE + EVAL + ["trainer.batch_size=4"]), out, [])
    return out, record


def test_two_processes_equal_one_with_the_same_global_batch(single, tmp_path):
    ref_dir, ref = single
    sweep = tmp_path / "sweep"
    # a one-job sweep, so the sweep summary is exercised under the distributed launch too
    # the same target and reference as the one-process run, given as paths (tests/test_same_numbers.py: the same keys)
    stages = [f"stage.{k}_path={v['path']}" for k, v in ref["stages"].items()]
    assert {s.split("=")[0] for s in stages} == {"stage.target_path", "stage.reference_path"}
    p = cli("-m", *BASE, *EVAL, *stages, "trainer.batch_size=4", f"hydra.sweep.dir={sweep}", launcher=torchrun(2))
    assert p.returncode == 0, p.stderr[-3000:]
    job = sweep / "0"
    record = json.loads((job / "results.json").read_text())
    assert record["training"] == {"strategy": "ddp", "processes": 2, "global_batch": 4, "grad_accum": 1,
                                  "micro_batch": 2}
    assert losses(job) == pytest.approx(losses(ref_dir), abs=1e-5)
    assert [c["step"] for c in record["curve"]] == [c["step"] for c in ref["curve"]] == [2, 3]
    for two, one in zip(record["curve"], ref["curve"]):  # the curve, split between the processes, is one process's
        assert two == pytest.approx(one, abs=1e-5)
    assert record["selection"]["step"] == ref["selection"]["step"] == 2  # weights put back, not the last ones
    # evaluation split between the processes, attacks included: one process's numbers
    assert {"forget_Q_A_Prob@quant8", "forget_Q_A_Prob@paraphrase"} <= set(numbers(record))
    assert numbers(record) == pytest.approx(numbers(ref), abs=1e-5)
    # rank 0 wrote everything once: one record, one model, one summary row, no second run folder
    assert (job / "model" / "config.json").is_file()
    summary = json.loads((sweep / "summary.json").read_text())
    assert [r["status"] for r in summary["jobs"]] == ["ok"]
    assert sorted(p.name for p in sweep.iterdir() if p.is_dir()) == ["0"]
    assert p.stdout.count("results:") == 1


def test_kill_9_then_resume_ends_with_the_uninterrupted_numbers(single, tmp_path):
    _, ref = single
    run_dir = tmp_path / "run"
    args = [*BASE, *EVAL, "trainer.batch_size=4", "trainer.save_every=1", f"hydra.run.dir={run_dir}"]
    killed = cli(*args, env={"UNLEARNING_FAULT_KILL_AFTER_STEP": "2"})
    assert killed.returncode == -9, killed.stderr[-2000:]
    assert not (run_dir / "results.json").exists()
    assert (run_dir / "checkpoints" / "step-2" / "loop.json").is_file()
    assert not list((run_dir / "checkpoints").glob(".*tmp"))  # no half-written checkpoint

    resumed = cli(*args, "resume=true")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    record = json.loads((run_dir / "results.json").read_text())
    assert record["resumed_from"].endswith("step-2")
    assert numbers(record) == pytest.approx(numbers(ref), abs=1e-6)
    # the curve survives the kill: step 2's evaluation came back from the checkpoint, step 3's was made after
    assert [c["step"] for c in record["curve"]] == [2, 3]
    for resumed_point, one in zip(record["curve"], ref["curve"]):
        assert resumed_point == pytest.approx(one, abs=1e-6)
    assert not (run_dir / "checkpoints").exists()  # a finished run keeps no checkpoint


def test_two_processes_killed_then_resumed_equal_two_uninterrupted(single, tmp_path):
    """GradDiff: two forward passes per step through DDP, and per-rank retain draws replayed on resume."""
    stages = [f"stage.{k}_path={v['path']}" for k, v in single[1]["stages"].items()]  # no 2-process stage builds
    args = [*BASE, *stages, "method=graddiff", "trainer.batch_size=2", "trainer.save_every=1"]
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    assert cli(*args, f"hydra.run.dir={whole}", launcher=torchrun(2)).returncode == 0
    killed = cli(*args, f"hydra.run.dir={cut}", env={"UNLEARNING_FAULT_KILL_AFTER_STEP": "2"}, launcher=torchrun(2))
    assert killed.returncode != 0 and not (cut / "results.json").exists()
    assert sorted(p.name for p in (cut / "checkpoints" / "step-2").glob("random_states_*")) == [
        "random_states_0.pkl", "random_states_1.pkl"]
    resumed = cli(*args, f"hydra.run.dir={cut}", "resume=true", launcher=torchrun(2))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    a, b = (json.loads((d / "results.json").read_text()) for d in (whole, cut))
    assert b["resumed_from"].endswith("step-2")
    assert losses(cut)[-1] == pytest.approx(losses(whole)[-1], abs=1e-6)
    assert numbers(b) == pytest.approx(numbers(a), abs=1e-6)


def test_resume_refuses_a_checkpoint_of_another_config(single, tmp_path):
    from unlearning.errors import UserError
    from unlearning.run import run

    run_dir = tmp_path / "run"
    killed = cli(*BASE, "trainer.batch_size=4", "trainer.save_every=1", f"hydra.run.dir={run_dir}",
                 env={"UNLEARNING_FAULT_KILL_AFTER_STEP": "1"})
    assert killed.returncode == -9
    with pytest.raises(UserError, match=r"differing keys: method.beta, trainer.lr"):
        run(compose(BASE + ["trainer.batch_size=4", "trainer.lr=2e-3", "method.beta=0.2", "resume=true"]), run_dir)


def test_relaunched_sweep_skips_finished_jobs_and_resumes_the_others(data_dir, tmp_path):
    sweep = tmp_path / "sweep"
    args = ["-m", *[a for a in BASE if not a.startswith("trainer.max_steps")], "trainer.batch_size=4",
            "trainer.save_every=1", "trainer.max_steps=1,3", f"hydra.sweep.dir={sweep}"]
    crashed = cli(*args, env={"UNLEARNING_FAULT_KILL_AFTER_STEP": "2"})  # job 0 ends at step 1; job 1 dies
    assert crashed.returncode == -9
    first = (sweep / "0" / "results.json").stat().st_mtime_ns
    assert not (sweep / "1" / "results.json").exists()

    again = cli(*args, "resume=true")
    assert again.returncode == 0, again.stderr[-3000:]
    assert (sweep / "0" / "results.json").stat().st_mtime_ns == first  # not run again
    job1 = json.loads((sweep / "1" / "results.json").read_text())
    assert job1["status"] == "ok" and job1["resumed_from"].endswith("step-2")
    summary = json.loads((sweep / "summary.json").read_text())
    assert [r["status"] for r in summary["jobs"]] == ["ok", "ok"]


# ---- bad input: one line, exit 2, before any work ------------------------------------------------------

def _validate(overrides, monkeypatch, world: int = 1):
    from unlearning.validate import validate

    monkeypatch.setenv("WORLD_SIZE", str(world))
    return validate(compose([a for a in BASE if not a.startswith("attack=")] + overrides))  # attacks: ddp only


@pytest.mark.parametrize("choice", ["ddp", "fsdp", "deepspeed_zero3"])
def test_a_distributed_strategy_without_its_launcher(choice, data_dir, monkeypatch):
    from unlearning.errors import UserError

    with pytest.raises(UserError, match="needs a multi-process launch, but WORLD_SIZE is 1: start it with `torchrun"):
        _validate([f"distributed={choice}"], monkeypatch)


def test_single_under_a_multi_process_launch(data_dir, monkeypatch):
    from unlearning.errors import UserError

    with pytest.raises(UserError, match="distributed=single, but this launch started 2 processes"):
        _validate(["distributed=single"], monkeypatch, world=2)


def _pretend_gpus(monkeypatch):
    # a GPU cannot exist here: FSDP/DeepSpeed validation past the CUDA check is reached by saying there is one
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)


def test_sharded_strategies_need_gpus(data_dir, monkeypatch):
    """accelerate ignores FSDP/DeepSpeed plugins on CPU (it would run DDP and the record would lie): refused."""
    from unlearning.errors import UserError

    for choice, name in (("fsdp", "fsdp"), ("deepspeed_zero3", "deepspeed")):
        with pytest.raises(UserError, match=f"distributed.strategy={name} needs CUDA GPUs .* use distributed=ddp here"):
            _validate([f"distributed={choice}"], monkeypatch, world=2)


def test_deepspeed_not_installed(data_dir, monkeypatch):
    import importlib.util

    from unlearning.errors import UserError

    assert importlib.util.find_spec("deepspeed") is None, "this test expects a machine without DeepSpeed"
    _pretend_gpus(monkeypatch)
    for choice in ("deepspeed_zero2", "deepspeed_zero3"):
        with pytest.raises(UserError, match="DeepSpeed is not installed: `pip install deepspeed`"):
            _validate([f"distributed={choice}"], monkeypatch, world=2)


def test_fsdp_config_composes_and_validates(data_dir, monkeypatch):
    _pretend_gpus(monkeypatch)
    parts = _validate(["distributed=fsdp"], monkeypatch, world=2)
    assert parts.distributed.effective == "fsdp" and parts.distributed.sharded
    assert parts.distributed.fsdp["auto_wrap_policy"] == "transformer_based_wrap"
    assert parts.distributed.describe(16, 4) == {"strategy": "fsdp", "processes": 2, "global_batch": 16, "grad_accum": 4,
                                                "micro_batch": 2}  # 16 = 2 processes x 4 micro-batches of 2


def test_unknown_plugin_option(data_dir, monkeypatch):
    from unlearning.errors import UserError

    _pretend_gpus(monkeypatch)
    with pytest.raises(UserError, match=r"distributed.fsdp has unknown option\(s\) \['shard_everything'\]"):
        _validate(["distributed=fsdp", "+distributed.fsdp.shard_everything=true"], monkeypatch, world=2)


def test_resume_with_no_checkpoint(tmp_path, data_dir):
    from unlearning.errors import UserError
    from unlearning.run import run

    cache = Path(os.environ["UNLEARNING_CACHE"])
    before = sorted(cache.rglob("*")) if cache.exists() else []
    with pytest.raises(UserError, match=r"resume=True: no checkpoint in .*checkpoints \(a run writes them with "
                                        r"trainer.save_every=N\)"):
        run(compose(BASE + ["resume=true"]), tmp_path / "fresh")
    assert (sorted(cache.rglob("*")) if cache.exists() else []) == before  # nothing built


def test_resume_path_that_does_not_exist(tmp_path, data_dir):
    p = cli(*BASE, f"resume={tmp_path / 'nope'}", f"hydra.run.dir={tmp_path / 'run'}")
    assert p.returncode == 2
    assert p.stderr.strip().splitlines() == [f"error: resume={tmp_path / 'nope'}: no such run or checkpoint folder; "
                                             "give a run folder (with checkpoints/), a checkpoint folder (step-N), "
                                             "or resume=true for this run's own folder"]


def test_negative_save_every(data_dir, monkeypatch):
    from unlearning.errors import UserError

    with pytest.raises(UserError, match=r"trainer.save_every=-1 must be >= 0"):
        _validate(["trainer.save_every=-1"], monkeypatch)


def test_stage_builds_are_not_keyed_by_how_they_train(monkeypatch):
    from unlearning.stages import stage_key
    from unlearning.train import TrainSettings

    a = stage_key("target", {}, [], [], TrainSettings(), 64)
    b = stage_key("target", {}, [], [], TrainSettings(save_every=5, gradient_checkpointing=True, eval_each_epoch=True,
                                                       grad_accum=4), 64)
    c = stage_key("target", {}, [], [], TrainSettings(lr=2e-5), 64)
    assert a == b and a != c
    monkeypatch.setenv("WORLD_SIZE", "2")  # the batch is global: two processes fine-tune the same stage
    assert stage_key("target", {}, [], [], TrainSettings(), 64) == a


@pytest.fixture(autouse=True)
def _no_stray_outputs():
    """Distributed launches must not leave a second run folder under outputs/ (rank 1's own timestamp)."""
    before = set((ROOT / "outputs").glob("*/*")) if (ROOT / "outputs").exists() else set()
    yield
    after = set((ROOT / "outputs").glob("*/*")) if (ROOT / "outputs").exists() else set()
    new = after - before
    for p in new:
        shutil.rmtree(p, ignore_errors=True)
    assert not new, f"a test wrote into outputs/: {sorted(map(str, new))}"


def test_slurm_multigpu_launcher_asks_one_gpu_per_process():
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        cfg = hydra_compose("config", overrides=["hydra/launcher=slurm_multigpu", "distributed=fsdp",
                                                 "distributed.processes=4"], return_hydra_config=True)
    launcher = cfg.hydra.launcher
    assert (launcher.nodes, launcher.gpus_per_node, launcher.tasks_per_node) == (1, 4, 4)


def test_slurm_tasks_become_a_torch_distributed_launch(monkeypatch):
    """A Slurm cluster cannot exist here: its variables are set by hand, as srun sets them for task 1 of 2."""
    from unlearning.__main__ import slurm_torch_environment

    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setattr(os, "environ", dict(os.environ))  # the export writes os.environ; keep it to this test
    os.environ.update(SUBMITIT_EXECUTOR="slurm", SLURM_NTASKS="2", SLURM_PROCID="1", SLURM_LOCALID="1",
                      SLURM_JOB_ID="42", SLURM_JOB_NODELIST="node7", SLURM_NODEID="0", SLURM_JOB_NUM_NODES="1",
                      SLURM_NNODES="1", SLURM_STEP_NODELIST="node7")
    slurm_torch_environment()
    assert (os.environ["RANK"], os.environ["WORLD_SIZE"], os.environ["LOCAL_RANK"]) == ("1", "2", "1")
    assert os.environ["MASTER_ADDR"] == "node7"


REF_LOGPS_SCRIPT = r'''
import json, os, sys
import torch
from transformers import LlamaConfig, LlamaForCausalLM
from unlearning.distributed import shutdown
from unlearning.methods.reference import attach_ref_logps

torch.manual_seed(0)
model = LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                     num_attention_heads=2, num_key_value_heads=2))
calls = []
model.register_forward_hook(lambda *a: calls.append(1))
g = torch.Generator().manual_seed(1)
items = []
for n in range(9):
    ids = torch.randint(1, 64, (4 + n % 5,), generator=g).tolist()
    items.append({"input_ids": ids, "labels": [-100, -100] + ids[2:]})
attach_ref_logps(model, items, pad_id=0, batch_size=2)
out = {"values": [it["ref_logp"] for it in items], "calls": len(calls)}
open(os.path.join(sys.argv[1], f"rank{os.environ.get('RANK', '0')}.json"), "w").write(json.dumps(out))
shutdown()  # as the entrypoint ends
'''


def test_reference_log_probs_are_computed_once_across_processes(tmp_path):
    """NPO / IdkDPO's cached reference: each of 2 processes scores half the batches, both get every value,
    equal to one process's."""
    script = tmp_path / "ref_logps.py"
    script.write_text(REF_LOGPS_SCRIPT)
    one, two = tmp_path / "one", tmp_path / "two"
    one.mkdir(), two.mkdir()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    p = subprocess.run([sys.executable, str(script), str(one)], capture_output=True, text=True, env=env, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    p = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                        str(script), str(two)], capture_output=True, text=True, env=env, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    single = json.loads((one / "rank0.json").read_text())
    ranks = [json.loads((two / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert single["calls"] == 5                              # 9 items in batches of 2
    assert [r["calls"] for r in ranks] == [3, 2]             # every batch scored once, by one process
    assert ranks[0]["values"] == ranks[1]["values"] == single["values"]  # the same batches: the same numbers


EVAL_SCRIPT = r"""
import json, os, sys
from transformers import AutoModelForCausalLM, AutoTokenizer
from unlearning.data.base import chat, encode
from unlearning.distributed import shutdown
from unlearning.eval import engine

model = AutoModelForCausalLM.from_pretrained(sys.argv[1])
tok = AutoTokenizer.from_pretrained(sys.argv[1])
rows = []  # rows of each prefill (a forward pass over a whole prompt): which process decoded or scored what
model.register_forward_pre_hook(lambda m, a, kw: rows.append(kw["input_ids"].shape[0])
                                if kw["input_ids"].shape[1] > 1 else None, with_kwargs=True)
questions = [f"Who wrote book number {n} of the {'old ' * (n % 4)}series?" for n in range(7)]
items = [encode(tok, chat(q, "An author wrote it " + "long ago " * (n % 3)), 64) for n, q in enumerate(questions)]
scores = engine.score(model, items, tok.pad_token_id, batch_size=2, stats=True)
chats = [[{"role": "user", "content": q}] for q in questions]
plain = engine.answer(model, tok, chats, 6, {"batch_size": 2})
guided = engine.answer(model, tok, chats, 6, {"batch_size": 2, "guidance": {"scale": 2.0, "mode": "prob"}})
out = {"logp": [s.logp.tolist() for s in scores], "mu": [s.mu.tolist() for s in scores],
       "hit": [s.hit.tolist() for s in scores], "plain": plain, "guided": guided, "rows": rows}
open(os.path.join(sys.argv[2], f"rank{os.environ.get('RANK', '0')}.json"), "w").write(json.dumps(out))
shutdown()  # as the entrypoint ends: a barrier, then the process group closed
import torch.distributed as dist
open(os.path.join(sys.argv[2], f"closed{os.environ.get('RANK', '0')}"), "w").write(str(not dist.is_initialized()))
"""


def test_evaluation_is_split_between_processes_with_the_same_numbers(tmp_path):
    """Every scoring and decoding batch runs in exactly one of 2 processes; both end with one process's numbers."""
    from unlearning.models import TinyLlama

    corpus = [f"Who wrote book number {n}? An author wrote it long ago in the old series." for n in range(50)]
    model, tok = TinyLlama(cache_dir=str(tmp_path / "cache"), hidden_size=32, num_layers=1, num_heads=2,
                           intermediate_size=64, vocab_size=300).load(corpus)
    model.save_pretrained(tmp_path / "model")
    tok.save_pretrained(tmp_path / "model")
    script = tmp_path / "eval_split.py"
    script.write_text(EVAL_SCRIPT)
    one, two = tmp_path / "one", tmp_path / "two"
    one.mkdir(), two.mkdir()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    args = [str(script), str(tmp_path / "model")]
    p = subprocess.run([sys.executable, *args, str(one)], capture_output=True, text=True, env=env, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    p = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                        *args, str(two)], capture_output=True, text=True, env=env, timeout=300, cwd=ROOT)
    assert p.returncode == 0, p.stderr[-2000:]
    single = json.loads((one / "rank0.json").read_text())
    ranks = [json.loads((two / f"rank{r}.json").read_text()) for r in (0, 1)]
    # 7 items in batches of 2: 4 batches for scoring, for plain and for guided decoding (2 rows each, CFG)
    assert single["rows"] == [2, 2, 2, 1] + [2, 2, 2, 1] + [4, 4, 4, 2]
    assert sorted(ranks[0]["rows"] + ranks[1]["rows"]) == sorted(single["rows"])
    assert ranks[0]["rows"] == [2, 2] * 2 + [4, 4] and ranks[1]["rows"] == [2, 1] * 2 + [4, 2]
    for key in ("logp", "mu", "hit", "plain", "guided"):
        assert ranks[0][key] == ranks[1][key] == single[key], key  # the same batches: the same numbers
    # both processes closed the process group together (a rank exiting with it open could reset the other's reads)
    assert [(two / f"closed{r}").read_text() for r in (0, 1)] == ["True", "True"]


def test_two_processes_write_the_pii_replacements_once(tmp_path):
    """Model-written PII replacements under a 2-process launch: rank 0 generates them alone while the other
    waits (no collective inside), then the other reads its cache; the run (with split evaluation) completes."""
    cache, sweep = tmp_path / "cache", tmp_path / "sweep"
    p = cli("-m", "model=tiny", "dataset=synthetic_pii", "evaluator=pii", "method=ga", f"cache_dir={cache}",
            "dataset.people=2", "dataset.dialogues_per_person=1", "dataset.heldout_per_person=1",
            "dataset.pii_free_train=4", "dataset.pii_free_heldout=2", "model.hidden_size=32", "model.num_layers=1",
            "model.num_heads=2", "model.intermediate_size=64", "model.vocab_size=400", "model.finetune.epochs=1",
            "trainer.max_steps=1", "evaluator.max_probes_per_kind=2", "evaluator.max_new_tokens=4",
            "evaluator.utility_max_new_tokens=4", "dataset.replacement.model=${model}",
            "dataset.replacement.max_new_tokens=4", f"hydra.sweep.dir={sweep}", launcher=torchrun(2),
            env={"UNLEARNING_DIST_TIMEOUT_MIN": "2"})
    assert p.returncode == 0, p.stderr[-3000:]
    record = json.loads((sweep / "0" / "results.json").read_text())
    assert record["status"] == "ok" and record["training"]["processes"] == 2
    assert "leakage_rate" in record["metrics"] and "leakage_rate" in record["baselines"]["target"]
    assert len(list((cache / "data" / "synthetic_pii").glob("*.json"))) == 1
    # one process on the same config and cache: the same chosen answers (their sources counted) and the same
    # numbers, over-refusal and PII per 50 answers included (answers are gathered before any metric)
    single = tmp_path / "single"
    s = cli(*[a for a in p.args[p.args.index("model=tiny"):] if not a.startswith("hydra.sweep.dir")],
            f"hydra.run.dir={single}")
    assert s.returncode == 0, s.stderr[-3000:]
    one = json.loads((single / "results.json").read_text())
    assert one["chosen_sources"] == record["chosen_sources"] and sum(one["chosen_sources"].values()) >= 2
    assert one["training"]["processes"] == 1
    for key in ("over_refusal_rate", "detector_pii_per_50", "leakage_rate", "utility_rougeL_recall"):
        assert one["metrics"][key] == pytest.approx(record["metrics"][key], abs=1e-9), key


def test_a_killed_stage_build_resumes_to_the_same_weights(single, tmp_path):
    """kill -9 in the middle of the target fine-tune: the next run continues it from <stage>.partial."""
    from safetensors.torch import load_file

    _, ref = single
    cache = tmp_path / "cache"
    args = [*BASE, "trainer.batch_size=4", "model.finetune.save_every=2", f"cache_dir={cache}",
            "stage.evaluate_target=false", "evaluator.generate=false", f"hydra.run.dir={tmp_path / 'run'}",
            f"stage.reference_path={ref['stages']['reference']['path']}"]  # only the target is built here
    killed = cli(*args, env={"UNLEARNING_FAULT_KILL_AFTER_STEP": "3"})
    assert killed.returncode == -9, killed.stderr[-2000:]
    partial = [p for p in (cache / "stages" / "target").iterdir() if p.name.endswith(".partial")]
    assert len(partial) == 1 and (partial[0] / "checkpoints" / "step-2" / "loop.json").is_file()
    assert not list((cache / "stages" / "target").glob("*/stage.json"))  # nothing half-built looks finished

    resumed = cli(*args)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "finetune target: resumed from" in resumed.stdout + resumed.stderr  # the log says where it continued
    built = json.loads((tmp_path / "run" / "results.json").read_text())["stages"]["target"]["path"]
    assert Path(built).name == Path(ref["stages"]["target"]["path"]).name  # same key: same stage
    assert not partial[0].exists()
    a = load_file(f"{built}/model.safetensors")
    b = load_file(f"{ref['stages']['target']['path']}/model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
