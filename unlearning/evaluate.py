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
import re
import time
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from unlearning.distributed import is_main, pick_device, wait
from unlearning.errors import UserError
from unlearning.results import provenance, versions, write_json
from unlearning.run import RunContext, attack, cached_eval, evaluate_all, for_tokenizer, make_run_folder, start_logger, template_date
from unlearning.validate import validate

log = logging.getLogger("unlearning")


def evaluate_model(cfg: DictConfig, out_dir: str | Path, overrides: list[str] | None = None) -> dict:
    """validate -> load the model -> reference / target baselines (if given) -> evaluate -> attacks -> record."""
    t_start = time.perf_counter()
    reference_result = check_eval(cfg, overrides)                  # the forget split, the reference result
    parts = validate(cfg, evaluation_only=True)                    # every component built and checked: no weights yet
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
            result["aggregates"].update(attack(ctx, parts, model, tok, reference_result, baselines, result["aggregates"],
                                               Path(cfg.stage.target_path) if cfg.stage.target_path else None,
                                               Path(cfg.stage.reference_path) if cfg.stage.reference_path else None))
        ctx.timings["total_s"] = time.perf_counter() - t_start
        choices = dict(cfg.get("choices") or {})
        record = {
            "status": "ok", "method": "none (evaluation only)", "dataset": parts.data.name, "model": parts.spec.name,
            "evaluated": {"model": choices.get("model"), "path": cfg.model.get("path")},
            "overrides": list(overrides or []), "metrics": result["aggregates"], "baselines": baselines,
            "chat_template_date": template_date(cfg),
            "objective": result["aggregates"].get(str(cfg.get("objective") or getattr(parts.evaluator, "objective", ""))),
            "timings": ctx.timings, "stages": {}, "versions": versions(), "provenance": ctx.provenance,
            **({"robustness": ctx.robustness} if ctx.robustness is not None else {}),
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


# TOFU's forget split and the retain split its retain reference is trained on (open-unlearning/tofu_<model>_retain90
# is forget10's reference); the number of forget questions of each
SPLIT_OF_RETAIN = {"retain99": "forget01", "retain95": "forget05", "retain90": "forget10"}
FORGET_ITEMS = {"forget01": 40, "forget05": 200, "forget10": 400}
_SPLIT_NAME = re.compile(r"(?<![a-z0-9])(forget0[15]|forget10|retain9[059])(?![0-9])", re.IGNORECASE)


def check_eval(cfg: DictConfig, overrides: list[str] | None) -> dict | None:
    """What unlearning-eval checks beyond the run's validation, before any weights load: the TOFU forget split is
    named (or implied by a retainNN / forgetNN model name, which must agree with it), one reference at most, and
    `reference_result` readable (returned)."""
    if cfg.get("reference_result") and cfg.stage.reference_path:
        raise UserError("give stage.reference_path (a model to evaluate) or reference_result (its evaluation), not both")
    split = cfg.dataset.get("forget_split") if "forget_split" in cfg.dataset else None
    reference_result = load_reference_result(cfg.get("reference_result"), split)
    if (reference_result or {}).get("source") == "openunlearning" and not cfg.evaluator.get("compat"):
        log.warning("warning: reference_result is OpenUnlearning's own evaluation, scored its way; this model is scored "
                    "this project's way, so forget_quality compares two scorings: give evaluator.compat=openunlearning "
                    "to score the model as OU did")
    if split is None:
        return reference_result
    implied = []
    for key in ("model.path", "stage.reference_path", "stage.target_path", "reference_result"):
        value = OmegaConf.select(cfg, key)
        hub = OmegaConf.select(cfg, f"stage.hub.{key.split('.')[1].removesuffix('_path')}.id") if "." in key else None
        for name in _SPLIT_NAME.findall(str(hub or value or "")):
            name = name.lower()
            wants = SPLIT_OF_RETAIN.get(name, name)
            if wants != split:
                raise UserError(f"{key}={hub or value} is named for {name} (TOFU {wants}), but dataset.forget_split="
                                f"{split}; set dataset.forget_split={wants}, or give the model of {split}")
            implied.append(key)
    given = any(o.split("=", 1)[0].lstrip("+~") == "dataset.forget_split" for o in (overrides or []))
    preset = (cfg.get("choices") or {}).get("experiment")
    if preset and not given:
        node = OmegaConf.load(Path(__file__).resolve().parent.parent / "conf" / "experiment" / f"{preset}.yaml")
        given = OmegaConf.select(node, "dataset.forget_split") is not None
    if not (given or implied or reference_result is not None and reference_result.get("split")):
        raise UserError(f"unlearning-eval on TOFU scores the forget split dataset.forget_split={split} (the default); "
                        "name the split the model was unlearned on: dataset.forget_split=forget01|forget05|forget10")
    return reference_result


def from_openunlearning(result: dict, where: str, split: str | None) -> dict:
    """OpenUnlearning's own TOFU_EVAL.json (its src/eval.py output: `<metric>: {agg_value, value_by_index}`) as this
    project's reference result: its aggregates under this project's names, and the per-item forget truth ratios
    that forget_quality's KS test compares with (OU's item i is TOFU's forget question i)."""
    rows = result["forget_truth_ratio"].get("value_by_index") or {}
    n = len(rows)
    found = next((s for s, k in FORGET_ITEMS.items() if k == n), None)
    if split is not None and found is not None and found != split:
        raise UserError(f"reference_result={where} holds {n} forget items, TOFU {found}'s, but dataset.forget_split="
                        f"{split}; set dataset.forget_split={found}, or give the reference of {split}")
    names = {"forget_truth_ratio": "forget_Truth_Ratio"}
    aggregates = {names.get(k, k): v["agg_value"] for k, v in result.items()
                  if isinstance(v, dict) and isinstance(v.get("agg_value"), (int, float))}
    per_item = {"forget": [{"id": f"forget_{i}", "truth_ratio": float(rows[i]["score"])}
                           for i in sorted(rows, key=int)]}
    return {"aggregates": aggregates, "per_item": per_item, "split": found, "source": "openunlearning"}


def load_reference_result(path, split: str | None = None) -> dict | None:
    """`reference_result=<eval/<evaluator>.json of the retain reference, or a run's results folder, or
    OpenUnlearning's TOFU_EVAL.json (or its folder)>`, checked now."""
    if not path:
        return None
    p = Path(str(path)).expanduser()
    if not p.exists():
        raise UserError(f"reference_result={path} does not exist; give the retain reference's eval/<evaluator>.json "
                        "(or its run folder), or OpenUnlearning's TOFU_EVAL.json (its published retain logs: "
                        "docs/parity.md, 'OU's own evaluation as the reference')")
    if p.is_dir() and (p / "TOFU_EVAL.json").is_file():
        p = p / "TOFU_EVAL.json"
    if p.is_dir():
        found = sorted(p.glob("eval/*.json"))
        found = [f for f in found if "@" not in f.name]
        if not found:
            raise UserError(f"reference_result={path}: no eval/<evaluator>.json or TOFU_EVAL.json in that folder; give "
                            "the file itself")
        p = found[0]
    try:
        result = json.loads(p.read_text())
    except (OSError, ValueError) as e:
        raise UserError(f"reference_result={path} cannot be read as JSON ({type(e).__name__}); give an "
                        "eval/<evaluator>.json written by unlearning or unlearning-eval, or OpenUnlearning's "
                        "TOFU_EVAL.json") from None
    if isinstance(result, dict) and isinstance(result.get("forget_truth_ratio"), dict):
        return from_openunlearning(result, str(path), split)
    if not isinstance(result, dict) or "aggregates" not in result or "per_item" not in result:
        raise UserError(f"reference_result={path} holds no 'aggregates' / 'per_item'; give an eval/<evaluator>.json "
                        "written by unlearning or unlearning-eval, or OpenUnlearning's TOFU_EVAL.json")
    return result
