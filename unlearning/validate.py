"""The validation phase: the whole composed run is checked before any stage is built or any weights load.

`validate(cfg)` instantiates every component from its config group (each checks its own options),
then checks what no single component can: that the values have the types the code expects (so
`method.beta=abc` names `method.beta` instead of failing deep inside a loss), that the method can
train on this dataset, that the evaluator finds what it needs in it, that `objective` is a metric
the evaluator produces, and that the guidance settings and step counts make sense. It loads data
files but no model weights, so it takes seconds; `unlearning --check` runs it for every job of a
sweep without running any.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field

from omegaconf import DictConfig, OmegaConf, open_dict

from unlearning.errors import UserError

# Config keys a group's node carries for the run itself, not for its `_target_`'s constructor.
RUN_KEYS = {"model": {"finetune"}}
GROUPS = ("dataset", "model", "method", "evaluator", "logger", "distributed")


@dataclass
class Parts:
    """The run's components, each instantiated by Hydra from its config group."""

    data: object
    spec: object
    method: object
    evaluator: object
    logger: object
    unlearn: object
    finetune: object
    attacks: dict = field(default_factory=dict)
    distributed: object = None


def validate(cfg: DictConfig, evaluation_only: bool = False) -> Parts:
    """Every check that needs no model weights; returns the built components. Raises UserError on the first problem.
    `evaluation_only`: the checks of `unlearning-eval`, which evaluates a model as it is."""
    from unlearning.distributed import pick_device
    from unlearning.precision import device_kind, resolve_auto
    from unlearning.train import TrainSettings

    pick_device(cfg.get("device", "auto"))  # an unknown device, or cuda without a GPU
    if cfg.get("reference_result") and not evaluation_only:
        raise UserError("reference_result is read by unlearning-eval only; a run's reference is the retain "
                        "reference stage (stage.reference_path= to give one)")
    resolve_auto(cfg, device_kind(cfg.get("device", "auto")))  # `bf16: auto` -> true on a bf16 GPU, false elsewhere
    for group in GROUPS:
        check_keys_and_types(group, cfg[group], (cfg.get("choices") or {}).get(group))
    for name, node in picked_attacks(cfg).items():
        check_keys_and_types(f"attacks.{name}", node, str(name), conf=f"conf/attack/{name}.yaml")
    check_top_level(cfg)
    data, spec, method, evaluator = (build(cfg[g]) for g in ("dataset", "model", "method", "evaluator"))
    check_lengths(cfg, getattr(spec, "max_positions", lambda: None)())
    evaluator = with_lm_eval(cfg, evaluator)
    logger = build(cfg.logger)
    attacks = {str(name): build(node) for name, node in picked_attacks(cfg).items()}
    unlearn = TrainSettings.from_cfg(cfg.trainer)
    finetune = TrainSettings.from_cfg({"seed": stage_seed(cfg), **OmegaConf.to_container(cfg.model.finetune, resolve=True)},
                                      where="model.finetune")
    check_steps(unlearn, len(data.forget), "trainer")
    if data.target_train:  # empty: the dataset's target is the model as it is (WMDP), nothing to fine-tune
        check_steps(finetune, len(data.target_train), "model.finetune")
    method.check(bool(data.retain))
    if hasattr(method, "check_files"):  # files a method reads itself (IdkDPO's refusals)
        method.check_files(cfg.get("data_dir"))
    check_method_on_data(cfg, method, data)
    check_evaluator_on_data(cfg, evaluator, data)
    check_generation(cfg)
    if hasattr(evaluator, "check_generation"):  # e.g. OpenUnlearning-compatible scoring has no guided decoding
        evaluator.check_generation(cfg.generation)
    check_objective(cfg, evaluator, data, attacks)
    check_eval_during_training(cfg, unlearn, evaluator, data)
    check_subtraction(cfg)
    check_stage_paths(cfg)
    check_method_on_model(cfg, method, spec)  # after the stage paths: a hub-id target is a folder by now
    check_lora_targets(unlearn.lora, spec, cfg.stage.get("target_path"))  # peft would fail after the stages
    check_precision(cfg)
    for attack in attacks.values():
        if hasattr(attack, "check"):
            attack.check(evaluator, data)
    distributed = build(cfg.distributed)
    check_distributed(cfg, distributed, method, attacks)
    check_processes(cfg, distributed)
    check_layout(cfg, distributed, unlearn, finetune, bool(data.target_train))
    check_resume(cfg)
    return Parts(data, spec, method, evaluator, logger, unlearn, finetune, attacks, distributed)


