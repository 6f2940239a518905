"""The validation phase: every bad input is one line and exit code 2, before any stage is built or weights load.

Each CLI case runs the real entrypoint (`python -m unlearning`) in a subprocess with an empty cache folder
and asserts: exit code 2, exactly one `error:` line naming the key, no traceback, and an empty cache (no
tiny model, tokenizer or stage was built: no expensive work happened before the error).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import compose
from omegaconf import OmegaConf

from unlearning.errors import UserError
from unlearning.validate import validate

ROOT = Path(__file__).resolve().parent.parent


def _cli(*args: str, cache: Path, env_extra: dict | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, **(env_extra or {})}
    env.pop("UNLEARNING_TRACEBACK", None)
    return subprocess.run([sys.executable, "-m", "unlearning", f"cache_dir={cache}", "threads=1", *args], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=300)


def _one_line_error(proc: subprocess.CompletedProcess, cache: Path, *needles: str) -> str:
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-1500:])
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, proc.stderr[-1500:]
    assert "Traceback" not in proc.stderr
    for needle in needles:
        assert needle in errors[0], errors[0]
    # nothing expensive ran: no model, tokenizer or stage in the cache
    assert not any(p.is_file() and p.suffix in (".safetensors", ".json") for p in cache.rglob("*")), \
        sorted(str(p) for p in cache.rglob("*"))
    return errors[0]


CASES = {
    "wrong type, method": (["method=npo", "method.beta=abc"], ["method.beta", "number"]),
    "wrong type, trainer": (["trainer.lr=abc"], ["trainer.lr"]),
    "wrong type, evaluator": (["evaluator.generate=maybe"], ["evaluator.generate", "true or false"]),
    "wrong type, top level": (["max_length=abc"], ["max_length"]),
    "unknown evaluator key": (["+evaluator.batchsize=3"], ["batchsize", "evaluator=tofu"]),
    "unknown model key": (["+model.hiden=3"], ["hiden", "model=tiny"]),
    "unknown logger key": (["logger=wandb", "+logger.projct=x"], ["projct", "logger=wandb"]),
    "guidance scale": (["generation.guidance.scale=0.5"], ["generation.guidance.scale"]),
    "eval scale entry": (["generation.eval_scales=[2,abc]"], ["generation.eval_scales[1]"]),
    "eval scale mode": (["generation.eval_scales=[{scale:2,mode:foo}]"], ["generation.eval_scales[0]", "mode"]),
    "objective not produced": (["objective=leakage_rate"], ["objective=leakage_rate", "evaluator=tofu"]),
    "zero steps": (["trainer.epochs=0"], ["trainer.epochs", "zero steps"]),
    "zero fine-tune steps": (["model.finetune.epochs=0"], ["model.finetune.epochs", "zero steps"]),
    "max_length over the model's": (["max_length=5000"], ["max_length=5000", "max_position_embeddings"]),
    "chat method on raw text": (["dataset=muse_news", "evaluator=muse", "objective=privleak", "method=idk_dpo"],
                                ["method=idk_dpo", "raw text"]),
    "pairs method without pairs": (["method=orpo"], ["method=orpo", "preference pairs"]),
    "evaluator on the wrong dataset": (["dataset=muse_news", "evaluator=tofu"], ["evaluator=tofu", "dataset=muse_news"]),
    "subtraction scale": (["subtraction.enabled=true", "subtraction.scale=-1"], ["subtraction.scale"]),
    "online W&B without a key": (["logger=wandb", "logger.mode=online"], ["logger.mode=online", "offline"]),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_is_one_clear_line_from_the_validation_phase(case, tmp_path, data_dir, monkeypatch):
    """In-process: the validation phase (which needs no weights) rejects the input, naming the key."""
    args, needles = CASES[case]
    # an empty HOME: no ~/.netrc, so no W&B credentials exist (W&B's server is what cannot exist here)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    with pytest.raises(UserError) as e:
        validate(compose([*args, f"cache_dir={tmp_path / 'cache'}"]))
    assert "\n" not in str(e.value)
    for needle in needles:
        assert needle in str(e.value), str(e.value)
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").rglob("*.safetensors"))


@pytest.mark.parametrize("case", ["wrong type, method", "chat method on raw text", "online W&B without a key",
                                  "guidance scale"])
def test_bad_input_through_the_entrypoint_exits_2_before_any_work(case, tmp_path, data_dir):
    """The real CLI in a subprocess: exit 2, one line, no traceback, an empty cache."""
    args, needles = CASES[case]
    proc = _cli(*args, f"hydra.run.dir={tmp_path / 'run'}", cache=tmp_path / "cache",
                env_extra={"HOME": str(tmp_path), "WANDB_API_KEY": "", "WANDB_MODE": ""})
    _one_line_error(proc, tmp_path / "cache", *needles)


def test_check_validates_every_job_of_a_sweep_and_runs_none(tmp_path, data_dir):
    ok = _cli("--check", "-m", "method=ga,npo", "trainer.lr=1e-3,1e-4", cache=tmp_path / "cache")
    assert ok.returncode == 0 and "ok: 4 jobs valid" in ok.stdout, ok.stderr[-1500:]
    # the second job is the bad one: it is named with its overrides, and nothing ran
    bad = _cli("--check", "-m", "dataset=muse_news", "evaluator=muse", "objective=privleak", "method=ga,orpo",
               cache=tmp_path / "cache")
    line = _one_line_error(bad, tmp_path / "cache", "job 1", "method=orpo", "raw text")
    assert "method=ga " not in line


def test_a_sweep_with_one_bad_point_fails_before_its_first_job(tmp_path, data_dir):
    sweep = tmp_path / "sweep"
    proc = _cli("-m", "method=npo", "method.beta=0.1,abc", f"hydra.sweep.dir={sweep}", cache=tmp_path / "cache")
    _one_line_error(proc, tmp_path / "cache", "method.beta")
    assert not list(sweep.glob("*/results.json"))  # no job started


def test_output_folder_that_cannot_be_created(tmp_path, data_dir):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    proc = _cli(f"hydra.run.dir={blocker / 'run'}", cache=tmp_path / "cache")
    _one_line_error(proc, tmp_path / "cache", "cannot create the output folder", "hydra.run.dir")


def test_a_truncated_weights_file_is_one_line_before_any_work(tmp_path, data_dir):
    from transformers import LlamaConfig, LlamaForCausalLM

    broken = tmp_path / "broken_target"
    LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                 num_attention_heads=2)).save_pretrained(broken)
    weights = broken / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])  # cut mid-header, as an interrupted copy leaves it
    proc = _cli("model=tiny", "dataset.retain_authors=2", f"stage.target_path={broken}",
                f"hydra.run.dir={tmp_path / 'run'}", cache=tmp_path / "cache")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-1500:]
    err = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(err) == 1 and f"stage.target_path={broken}" in err[0], proc.stderr[-1500:]
    assert "model.safetensors" in err[0] and "truncated" in err[0]
    assert not (tmp_path / "cache" / "stages").exists()  # caught by validation: no stage was fine-tuned first
    with pytest.raises(UserError, match=r"stage.reference_path=.* no HF model folder there"):
        validate(compose([f"stage.reference_path={tmp_path}"]))
    # a hub id is resolved during validation too: offline and not cached, it is one line (tests/test_hub_stages.py)
    with pytest.raises(UserError, match=r"stage.target_path=locuslab/tofu_ft_llama2-7b is a hub id, but the hub is offline"):
        validate(compose(["stage.target_path=locuslab/tofu_ft_llama2-7b"]))


def test_malformed_data_file_names_file_and_line(tmp_path):
    from unlearning.errors import read_json_lines

    bad = tmp_path / "d.jsonl"
    bad.write_text('{"a": 1}\n{"a": \n')
    with pytest.raises(UserError) as e:
        read_json_lines(bad)
    assert f"{bad}:2" in str(e.value) and "\n" not in str(e.value)


def test_every_shipped_preset_validates(data_dir):
    for preset in sorted(p.stem for p in (ROOT / "conf" / "experiment").glob("*.yaml")):
        cfg = compose([f"experiment={preset}"])
        if preset in ("tofu_ou_repro", "wmdp_rmu"):  # the hub's models / corpora: refused offline in one line
            with pytest.raises(UserError, match="the hub is offline"):
                validate(cfg)
            continue
        parts = validate(cfg)
        assert parts.data.forget, preset
        if OmegaConf.select(cfg, "dataset.replacement.model"):
            # SmolLM2-written PII replacements (minutes) are left to the run: validation generated nothing
            assert cfg.dataset.replacement.model._target_ == cfg.model._target_, preset
            assert parts.data.complete is not None, preset


def test_the_benchmark_size_presets_are_the_benchmarks_own_size(data_dir):
    """The PII paper preset at the dataset's default size, TOFU with the whole evaluation."""
    pii = compose(["experiment=pii_paper"])
    defaults = compose(["dataset=synthetic_pii"]).dataset
    for key in ("people", "dialogues_per_person", "heldout_per_person", "pii_free_train", "pii_free_heldout",
                "pii_types"):
        assert pii.dataset[key] == defaults[key], key
    assert len(pii.dataset.pii_types) == 10 and pii.method._target_.endswith("ORPOCFG")
    assert sorted(pii.attacks) == sorted(["relearn", "quant8", "quant4", "paraphrase", "icl"])
    assert OmegaConf.to_container(pii.generation.eval_scales) == [
        2, 3, {"scale": 2, "mode": "prob"}, {"scale": 3, "mode": "prob"}]
    assert pii.model.finetune.save_every > 0 and pii.trainer.save_every > 0  # hours on a CPU: resumable
    assert {name: a.measure for name, a in validate(pii).attacks.items()} == {
        "relearn": "forget", "quant8": "forget", "quant4": "forget", "paraphrase": "forget", "icl": "forget"}
    tofu = validate(compose(["experiment=tofu_smollm2_full"]))
    assert [len(tofu.data.extra[s]) for s in ("forget", "retain", "real_authors", "world_facts")] == [40, 400, 100, 117]
    # every attack measures TOFU's forget side only (five whole evaluations per method would not fit a session)
    assert {name: a.measure for name, a in tofu.attacks.items()} == {
        "relearn": "forget", "quant8": "forget", "quant4": "forget", "paraphrase": "forget", "icl": "forget"}


