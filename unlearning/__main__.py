"""`unlearning` / `python -m unlearning`: the Hydra entrypoint.

`unlearning --check <overrides>` (with or without -m) validates every job and runs none.
Bad input ends with one line on stderr (what, where, how to fix) and exit code 2;
set UNLEARNING_TRACEBACK=1 for the full traceback. In a multirun (-m), a failing job
is recorded (results.json with status "failed") and the other jobs go on; the sweep's
exit code is the number of failed jobs.
"""

from __future__ import annotations

import logging
import os
import sys
import traceback
from pathlib import Path

CONF_DIR = str(Path(__file__).resolve().parent.parent / "conf")
log = logging.getLogger("unlearning")
MODE = {"eval": False}  # set by `unlearning-eval` (eval_main)


def _job(cfg):
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode
    from omegaconf import OmegaConf, open_dict

    from unlearning.errors import Diverged, UserError
    from unlearning.results import write_json
    from unlearning.run import run, table

    if MODE["eval"]:  # unlearning-eval: the model as it is, no unlearning
        from unlearning.evaluate import evaluate_model as run

    slurm_torch_environment()
    hc = HydraConfig.get()
    out_dir = Path(hc.runtime.output_dir)
    overrides = list(hc.overrides.task)
    with open_dict(cfg):
        cfg.choices = {k: v for k, v in hc.runtime.choices.items() if not k.startswith("hydra") or k == "hydra/launcher"}
    multirun = hc.mode == RunMode.MULTIRUN
    if cfg.get("threads"):
        import torch

        torch.set_num_threads(int(cfg.threads))
    try:
        record = run(cfg, out_dir, overrides, **({} if MODE["eval"] else {"multirun": multirun}))
    except Diverged as e:  # results.json (status "diverged") is written already
        if not multirun:
            print(f"error: {e}", file=sys.stderr)
            raise SystemExit(Diverged.exit_code) from None
        log.error("job %s diverged: %s", hc.job.get("num", "?"), e)
        return None
    except Exception as e:
        if not multirun and isinstance(e, UserError):
            remove_refused_folder(out_dir)
        if not multirun and isinstance(e, UserError) and not os.environ.get("UNLEARNING_TRACEBACK"):
            # Hydra reports job exceptions with a traceback and exit 1; SystemExit passes through it to main().
            print(f"error: {e}", file=sys.stderr)
            raise SystemExit(UserError.exit_code) from None
        if not multirun:
            raise
        message = str(e).splitlines()[0] if str(e) else type(e).__name__
        log.error("job %s failed: %s", hc.job.get("num", "?"), message)
        write_json(out_dir / "results.json", {
            "status": "failed", "error": f"{type(e).__name__}: {message}", "overrides": overrides,
            "traceback": traceback.format_exc(), "metrics": {}, "baselines": {}, "objective": None,
            "method": cfg.choices.get("method"), "dataset": cfg.choices.get("dataset"),
            "model": cfg.choices.get("model"), "config": OmegaConf.to_container(cfg, resolve=False),
        })
        if not isinstance(e, UserError) and os.environ.get("UNLEARNING_TRACEBACK"):
            traceback.print_exc()
        return None
    from unlearning.distributed import is_main

    if is_main():
        print(table(record))
        print(f"results: {out_dir / 'results.json'}")
    return record["objective"]


def remove_refused_folder(out_dir: Path) -> None:
    """A run refused for bad input leaves nothing behind: the folder Hydra made for it is removed when it holds
    only Hydra's own files (`.hydra/` and the job log). A folder with anything else (checkpoints, a log of the
    run, results) is kept."""
    import shutil

    from unlearning.distributed import is_main

    if not is_main() or not out_dir.is_dir():
        return
    if all(e.name == ".hydra" or (e.is_file() and e.suffix == ".log") for e in out_dir.iterdir()):
        shutil.rmtree(out_dir, ignore_errors=True)


def slurm_torch_environment() -> None:
    """A Slurm job of N tasks (hydra/launcher=slurm_multigpu) becomes an N-process torch launch: RANK, WORLD_SIZE,
    MASTER_ADDR... from Slurm's variables (submitit's helper), as torchrun would set them."""
    if int(os.environ.get("SLURM_NTASKS", "1")) > 1 and "RANK" not in os.environ and "SLURM_PROCID" in os.environ:
        from submitit.helpers import TorchDistributedEnvironment

        TorchDistributedEnvironment().export(set_cuda_visible_devices=False)


