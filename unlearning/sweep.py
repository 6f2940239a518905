"""The sweep folder's summary (summary.csv + summary.json, one row per job) and its exit code.

`SweepSummary` is a Hydra callback. `on_job_end` runs wherever the job ran (a joblib
worker process, a Slurm node), so every update re-reads summary.json under a file lock,
replaces this job's row and writes both files atomically; `on_multirun_end` (in the
launching process) adds the job folders that never reported, as "missing".

A job's row comes from its results.json (written by the entrypoint, also for a failed
job); a job that raised past the entrypoint is recorded from Hydra's JobReturn.
"""

from __future__ import annotations

import csv
import io
import json
import math
import sys
import time
from pathlib import Path

from filelock import FileLock

from unlearning.results import atomic_write

try:
    from hydra.experimental.callback import Callback
except ImportError:  # pragma: no cover
    Callback = object

SUMMARY_JSON, SUMMARY_CSV, LOCK = "summary.json", "summary.csv", ".summary.lock"
SUMMARY_SEEDS_CSV = "summary_seeds.csv"  # the jobs that differ only in seed, grouped (mean, 95% t interval)
FIXED = ["job", "status", "wall_s", "method", "dataset", "model", "objective", "overrides", "error"]


def _job_key(job: str):
    return (0, int(job), "") if job.isdigit() else (1, 0, job)


def _read_overrides(job_dir: Path) -> list[str]:
    p = job_dir / ".hydra" / "overrides.yaml"
    if not p.is_file():
        return []
    from omegaconf import OmegaConf

    return [str(o) for o in OmegaConf.load(p)]


