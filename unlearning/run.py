"""One unlearning run, top to bottom: compose -> data -> model -> stages -> method -> train -> evaluate -> record."""

from __future__ import annotations

import json
import logging
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from unlearning.data.base import encode
from unlearning.distributed import MainOnly, broadcast, is_main, main_first, pick_device, wait, world_size
from unlearning.errors import Diverged, UserError
from unlearning.hashing import short_hash
from unlearning.models import cache_root, load_folder
from unlearning.results import provenance, versions, write_json
from unlearning.stages import ensure_stage
from unlearning.train import Checkpoints, latest_checkpoint, train
from unlearning.validate import Parts, validate

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
    load_kwargs: dict = field(default_factory=dict)   # model.dtype / attn_implementation / trust_remote_code
    provenance: dict = field(default_factory=dict)    # what determines the numbers besides the config
    resume_from: Path | None = None                   # the checkpoint this run continues from
    training_eval: dict = field(default_factory=dict)  # curve / selection of the evaluations during training
    robustness: dict | None = None                     # the attacks' controls, null reasons and worst case


def cached_eval(ctx: RunContext, evaluator, model_path: Path, data, reference: dict | None, what: str) -> dict:
    """Evaluate a stage once; later runs (and sweep jobs) reuse the stored result."""
    key = {"model": str(model_path), "evaluator": OmegaConf.to_container(ctx.cfg.evaluator, resolve=True),
           **({"lm_eval": OmegaConf.to_container(ctx.cfg.lm_eval, resolve=True)} if ctx.cfg.get("lm_eval") else {}),
           "generation": OmegaConf.to_container(ctx.cfg.generation, resolve=True), "data": data.name,
           "max_length": ctx.max_length, "reference": (reference or {}).get("aggregates"), "load": ctx.load_kwargs}
    path = cache_root(ctx.cache_dir) / "evals" / f"{what}-{short_hash(key)}.json"
    if broadcast(path.exists()):
        log.info("%s: reusing cached evaluation %s", what, path)
        return json.loads(path.read_text())
    # every process evaluates its share (or, under FSDP / ZeRO-3, rank 0 alone: MainOnly); all get the result
    alone = isinstance(evaluator, MainOnly)
    model, tok = load_folder(model_path, **ctx.load_kwargs) if is_main() or not alone else (None, None)
    result = evaluator.evaluate(model.to(ctx.device) if model is not None else None, tok, data, ctx,
                                reference=reference)
    if is_main():
        write_json(path, result)
    return result


def evaluate_all(ctx, evaluator, model, tok, data, reference) -> dict:
    """The configured evaluation, plus one per extra guidance scale (`generation.eval_scales`)."""
    result = evaluator.evaluate(model, tok, data, ctx, reference=reference)
    scaled = evaluator.guided() if hasattr(evaluator, "guided") else evaluator  # lm-eval beside: not re-run per scale
    for entry in ctx.cfg.generation.get("eval_scales") or []:
        # an entry is a gamma (the configured mode) or {scale: gamma, mode: log|prob}
        change = dict(entry) if isinstance(entry, (dict, DictConfig)) else {"scale": entry}
        scale = float(change["scale"])
        gen = OmegaConf.merge(ctx.generation, {"guidance": change})
        tag = f"cfg{scale:g}" + (f"_{change['mode']}" if "mode" in change else "")
        sub = scaled.evaluate(model, tok, data, _with(ctx, generation=gen), reference=reference)
        result["aggregates"].update({f"{k}@{tag}": v for k, v in sub["aggregates"].items()})
        result["per_item"][tag] = sub["per_item"]
    return result


def _with(ctx: RunContext, **changes) -> RunContext:
    return RunContext(**{**ctx.__dict__, **changes})