def picked_attacks(cfg: DictConfig) -> dict:
    """The attacks the `attack` group picked: a preset's settings for attacks a run's `attack=[...]` left out (a node
    without `_target_`, e.g. `attacks.relearn.measure` after `attack=[quant8]`) are not attacks to run."""
    return {str(name): node for name, node in (cfg.get("attacks") or {}).items()
            if not isinstance(node, DictConfig) or "_target_" in node}


def with_lm_eval(cfg: DictConfig, evaluator):
    """`lm_eval=<preset>`: lm-eval-harness beside the benchmark's evaluator (eval/combined.py)."""
    if cfg.get("lm_eval") is None:
        return evaluator
    if getattr(evaluator, "name", None) == "lm_eval":
        raise UserError("evaluator=lm_eval already runs lm-eval; give its tasks with evaluator.tasks=[...] and drop "
                        "lm_eval=, or pick a benchmark evaluator (tofu, muse, pii) to run lm-eval beside")
    check_keys_and_types("lm_eval", cfg.lm_eval, (cfg.get("choices") or {}).get("lm_eval"))
    from unlearning.eval.combined import WithLmEval

    return WithLmEval(evaluator, build(cfg.lm_eval))


def check_eval_during_training(cfg: DictConfig, unlearn, evaluator, data) -> None:
    """trainer.eval_every / eval / select: an interval the run reaches, options and a metric the evaluator has."""
    if not unlearn.evaluates_during():
        return
    from unlearning.selection import parse_select, parse_stop, subset
    from unlearning.train import total_steps

    total = total_steps(unlearn, len(data.forget))
    if unlearn.eval_every and unlearn.eval_every > total:
        raise UserError(f"trainer.eval_every={unlearn.eval_every} is larger than the run ({total} optimiser steps); "
                        f"use 1..{total} (the last step is always evaluated)")
    chosen, during = parse_select(unlearn.select), subset(evaluator, unlearn.eval)  # subset: unknown options refused
    if unlearn.stop:
        metric, _, threshold = parse_stop(unlearn.stop)
        if metric not in during.metric_names(data):
            raise UserError(f"trainer.stop={unlearn.stop}: {metric} is not a metric of the evaluation during training "
                            f"(evaluator={evaluator.name}); choose one of {', '.join(sorted(during.metric_names(data)))}")
        if threshold == "reference" and not getattr(evaluator, "uses_reference", False):
            raise UserError(f"trainer.stop={unlearn.stop}: evaluator={evaluator.name} evaluates no retain reference to "
                            "compare with; give a number instead of `reference`")
    if chosen and chosen[0] not in during.metric_names(data):
        names = sorted(during.metric_names(data))
        raise UserError(f"trainer.select={unlearn.select}: {chosen[0]} is not a metric of the evaluation during "
                        f"training (evaluator={evaluator.name} with trainer.eval={dict(unlearn.eval)}); choose one "
                        f"of {', '.join(names)}")


def check_method_on_model(cfg: DictConfig, method, spec) -> None:
    """Options that depend on the model's shape (RMU's layers), from its config alone: the model to unlearn is the
    given target's, else the preset's."""
    if not hasattr(method, "check_depth"):
        return
    from unlearning.models import config_depth

    target = cfg.stage.get("target_path")
    depth = config_depth(target) if target else (spec.depth() if hasattr(spec, "depth") else None)
    if depth is not None:
        method.check_depth(depth)