def job_row(job_dir: Path, sweep_dir: Path, job_return=None, wall_s: float | None = None) -> dict:
    """One job's row: from its results.json, else from Hydra's JobReturn, else "missing"."""
    job_dir = Path(job_dir)
    row = {"job": job_dir.relative_to(sweep_dir).as_posix(), "status": "missing", "wall_s": wall_s,
           "method": None, "dataset": None, "model": None, "objective": None,
           "overrides": _read_overrides(job_dir), "error": None, "metrics": {}}
    res_path = job_dir / "results.json"
    if res_path.is_file():
        try:
            res = json.loads(res_path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as e:
            row.update(status="failed", error=f"unreadable results.json: {e}")
            return row
        row.update(status=res.get("status", "failed"), error=res.get("error"),
                   method=res.get("method"), dataset=res.get("dataset"), model=res.get("model"),
                   objective=res.get("objective"), metrics=dict(res.get("metrics") or {}))
        row["overrides"] = list(res.get("overrides") or row["overrides"])
        if row["wall_s"] is None:
            row["wall_s"] = (res.get("timings") or {}).get("total_s")
        if not row["method"]:
            row["method"] = ((res.get("config") or {}).get("choices") or {}).get("method")
    elif job_return is not None:
        from hydra.core.utils import JobStatus

        if job_return.status == JobStatus.FAILED:
            e = job_return._return_value
            row.update(status="failed", error=f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
        else:
            row.update(status="missing", error="the job ended without writing results.json")
        if not row["overrides"]:
            row["overrides"] = list(job_return.overrides or [])
    if not row["method"]:
        row["method"] = _override(row["overrides"], "method")
    return row


def parse_overrides(overrides: list[str]) -> dict[str, str]:
    """`["+a.b=1", "c=x"]` -> `{"a.b": "1", "c": "x"}` (the report and the summary read job overrides with it)."""
    out = {}
    for o in overrides:
        k, sep, v = o.lstrip("+~").partition("=")
        if sep:
            out[k] = v
    return out


def _override(overrides: list[str], key: str) -> str | None:
    return parse_overrides(overrides).get(key)


def job_dirs(sweep_dir: Path) -> list[Path]:
    """Every job folder: one that Hydra set up (.hydra/) or that holds a results.json."""
    found = {p.parent for p in sweep_dir.rglob("results.json")}
    found |= {p.parent.parent for p in sweep_dir.rglob(".hydra/overrides.yaml")}
    return sorted((d for d in found if d != sweep_dir), key=lambda d: _job_key(d.relative_to(sweep_dir).as_posix()))


def collect(sweep_dir: str | Path) -> list[dict]:
    """All jobs' rows, read afresh from their folders; wall times from summary.json where recorded."""
    sweep_dir = Path(sweep_dir)
    walls = {r["job"]: r.get("wall_s") for r in load_summary(sweep_dir)}
    return [job_row(d, sweep_dir, wall_s=walls.get(d.relative_to(sweep_dir).as_posix())) for d in job_dirs(sweep_dir)]


def load_summary(sweep_dir: str | Path) -> list[dict]:
    p = Path(sweep_dir) / SUMMARY_JSON
    if not p.is_file():
        return []
    try:
        return list(json.loads(p.read_text(encoding="utf-8")).get("jobs", []))
    except (OSError, json.JSONDecodeError):
        return []


def metric_names(rows: list[dict]) -> list[str]:
    names: dict[str, None] = {}
    for r in rows:
        names.update(dict.fromkeys(r.get("metrics") or {}))
    return list(names)


def to_csv(rows: list[dict], extra: list[str] = ()) -> str:
    metrics = metric_names(rows)
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(FIXED + list(extra) + metrics)
    for r in rows:
        vals = [" ".join(r["overrides"]) if k == "overrides" else r.get(k) for k in FIXED + list(extra)]
        w.writerow(["" if v is None else v for v in vals] + ["" if r["metrics"].get(m) is None else r["metrics"][m] for m in metrics])
    return buf.getvalue()


def write_summary(sweep_dir: str | Path, rows: list[dict]) -> None:
    sweep_dir = Path(sweep_dir)
    rows = sorted(rows, key=lambda r: _job_key(r["job"]))
    counts = {s: sum(r["status"] == s for r in rows) for s in ("ok", "diverged", "failed", "missing")}
    doc = {"sweep_dir": str(sweep_dir), "updated": time.strftime("%Y-%m-%dT%H:%M:%S"), "counts": counts, "jobs": rows}
    groups = seed_groups_of(rows)
    if groups:  # jobs that differ only in seed: mean and 95% t interval per metric (report.seed_groups)
        doc["seed_groups"] = groups
    atomic_write(sweep_dir / SUMMARY_JSON, json.dumps(doc, indent=2, default=str))
    atomic_write(sweep_dir / SUMMARY_CSV, to_csv(rows))
    if groups:
        atomic_write(sweep_dir / SUMMARY_SEEDS_CSV, seeds_csv(groups))


def seed_groups_of(rows: list[dict]) -> list[dict]:
    """The summary's grouped rows, when `seed` is swept and some ok jobs share everything else."""
    ok = [r for r in rows if r["status"] == "ok"]
    params = swept_params(rows)
    if "seed" not in params or not ok:
        return []
    return seed_groups(ok, params, metric_names(ok))


def update_row(sweep_dir: str | Path, row: dict) -> None:
    """Replace one job's row in the summary; safe against concurrent jobs (file lock)."""
    sweep_dir = Path(sweep_dir)
    sweep_dir.mkdir(parents=True, exist_ok=True)
    with FileLock(str(sweep_dir / LOCK)):
        rows = [r for r in load_summary(sweep_dir) if r["job"] != row["job"]]
        write_summary(sweep_dir, rows + [row])


def finalize(sweep_dir: str | Path) -> list[dict]:
    """Rebuild the summary from every job folder (jobs that never reported become "missing")."""
    sweep_dir = Path(sweep_dir)
    with FileLock(str(sweep_dir / LOCK)):
        rows = collect(sweep_dir)
        write_summary(sweep_dir, rows)
    return rows


def failed_jobs(sweep_dir: str | Path | None = None) -> int:
    """The sweep's exit code: jobs that did not end ok (diverged, failed, or no results; None = this process's last sweep)."""
    if sweep_dir is None:
        from unlearning import sweep_state

        sweep_dir = sweep_state.last_sweep_dir()
        if sweep_dir is None:
            return 0
    if not Path(sweep_dir).is_dir():
        return 0
    return min(sum(r["status"] != "ok" for r in collect(sweep_dir)), 255)


class SweepSummary(Callback):
    """Hydra callback: keeps <sweep dir>/summary.{csv,json} current as jobs finish."""

    def __init__(self, table: str | None = None, **_):
        # table=ou_tofu_repro (set by experiment=tofu_ou_repro): OU's repro.md table printed at the sweep's end
        if table not in (None, "ou_tofu_repro"):  # a command-line value is refused in one line before (cli_checks)
            raise ValueError(f"hydra.callbacks.sweep_summary.table={table!r}: the one table is ou_tofu_repro (or null)")
        self._t0: float | None = None
        self.table = table

    def on_multirun_start(self, config, **kwargs) -> None:
        from unlearning import sweep_state
        from unlearning.distributed import is_main

        if not is_main():  # under a multi-process launch the sweep summary is rank 0's alone
            return
        sweep_dir = Path(str(config.hydra.sweep.dir)).resolve()
        sweep_state.set_sweep_dir(str(sweep_dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        with FileLock(str(sweep_dir / LOCK)):
            if not (sweep_dir / SUMMARY_JSON).exists():
                write_summary(sweep_dir, [])

    def on_job_start(self, config, **kwargs) -> None:
        self._t0 = time.perf_counter()

    def on_job_end(self, config, job_return, **kwargs) -> None:
        from hydra.types import RunMode

        from unlearning.distributed import is_main

        if config.hydra.mode != RunMode.MULTIRUN or not is_main():
            return
        wall = round(time.perf_counter() - self._t0, 3) if self._t0 is not None else None
        job_dir = Path(str(config.hydra.runtime.output_dir))
        sweep_dir = Path(str(config.hydra.sweep.dir)).resolve()
        update_row(sweep_dir, job_row(job_dir.resolve(), sweep_dir, job_return, wall))

    def on_multirun_end(self, config, **kwargs) -> None:
        from unlearning.distributed import is_main

        if not is_main():
            return
        sweep_dir = Path(str(config.hydra.sweep.dir)).resolve()
        if sweep_dir.is_dir():
            finalize(sweep_dir)
            if self.table:
                print_ou_repro(sweep_dir)


def print_ou_repro(sweep_dir: Path) -> None:
    """OU's repro.md table from the sweep's finished runs, printed and written to <sweep>/ou_repro.md."""
    from unlearning import ou_repro
    from unlearning.errors import UserError

    try:
        text = ou_repro.table(ou_repro.records_of([sweep_dir]))
    except UserError as e:  # no job finished: the summary already says why
        print(f"no OU table: {e}", file=sys.stderr)
        return
    atomic_write(sweep_dir / "ou_repro.md", text + "\n")
    print(f"\n{text}\n(also in {sweep_dir / 'ou_repro.md'}; again with: unlearning-table --ou-repro {sweep_dir})")


def number(v) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def swept_params(rows: list[dict]) -> list[str]:
    """Override keys whose value differs between jobs (a key missing in some jobs also counts)."""
    values: dict[str, set] = {}
    for r in rows:
        for k, v in parse_overrides(r["overrides"]).items():
            values.setdefault(k, set()).add(v)
    keys = [k for k, vs in values.items()
            if len(vs) > 1 or any(k not in parse_overrides(r["overrides"]) for r in rows)]
    return sorted(keys)


def mean_ci95(vals: list[float]) -> tuple[float, float | None]:
    """The mean and the half-width of its 95% Student-t interval (n-1 degrees of freedom; None for one value)."""
    from scipy import stats

    n = len(vals)
    mean = sum(vals) / n
    if n < 2:
        return mean, None
    sd = math.sqrt(sum((v - mean) ** 2 for v in vals) / (n - 1))
    return mean, float(stats.t.ppf(0.975, n - 1) * sd / math.sqrt(n))


def seed_groups(rows: list[dict], params: list[str], metrics: list[str]) -> list[dict]:
    """Ok jobs that differ only in `seed`, grouped: per metric the mean over seeds and the half-width of its 95%
    t interval (Student's t with n-1 degrees of freedom: t_0.975 * s / sqrt(n), s the sample standard deviation;
    None for a single seed). A t interval rather than a bootstrap: with the 3-5 seeds of a typical table a
    bootstrap of so few values understates the spread."""
    others = [p for p in params if p != "seed"]
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        ov = parse_overrides(r["overrides"])
        key = (str(r["method"]),) + tuple(ov.get(p, "(default)") for p in others if p != "method")
        groups.setdefault(key, []).append(r)
    out = []
    for key, members in groups.items():
        stats_by_metric = {}
        for m in metrics:
            vals = [v for v in (number(r["metrics"].get(m)) for r in members) if v is not None]
            if not vals:
                continue
            mean, half = mean_ci95(vals)
            stats_by_metric[m] = {"mean": mean, "ci95": half, "n": len(vals)}
        label = " ".join(f"{p}={v}" for p, v in zip(["method"] + [p for p in others if p != "method"], key))
        out.append({"group": label, "method": key[0], "jobs": [r["job"] for r in members],
                    "seeds": sorted({parse_overrides(r["overrides"]).get("seed", "(default)") for r in members}),
                    "metrics": stats_by_metric})
    return out


def seeds_csv(groups: list[dict]) -> str:
    """The seed groups as CSV: group, n, seeds, then <metric>:mean and <metric>:ci95 per metric."""
    flat = [{"group": g["group"], "n": max(st["n"] for st in g["metrics"].values()), "seeds": " ".join(g["seeds"]),
             **{f"{m}:{k}": st[k] for m, st in g["metrics"].items() for k in ("mean", "ci95")}}
            for g in groups if g["metrics"]]
    keys = list(dict.fromkeys(k for row in flat for k in row))
    lines = [",".join(keys)] + [",".join("" if row.get(k) is None else str(row.get(k)) for k in keys) for row in flat]
    return "\n".join(lines) + "\n"