def run(cfg: DictConfig, out_dir: str | Path, overrides: list[str] | None = None, multirun: bool = False) -> dict:
    """The whole run as a recipe of named steps; each step is a short function below.

    Under a multi-process launch every process walks the same steps: training is a collective,
    evaluation is split between the processes (under FSDP / ZeRO-3 rank 0 evaluates while the
    others wait, as only it holds the whole trained model), and only rank 0 writes.
    """
    t_start = time.perf_counter()
    parts = validate(cfg)                                          # every component built and checked: no weights yet
    out_dir = make_run_folder(out_dir)
    if (done := finished(cfg, out_dir)) is not None:               # resume=true on a run that ended: nothing to do
        return done
    ctx = RunContext(cfg=cfg, out_dir=out_dir, cache_dir=str(cfg.cache_dir), device=pick_device(cfg.device),
                     max_length=int(cfg.max_length), generation=cfg.generation, data_dir=cfg.get("data_dir"),
                     load_kwargs=parts.spec.load_kwargs(), resume_from=resume_point(cfg, out_dir, multirun))
    if world_size() > 1 and parts.distributed.sharded:  # only rank 0 gets the gathered weights (train.finish)
        parts.evaluator = MainOnly(parts.evaluator)
    ctx.provenance = provenance(cfg, ctx.device)  # taken now: the code that runs, not the tree at the end
    ctx.logger = start_logger(cfg, out_dir, parts)
    baselines, stages = {}, {}
    try:
        with main_first():                                         # deferred data work (model-written replacements)
            parts.data = parts.data.completed()                    # rank 0 first: the others read its cache
        parts.data = for_tokenizer(cfg, ctx, parts)                # raw-text corpora chunk once a tokenizer exists
        target, reference, stages = build_stages(cfg, ctx, parts)  # fine-tuned target, retain reference (cached)
        baselines, ref_result = evaluate_baselines(cfg, ctx, parts, target, reference)
        model, tok = load_model_to_unlearn(cfg, ctx, parts, target)
        model = unlearn(ctx, parts, model, tok, target, ref_result)  # method.prepare once, then the shared loop
        if cfg.save_model and is_main():
            save_model(model, tok, out_dir / "model")
        result = evaluate_unlearned(ctx, parts, model, tok, ref_result)
        result["aggregates"].update(attack(ctx, parts, model, tok, ref_result, baselines, result["aggregates"], target,
                                           reference))
        record = make_record(cfg, ctx, parts, result, baselines, stages, overrides, t_start)
        if is_main():
            write_json(out_dir / "results.json", record)
            shutil.rmtree(out_dir / "checkpoints", ignore_errors=True)  # the run ended: nothing left to resume
        wait()
    except Diverged as e:  # a result, not a crash: recorded as such, and a sweep goes on
        record = make_record(cfg, ctx, parts, {"aggregates": {}}, baselines, stages, overrides, t_start)
        record.update(status="diverged", error=str(e), diverged={"step": e.step, "term": e.term, "value": e.value})
        if is_main():
            write_json(out_dir / "results.json", record)
        ctx.logger.finish("diverged")
        raise
    except BaseException:
        ctx.logger.finish("failed")
        raise
    attacked_reference = (record.get("robustness") or {}).get("attacked_reference")
    ctx.logger.summary({**record["metrics"], **({"attacked_reference": attacked_reference} if attacked_reference else {})})
    ctx.logger.finish("ok")
    return record


def make_run_folder(out_dir: str | Path) -> Path:
    out_dir = Path(out_dir)
    if not is_main():
        return out_dir
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        probe = out_dir / ".writable"
        probe.touch()
        probe.unlink()
    except OSError as e:
        raise UserError(f"cannot write the run folder {out_dir}: {e.strerror or e}; choose another with "
                        "hydra.run.dir=... (hydra.sweep.dir=... for -m)") from None
    return out_dir


def finished(cfg: DictConfig, out_dir: Path) -> dict | None:
    """With resume set, a run folder whose results.json says ok is done: its record, without running again."""
    path = out_dir / "results.json"
    if cfg.get("resume") is not True or not path.is_file():
        return None
    record = json.loads(path.read_text())
    if record.get("status") != "ok":
        return None
    log.info("resume: %s already finished (status ok); nothing to run", out_dir)
    return record


# trainer keys added after checkpoints had been written: left out at their default, so those checkpoints still resume
ADDED_LATER = {"eval_each_epoch": False}