def stage_seed(cfg: DictConfig) -> int:
    """The seed of the stage fine-tunes (`stage.seed`), one line if it is not an integer in numpy's range."""
    value = OmegaConf.select(cfg, "stage.seed", default=0)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**32:
        raise UserError(f"stage.seed={value!r} must be an integer in [0, 2**32) (the target's and the retain "
                        "reference's fine-tunes; conf/config.yaml)")
    return value


def check_layout(cfg: DictConfig, distributed, unlearn, finetune, has_target_train: bool) -> None:
    """The global batches (trainer / model.finetune batch sizes) split evenly over this launch's processes (or, on
    the host that submits a slurm_multigpu sweep, over the processes each job will start) x grad_accum."""
    from unlearning.distributed import world_size
    from unlearning.train import check_layout as split_evenly

    n = world_size()
    if n == 1 and (cfg.get("choices") or {}).get("hydra/launcher") == "slurm_multigpu":
        n = int(distributed.processes)
    split_evenly(unlearn, n, "trainer")
    if has_target_train:
        split_evenly(finetune, n, "model.finetune")


def check_lora_targets(lora, spec, target: str | None) -> None:
    """trainer.lora.target_modules against the model's own module names (from its config: no weights), as peft
    matches them: a list entry names a module or the end of a dotted name, a string is a regex on whole names."""
    import re

    if not lora.enabled or lora.target_modules == "all-linear":
        return
    from unlearning.models import module_names

    names = module_names(spec, target)
    if not names:
        return
    given = lora.target_modules
    if isinstance(given, str):
        missing = [] if any(re.fullmatch(given, n) for n in names) else [given]
    else:
        missing = [t for t in given if not any(n == str(t) or n.endswith("." + str(t)) for n in names)]
    if missing:
        leaves = ", ".join(dict.fromkeys(n.rsplit(".", 1)[-1] for n in names))
        raise UserError(f"trainer.lora.target_modules: {', '.join(map(str, missing))} matches no linear or embedding "
                        f"module of this model; it has {leaves} (or use all-linear)")


def check_distributed(cfg: DictConfig, distributed, method, attacks: dict) -> None:
    """What cannot run under this launch: a strategy without its launcher or library, attacks on sharded weights."""
    from unlearning.distributed import world_size

    # a slurm_multigpu sweep is validated on the submitting host (one process, maybe no GPU); each job checks again
    submitting = (cfg.get("choices") or {}).get("hydra/launcher") == "slurm_multigpu" and world_size() == 1
    distributed.check(submitting=submitting)
    if distributed.effective == "single":
        return
    if distributed.sharded and attacks:
        raise UserError(f"attacks under distributed.strategy={distributed.effective}: the attacks need the whole "
                        "model in every process; run them with ddp, or on the saved model in one process")


def check_processes(cfg: DictConfig, distributed) -> None:
    """`distributed.processes` is how many processes hydra/launcher=slurm_multigpu starts per job; under torchrun or
    accelerate the launch decides. Asked for in a single-process launch, it would be silently ignored."""
    from unlearning.distributed import world_size

    n, wanted = world_size(), distributed.processes
    launcher = (cfg.get("choices") or {}).get("hydra/launcher")
    if wanted > 1 and n == 1 and launcher != "slurm_multigpu":
        raise UserError(f"distributed.processes={wanted}, but this is a single-process launch: processes is read by "
                        "hydra/launcher=slurm_multigpu; elsewhere start the processes yourself (`torchrun "
                        f"--nproc_per_node {wanted} -m unlearning ...`) and leave distributed.processes at 1")


def check_resume(cfg: DictConfig) -> None:
    from pathlib import Path

    value = cfg.get("resume", False)
    if isinstance(value, bool) or value is None:
        return
    if not Path(str(value)).exists():
        raise UserError(f"resume={value}: no such run or checkpoint folder; give a run folder (with checkpoints/), "
                        "a checkpoint folder (step-N), or resume=true for this run's own folder")


