"""Run loggers: `LocalLogger` (train_log.jsonl in the run folder) and `WandbLogger`.

Interface: `start(run_dir, cfg, tags)`, `log(metrics, step)`, `summary(metrics)`, `finish(status)`.
"""

from __future__ import annotations

import json
import logging
import netrc
import os
from pathlib import Path
from urllib.parse import urlparse

from unlearning.errors import UserError, reject_unknown

log = logging.getLogger(__name__)


class LocalLogger:
    def __init__(self, **unknown):
        reject_unknown("logger", "none", unknown, [])
        self._file = None

    def start(self, run_dir: Path, cfg: dict | None = None, tags: dict | None = None) -> None:
        self._file = open(Path(run_dir) / "train_log.jsonl", "a", encoding="utf-8")

    def log(self, metrics: dict, step: int | None = None) -> None:
        if self._file:
            self._file.write(json.dumps({"step": step, **metrics}) + "\n")
            self._file.flush()

    def summary(self, metrics: dict) -> None:
        pass

    def finish(self, status: str = "ok") -> None:
        if self._file:
            self._file.close()
            self._file = None


MODES = ("auto", "online", "offline", "disabled")


def has_api_key() -> bool:
    """True when W&B credentials exist (env or ~/.netrc, where `wandb login` stores them)."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    host = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname or "api.wandb.ai"
    try:
        return netrc.netrc().authenticators(host) is not None
    except (OSError, netrc.NetrcParseError):
        return False


def resolve_mode(mode: str | None) -> str:
    if mode is not None and not isinstance(mode, str):
        raise UserError(f"logger.mode={mode!r} is not one of {list(MODES)}")
    mode = (mode or "auto").lower()
    if mode not in MODES:
        raise UserError(f"logger.mode={mode!r} is not one of {list(MODES)}; set logger.mode=offline to log without a server")
    where = "logger.mode=online"
    if mode == "auto":
        env = os.environ.get("WANDB_MODE", "").lower()
        # No key means online would stop at a login prompt; an offline run can be `wandb sync`ed later.
        mode = env if env in ("online", "offline", "disabled") else ("online" if has_api_key() else "offline")
        where = "WANDB_MODE=online"
    if mode == "online" and not has_api_key():
        raise UserError(f"{where} needs W&B credentials (WANDB_API_KEY or `wandb login`), and none were found; "
                        "log in, or set logger.mode=offline (then `wandb sync <run>/wandb/offline-run-*`)")
    return mode


def flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in (d or {}).items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "/"))
        else:
            out[key] = v
    return out


def _hydra_sweep() -> tuple[str | None, str | None, dict]:
    """(group, job name, choices) from the Hydra runtime: group = the sweep folder in multirun."""
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        hc = HydraConfig.get()
    except Exception:  # not running under Hydra (library use, tests)
        return None, None, {}
    choices = dict(hc.runtime.choices)
    if hc.mode == RunMode.MULTIRUN:
        sweep = Path(hc.sweep.dir)
        return f"{sweep.parent.name}/{sweep.name}", f"{sweep.name}/{hc.job.num}", choices
    return None, Path(hc.runtime.output_dir).name, choices


class WandbLogger:
    """One W&B run per job; also keeps the local train_log.jsonl.

    mode: auto (online when an API key exists, else offline) | online | offline | disabled.
    project/entity: from the config, else WANDB_PROJECT / WANDB_ENTITY, else "unlearning-lab".
    group: null = the sweep folder in multirun (so a sweep's jobs are one W&B group).
    dir: null = WANDB_DIR, else the run folder (offline runs land in <run>/wandb/offline-run-*).
    """

    def __init__(self, project: str | None = None, entity: str | None = None, mode: str | None = "auto",
                 group: str | None = None, name: str | None = None, dir: str | None = None,
                 tags: list[str] | None = None, job_type: str = "unlearn", **unknown):
        reject_unknown("logger", "wandb", unknown, ["project", "entity", "mode", "group", "name", "dir", "tags",
                                                    "job_type"])
        self.project = project or os.environ.get("WANDB_PROJECT") or "unlearning-lab"
        self.entity = entity or os.environ.get("WANDB_ENTITY") or None
        self.mode = resolve_mode(mode)
        self.group, self.name, self.dir = group, name, dir
        if tags is not None and (not isinstance(tags, (list, tuple)) or not all(isinstance(t, str) for t in tags)):
            raise UserError(f"logger.tags={tags!r} must be a list of strings, e.g. logger.tags=[ablation,seed0]")
        for key, value in (("project", project), ("entity", entity), ("group", group), ("name", name),
                           ("job_type", job_type)):
            if value is not None and not isinstance(value, str):
                raise UserError(f"logger.{key}={value!r} must be a string")
        if dir is not None and Path(str(dir)).exists() and not Path(str(dir)).is_dir():
            raise UserError(f"logger.dir={dir!r} is a file; give a folder for W&B's files (or null: the run folder)")
        self.extra_tags = list(tags or [])
        self.job_type = job_type
        self.local = LocalLogger()
        self.run = None
        self._step_metrics: set[str] = set()

    def start(self, run_dir: Path, cfg: dict | None = None, tags: dict | list | None = None) -> None:
        import wandb

        self.local.start(run_dir, cfg, tags)
        group, name, choices = _hydra_sweep()
        if isinstance(tags, dict):
            tag_list = [str(v) for v in tags.values() if v]
        else:
            tag_list = [str(t) for t in (tags or [])]
        if not tag_list:
            tag_list = [str(choices[k]) for k in ("method", "dataset", "model") if choices.get(k)]
        if cfg is not None and not isinstance(cfg, dict):
            from omegaconf import OmegaConf

            cfg = OmegaConf.to_container(cfg, resolve=True)
        wandb_dir = self.dir or os.environ.get("WANDB_DIR") or str(run_dir)
        Path(wandb_dir).mkdir(parents=True, exist_ok=True)
        self.run = wandb.init(
            project=self.project, entity=self.entity, mode=self.mode, dir=wandb_dir,
            group=self.group or group, name=self.name or name, job_type=self.job_type,
            tags=list(dict.fromkeys(tag_list + self.extra_tags)), config=cfg or {}, reinit="finish_previous",
            # No git/stats/console capture: jobs run many at a time and these cost CPU, not insight.
            settings=wandb.Settings(console="off", x_disable_stats=True, disable_git=True, save_code=False,
                                    silent=True),
        )
        log.info("W&B run %s (%s) in %s", self.run.id, self.mode, wandb_dir)

    def log(self, metrics: dict, step: int | None = None) -> None:
        self.local.log(metrics, step)
        if self.run is None:
            return
        row = dict(metrics)
        if step is not None:
            # Each training phase ("unlearn/", "finetune/") counts its own steps from 1; a per-prefix
            # step metric keeps W&B's global step monotonic and still plots against the phase's step.
            for prefix in {k.split("/", 1)[0] for k in metrics if "/" in k} or {"train"}:
                if prefix not in self._step_metrics:
                    self.run.define_metric(f"{prefix}/step", hidden=True)
                    self.run.define_metric(f"{prefix}/*", step_metric=f"{prefix}/step")
                    self._step_metrics.add(prefix)
                row[f"{prefix}/step"] = step
        self.run.log(row)

    def summary(self, metrics: dict) -> None:
        self.local.summary(metrics)
        if self.run is None:
            return
        import wandb

        flat = {k: v for k, v in flatten(metrics).items() if isinstance(v, (int, float, str, bool)) or v is None}
        self.run.summary.update(flat)
        table = wandb.Table(columns=["metric", "value"],
                            data=[[k, float(v)] for k, v in flat.items() if isinstance(v, (int, float)) and not isinstance(v, bool)])
        self.run.log({"final_metrics": table})

    def finish(self, status: str = "ok") -> None:
        self.local.finish(status)
        if self.run is not None:
            self.run.summary["status"] = status
            self.run.finish(exit_code=0 if status == "ok" else 1)
            self.run = None
            import wandb

            # finish() returns before W&B's service has written the run file; teardown waits for
            # it, so the offline run is complete on disk when the job ends (and can be synced/read).
            wandb.teardown()


def read_offline_run(run_dir: str | Path) -> dict:
    """What an offline run recorded (run, config, history rows, summary), read from its .wandb file.

    The file is W&B's record log (LevelDB log framing: 32 KiB blocks, 7-byte chunk headers, after a
    7-byte file header) of protobuf `Record`s; this lets tests and users check a run without a server.
    """
    from wandb.proto import wandb_internal_pb2 as pb

    files = sorted(Path(run_dir).glob("*.wandb"))
    if not files:
        raise UserError(f"no .wandb file in {run_dir}; give an offline-run-* folder")
    data = files[0].read_bytes()
    block, pos, chunks, records = 32768, 7, b"", []
    while pos + 7 <= len(data):
        left = block - pos % block
        if left < 7:  # a block's tail too short for a header is padding
            pos += left
            continue
        length = int.from_bytes(data[pos + 4 : pos + 6], "little")
        kind = data[pos + 6]
        chunks += data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # FULL or LAST chunk: a whole record
            rec = pb.Record()
            rec.ParseFromString(chunks)
            records.append(rec)
            chunks = b""
        elif kind == 0 and length == 0:
            break
    out = {"run": {}, "config": {}, "history": [], "summary": {}, "step_metrics": {}}

    def value(item):
        return json.loads(item.value_json)

    def key(item):
        return "/".join(item.nested_key) if item.nested_key else item.key

    for rec in records:
        t = rec.WhichOneof("record_type")
        if t == "run":
            r = rec.run
            out["run"] = {"id": r.run_id, "project": r.project, "entity": r.entity, "group": r.run_group,
                          "name": r.display_name, "tags": list(r.tags), "job_type": r.job_type}
            out["config"].update({key(i): value(i) for i in r.config.update})
        elif t == "config":
            out["config"].update({key(i): value(i) for i in rec.config.update})
        elif t == "history":
            out["history"].append({key(i): value(i) for i in rec.history.item})
        elif t == "summary":
            out["summary"].update({key(i): value(i) for i in rec.summary.update})
        elif t == "metric" and rec.metric.step_metric:
            out["step_metrics"][rec.metric.glob_name or rec.metric.name] = rec.metric.step_metric
        elif t == "exit":
            out["exit_code"] = rec.exit.exit_code
    return out