def same_folders_on_every_rank(args: list[str]) -> list[str]:
    """Under torchrun every process composes its own config; `${now:...}` could name a different run folder per
    process, so rank 0's clock names them all. Only rank 0 writes Hydra's .hydra/ and job log."""
    from unlearning.distributed import broadcast, is_main, world_size

    if world_size() == 1:
        return args
    from unlearning.distributed import _state

    _state()  # the process group (gloo on CPU, NCCL on GPUs), from the launcher's environment
    import datetime

    stamp = broadcast(datetime.datetime.now().strftime("%Y-%m-%d_%H-%M-%S"))
    given = {a.split("=", 1)[0] for a in args}
    extra = []
    if "hydra.run.dir" not in given:
        extra.append(f"hydra.run.dir=outputs/runs/{stamp}_${{hydra:runtime.choices.method}}_"
                     "${hydra:runtime.choices.dataset}")
    if "hydra.sweep.dir" not in given:
        extra.append(f"hydra.sweep.dir=outputs/sweeps/{stamp}")
    if not is_main():
        extra += ["hydra.output_subdir=null", "hydra/job_logging=none", "hydra/hydra_logging=none"]
    return args + extra


def main() -> int:
    from unlearning.cli_checks import check_output_dir, check_overrides, validate_jobs
    from unlearning.errors import UserError

    args = sys.argv[1:]
    check_only = "--check" in args
    args = [a for a in args if a != "--check"]
    sys.argv = [sys.argv[0], *args]
    info = any(a in ("--help", "-h", "--hydra-help", "--info", "--cfg", "-c", "--shell-completion", "-sc") for a in args)
    sweeping = "-m" in args or "--multirun" in args
    try:
        check_overrides(args, CONF_DIR)
        if not info:
            check_output_dir(args, create=not check_only)
        if check_only or (sweeping and not info):  # a single run validates itself first thing (run.validate)
            n = validate_jobs(args, CONF_DIR, MODE["eval"])
            if check_only:
                print(f"ok: {n} job{'s' if n != 1 else ''} valid (nothing was run)")
                return 0
    except UserError as e:
        if os.environ.get("UNLEARNING_TRACEBACK"):
            traceback.print_exc()
        print(f"error: {e}", file=sys.stderr)
        return 2

    if MODE["eval"]:
        args = eval_folders(args)
        if any(a in ("--help", "-h") for a in args):  # the evaluation's own usage (conf/hydra/help/unlearning_eval.yaml)
            args.append("hydra/help=unlearning_eval")
    sys.argv = [sys.argv[0], *same_folders_on_every_rank(args)]
    import hydra

    app = hydra.main(config_path=CONF_DIR, config_name="config", version_base="1.3")(_job)
    try:
        app()
    except UserError as e:
        if os.environ.get("UNLEARNING_TRACEBACK"):
            traceback.print_exc()
        print(f"error: {e}", file=sys.stderr)
        return 2
    except SystemExit as e:  # Hydra exits on its own errors (already reported) and after --help
        return int(e.code or 0)
    from unlearning.distributed import shutdown

    shutdown()  # every process got here: close the process group together (see `shutdown`)
    if "-m" in args or "--multirun" in args:
        from unlearning.sweep import failed_jobs

        return failed_jobs()
    return 0


def eval_folders(args: list[str]) -> list[str]:
    """unlearning-eval's run folders are named after the model and the evaluator (there is no method)."""
    given = {a.split("=", 1)[0] for a in args}
    extra = []
    if "hydra.run.dir" not in given:
        extra.append("hydra.run.dir=outputs/evals/${now:%Y-%m-%d_%H-%M-%S}_${hydra:runtime.choices.model}_"
                     "${hydra:runtime.choices.evaluator}")
    if "hydra.sweep.dir" not in given:
        extra.append("hydra.sweep.dir=outputs/evals/${now:%Y-%m-%d_%H-%M-%S}")
    return args + extra


def eval_main() -> int:
    """`unlearning-eval`: the same entrypoint, evaluating the model as it is (unlearning/evaluate.py)."""
    MODE["eval"] = True
    return main()


if __name__ == "__main__":
    sys.exit(main())