def build(node):
    """Hydra `instantiate`, re-raising a target's UserError as itself (Hydra wraps it in InstantiationException,
    which would turn one clear line into a traceback and exit code 1)."""
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate

    try:
        return instantiate(node, _convert_="all")
    except InstantiationException as e:
        if isinstance(e.__cause__, UserError):
            raise e.__cause__ from None
        raise UserError(f"cannot build {node.get('_target_')}: {str(e.__cause__ or e).splitlines()[0]}") from None


def _signature(target: str):
    import importlib

    module, _, attr = target.rpartition(".")
    try:
        obj = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError, ValueError):
        raise UserError(f"_target_={target!r} cannot be imported; check the module and name") from None
    if inspect.isclass(obj) and obj.__init__ is object.__init__:  # no constructor of its own (GA): no options
        return inspect.Signature()
    return inspect.signature(obj.__init__ if inspect.isclass(obj) else obj)


def check_keys_and_types(group: str, node: DictConfig, choice: str | None = None, conf: str | None = None) -> None:
    """Unknown keys and values of the wrong type, named by their config key, for any `_target_` node (`conf`: the
    file to name, where it is not conf/<group>/<choice>.yaml)."""
    target = node.get("_target_")
    if not target:
        return
    sig = _signature(str(target))
    params = {n: p for n, p in sig.parameters.items() if n != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}
    takes_any = any(p.kind == p.VAR_KEYWORD for p in sig.parameters.values())
    given = [k for k in node.keys() if not str(k).startswith("_") and k not in RUN_KEYS.get(group, set())]
    name = choice or _choice(node, group)
    if not takes_any or group in ("evaluator", "logger", "model"):
        unknown = sorted(k for k in given if k not in params)
        # a constructor that forwards **kwargs to a parent (ORPOCFG -> ORPO) is checked by the parent itself
        if unknown and (params or not takes_any):  # a constructor with no options at all (GA) takes none
            raise UserError(f"unknown option(s) {unknown} for {group}={name}; known: {sorted(params)} "
                            f"(see conf/{group}/{name}.yaml)")
    for key in given:
        if key not in params:
            continue
        value = OmegaConf.select(node, str(key))
        expected = _expected_type(params[key])
        if expected is not None and value is not None and not _fits(value, expected):
            what = {bool: "true or false", int: "a whole number"}.get(expected, "a number")
            raise UserError(f"{group}.{key}={value!r} must be {what} ({conf or f'conf/{group}/{name}.yaml'} or the "
                            f"override {group}.{key}=...)")
        if expected is int and isinstance(value, float):  # `people=2.0`: the constructor gets the int it asks for
            with open_dict(node):
                node[key] = int(value)


def _choice(node: DictConfig, group: str) -> str:
    """The option's name for messages (conf/<group>/<name>.yaml) when Hydra's choices are not at hand."""
    import importlib

    if node.get("name"):
        return str(node.name)
    module, _, attr = str(node.get("_target_", group)).rpartition(".")
    try:
        return str(getattr(importlib.import_module(module), attr).name)
    except (ImportError, AttributeError, ValueError):
        return attr.lower()


def _expected_type(param: inspect.Parameter):
    """The number/bool type a parameter wants, from its annotation (a string under __future__) or else its default;
    `int` only where the annotation says so (an `alpha=1` default may still take 0.5)."""
    ann = str(param.annotation)
    if ann in ("int", "int | None"):
        return int
    if ann in ("float", "float | None", "int | float", "float | int"):
        return float
    if ann in ("bool", "bool | None"):
        return bool
    default = param.default
    if isinstance(default, bool):
        return bool
    if isinstance(default, (int, float)):
        return float
    return None


def _fits(value, expected) -> bool:
    if expected is bool:
        return isinstance(value, bool)
    if isinstance(value, bool):
        return False
    if expected is int:
        return isinstance(value, int) or (isinstance(value, float) and value.is_integer())
    if isinstance(value, (int, float)):
        return True
    try:
        float(value)
    except (TypeError, ValueError):
        return False
    return True