def training_fingerprint(cfg: DictConfig) -> dict:
    """The config that determines the unlearning steps: a checkpoint resumes only a run that agrees on all of it."""
    c = OmegaConf.to_container(cfg, resolve=True)
    trainer = {k: v for k, v in c["trainer"].items()
               if k not in ("save_every", "log_every") and not (k in ADDED_LATER and v == ADDED_LATER[k])}
    return {"model": c["model"], "dataset": c["dataset"], "method": c["method"], "trainer": trainer,
            "seed": c["seed"], "max_length": c["max_length"], "subtraction": c["subtraction"],
            "target_path": c["stage"]["target_path"], "processes": world_size(),
            "strategy": c["distributed"]["strategy"]}


def resume_point(cfg: DictConfig, out_dir: Path, multirun: bool) -> Path | None:
    """The checkpoint `resume` points at (checked against this config now, before any work), or None."""
    value = cfg.get("resume", False)
    if value is False or value is None:
        return None
    where = out_dir if value is True else Path(str(value))
    point = where if (where / "loop.json").is_file() else latest_checkpoint(where / "checkpoints")
    if point is None:
        if multirun:  # a sweep re-launched after a crash: a job that never checkpointed starts over
            log.info("resume: no checkpoint in %s; starting this job from the beginning", where)
            return None
        raise UserError(f"resume={value}: no checkpoint in {where / 'checkpoints'} (a run writes them with "
                        "trainer.save_every=N); check hydra.run.dir, or drop resume to start over")
    saved = json.loads((point / "loop.json").read_text()).get("fingerprint", {})
    differ = diff_keys(saved, training_fingerprint(cfg))
    if differ:
        shown = ", ".join(differ[:8]) + (f" (+{len(differ) - 8} more)" if len(differ) > 8 else "")
        raise UserError(f"resume: checkpoint {point} was written by a different config; differing keys: {shown}. "
                        "Resume with the same settings, or start a new run")
    return point


