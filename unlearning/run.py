"""One unlearning run, top to bottom: compose -> data -> model -> stages -> method -> train -> evaluate -> record."""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from unlearning.data.base import encode
from unlearning.errors import UserError
from unlearning.models import cache_root, load_folder
from unlearning.results import versions, write_json
from unlearning.stages import ensure_stage
from unlearning.train import TrainSettings, train

log = logging.getLogger("unlearning")


@dataclass
class RunContext:
    """What methods and evaluators may read about the run."""

    cfg: DictConfig
    out_dir: Path
    cache_dir: str
    device: str
    max_length: int
    generation: DictConfig
    data_dir: str | None = None
    logger: object = None
    timings: dict = field(default_factory=dict)


def build(node):
    """Hydra `instantiate`, re-raising a target's UserError as itself (Hydra wraps it in InstantiationException,
    which would turn one clear line into a traceback and exit code 1)."""
    from hydra.errors import InstantiationException

    try:
        return instantiate(node, _convert_="all")
    except InstantiationException as e:
        if isinstance(e.__cause__, UserError):
            raise e.__cause__ from None
        raise


def pick_device(name: str) -> str:
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name not in ("cpu", "cuda"):
        raise UserError(f"device={name!r} is unknown; use auto, cpu or cuda")
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("device=cuda but no CUDA GPU is visible; use device=auto or device=cpu")
    return name


def cached_eval(ctx: RunContext, evaluator, model_path: Path, data, reference: dict | None, what: str) -> dict:
    """Evaluate a stage once; later runs (and sweep jobs) reuse the stored result."""
    key = {"model": str(model_path), "evaluator": OmegaConf.to_container(ctx.cfg.evaluator, resolve=True),
           "generation": OmegaConf.to_container(ctx.cfg.generation, resolve=True), "data": data.name,
           "max_length": ctx.max_length, "reference": (reference or {}).get("aggregates")}
    digest = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:16]
    path = cache_root(ctx.cache_dir) / "evals" / f"{what}-{digest}.json"
    if path.exists():
        log.info("%s: reusing cached evaluation %s", what, path)
        return json.loads(path.read_text())
    model, tok = load_folder(model_path)
    result = evaluator.evaluate(model.to(ctx.device), tok, data, ctx, reference=reference)
    write_json(path, result)
    return result


def evaluate_all(ctx, evaluator, model, tok, data, reference) -> dict:
    """The configured evaluation, plus one per extra guidance scale (`generation.eval_scales`)."""
    result = evaluator.evaluate(model, tok, data, ctx, reference=reference)
    for entry in ctx.cfg.generation.get("eval_scales") or []:
        # an entry is a gamma (the configured mode) or {scale: gamma, mode: log|prob}
        change = dict(entry) if isinstance(entry, (dict, DictConfig)) else {"scale": entry}
        scale = float(change["scale"])
        gen = OmegaConf.merge(ctx.generation, {"guidance": change})
        tag = f"cfg{scale:g}" + (f"_{change['mode']}" if "mode" in change else "")
        sub = evaluator.evaluate(model, tok, data, _with(ctx, generation=gen), reference=reference)
        result["aggregates"].update({f"{k}@{tag}": v for k, v in sub["aggregates"].items()})
        result["per_item"][tag] = sub["per_item"]
    return result


def _with(ctx: RunContext, **changes) -> RunContext:
    return RunContext(**{**ctx.__dict__, **changes})


def run(cfg: DictConfig, out_dir: str | Path, overrides: list[str] | None = None) -> dict:
    t_start = time.perf_counter()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    timings: dict = {}
    ctx = RunContext(cfg=cfg, out_dir=out_dir, cache_dir=str(cfg.cache_dir), device=pick_device(cfg.device),
                     max_length=int(cfg.max_length), generation=cfg.generation, data_dir=cfg.get("data_dir"),
                     timings=timings)
    choices = dict(cfg.get("choices") or {})

    # compose -> objects (all built by Hydra from their config group)
    data = build(cfg.dataset)
    spec = build(cfg.model)
    method = build(cfg.method)
    evaluator = build(cfg.evaluator)
    method.check(bool(data.retain))
    unlearn = TrainSettings.from_cfg(cfg.trainer)
    finetune = TrainSettings.from_cfg({"seed": cfg.seed, **OmegaConf.to_container(cfg.model.finetune, resolve=True)})
    logger = instantiate(cfg.logger, _convert_="all")
    ctx.logger = logger
    logger.start(out_dir, OmegaConf.to_container(cfg, resolve=True),
                 {"method": getattr(method, "name", ""), "dataset": data.name, "model": spec.name})
    try:
        return _run_logged(cfg, ctx, data, spec, method, evaluator, unlearn, finetune, logger, overrides, t_start)
    except BaseException:
        logger.finish("failed")
        raise