def check_top_level(cfg: DictConfig) -> None:
    for key in ("max_length", "seed"):
        value = cfg.get(key)
        if isinstance(value, bool) or not isinstance(value, int):
            raise UserError(f"{key}={value!r} must be an integer (conf/config.yaml or the override {key}=...)")
    if cfg.max_length < 8:
        raise UserError(f"max_length={cfg.max_length} is too small to hold a question and an answer; use >= 8 "
                        "(256 is the default)")
    check_lengths(cfg, cfg.model.get("max_position_embeddings"))
    if cfg.get("threads") is not None and (not isinstance(cfg.threads, int) or cfg.threads < 1):
        raise UserError(f"threads={cfg.threads!r} must be a positive integer or null")
    if not 0 <= cfg.seed < 2**32:  # numpy's and the data generators' seed range
        raise UserError(f"seed={cfg.seed} must be in [0, 2**32)")
    for key in ("save_model", "stage.evaluate_target", "subtraction.enabled", "robustness.control"):
        value = OmegaConf.select(cfg, key)
        if value is not None and not isinstance(value, bool):
            raise UserError(f"{key}={value!r} must be true or false (conf/config.yaml or the override {key}=...)")
    floor = OmegaConf.select(cfg, "robustness.recovery_floor")
    if isinstance(floor, bool) or not isinstance(floor, (int, float)) or not 0 <= floor < 1e9:
        raise UserError(f"robustness.recovery_floor={floor!r} must be a number >= 0 (the smallest |target - unlearned| "
                        "a recovery is divided by; 0.05 is the default)")
    if "worst" in picked_attacks(cfg):
        raise UserError("an attack named worst would collide with <metric>@worst (the worst case over the attacks); "
                        "name its YAML otherwise")
    check_cache_dir(cfg)


def check_cache_dir(cfg: DictConfig) -> None:
    """The stage cache must be a folder this process can write (it holds every fine-tuned stage); nothing is created."""
    import os
    from pathlib import Path

    from unlearning.folders import unwritable

    root = Path(cfg.get("cache_dir") or os.environ.get("UNLEARNING_CACHE") or Path.home() / ".cache" / "unlearning")
    if (why := unwritable(root)) is not None:
        raise UserError(f"cache_dir={str(root)!r} cannot be created or written ({why}); give a writable folder "
                        "(cache_dir=... or UNLEARNING_CACHE)")


def check_lengths(cfg: DictConfig, limit: int | None) -> None:
    """Sequence lengths within the model's positions (the tiny model's config key, or a folder's config.json)."""
    if limit is None:
        return
    if cfg.max_length > limit:
        raise UserError(f"max_length={cfg.max_length} exceeds the model's {limit} positions "
                        "(max_position_embeddings); lower max_length")
    ev_length = cfg.evaluator.get("max_length") if "evaluator" in cfg else None
    if isinstance(ev_length, int) and ev_length > limit:
        raise UserError(f"evaluator.max_length={ev_length} exceeds the model's {limit} positions "
                        f"(max_position_embeddings); lower it (evaluator.max_length={limit})")


def check_steps(settings, n_examples: int, where: str) -> None:
    """Catch settings that would train for zero steps (a run that silently does nothing)."""
    if settings.epochs <= 0 and settings.max_steps <= 0:
        raise UserError(f"{where}.epochs={settings.epochs} and {where}.max_steps={settings.max_steps}: "
                        "that trains for zero steps; set epochs > 0 or max_steps > 0")
    if n_examples == 0:
        raise UserError(f"{where}: the dataset gives no examples to train on (check the dataset's split and subset "
                        "options)")