def diff_keys(a, b, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two nested dicts."""
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b), key=str):
            out += diff_keys(a.get(k), b.get(k), f"{prefix}.{k}" if prefix else str(k))
        return out
    return [] if a == b else [prefix or "(root)"]


def start_logger(cfg: DictConfig, out_dir: Path, parts: Parts):
    if not is_main():  # the others log nothing: one train_log, one W&B run
        from unlearning.loggers import LocalLogger

        return LocalLogger()
    logger = parts.logger
    logger.start(out_dir, OmegaConf.to_container(cfg, resolve=True),
                 {"method": getattr(parts.method, "name", ""), "dataset": parts.data.name, "model": parts.spec.name})
    return logger


def for_tokenizer(cfg: DictConfig, ctx: RunContext, parts: Parts):
    data = parts.data
    if getattr(data, "chunker", None) is None:
        return data
    tok = (load_folder(cfg.stage.target_path, **parts.spec.load_kwargs())[1] if cfg.stage.target_path
           else parts.spec.load(data.corpus)[1])
    data = data.for_tokenizer(tok, ctx.max_length)
    for attack in parts.attacks.values():  # counts of chunks, which the validation phase could not know (relearn)
        if hasattr(attack, "check"):
            attack.check(parts.evaluator, data)
    return data


def build_stages(cfg: DictConfig, ctx: RunContext, parts: Parts) -> tuple[Path, Path | None, dict]:
    """The target to unlearn from and the retain reference to compare with: given paths, else cached stages."""
    t, stages, data = time.perf_counter(), {}, parts.data
    target = Path(cfg.stage.target_path) if cfg.stage.target_path else None
    if target is None:
        target, built = ensure_stage("target", parts.spec, data.corpus, data.target_train, parts.finetune,
                                     ctx.max_length, ctx.cache_dir, ctx.device, parts.distributed)
        stages["target"] = {"path": str(target), "built": built}
    reference = Path(cfg.stage.reference_path) if cfg.stage.reference_path else None
    # built where the evaluator compares with it, or where an attack's control needs it (PII: robustness.control)
    wanted = getattr(parts.evaluator, "uses_reference", False) or (parts.attacks and cfg.robustness.control)
    if reference is None and data.reference_train and wanted:
        reference, built = ensure_stage("reference", parts.spec, data.corpus, data.reference_train, parts.finetune,
                                        ctx.max_length, ctx.cache_dir, ctx.device, parts.distributed)
        stages["reference"] = {"path": str(reference), "built": built}
    for p in (target, reference):
        if p is not None and not (p / "config.json").exists():
            raise UserError(f"stage checkpoint {p} holds no config.json; give an HF-format model folder")
    ctx.timings["stages_s"] = time.perf_counter() - t
    return target, reference, stages


def evaluate_baselines(cfg: DictConfig, ctx: RunContext, parts: Parts, target: Path, reference: Path | None):
    """Reference and target results (cached), so every run carries its own comparison rows."""
    t, baselines, ref_result = time.perf_counter(), {}, None
    if reference is not None:
        ref_result = cached_eval(ctx, parts.evaluator, reference, parts.data, None, "reference")
        baselines["reference"] = ref_result["aggregates"]
    if cfg.stage.evaluate_target:
        baselines["target"] = cached_eval(ctx, parts.evaluator, target, parts.data, ref_result, "target")["aggregates"]
    ctx.timings["baselines_eval_s"] = time.perf_counter() - t
    return baselines, ref_result


def load_model_to_unlearn(cfg: DictConfig, ctx: RunContext, parts: Parts, target: Path):
    # the model config's dtype, attention and trust_remote_code apply to the model to unlearn too
    model, tok = load_folder(target, **parts.spec.load_kwargs())
    if cfg.subtraction.enabled:  # "Classifier-free guidance in LLMs Safety": theta_base - scale (theta_target - theta_base)
        from unlearning.subtraction import subtract

        subtract(model, cfg.subtraction.base_path or parts.spec.load(parts.data.corpus)[0], cfg.subtraction.scale)
    return model.to(ctx.device), tok


def unlearn(ctx: RunContext, parts: Parts, model, tok, target: Path, ref_result: dict | None = None):
    data, method = parts.data, parts.method
    tracker = None
    if parts.unlearn.evaluates_during():  # evaluation during training, and the checkpoint it selects (selection.py)
        from unlearning.selection import EvalDuringTraining
        from unlearning.train import steps_per_epoch

        tracker = EvalDuringTraining(parts.evaluator, parts.unlearn, tok, data, ctx, ref_result, ctx.logger,
                                     steps_per_epoch(parts.unlearn, len(data.forget)),
                                     replicated=world_size() > 1 and not parts.distributed.sharded)
    forget = [{**encode(tok, ex, ctx.max_length), "example": ex} for ex in data.forget]
    retain = [{**encode(tok, ex, ctx.max_length), "example": ex} for ex in data.retain] if data.retain else None
    t = time.perf_counter()
    forget = method.prepare(model, tok, forget, retain, ctx)
    ctx.timings["prepare_s"] = time.perf_counter() - t
    t = time.perf_counter()
    checkpoints = Checkpoints(ctx.out_dir / "checkpoints", parts.unlearn.save_every, ctx.resume_from,
                              training_fingerprint(ctx.cfg))
    model = train(model, method, forget, retain, parts.unlearn, tok.pad_token_id, logger=ctx.logger, desc="unlearn",
                  distributed=parts.distributed, device=ctx.device, checkpoints=checkpoints,
                  rebuild=lambda: load_folder(target, **ctx.load_kwargs)[0], on_step=tracker)
    ctx.timings["train_s"] = time.perf_counter() - t
    if tracker is not None:
        tracker.restore(model)
        ctx.training_eval = tracker.record()
    return model


def save_model(model, tok, folder: Path) -> None:
    model.save_pretrained(folder)
    tok.save_pretrained(folder)


def evaluate_unlearned(ctx: RunContext, parts: Parts, model, tok, ref_result: dict | None) -> dict:
    t = time.perf_counter()
    result = evaluate_all(ctx, parts.evaluator, model, tok, parts.data, ref_result)
    ctx.timings["eval_s"] = time.perf_counter() - t
    if is_main():
        write_json(ctx.out_dir / "eval" / f"{parts.evaluator.name}.json", result)
    return result


def attack(ctx: RunContext, parts: Parts, model, tok, ref_result: dict | None, baselines: dict, metrics: dict,
           target: Path | None, reference: Path | None) -> dict:
    """Robustness attacks (attack=[...]): each on a copy of the unlearned model, metrics suffixed @<attack>, and
    the same attack on the retain reference (`robustness.control`); what they leave beside the metrics goes to
    `ctx.robustness` (results.json `robustness`)."""
    if not parts.attacks:
        return {}
    from unlearning.attacks import run_attacks

    t, settings = time.perf_counter(), ctx.cfg.robustness
    no_reference = None
    if not settings.control:
        no_reference = "robustness.control=false: the attacks were not run on a never-trained model"
    elif reference is None:
        no_reference = (f"no never-trained model: dataset {parts.data.name} builds none here and stage.reference_path "
                        "is unset (a reference_result file holds numbers, not weights); give stage.reference_path="
                        "<a model trained without the forget data>")
    load_reference = None if no_reference else (lambda: load_folder(reference, **ctx.load_kwargs))
    load_target = (lambda: load_folder(target, **ctx.load_kwargs)) if target is not None else None
    metrics, ctx.robustness = run_attacks(parts.attacks, parts.evaluator, model, tok, parts.data, ctx, ref_result,
                                          metrics, baselines.get("target"), load_target, load_reference,
                                          float(settings.recovery_floor), no_reference)
    ctx.timings["attacks_s"] = time.perf_counter() - t
    return metrics


def objective_name(cfg: DictConfig, evaluator) -> str | None:
    """`objective`, or the evaluator's headline metric when it is null."""
    return str(cfg.objective) if cfg.get("objective") else getattr(evaluator, "objective", None)


def template_date(cfg) -> str:
    """The date the chat template was given (`model.date_string`, else the pinned default): results.json records it."""
    from unlearning.data.base import DATE_STRING

    return str(OmegaConf.select(cfg, "model.date_string", default=None) or DATE_STRING)


def chosen_sources(data) -> dict:
    """How many forget pairs took their chosen answer from each source (the PII benchmark's replacement chain:
    model, rewrite, template); empty for datasets without chosen answers."""
    from collections import Counter

    return dict(sorted(Counter(ex.meta["chosen_source"] for ex in data.forget if "chosen_source" in ex.meta).items()))


def make_record(cfg, ctx, parts, result, baselines, stages, overrides, t_start) -> dict:
    metrics = result["aggregates"]
    ctx.timings["total_s"] = time.perf_counter() - t_start
    choices = dict(cfg.get("choices") or {})
    return {
        "status": "ok", "method": choices.get("method", getattr(parts.method, "name", "")),
        "dataset": parts.data.name, "model": parts.spec.name, "overrides": list(overrides or []),
        "metrics": metrics, "baselines": baselines,
        "objective": metrics.get(objective_name(cfg, parts.evaluator)),
        "training": parts.distributed.describe(parts.unlearn.batch_size, parts.unlearn.grad_accum),
        "chat_template_date": template_date(cfg),
        "resumed_from": str(ctx.resume_from) if ctx.resume_from else None,
        **ctx.training_eval,  # "curve" and "selection" when trainer.eval_every is set
        **({"robustness": ctx.robustness} if ctx.robustness is not None else {}),
        **({"chosen_sources": sources} if (sources := chosen_sources(parts.data)) else {}),
        "timings": ctx.timings, "stages": stages, "versions": versions(), "provenance": ctx.provenance,
        "config": OmegaConf.to_container(cfg, resolve=True),
    }


def table(record: dict, columns: list[str] | None = None) -> str:
    """A plain-text comparison table: reference, target, unlearned, and unlearned under each extra guidance scale."""
    metrics = record["metrics"]
    rows = [(name, record["baselines"][name]) for name in ("reference", "target") if name in record["baselines"]]
    rows.append((f"evaluated ({record['model']})" if "evaluated" in record else f"unlearned ({record['method']})",
                 metrics))
    for tag in dict.fromkeys(k.split("@", 1)[1] for k in metrics if "@" in k):
        rows.append((f"unlearned @{tag}", {k.split("@", 1)[0]: v for k, v in metrics.items() if k.endswith("@" + tag)}))
    for name, values in ((record.get("robustness") or {}).get("attacked_reference") or {}).items():
        rows.append((f"reference @{name}", values))  # the same attack on the model that never saw the forget set
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
