"""EleutherAI's lm-evaluation-harness on the model in memory (`evaluator=lm_eval`, or `lm_eval=<preset>` beside
the benchmark's evaluator): MMLU, WMDP and any task lm-eval knows, or one defined in YAML over local files.

The live model goes to lm-eval's HFLM wrapper as it is (no save and reload), so a run reports these numbers for
the unlearned model, the baselines and every attacked copy alike. Metrics are `lm_eval/<task>/<metric>` for every
task and group lm-eval reports (`acc`, `acc_norm`, ...; a metric with a filter other than `none` is
`<metric>_<filter>`). Guided decoding does not apply: lm-eval scores the model's own distribution.
"""

from __future__ import annotations

import functools
import glob
import logging
import os
from pathlib import Path

from unlearning.distributed import eval_share, on_main
from unlearning.errors import UserError

log = logging.getLogger(__name__)

# lm-eval's metrics per output type when a task's YAML names none (lm_eval/api/task.py defaults)
DEFAULT_METRICS = {"multiple_choice": ("acc", "acc_norm"), "loglikelihood": ("perplexity", "acc"),
                   "loglikelihood_rolling": ("word_perplexity", "byte_perplexity", "bits_per_byte"),
                   "generate_until": ("exact_match",)}
LOCAL_BUILDERS = {"json", "csv", "parquet", "text", "arrow"}  # datasets' file loaders: no hub needed


@functools.lru_cache(maxsize=4)
def task_manager(include_path: str | None, defaults: bool = True):
    """lm-eval's task index: the built-in ~15k YAML files take seconds to read, so once per process and path, and
    not at all when every task asked for is in `include_path` (`defaults=False`)."""
    from lm_eval.tasks import TaskManager

    if include_path:
        return TaskManager(include_path=include_path, include_defaults=defaults)
    return TaskManager()


def leaves(manager, name: str, seen: frozenset = frozenset()) -> list[tuple[str, dict]]:
    """The tasks a task, group or tag name stands for, with their (unresolved) YAML configs."""
    from lm_eval.tasks._index import Kind

    entry = manager.task_index.get(name)
    if entry is None or name in seen:
        return []
    cfg = entry.cfg or {}
    if entry.kind in (Kind.TASK, Kind.PY_TASK):
        return [(name, cfg)]
    if entry.kind == Kind.GROUP:
        out = []
        for member in cfg.get("task", []):
            out += (leaves(manager, member, seen | {name}) if isinstance(member, str)
                    else [(str(member.get("task")), member)])
        return out
    return [x for other, e in manager.task_index.items() if name in e.tags for x in leaves(manager, other, seen | {name})]


def metric_key(task: str, key: str) -> str | None:
    """`acc,none` of task t -> `lm_eval/t/acc`; stderr entries and lm-eval's bookkeeping -> None."""
    if "," not in key or "_stderr" in key:
        return None
    metric, _, filt = key.partition(",")
    return f"lm_eval/{task}/{metric}" + ("" if filt == "none" else f"_{filt}")


def local_files(cfg: dict) -> list[str]:
    """The files a task over datasets' file loaders (json, csv, ...) reads: `dataset_kwargs.data_files`."""
    if cfg.get("dataset_path") not in LOCAL_BUILDERS:
        return []
    files = (cfg.get("dataset_kwargs") or {}).get("data_files") or []
    values = files.values() if isinstance(files, dict) else [files]
    return [str(f) for v in values for f in ([v] if isinstance(v, str) else v)]


def hub_cached(repo: str) -> bool:
    """A hub dataset already in the local caches (then lm-eval loads it with the hub offline)."""
    from huggingface_hub import constants

    hub = Path(constants.HF_HUB_CACHE) / f"datasets--{repo.replace('/', '--')}"
    datasets_cache = Path(os.environ.get("HF_DATASETS_CACHE", Path(constants.HF_HOME) / "datasets"))
    return hub.is_dir() or (datasets_cache / repo.replace("/", "___")).is_dir()