def check_method_on_data(cfg: DictConfig, method, data) -> None:
    raw = [ex for ex in data.forget if ex.messages is None]
    name = cfg.get("choices", {}).get("method") or getattr(method, "name", "method")
    if raw and getattr(method, "needs_chat", False):
        raise UserError(f"method={name} needs chat questions with answers, but dataset={data.name} gives raw text "
                        "chunks; use a QA dataset (tofu, synthetic_pii) or a method that trains on text (ga, graddiff, "
                        "npo, simnpo, rmu)")
    if getattr(method, "needs_pairs", False):
        missing = [ex for ex in data.forget if not (ex.meta or {}).get("chosen") or not (ex.meta or {}).get("rejected")]
        if missing:
            raise UserError(f"method={name} needs preference pairs (a chosen and a rejected answer per forget "
                            f"example), but {len(missing)} of dataset={data.name}'s {len(data.forget)} forget examples "
                            "have none; use dataset=synthetic_pii")


def check_evaluator_on_data(cfg: DictConfig, evaluator, data) -> None:
    needs = list(getattr(evaluator, "requires", list)())
    missing = [k for k in needs if k not in data.extra]
    if missing:
        ev = cfg.get("choices", {}).get("evaluator") or getattr(evaluator, "name", "evaluator")
        raise UserError(f"evaluator={ev} needs {missing} from the dataset, which dataset={data.name} does not give; "
                        f"pair it with its own benchmark (evaluator=tofu with dataset=tofu, muse with muse_news, "
                        "pii with synthetic_pii)")
    if hasattr(evaluator, "check_data"):  # what this evaluator needs of the data's contents (e.g. PII probes)
        evaluator.check_data(data)


def eval_tags(generation: DictConfig) -> list[str]:
    """The suffixes (`@cfg3`, `@cfg2_prob`) of every extra guidance scale, each entry checked."""
    from unlearning.generation import Guidance

    tags = []
    entries = generation.get("eval_scales") or []
    if isinstance(entries, (int, float, str)):
        raise UserError(f"generation.eval_scales={entries!r} must be a list, e.g. [2, 3] or [{{scale: 3, mode: prob}}]")
    for i, entry in enumerate(entries):
        change = dict(entry) if isinstance(entry, (dict, DictConfig)) else {"scale": entry}
        unknown = sorted(set(change) - {"scale", "mode"})
        if unknown or "scale" not in change:
            raise UserError(f"generation.eval_scales[{i}]={entry!r}: give a gamma or {{scale: gamma, mode: log|prob}}")
        base = OmegaConf.to_container(generation.guidance, resolve=True)
        try:
            g = Guidance.from_cfg({**base, **change})
        except UserError as e:
            raise UserError(f"generation.eval_scales[{i}]: {e}") from None
        tags.append(f"cfg{g.scale:g}" + (f"_{change['mode']}" if "mode" in change else ""))
    return tags


def check_generation(cfg: DictConfig) -> None:
    from unlearning.generation import Guidance

    Guidance.from_cfg(OmegaConf.to_container(cfg.generation.guidance, resolve=True))
    eval_tags(cfg.generation)
    bs = cfg.generation.get("batch_size")
    if isinstance(bs, bool) or not isinstance(bs, int) or bs < 1:
        raise UserError(f"generation.batch_size={bs!r} must be a positive integer")


def check_objective(cfg: DictConfig, evaluator, data, attacks: dict | None = None) -> None:
    from unlearning.attacks import scope

    objective = cfg.get("objective") or getattr(evaluator, "objective", None)
    if not objective:
        return
    names = set(evaluator.metric_names(data))
    suffixed = {f"{n}@{t}" for n in names for t in eval_tags(cfg.generation)}
    for name, attack in (attacks or {}).items():  # an attack measures the whole evaluator or its forget side
        own = getattr(attack, "forget_metrics", None)  # an attack with its own scoring (multiple choice)
        suffixed |= {f"{n}@{name}" for n in (own or scope(evaluator, attack).metric_names(data))}
        suffixed |= {f"{n}@{name}{end}" for n in (own or getattr(evaluator, "forget_metrics", ()))
                     for end in ("_recovery", "_vs_reference")}
    if attacks:
        suffixed |= {f"{n}@worst{end}" for n in getattr(evaluator, "forget_metrics", ()) for end in ("", "_vs_reference")}
    names |= suffixed
    if str(objective) not in names:
        ev = cfg.get("choices", {}).get("evaluator") or getattr(evaluator, "name", "evaluator")
        close = sorted(n for n in names if "@" not in n)
        raise UserError(f"objective={objective} is not a metric of evaluator={ev}; choose one of {close}")