def test_objective_may_name_a_guidance_scale_column(data_dir):
    validate(compose(["generation.eval_scales=[3]", "objective=forget_Q_A_ROUGE@cfg3"]))
    with pytest.raises(UserError, match="objective=forget_Q_A_ROUGE@cfg2"):
        validate(compose(["generation.eval_scales=[3]", "objective=forget_Q_A_ROUGE@cfg2"]))


def test_evaluators_declare_the_metrics_they_produce(run_tiny, tmp_path):
    """metric_names() (what the objective check trusts) matches what evaluate() really returns."""
    rec = run_tiny("save_model=false", "stage.evaluate_target=false", out=tmp_path / "names")
    cfg = compose([])
    parts = validate(cfg)
    produced = set(rec["metrics"])
    assert parts.evaluator.metric_names(parts.data) == produced, json.dumps(sorted(produced))


def test_a_null_objective_is_the_evaluators_headline_metric(data_dir):
    from unlearning.run import objective_name

    for overrides, expected in (([], "forget_quality"),
                                (["dataset=muse_news", "evaluator=muse"], "privleak"),
                                (["dataset=synthetic_pii", "evaluator=pii"], "leakage_rate")):
        cfg = compose(overrides)
        parts = validate(cfg)
        assert cfg.objective is None and objective_name(cfg, parts.evaluator) == expected
        assert expected in parts.evaluator.metric_names(parts.data)


