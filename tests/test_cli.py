"""The Hydra entrypoint: composition of every config option, --help, --cfg, and one-line errors."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import CONF_DIR, ROOT, compose
from hydra.errors import InstantiationException
from hydra.utils import instantiate

GROUPS = ["model", "dataset", "method", "evaluator", "trainer", "generation", "logger", "experiment", "lm_eval"]
# lm-eval presets name hub tasks (or, `local`, none yet): here, with the hub offline, building them must say so
REFUSED_HERE = {("evaluator", "lm_eval"): "hub dataset cais/mmlu", ("lm_eval", "mmlu"): "hub dataset cais/mmlu",
                ("lm_eval", "wmdp"): "hub dataset cais/wmdp", ("lm_eval", "local"): "names no task"}


def options(group):
    return sorted(p.stem for p in (Path(CONF_DIR) / group).glob("*.yaml"))


@pytest.mark.parametrize("group", GROUPS)
def test_every_option_composes(group, data_dir):
    assert options(group), f"conf/{group}/ has no options"
    for opt in options(group):
        extra = ["model.path=/nonexistent"] if (group, opt) == ("model", "hf") else []
        cfg = compose([f"{group}={opt}"] + extra)
        assert cfg.get(group) is not None or group == "experiment"
        if (group, opt) in REFUSED_HERE:
            with pytest.raises(InstantiationException, match=REFUSED_HERE[group, opt]):
                instantiate(cfg[group], _convert_="all")
        elif group in ("method", "evaluator", "logger"):
            obj = instantiate(cfg[group], _convert_="all")
            assert obj is not None


def cli(*args, env=None, cwd=ROOT, run_dir=None):
    if not any(a in ("--help", "--cfg") for a in args):
        args = (*args, f"hydra.run.dir={run_dir or _tmp_run_dir()}")
    e = {**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})}
    e.pop("UNLEARNING_TRACEBACK", None)
    return subprocess.run([sys.executable, "-m", "unlearning", *args], capture_output=True, text=True,
                          cwd=cwd, env=e, timeout=300)


def test_help_lists_groups_and_options():
    r = cli("--help")
    assert r.returncode == 0
    for group in ("method", "dataset", "evaluator", "model", "trainer", "logger", "experiment"):
        assert f"{group}:" in r.stdout
    assert "ga" in r.stdout and "smollm2_135m" in r.stdout


def test_cfg_job_prints_composed_config():
    r = cli("method=ga", "trainer.lr=3e-4", "--cfg", "job")
    assert r.returncode == 0, r.stderr
    assert "lr: 0.0003" in r.stdout and "_target_: unlearning.methods.ga.GradientAscent" in r.stdout


def _tmp_run_dir():
    import tempfile

    return tempfile.mkdtemp(prefix="unlearning-cli-")


def one_line_error(r, *fragments):
    assert r.returncode == 2, (r.returncode, r.stdout[-2000:], r.stderr[-2000:])
    err = [line for line in r.stderr.strip().splitlines() if line.startswith("error:")]
    assert len(err) == 1, r.stderr
    assert "Traceback" not in r.stderr
    for f in fragments:
        assert f in err[0], err[0]


def test_unknown_group_option():
    one_line_error(cli("method=nope"), "unknown option method=nope", "ga")


def test_unknown_config_key():
    one_line_error(cli("trainer.lrr=1"), "trainer.lrr: trainer has no key 'lrr'; it has lr, epochs, max_steps")


def test_unknown_sweep_end_table():
    one_line_error(cli("-m", "hydra.callbacks.sweep_summary.table=ou_muse"), "sweep-end table is ou_tofu_repro")


def test_missing_data_directory(tmp_path):
    one_line_error(cli("dataset=tofu", f"data_dir={tmp_path}/nowhere", f"cache_dir={tmp_path}/c"),
                   "does not exist", "UNLEARNING_DATA_DIR")


def test_unknown_split(data_dir, tmp_path):
    one_line_error(cli("dataset.forget_split=forget02", f"cache_dir={tmp_path}/c"), "forget02", "forget01")


def test_model_path_that_does_not_exist(data_dir, tmp_path):
    one_line_error(cli("model=hf", "model.path=/no/such/model", f"cache_dir={tmp_path}/c"),
                   "model.path='/no/such/model' does not exist")


def test_malformed_json_line(tmp_path):
    folder = tmp_path / "tofu"
    folder.mkdir()
    (folder / "forget01.json").write_text('{"question": "q", "answer": "a"}\n{not json}\n')
    one_line_error(cli(f"dataset.path={folder}", f"cache_dir={tmp_path}/c"), "forget01.json:2")


def test_evaluation_during_training_lm_eval_and_pdu_bad_input_exit_2_with_one_line(tmp_path):
    """An eval interval larger than the run, a selection metric the evaluator lacks, an lm-eval task that does not
    exist, a PDU bound out of range: one line and exit 2 from the command line (the four run side by side)."""
    from concurrent.futures import ThreadPoolExecutor

    cases = [
        (["trainer.eval_every=999"], ["trainer.eval_every=999 is larger than the run"]),
        (["trainer.eval_every=1", "trainer.select=nope:max"], ["trainer.select=nope:max", "nope is not a metric"]),
        (["lm_eval=local", "lm_eval.tasks=[no_such_task]"], ["'no_such_task' is not one lm-eval knows"]),
        (["method=pdu", "method.retain_loss_eps=-0.1"], ["method.retain_loss_eps=-0.1 must be >= 0"]),
    ]
    with ThreadPoolExecutor(len(cases)) as pool:
        runs = list(pool.map(lambda c: cli(*c[0], f"cache_dir={tmp_path / 'cache'}"), cases))
    for (_, fragments), r in zip(cases, runs):
        one_line_error(r, *fragments)
    assert not (tmp_path / "cache" / "stages").exists()  # nothing was built


def test_a_refused_run_leaves_no_run_folder(tmp_path):
    """A run refused for bad input (here: in the validation phase, after Hydra made the folder) leaves nothing under
    outputs/runs/ (Hydra's .hydra/ and job log are removed with the folder); a folder holding more is kept."""
    r = cli("method=npo", "method.beta=0", f"cache_dir={tmp_path}/c", cwd=tmp_path, run_dir="outputs/runs/refused")
    one_line_error(r, "method.beta=0 must be > 0")
    assert not (tmp_path / "outputs" / "runs" / "refused").exists()
    kept = tmp_path / "outputs" / "runs" / "kept"
    (kept / "checkpoints").mkdir(parents=True)
    r = cli("method=npo", "method.beta=0", f"cache_dir={tmp_path}/c", cwd=tmp_path, run_dir=str(kept))
    one_line_error(r, "method.beta=0 must be > 0")
    assert (kept / "checkpoints").is_dir()


def test_lora_target_modules_are_checked_against_the_model_before_any_work(tmp_path):
    """peft would end in NoMatchingPeftModuleError after the target stage was built; the names are checked first,
    on the model's config alone (the tiny Llama: q/k/v/o, gate/up/down, embed_tokens, lm_head)."""
    r = cli("trainer.lora.enabled=true", "trainer.lora.target_modules=[q_proj,no_such_proj]",
            f"cache_dir={tmp_path}/c")
    one_line_error(r, "trainer.lora.target_modules: no_such_proj matches no linear or embedding module",
                   "it has embed_tokens, q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj, lm_head")
    assert not (tmp_path / "c" / "stages").exists()  # nothing was built


def test_a_key_of_an_attack_that_is_not_picked_is_refused_in_one_line(tmp_path):
    """attacks.<name>.* is read only for a picked attack: setting it otherwise (plain, with +, or in one job of a
    sweep) says so and how to pick it; a picked attack's key passes."""
    hint = "attack quant4 is not picked, so nothing reads attacks.quant4.*; pick it with attack=[...,quant4]"
    one_line_error(cli("--check", "attacks.quant4.bits=8", f"cache_dir={tmp_path}/c"), hint)
    one_line_error(cli("--check", "+attacks.quant4.bits=8", f"cache_dir={tmp_path}/c"), hint)
    r = cli("--check", "-m", "attack=[quant4],[]", "attacks.quant4.bits=8", f"cache_dir={tmp_path}/c")
    one_line_error(r, "job 1 (", hint)  # job 0 picks it, job 1 does not
    ok = cli("--check", "attack=[quant4]", "attacks.quant4.bits=8", f"cache_dir={tmp_path}/c")
    assert ok.returncode == 0, ok.stderr[-1500:]


def test_an_attack_of_a_preset_is_dropped_with_a_deletion(tmp_path):
    """attack=standard includes prefix_injection, which OU's prompts have no place for: refused, with the way out
    named, and `~attacks.prefix_injection` (Hydra's deletion) drops it."""
    args = ("--check", "attack=standard", "evaluator.compat=openunlearning", f"cache_dir={tmp_path}/c")
    one_line_error(cli(*args), "prefix_injection prefills the assistant turn", "~attacks.prefix_injection")
    ok = cli(*args, "~attacks.prefix_injection")
    assert ok.returncode == 0 and "ok" in ok.stdout, ok.stderr[-1500:]


def test_idk_dpos_refusal_file_is_checked_by_check(tmp_path):
    one_line_error(cli("--check", "method=idk_dpo", "method.refusal_file=/nope.jsonl", f"cache_dir={tmp_path}/c"),
                   "refusal file not found: /nope.jsonl")


def test_a_key_of_a_node_that_has_none_names_what_it_was_composed_with(tmp_path):
    """method=ga has no options: a sweep's method.beta is checked on its first job (ga) and says so."""
    one_line_error(cli("--check", "-m", "method=ga,npo", "method.beta=0.1,0", f"cache_dir={tmp_path}/c"),
                   "method.beta: method has no keys to set here (composed with method=ga")