def check_subtraction(cfg: DictConfig) -> None:
    sub = cfg.get("subtraction") or {}
    if sub.get("enabled"):
        scale = sub.get("scale")
        if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not 0 < scale:
            raise UserError(f"subtraction.scale={scale!r} must be a number > 0 (the paper uses 0.5; 1.0 breaks the "
                            "model)")


def hub_stage(cfg: DictConfig, key: str, repo: str):
    """A hub id given as stage.target_path / reference_path: the local snapshot (downloaded where the hub is
    reachable, else from the local Hugging Face cache), written back into the config as a folder, with the id and
    the snapshot's commit recorded under stage.hub.<target|reference>."""
    from pathlib import Path

    from huggingface_hub import snapshot_download

    kind = key.split(".")[1].removesuffix("_path")
    revision = OmegaConf.select(cfg, f"stage.{kind}_revision")
    from unlearning import hub

    offline = hub.offline()
    try:
        folder = Path(snapshot_download(repo, revision=revision, local_files_only=offline))
    except Exception as e:  # offline and not cached, no such repo, no network
        why = "the hub is offline (HF_HUB_OFFLINE=1) and it is not in the local Hugging Face cache" if offline else \
            f"it could not be downloaded ({type(e).__name__})"
        raise UserError(f"{key}={repo} is a hub id, but {why}; download it where the hub is reachable "
                        f"(`hf download {repo}`), or give a local folder") from None
    with open_dict(cfg):
        OmegaConf.update(cfg, key, str(folder), merge=False)
        OmegaConf.update(cfg, f"stage.hub.{kind}", {"id": repo, "revision": folder.name}, merge=False)
    return folder


def check_stage_paths(cfg: DictConfig) -> None:
    """Given model folders (stage.target_path / reference_path, subtraction.base_path) are HF folders whose
    safetensors headers parse: a truncated copy is one line now, not after a stage fine-tune."""
    import re
    from pathlib import Path

    from safetensors import SafetensorError, safe_open

    keys = ["stage.target_path", "stage.reference_path"]
    if OmegaConf.select(cfg, "subtraction.enabled"):
        keys.append("subtraction.base_path")
    for key in keys:
        value = OmegaConf.select(cfg, key)
        if not value:
            continue
        folder = Path(str(value)).expanduser()
        if not folder.exists() and re.fullmatch(r"[\w.-]+/[\w.-]+", str(value)) and not str(value).startswith("."):
            if key == "subtraction.base_path":
                continue  # loaded, and worded, by load_folder
            folder = hub_stage(cfg, key, str(value))  # OpenUnlearning's TOFU targets / retain models live on the hub
        if not folder.is_dir() or not (folder / "config.json").is_file():
            raise UserError(f"{key}={value}: no HF model folder there (a folder with config.json and weights); "
                            "check the path, or drop the key to build the stage")
        for weights in sorted(folder.glob("*.safetensors")):
            try:
                with safe_open(str(weights), "pt"):  # reads the header only
                    pass
            except (SafetensorError, OSError) as e:
                raise UserError(f"{key}={value}: cannot read {weights.name}: {str(e).strip().splitlines()[0]} "
                                "(a truncated or corrupt weights file? copy or rebuild it)") from None


def check_precision(cfg: DictConfig) -> None:
    """fp16 weights overflow without a gradient scaler, which the shared loop does not run: refuse them up front."""
    if str(cfg.model.get("dtype", "float32")) in ("float16", "fp16"):
        raise UserError(f"model.dtype={cfg.model.dtype}: training float16 weights needs a gradient scaler, which "
                        "this loop does not use; use model.dtype=bfloat16 (same memory) or float32")