@pytest.mark.parametrize("override, message", [
    ("evaluator.max_new_tokens=-5", r"evaluator\.max_new_tokens=-5 must be a whole number >= 1"),
    ("evaluator.max_items=0", r"evaluator\.max_items=0 must be a whole number >= 1 \(or null\)"),
    ("evaluator.batch_size=-1", r"evaluator\.batch_size=-1 must be a whole number >= 1"),
    ("method=npo method.ref_batch_size=0", r"method\.ref_batch_size=0 must be >= 1"),
    ("trainer.max_steps=-5", r"trainer\.max_steps=-5 must be >= 1, or -1"),
    ("trainer.weight_decay=-1", r"trainer\.weight_decay=-1.0 must be >= 0"),
    ("trainer.max_grad_norm=-1", r"trainer\.max_grad_norm=-1.0 must be >= 0"),
    ("trainer.lora.r=0", r"trainer\.lora: r=0 must be >= 1"),
    ("+model.finetune.max_steps=0", r"model\.finetune\.max_steps=0 must be >= 1"),
    # the dataset, model, attack, logger, distributed groups and the top level, key by key
    ("+dataset.forget_spilt=forget05", r"unknown option\(s\) \['forget_spilt'\] for dataset=tofu"),
    ("dataset.retain_authors=0", r"dataset\.retain_authors=0 must be >= 1"),
    ("dataset.retain_authors=1.5", r"dataset\.retain_authors=1\.5 must be a whole number"),
    ("dataset.forget_split=[forget01]", r"dataset\.forget_split=\['forget01'\] is unknown"),
    ("dataset.path=123", r"dataset\.path=123 must be a folder path"),
    ("dataset=muse_news evaluator=muse dataset.num_forget=6",
     r"dataset\.num_forget=6 keeps no PrivLeak probe .*the smallest that keeps both: 7"),
    ("dataset=synthetic_pii evaluator=pii dataset.people=2.5", r"dataset\.people=2\.5 must be a whole number"),
    ("dataset=synthetic_pii evaluator=pii dataset.locale=123", r"dataset\.locale=123 must be a Faker locale"),
    ("dataset=synthetic_pii evaluator=pii dataset.pii_types=[]", r"dataset\.pii_types is empty"),
    ("dataset=synthetic_pii evaluator=pii dataset.pii_types=email", r"dataset\.pii_types='email' must be a list"),
    ("dataset=synthetic_pii evaluator=pii dataset.pii_free_heldout=-5", r"dataset\.pii_free_heldout=-5 must be"),
    ("dataset=synthetic_pii evaluator=pii dataset.probe_templates=foo", r"dataset\.probe_templates='foo' must be"),
    ("dataset=synthetic_pii evaluator=pii dataset.replacement.model=foo", r"dataset\.replacement\.model='foo' must"),
    ("dataset=synthetic_pii evaluator=pii dataset.replacement.model=${model} dataset.replacement.batch_size=0",
     r"dataset\.replacement\.batch_size=0 must be a whole number >= 1"),
    ("dataset=synthetic_pii evaluator=pii +dataset.replacement.foo=1", r"unknown option\(s\) \['foo'\] for dataset\.replacement"),
    ("dataset=synthetic_pii evaluator=pii dataset.heldout_per_person=0 evaluator.kinds=[continuation]",
     r"evaluator\.kinds=\['continuation'\] selects no probe"),
    ("dataset=synthetic_pii evaluator=pii dataset.pii_free_heldout=0 objective=utility_rougeL_f",
     r"objective=utility_rougeL_f is not a metric"),
    ("dataset=synthetic_pii evaluator=pii dataset.people=1 attack=[icl]",
     r"attacks\.icl\.shots=3: only 0 forget turns are about people other than p000"),
    ("model.vocab_size=0", r"model\.vocab_size=0 must be a whole number >= 1"),
    ("model.num_layers=0", r"model\.num_layers=0 must be a whole number >= 1"),
    ("model.hidden_size=130 model.num_heads=3", r"model\.hidden_size=130 must be divisible by model\.num_heads=3"),
    ("model.finetune.scheduler=foo", r"model\.finetune\.scheduler='foo' is not one of transformers' schedules"),
    ("+model.finetune.scheduler_kwargs={foo:1}", r"\['foo'\] are not arguments of the linear schedule"),
    ("attack=[relearn] attacks.relearn.lora=maybe", r"attacks\.relearn\.lora='maybe' must be true or false"),
    ("attack=[icl] attacks.icl.seed=abc", r"attacks\.icl\.seed='abc' must be a whole number"),
    ("logger=wandb logger.mode=offline logger.tags=foo", r"logger\.tags='foo' must be a list of strings"),
    ("logger=wandb logger.mode=offline logger.tags=[1,2]", r"logger\.tags=\[1, 2\] must be a list of strings"),
    ("logger=wandb logger.mode=123", r"logger\.mode=123 is not one of"),
    ("distributed.processes=4", r"distributed\.processes=4, but this is a single-process launch"),
    ("distributed.processes=2.5", r"distributed\.processes=2\.5 must be a whole number"),
    ("save_model=maybe", r"save_model='maybe' must be true or false"),
    ("stage.evaluate_target=maybe", r"stage\.evaluate_target='maybe' must be true or false"),
    ("seed=99999999999999999999", r"seed=99999999999999999999 must be in \[0, 2\*\*32\)"),
    ("cache_dir=/proc/nope", r"cache_dir='/proc/nope' cannot be created"),
    ("device=gpu", r"device='gpu' is unknown"),
    ("reference_result=/x", r"reference_result is read by unlearning-eval only"),
])
def test_out_of_range_options_are_refused_before_any_work(override, message, data_dir):
    """Found by setting every key of every config group out of range or to the wrong type (an audit tried each as
    a new user might); each is refused by the validation phase, which loads no weights."""
    with pytest.raises(UserError, match=message):
        validate(compose(override.split()))