def _run_logged(cfg, ctx, data, spec, method, evaluator, unlearn, finetune, logger, overrides, t_start) -> dict:
    out_dir, timings, choices = ctx.out_dir, ctx.timings, dict(cfg.get("choices") or {})

    if getattr(data, "chunker", None) is not None:  # raw-text datasets (MUSE) chunk once a tokenizer exists
        tok = (load_folder(cfg.stage.target_path)[1] if cfg.stage.target_path else spec.load(data.corpus)[1])
        data = data.for_tokenizer(tok, ctx.max_length)

    # starting models: the target to unlearn from, the retain reference to compare with
    t = time.perf_counter()
    stages = {}
    target = Path(cfg.stage.target_path) if cfg.stage.target_path else None
    if target is None:
        target, built = ensure_stage("target", spec, data.corpus, data.target_train, finetune, ctx.max_length,
                                     ctx.cache_dir, ctx.device)
        stages["target"] = {"path": str(target), "built": built}
    reference = Path(cfg.stage.reference_path) if cfg.stage.reference_path else None
    if reference is None and data.reference_train and getattr(evaluator, "uses_reference", False):
        reference, built = ensure_stage("reference", spec, data.corpus, data.reference_train, finetune,
                                        ctx.max_length, ctx.cache_dir, ctx.device)
        stages["reference"] = {"path": str(reference), "built": built}
    for p in (target, reference):
        if p is not None and not (p / "config.json").exists():
            raise UserError(f"stage checkpoint {p} holds no config.json; give an HF-format model folder")
    timings["stages_s"] = time.perf_counter() - t

    t = time.perf_counter()
    baselines, ref_result = {}, None
    if reference is not None:
        ref_result = cached_eval(ctx, evaluator, reference, data, None, "reference")
        baselines["reference"] = ref_result["aggregates"]
    if cfg.stage.evaluate_baselines:
        baselines["target"] = cached_eval(ctx, evaluator, target, data, ref_result, "target")["aggregates"]
    timings["baselines_eval_s"] = time.perf_counter() - t

    # the model to unlearn, its data, the method's one-off preparation
    model, tok = load_folder(target)
    if cfg.subtraction.enabled:  # "Classifier-free guidance in LLMs Safety": theta_base - alpha (theta_target - theta_base)
        from unlearning.subtraction import subtract

        subtract(model, cfg.subtraction.base_path or spec.load(data.corpus)[0], cfg.subtraction.alpha)
    model.to(ctx.device)
    forget = [{**encode(tok, ex, ctx.max_length), "example": ex} for ex in data.forget]
    retain = [{**encode(tok, ex, ctx.max_length), "example": ex} for ex in data.retain] if data.retain else None
    t = time.perf_counter()
    forget = method.prepare(model, tok, forget, retain, ctx)
    timings["prepare_s"] = time.perf_counter() - t

    t = time.perf_counter()
    model = train(model, method, forget, retain, unlearn, tok.pad_token_id, logger=logger, desc="unlearn")
    timings["train_s"] = time.perf_counter() - t
    if cfg.save_model:
        model.save_pretrained(out_dir / "model")
        tok.save_pretrained(out_dir / "model")

    t = time.perf_counter()
    result = evaluate_all(ctx, evaluator, model, tok, data, ref_result)
    timings["eval_s"] = time.perf_counter() - t
    write_json(out_dir / "eval" / f"{evaluator.name}.json", result)
    metrics = result["aggregates"]
    timings["total_s"] = time.perf_counter() - t_start
    objective = metrics.get(str(cfg.objective)) if cfg.objective else None
    record = {
        "status": "ok", "method": choices.get("method", getattr(method, "name", "")), "dataset": data.name,
        "model": spec.name, "overrides": list(overrides or []), "metrics": metrics, "baselines": baselines,
        "objective": objective, "timings": timings, "stages": stages, "versions": versions(),
        "config": OmegaConf.to_container(cfg, resolve=True),
    }
    write_json(out_dir / "results.json", record)
    logger.summary(metrics)
    logger.finish("ok")
    return record


def table(record: dict, columns: list[str] | None = None) -> str:
    """A plain-text comparison table: reference, target, unlearned, and unlearned under each extra guidance scale."""
    metrics = record["metrics"]
    rows = [(name, record["baselines"][name]) for name in ("reference", "target") if name in record["baselines"]]
    rows.append((f"unlearned ({record['method']})", metrics))
    for tag in dict.fromkeys(k.split("@", 1)[1] for k in metrics if "@" in k):
        rows.append((f"unlearned @{tag}", {k.split("@", 1)[0]: v for k, v in metrics.items() if k.endswith("@" + tag)}))
    if columns is None:
        preferred = ["forget_quality", "model_utility"]
        keys = [k for k in metrics if isinstance(metrics[k], (int, float)) and "@" not in k]
        columns = [k for k in preferred if k in keys] + [k for k in keys if k not in preferred]
    widths = [max(12, len(name)) + 2 for name, _ in rows]
    header = f"{'metric':<32}" + "".join(f"{name:>{w}}" for (name, _), w in zip(rows, widths))
    lines = [header, "-" * len(header)]
    for col in columns:
        cells = [f"{vals[col]:>{w}.4g}" if isinstance(vals.get(col), (int, float)) else f"{'-':>{w}}"
                 for (_, vals), w in zip(rows, widths)]
        lines.append(f"{col:<32}" + "".join(cells))
    return "\n".join(lines)
