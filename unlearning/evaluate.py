"""`unlearning-eval`: evaluate a model as it is, without unlearning (OpenUnlearning's `src/eval.py`).

The same Hydra config groups as `unlearning`: `model=` names the model to evaluate (any preset, or
`model=hf model.path=<folder or hub id>`: a published unlearned checkpoint), `dataset=` / `evaluator=` the
benchmark, `attack=[...]` the robustness attacks. `stage.reference_path=<folder>` adds the retain reference, so
forget_quality / PrivLeak are reported; `stage.target_path=<folder>` adds the model before unlearning as the
target row (and the attacks' recoveries). Writes `results.json` and `eval/<evaluator>.json` as a run does.
Nothing is fine-tuned: no stage is built, and a missing reference is simply not compared with.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from unlearning.distributed import is_main, pick_device, wait
from unlearning.errors import UserError
from unlearning.models import load_folder
from unlearning.results import provenance, versions, write_json
from unlearning.run import RunContext, cached_eval, evaluate_all, for_tokenizer, make_run_folder, start_logger
from unlearning.validate import validate

log = logging.getLogger("unlearning")


def evaluate_model(cfg: DictConfig, out_dir: str | Path, overrides: list[str] | None = None) -> dict:
    """validate -> load the model -> reference / target baselines (if given) -> evaluate -> attacks -> record."""
    t_start = time.perf_counter()
    parts = validate(cfg, evaluation_only=True)                    # every component built and checked: no weights yet
    if cfg.get("reference_result") and cfg.stage.reference_path:
        raise UserError("give stage.reference_path (a model to evaluate) or reference_result (its evaluation), not both")
    reference_result = load_reference_result(cfg.get("reference_result"))
    out_dir = make_run_folder(out_dir)
    ctx = RunContext(cfg=cfg, out_dir=out_dir, cache_dir=str(cfg.cache_dir), device=pick_device(cfg.device),
                     max_length=int(cfg.max_length), generation=cfg.generation, data_dir=cfg.get("data_dir"),
                     load_kwargs=parts.spec.load_kwargs())
    ctx.provenance = provenance(cfg, ctx.device)
    ctx.logger = start_logger(cfg, out_dir, parts)
    try:
        parts.data = for_tokenizer(cfg, ctx, parts)                # raw-text corpora chunk with this model's tokenizer
        model, tok = parts.spec.load(parts.data.corpus)
        model = model.to(ctx.device)
        t, baselines = time.perf_counter(), {}
        if cfg.stage.reference_path:
            reference_result = cached_eval(ctx, parts.evaluator, Path(cfg.stage.reference_path), parts.data, None,
                                           "reference")
        if reference_result is not None:
            baselines["reference"] = reference_result["aggregates"]
        if cfg.stage.target_path:
            baselines["target"] = cached_eval(ctx, parts.evaluator, Path(cfg.stage.target_path), parts.data,
                                              reference_result, "target")["aggregates"]
        ctx.timings["baselines_eval_s"] = time.perf_counter() - t
        t = time.perf_counter()
        result = evaluate_all(ctx, parts.evaluator, model, tok, parts.data, reference_result)
        ctx.timings["eval_s"] = time.perf_counter() - t
        if is_main():
            write_json(out_dir / "eval" / f"{parts.evaluator.name}.json", result)
        if parts.attacks:
            from unlearning.attacks import run_attacks

            t = time.perf_counter()
            load_target = ((lambda: load_folder(cfg.stage.target_path, **ctx.load_kwargs)) if cfg.stage.target_path
                           else None)
            result["aggregates"].update(run_attacks(parts.attacks, parts.evaluator, model, tok, parts.data, ctx,
                                                    reference_result, result["aggregates"], baselines.get("target"),
                                                    load_target))
            ctx.timings["attacks_s"] = time.perf_counter() - t
        ctx.timings["total_s"] = time.perf_counter() - t_start
        choices = dict(cfg.get("choices") or {})
        record = {
            "status": "ok", "method": "none (evaluation only)", "dataset": parts.data.name, "model": parts.spec.name,
            "evaluated": {"model": choices.get("model"), "path": cfg.model.get("path")},
            "overrides": list(overrides or []), "metrics": result["aggregates"], "baselines": baselines,
            "objective": result["aggregates"].get(str(cfg.get("objective") or getattr(parts.evaluator, "objective", ""))),
            "timings": ctx.timings, "stages": {}, "versions": versions(), "provenance": ctx.provenance,
            "config": OmegaConf.to_container(cfg, resolve=True),
        }
        if is_main():
            write_json(out_dir / "results.json", record)
        wait()
    except BaseException:
        ctx.logger.finish("failed")
        raise
    ctx.logger.summary(record["metrics"])
    ctx.logger.finish("ok")
    return record


def load_reference_result(path) -> dict | None:
    """`reference_result=<eval/<evaluator>.json of the retain reference, or a run's results folder>`, checked now."""
    if not path:
        return None
    p = Path(str(path)).expanduser()
    if p.is_dir():
        found = sorted(p.glob("eval/*.json"))
        found = [f for f in found if "@" not in f.name]
        if not found:
            raise UserError(f"reference_result={path}: no eval/<evaluator>.json in that folder; give the file itself")
        p = found[0]
    try:
        result = json.loads(p.read_text())
    except (OSError, ValueError) as e:
        raise UserError(f"reference_result={path} cannot be read as JSON ({type(e).__name__}); give an "
                        "eval/<evaluator>.json written by unlearning or unlearning-eval") from None
    if not isinstance(result, dict) or "aggregates" not in result or "per_item" not in result:
        raise UserError(f"reference_result={path} holds no 'aggregates' / 'per_item'; give an eval/<evaluator>.json "
                        "written by unlearning or unlearning-eval")
    return result