def test_a_whole_float_for_an_int_option_reaches_the_constructor_as_an_int(data_dir):
    """`dataset.people=2.0` is accepted as the whole number it is, and passed on as 2 (a float would reach
    `range()` and list slices in the dataset and fail there)."""
    cfg = compose(["dataset=synthetic_pii", "evaluator=pii", "dataset.people=2.0"])
    parts = validate(cfg)
    assert cfg.dataset.people == 2 and type(cfg.dataset.people) is int
    assert len({ex.meta["person"] for ex in parts.data.forget}) == 2


def test_check_refuses_an_output_folder_that_cannot_be_created_and_creates_none(tmp_path, data_dir):
    """`--check` runs nothing: it tries the folder's parent (a folder made and removed again), not the folder."""
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    proc = _cli("--check", f"hydra.run.dir={blocker / 'run'}", cache=tmp_path / "cache")
    _one_line_error(proc, tmp_path / "cache", "cannot create the output folder", "not a folder")
    ok = _cli("--check", f"hydra.run.dir={tmp_path / 'new' / 'run'}", cache=tmp_path / "cache")
    assert ok.returncode == 0, ok.stderr[-1500:]
    assert not (tmp_path / "new").exists()


@pytest.mark.parametrize("key, given, message", [
    ("fsdp", {"auto_wrap_policy": "foo"}, r"distributed\.fsdp: accelerate's FullyShardedDataParallelPlugin refuses"),
    ("fsdp", {"state_dict_type": "foo"}, r"distributed\.fsdp: accelerate's FullyShardedDataParallelPlugin refuses"),
    ("fsdp", {"fsdp_version": 7}, r"distributed\.fsdp\.fsdp_version=7 must be 1 or 2"),
    ("fsdp", {"wrap_everything": True}, r"distributed\.fsdp has unknown option\(s\) \['wrap_everything'\]"),
    ("deepspeed", {"zero_stage": 5}, r"distributed\.deepspeed\.zero_stage=5 must be 0, 1, 2 or 3"),
])
def test_fsdp_and_deepspeed_options_are_checked_by_building_accelerates_plugin(key, given, message):
    """On GPUs `Distributed.check` runs this at validation (CPU runs refuse FSDP / ZeRO before it): the plugin is built
    once, so a bad option is not first seen at the first training loop."""
    from unlearning.distributed import check_plugin

    with pytest.raises(UserError, match=message):
        check_plugin(key, given)
    check_plugin("fsdp", {"auto_wrap_policy": "TRANSFORMER_BASED_WRAP"})  # a good one builds