def hub_offline() -> bool:
    from unlearning import hub

    return hub.offline(datasets=True)


class LmEvalEvaluator:
    """lm-eval tasks on the model as it is. Options mirror lm-eval's `simple_evaluate`."""

    name = "lm_eval"
    forget_metrics = ()      # utility, not forgetting: attacks report these numbers but no recoveries
    uses_reference = False

    def __init__(self, tasks: list[str] | str = ("mmlu",), num_fewshot: int | None = None, limit: float | None = None,
                 batch_size: int | None = None, include_path: str | None = None, max_length: int | None = None,
                 apply_chat_template: bool = False, system_instruction: str | None = None, seed: int = 0,
                 name: str = "lm_eval"):
        self.tasks = [tasks] if isinstance(tasks, str) else [str(t) for t in tasks]
        if not self.tasks:
            raise UserError("lm_eval tasks=[] names no task; give e.g. tasks=[mmlu] (any task `lm-eval ls tasks` lists), "
                            "or your own: include_path=<folder of task YAMLs> tasks=[<task>]")
        for key, value, low in (("num_fewshot", num_fewshot, 0), ("batch_size", batch_size, 1), ("max_length", max_length, 1)):
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < low):
                raise UserError(f"lm_eval {key}={value!r} must be an integer >= {low} (or null)")
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, (int, float)) or limit <= 0
                                  or (isinstance(limit, float) and limit >= 1 and not float(limit).is_integer())):
            raise UserError(f"lm_eval limit={limit!r} must be a number of documents per task (an integer >= 1) or a "
                            "fraction of each task in (0, 1), or null for all")
        if include_path is not None and not Path(include_path).is_dir():
            raise UserError(f"lm_eval include_path={include_path} is not a folder; give the folder of your task YAMLs")
        self.num_fewshot, self.limit, self.batch_size, self.max_length = num_fewshot, limit, batch_size, max_length
        self.include_path = str(include_path) if include_path else None
        self.apply_chat_template, self.system_instruction, self.seed = bool(apply_chat_template), system_instruction, int(seed)
        self.name = name
        self._known = self.check_tasks()
        first = sorted(n for n in self.metric_names() if n.startswith(f"lm_eval/{self.tasks[0]}/"))
        self.objective = first[0] if first else None  # e.g. lm_eval/mmlu/acc

    def manager(self):
        """The task index: the user's folder alone when it holds every task asked for, else with lm-eval's own."""
        if self.include_path and all(leaves(task_manager(self.include_path, False), t) for t in self.tasks):
            return task_manager(self.include_path, False)
        return task_manager(self.include_path)

    def check_tasks(self) -> dict[str, list[tuple[str, dict]]]:
        """Every task exists, and a hub dataset is reachable or cached: one line otherwise, before any work."""
        manager = self.manager()
        known = {}
        for task in self.tasks:
            found = leaves(manager, task)
            if not found:
                import difflib

                close = difflib.get_close_matches(task, manager.all_tasks, n=3)
                raise UserError(f"lm_eval task {task!r} is not one lm-eval knows" + (f" (did you mean {', '.join(close)}?)"
                                if close else "") + "; `lm-eval ls tasks` lists them, and include_path= adds a "
                                "folder of your own task YAMLs")
            for leaf, cfg in found:
                for path in local_files(cfg):
                    if not glob.glob(path):
                        raise UserError(f"lm_eval task {leaf!r} reads {path}, which does not exist (a relative path is taken "
                                        f"from the folder the run starts in, {os.getcwd()}); fix data_files in its YAML")
            if hub_offline():
                for leaf, cfg in found:
                    repo = cfg.get("dataset_path")
                    if repo and repo not in LOCAL_BUILDERS and not Path(repo).exists() and not hub_cached(repo):
                        raise UserError(f"lm_eval task {task!r} reads the hub dataset {repo} (task {leaf}), but the hub "
                                        "is offline (HF_HUB_OFFLINE=1) and it is not in the local cache; run where the hub "
                                        "is reachable, or define the task over local files (include_path=)")
            known[task] = found
        return known

    def check_generation(self, generation) -> None:
        """Validation phase: lm-eval scores the model's own distribution, so a guidance setting has nothing to act on."""
        from unlearning.generation import guidance_of

        if guidance_of(generation) is not None or generation.get("eval_scales"):
            raise UserError("evaluator=lm_eval scores the model itself: classifier-free guidance (generation.guidance, "
                            "generation.eval_scales) does not apply; drop them, or put lm-eval beside a benchmark "
                            "evaluator (lm_eval=<preset>), whose metrics the guidance applies to")

    def requires(self) -> list[str]:
        return []  # nothing from the run's dataset

    def metric_names(self, data=None) -> set[str]:
        """The metrics lm-eval will report: every requested task, group and member task, from their YAMLs."""
        names = set()
        manager = self.manager()
        for task in self.tasks:
            entry = manager.task_index.get(task)
            for agg in ((entry.cfg or {}).get("aggregate_metric_list") or [] if entry is not None else []):
                names.add(f"lm_eval/{task}/{agg['metric']}")
            for leaf, cfg in self._known.get(task, []):
                listed = [m["metric"] for m in cfg.get("metric_list") or [] if isinstance(m.get("metric"), str)]
                for metric in listed or DEFAULT_METRICS.get(cfg.get("output_type", "generate_until"), ()):
                    names.add(f"lm_eval/{leaf}/{metric}")
        return names

    def evaluate(self, model, tok, data, ctx, reference=None) -> dict:
        if eval_share()[1] > 1:  # lm-eval's HFLM runs one process on a model it was given: rank 0, the others wait
            return on_main(self._evaluate, model, tok, ctx)
        return self._evaluate(model, tok, ctx)

    def _evaluate(self, model, tok, ctx) -> dict:
        import lm_eval
        from lm_eval.models.huggingface import HFLM

        from unlearning.precision import precision

        gen = getattr(ctx, "generation", None) or {}
        batch_size = self.batch_size or int(gen.get("batch_size", 16))
        max_length = self.max_length or int(getattr(ctx, "max_length", 0) or 0) or None
        was_training = model.training  # HFLM puts the model in eval mode; training goes on after this evaluation
        try:
            lm = HFLM(pretrained=model, tokenizer=tok, batch_size=batch_size, max_length=max_length)
            with precision(model, gen.get("bf16", False)):
                out = lm_eval.simple_evaluate(
                    model=lm, tasks=list(self.tasks), num_fewshot=self.num_fewshot, limit=self.limit,
                    task_manager=self.manager(), log_samples=True, bootstrap_iters=0,
                    apply_chat_template=self.apply_chat_template, system_instruction=self.system_instruction,
                    random_seed=self.seed, numpy_random_seed=self.seed, torch_random_seed=self.seed,
                    fewshot_random_seed=self.seed)
        finally:
            model.train(was_training)
        aggregates, per_item = {}, {}
        for task, values in (out.get("results") or {}).items():
            for key, value in values.items():
                if (name := metric_key(task, key)) is not None and isinstance(value, (int, float)):
                    aggregates[name] = float(value)
        for task, samples in (out.get("samples") or {}).items():
            per_item[task] = [{"doc_id": s["doc_id"], "target": s.get("target"),
                               **{m: s[m] for m in s.get("metrics", []) if isinstance(s.get(m), (int, float))}}
                              for s in samples]
        return {"aggregates": aggregates, "per_item": {"lm_eval": per_item},
                "lm_eval": {"tasks": self.tasks, "num_fewshot": self.num_fewshot, "limit": self.limit,
                            "n_samples": out.get("n-samples"), "versions": out.get("versions")}}