def test_a_slurm_multigpu_sweep_validates_on_its_submitting_host(data_dir):
    """The host that submits `hydra/launcher=slurm_multigpu` has one process and no GPU; the jobs' FSDP and process
    count are checked again inside each job. The same FSDP run launched plainly is refused."""
    from unlearning.__main__ import CONF_DIR
    from unlearning.cli_checks import validate_jobs

    args = ["-m", "hydra/launcher=slurm_multigpu", "distributed=fsdp", "distributed.processes=4", "method=npo,simnpo"]
    assert validate_jobs(args, CONF_DIR) == 2
    with pytest.raises(UserError, match=r"distributed\.strategy=fsdp needs a multi-process launch"):
        validate_jobs(["distributed=fsdp"], CONF_DIR)


def test_validating_the_default_run_imports_no_peft(data_dir):
    """The validation phase is meant to take seconds: the default schedule needs no look into transformers' table of
    schedules, whose import pulls in peft (on the 2026-12-01 Xeon `--check` took 6.3-6.9 s with it, 2.9-4.2 s
    without). A schedule given by name is still checked (test_out_of_range_options_are_refused_before_any_work)."""
    code = ("import sys; from conftest import compose; from unlearning.validate import validate; validate(compose([]));"
            " print(sorted(m for m in sys.modules if m == 'peft' or m.startswith('peft.')))")
    r = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).parent, capture_output=True, text=True,
                       timeout=300, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert r.returncode == 0, r.stderr[-1500:]
    assert r.stdout.strip().splitlines()[-1] == "[]", r.stdout[-500:]
