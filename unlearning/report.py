"""`unlearning-report SWEEP_DIR`: the ablation report of a sweep.

Reads every job folder's results.json (failed and missing jobs are listed, not dropped) and
writes into the sweep folder: report.csv, report.md and plots/ (PNG): the forget-side metric
against utility per job, coloured by method, with the Pareto front; for each swept
hyperparameter, every metric against it; and, where jobs evaluated during training
(`trainer.eval_every`), each curve metric against the step, one line per job (plots/curves.png; over seeds, one
line per group with its 95% t interval as a band; the other plots carry error bars).
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from pathlib import Path

from unlearning.errors import UserError
from unlearning.results import atomic_write
from unlearning.sweep import collect, mean_ci95, metric_names, parse_overrides, seed_groups, seeds_csv, swept_params, to_csv
from unlearning.sweep import number as _num

# (metric, higher is better). The first present one is the default axis.
FORGET_DEFAULTS = [("forget_quality", True)]
UTILITY_DEFAULTS = [("model_utility", True), ("utility", True)]



def plain_ticks(ax, x: bool = True) -> None:
    """Tick labels as plain numbers: jobs that barely differ would otherwise read `1e-7+3.5697e-2` (an offset)."""
    from matplotlib.ticker import ScalarFormatter

    for axis in ([ax.xaxis] if x and ax.get_xscale() == "linear" else []) + [ax.yaxis]:
        if isinstance(axis.get_major_formatter(), ScalarFormatter):
            axis.get_major_formatter().set_useOffset(False)

def _axis(spec: str | None, names: list[str], defaults, fallback_word: str, role: str) -> tuple[str, bool] | None:
    """A metric and its direction from 'name[:max|min]', else the first default present."""
    if spec:
        name, _, d = spec.partition(":")
        if d not in ("", "max", "min"):
            raise UserError(f"--{role} {spec!r}: the direction after ':' must be max or min (e.g. --{role} {name}:max)")
        if names and name not in names:
            raise UserError(f"--{role} {name!r} is not a metric of this sweep; metrics: {', '.join(names)}")
        return name, d != "min"
    for name, higher in defaults:
        if name in names:
            return name, higher
    for name in names:
        if fallback_word in name.lower():
            return name, True
    return None


def pareto(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the non-dominated points, both coordinates to be maximised."""
    front = []
    for i, (x, y) in enumerate(points):
        if not any((a >= x and b >= y) and (a > x or b > y) for j, (a, b) in enumerate(points) if j != i):
            front.append(i)
    return sorted(front, key=lambda i: points[i][0])


def _colours(methods: list[str]) -> dict[str, tuple]:
    import matplotlib

    cmap = matplotlib.colormaps["tab10"]
    return {m: cmap(i % 10) for i, m in enumerate(sorted(set(methods)))}


def _save(fig, path: Path) -> None:
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    atomic_write(path, buf.getvalue())


def plot_tradeoff(rows, forget: tuple[str, bool], utility: tuple[str, bool], baselines: dict, path: Path) -> list[str]:
    """forget metric (x) vs utility (y) per ok job; returns the jobs on the Pareto front."""
    import matplotlib.pyplot as plt

    fname, fhigh = forget
    uname, uhigh = utility
    pts = [(r, _num(r["metrics"].get(fname)), _num(r["metrics"].get(uname))) for r in rows]
    pts = [(r, x, y) for r, x, y in pts if x is not None and y is not None]
    colours = _colours([str(r["method"]) for r, _, _ in pts])
    fig, ax = plt.subplots(figsize=(6.4, 4.8))
    for m, c in colours.items():
        sel = [(x, y, r["job"]) for r, x, y in pts if str(r["method"]) == m]
        ax.scatter([s[0] for s in sel], [s[1] for s in sel], color=c, label=m, s=40, zorder=3)
        for x, y, job in sel:
            ax.annotate(job, (x, y), textcoords="offset points", xytext=(4, 3), fontsize=7)
    front = pareto([(x if fhigh else -x, y if uhigh else -y) for _, x, y in pts])
    if front:
        ax.plot([pts[i][1] for i in front], [pts[i][2] for i in front], "--", color="grey", lw=1,
                label="Pareto front", zorder=2)
    for name, marker in (("target", "X"), ("reference", "*")):
        b = baselines.get(name) or {}
        x, y = _num(b.get(fname)), _num(b.get(uname))
        if x is not None and y is not None:
            label = f"{name} (before unlearning)" if name == "target" else "retain reference"
            ax.scatter([x], [y], marker=marker, s=120, color="black", label=label, zorder=4)
    ax.set_xlabel(f"{fname} ({'higher' if fhigh else 'lower'} is better)")
    ax.set_ylabel(f"{uname} ({'higher' if uhigh else 'lower'} is better)")
    ax.set_title("Forgetting vs utility per job")
    plain_ticks(ax)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    _save(fig, path)
    plt.close(fig)
    return [pts[i][0]["job"] for i in front]


def _panels(n: int):
    """A grid of up to three panels per row, one per metric."""
    import matplotlib.pyplot as plt

    ncols = min(3, n)
    nrows = math.ceil(n / ncols)
    return plt.subplots(nrows, ncols, figsize=(4.2 * ncols, 3.2 * nrows), squeeze=False)


def _label(ax, title: str, xlabel: str) -> None:
    ax.set_title(title, fontsize=9)
    ax.set_xlabel(xlabel, fontsize=8)
    plain_ticks(ax)
    ax.grid(alpha=0.3)


def _finish(fig, axes, n: int, path: Path, legend_size: int) -> None:
    """Blank the unused panels, a legend on the first, and write the PNG."""
    import matplotlib.pyplot as plt

    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=legend_size)
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)


def plot_param(rows, param: str, metrics: list[str], path: Path, others: list[str] = ()) -> dict:
    """Every metric against one swept hyperparameter (log x when it spans a decade or more). Where `seed` is swept too
    (and is not this parameter), the jobs at one value that differ only in seed are one point: their mean, with its
    95% t interval as an error bar. Returns what was drawn: metric -> series -> [(value, mean, half-width or None)]."""

    ok = [r for r in rows if r["status"] == "ok"]
    raw = [parse_overrides(r["overrides"]).get(param, "(default)") for r in ok]
    nums = [_num(v) for v in raw]
    numeric = all(v is not None for v in nums)
    cats = sorted(set(raw)) if not numeric else []
    xs = nums if numeric else [cats.index(v) for v in raw]
    over_seeds = param != "seed" and "seed" in others
    others = [o for o in others if o != "seed"] if over_seeds else list(others)
    # A series joins only jobs that differ in this parameter alone (same method and other swept values).
    series = [(str(r["method"]), tuple(parse_overrides(r["overrides"]).get(o) for o in others)) for r in ok]
    colours = _colours([str(r["method"]) for r in ok])
    drawn: dict[str, dict[str, list]] = {}
    fig, axes = _panels(len(metrics))
    for ax, m in zip(axes.flat, metrics):
        points: dict[tuple, list[float]] = {}
        for x, v, r, key in zip(xs, raw, ok, series):
            y = _num(r["metrics"].get(m))
            if y is not None:  # without seeds each job is its own point
                points.setdefault((key, x, v) if over_seeds else (key, x, v, r["job"]), []).append(y)
        labelled = set()
        for key in sorted({k[0] for k in points}, key=str):
            line = sorted(((k[1], k[2], *mean_ci95(ys)) for k, ys in points.items() if k[0] == key),
                          key=lambda p: (p[0], p[2]))
            drawn.setdefault(m, {})[" ".join([key[0]] + [f"{o}={w}" for o, w in zip(others, key[1])])] = \
                [(p[1] if not numeric else p[0], p[2], p[3]) for p in line]
            colour = colours[key[0]]
            ax.errorbar([p[0] for p in line], [p[2] for p in line], yerr=[p[3] or 0 for p in line], fmt="o", ms=5,
                        color=colour, capsize=3 if over_seeds else 0, label=None if key[0] in labelled else key[0])
            labelled.add(key[0])
            if numeric and len(line) > 1:
                ax.plot([p[0] for p in line], [p[2] for p in line], color=colour, lw=0.8, alpha=0.6)
        if numeric and min(xs) > 0 and max(xs) / min(xs) >= 10:
            ax.set_xscale("log")
        if not numeric:
            ax.set_xticks(range(len(cats)), cats, rotation=30, fontsize=7)
        _label(ax, m + (" (mean over seeds, 95% t interval)" if over_seeds else ""), param)
    _finish(fig, axes, len(metrics), path, legend_size=7)
    return drawn


def read_curves(sweep_dir: Path, ok: list[dict]) -> dict[str, list[dict]]:
    """Each job's evaluations during training (`curve` in its results.json, `trainer.eval_every`)."""
    out = {}
    for r in ok:
        try:
            curve = json.loads((sweep_dir / r["job"] / "results.json").read_text(encoding="utf-8")).get("curve")
        except (OSError, json.JSONDecodeError):
            continue
        if curve:
            out[r["job"]] = curve
    return out


def plot_curves(ok: list[dict], curves: dict[str, list[dict]], metrics: list[str], params: list[str],
                path: Path) -> dict[str, dict[str, list[tuple]]]:
    """One panel per metric against the training step, one line per job (labelled by its method and swept values);
    where `seed` is swept, one line per group of jobs that differ only in seed: the mean at each step, with its 95% t
    interval as a band. Returns what was drawn: metric -> job -> [(step, value)], or metric -> group ->
    [(step, mean, half-width or None)] over seeds."""
    over_seeds = "seed" in params
    shown = [p for p in params if p != "method" and not (over_seeds and p == "seed")]
    labels = {r["job"]: " ".join([str(r["method"])] + [f"{p}={parse_overrides(r['overrides']).get(p)}" for p in shown])
              for r in ok}
    colours = _colours([str(r["method"]) for r in ok])
    method = {r["job"]: str(r["method"]) for r in ok}
    method_of = {labels[j]: method[j] for j in labels}  # a group's label -> its method (seeds swept)
    drawn: dict[str, dict[str, list[tuple]]] = {}
    fig, axes = _panels(len(metrics))
    for ax, m in zip(axes.flat, metrics):
        lines: dict[str, dict[int, list[float]]] = {}
        for job, curve in curves.items():
            for c in curve:
                if _num(c.get(m)) is not None:
                    lines.setdefault(labels.get(job, job) if over_seeds else job, {}).setdefault(
                        int(c["step"]), []).append(float(c[m]))
        for name, by_step in lines.items():
            colour = colours.get(method_of.get(name) if over_seeds else method.get(name))
            steps = sorted(by_step)
            if over_seeds:
                line = [(x, *mean_ci95(by_step[x])) for x in steps]
                drawn.setdefault(m, {})[name] = line
                ax.plot(steps, [p[1] for p in line], marker="o", ms=3, lw=1, color=colour, label=name)
                ax.fill_between(steps, [p[1] - (p[2] or 0) for p in line], [p[1] + (p[2] or 0) for p in line],
                                color=colour, alpha=0.2, lw=0)
            else:
                line = [(x, by_step[x][0]) for x in steps]
                drawn.setdefault(m, {})[name] = line
                ax.plot(steps, [y for _, y in line], marker="o", ms=3, lw=1, color=colour,
                        label=labels.get(name, name))
        _label(ax, m + (" (mean over seeds, 95% t band)" if over_seeds else ""), "step")
    _finish(fig, axes, len(metrics), path, legend_size=6)
    return drawn


def curve_metrics(curves: dict[str, list[dict]], preferred: list[str], limit: int = 6) -> list[str]:
    """The metrics to draw against the step: the trade-off axes first, then the others the curves hold."""
    held = list(dict.fromkeys(k for curve in curves.values() for c in curve for k in c if k != "step"))
    return ([m for m in preferred if m in held] + [m for m in held if m not in preferred])[:limit]


ROBUSTNESS_DEFAULTS = ["forget_Q_A_Prob", "leakage_rate", "forget_knowmem_ROUGE"]  # each evaluator's headline


def attacked_metric(rows) -> tuple[str, list[str]] | None:
    """The forget metric the attacks report recovery for (the first one, sorted) and the attacks' names."""
    pairs = sorted({tuple(k[: -len("_recovery")].rsplit("@", 1)) for r in rows for k in r["metrics"]
                    if k.endswith("_recovery") and "@" in k})
    if not pairs:
        return None
    names = [m for m, _ in pairs]
    metric = next((m for m in ROBUSTNESS_DEFAULTS if m in names), names[0])
    return metric, [a for m, a in pairs if m == metric]


def plot_robustness(rows, baselines: dict, path: Path, params: list[str] = ()) -> dict | None:
    """Robustness: a forget metric after unlearning and after each attack, per method: the mean over its
    jobs, with the 95% t interval over seeds as an error bar where the method's jobs differ in `seed` alone (none
    where another swept value differs too: that spread is not a seed interval). Returns what was drawn, method ->
    column -> (mean, half-width or None); None without attacks."""
    import matplotlib.pyplot as plt

    found = attacked_metric(rows)
    if not found:
        return None
    metric, attacks = found
    cols = [metric] + [f"{metric}@{a}" for a in attacks]
    methods = sorted({str(r["method"]) for r in rows})
    colours = _colours(methods)
    fig, ax = plt.subplots(figsize=(1.6 + 1.3 * len(cols), 4.2))
    width = 0.8 / max(len(methods), 1)
    drawn: dict[str, dict[str, tuple]] = {}
    others = [p for p in params if p not in ("method", "seed")]
    for i, m in enumerate(methods):
        mine = [r for r in rows if str(r["method"]) == m]
        over_seeds = len({tuple(parse_overrides(r["overrides"]).get(o) for o in others) for r in mine}) == 1
        for c in cols:
            xs = [x for x in (_num(r["metrics"].get(c)) for r in mine) if x is not None]
            mean, half = mean_ci95(xs) if xs else (float("nan"), None)
            drawn.setdefault(m, {})[c] = (mean, half if over_seeds else None)
        vals = [drawn[m][c] for c in cols]
        ax.bar([j + (i - (len(methods) - 1) / 2) * width for j in range(len(cols))], [v[0] for v in vals], width,
               yerr=[v[1] or 0 for v in vals], capsize=3, color=colours[m], label=m)
    t = _num((baselines.get("target") or {}).get(metric))
    if t is not None:
        ax.axhline(t, ls="--", color="black", lw=1, label="target (before unlearning)")
    # the never-trained model under the same attack: what the attack would give a model that never saw the forget set
    refs = [_num((baselines.get(name) or {}).get(metric)) for name in ["reference"] + [f"reference@{a}" for a in attacks]]
    if any(v is not None for v in refs):
        ax.hlines([v for v in refs if v is not None], [j - 0.45 for j, v in enumerate(refs) if v is not None],
                  [j + 0.45 for j, v in enumerate(refs) if v is not None], colors="dimgrey", linestyles=":", lw=2,
                  label="retain reference, same attack")
    ax.set_xticks(range(len(cols)), ["unlearned"] + [f"@{a}" for a in attacks])
    ax.set_ylabel(f"{metric} (mean over jobs; bars: 95% t interval over seeds)")
    plain_ticks(ax, x=False)
    ax.set_title(f"Robustness: {metric} after unlearning and after each attack")
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize=8)
    _save(fig, path)
    plt.close(fig)
    return drawn


def plot_tradeoff_groups(groups, forget: tuple[str, bool], utility: tuple[str, bool], baselines: dict,
                         path: Path) -> list[str]:
    """Each group's mean over seeds with its 95% interval as error bars; the Pareto front on the means."""
    import matplotlib.pyplot as plt

    (fname, fhigh), (uname, uhigh) = forget, utility
    pts = [(g, g["metrics"].get(fname), g["metrics"].get(uname)) for g in groups]
    pts = [(g, x, y) for g, x, y in pts if x and y]
    colours = _colours([g["method"] for g, _, _ in pts])
    fig, ax = plt.subplots(figsize=(6.4, 4.8))
    for g, x, y in pts:
        ax.errorbar([x["mean"]], [y["mean"]], xerr=[[x["ci95"] or 0]], yerr=[[y["ci95"] or 0]], fmt="o",
                    color=colours[g["method"]], capsize=3, zorder=3)
        ax.annotate(f"{g['group']} (n={x['n']})", (x["mean"], y["mean"]), textcoords="offset points",
                    xytext=(4, 3), fontsize=7)
    front = pareto([(x["mean"] if fhigh else -x["mean"], y["mean"] if uhigh else -y["mean"]) for _, x, y in pts])
    if front:
        ax.plot([pts[i][1]["mean"] for i in front], [pts[i][2]["mean"] for i in front], "--", color="grey", lw=1,
                label="Pareto front (means)", zorder=2)
    b = baselines.get("target") or {}
    if _num(b.get(fname)) is not None and _num(b.get(uname)) is not None:
        ax.scatter([b[fname]], [b[uname]], marker="X", s=120, color="black", label="target (before unlearning)")
    ax.set_xlabel(f"{fname}, mean over seeds ({'higher' if fhigh else 'lower'} is better)")
    ax.set_ylabel(f"{uname}, mean over seeds ({'higher' if uhigh else 'lower'} is better)")
    ax.set_title("Forgetting vs utility over seeds (95% t intervals)")
    plain_ticks(ax)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    _save(fig, path)
    plt.close(fig)
    return [pts[i][0]["group"] for i in front]


def _fmt(v) -> str:
    f = _num(v)
    if f is None:
        return "" if v is None else str(v).replace("|", "\\|")
    return f"{f:.4g}"


def _mean_ci(st: dict | None) -> str:
    if not st:
        return ""
    return f"{st['mean']:.4g}" + (f" ± {st['ci95']:.2g}" if st["ci95"] is not None else "")


def markdown(sweep_dir: Path, rows, params, metrics, axes, front, plots, baselines, groups=(), group_front=()) -> str:
    n = {s: sum(r["status"] == s for r in rows) for s in ("ok", "diverged", "failed", "missing")}
    lines = [f"# Sweep report: `{sweep_dir}`", "",
             f"{len(rows)} jobs: {n['ok']} ok, {n['diverged']} diverged, {n['failed']} failed, "
             f"{n['missing']} missing (no results.json).", ""]
    if params:
        lines += [f"Swept: {', '.join(f'`{p}`' for p in params)}.", ""]
    if axes:
        (fm, fh), (um, uh) = axes
        lines += [f"Trade-off axes: `{fm}` ({'max' if fh else 'min'}) vs `{um}` ({'max' if uh else 'min'}); "
                  f"Pareto front: jobs {', '.join(front) if front else '(none)'}.", ""]
    params = [p for p in params if p != "method"]  # already a column
    cols = ["job", "method"] + params + metrics
    lines += ["## Jobs", "", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        if r["status"] != "ok":
            continue
        ov = parse_overrides(r["overrides"])
        cells = [r["job"] + (" *" if r["job"] in front else ""), str(r["method"])]
        cells += [ov.get(p, "(default)") for p in params] + [_fmt(r["metrics"].get(m)) for m in metrics]
        lines.append("| " + " | ".join(cells) + " |")
    if front:
        lines += ["", "`*` = on the Pareto front."]
    if groups:
        lines += ["", "## Grouped over seeds", "",
                  "Mean over the jobs that differ only in `seed` (the unlearning's seed: the jobs share the stages "
                  "fine-tuned with `stage.seed`), ± the half-width of its 95% Student-t interval "
                  "(n-1 degrees of freedom; none for one seed)" + (f"; Pareto front on the means: "
                  f"{', '.join(group_front)}" if group_front else "") + ".", "",
                  "| group | seeds | n | " + " | ".join(metrics) + " |", "|" + "---|" * (len(metrics) + 3)]
        for g in groups:
            n = max((st["n"] for st in g["metrics"].values()), default=0)
            lines.append(f"| {g['group']} | {', '.join(g['seeds'])} | {n} | "
                         + " | ".join(_mean_ci(g["metrics"].get(m)) for m in metrics) + " |")
    if baselines:
        lines += ["", "## Baselines (before unlearning)", "", "| model | " + " | ".join(metrics) + " |",
                  "|" + "---|" * (len(metrics) + 1)]
        for name, b in baselines.items():
            lines.append(f"| {name} | " + " | ".join(_fmt(b.get(m)) for m in metrics) + " |")
    bad = [r for r in rows if r["status"] != "ok"]
    lines += ["", "## Failed or missing jobs", ""]
    if bad:
        lines += ["| job | status | overrides | error |", "|---|---|---|---|"]
        for r in bad:
            lines.append(f"| {r['job']} | {r['status']} | `{' '.join(r['overrides'])}` | {_fmt(r['error'] or '')} |")
    else:
        lines.append("None.")
    if plots:
        lines += ["", "## Plots", ""] + [f"![{p.stem}]({p.relative_to(sweep_dir).as_posix()})" for p in plots]
    return "\n".join(lines) + "\n"


def _safe(name: str) -> str:
    return re.sub(r"[^\w.-]+", "_", name).strip("_") or "param"


def report(sweep_dir: str | Path, forget: str | None = None, utility: str | None = None) -> dict:
    """Write report.csv, report.md and plots/*.png into the sweep folder; returns what was written."""
    sweep_dir = Path(sweep_dir)
    if not sweep_dir.is_dir():
        raise UserError(f"sweep folder {sweep_dir} does not exist; give the folder of a multirun "
                        "(hydra.sweep.dir, e.g. outputs/sweeps/<time>)")
    rows = collect(sweep_dir)
    if not rows:
        raise UserError(f"{sweep_dir} holds no job folders (no */results.json or */.hydra/); is it a sweep folder?")
    import matplotlib

    matplotlib.use("Agg")
    ok = [r for r in rows if r["status"] == "ok"]
    metrics = metric_names(ok)
    params = swept_params(rows)
    f_axis = _axis(forget, metrics, FORGET_DEFAULTS, "forget", "forget")
    u_axis = _axis(utility, metrics, UTILITY_DEFAULTS, "retain", "utility")
    if f_axis and u_axis:  # the trade-off axes lead the tables
        metrics = [f_axis[0], u_axis[0]] + [m for m in metrics if m not in (f_axis[0], u_axis[0])]
    baselines = _baselines(sweep_dir, ok)
    plots_dir = sweep_dir / "plots"
    plots, front, by_param, robustness = [], [], {}, None
    if ok and metrics:
        plots_dir.mkdir(exist_ok=True)
        if f_axis and u_axis:
            plots.append(plots_dir / "tradeoff.png")
            front = plot_tradeoff(ok, f_axis, u_axis, baselines, plots[-1])
        for p in params:
            plots.append(plots_dir / f"param_{_safe(p)}.png")
            by_param[p] = plot_param(rows, p, metrics, plots[-1], [o for o in params if o not in (p, "method")])
        if (robustness := plot_robustness(ok, baselines, plots_dir / "robustness.png", params)) is not None:
            plots.append(plots_dir / "robustness.png")
    curves = read_curves(sweep_dir, ok)
    if curves:  # trainer.eval_every: each metric against the step, one line per job
        plots_dir.mkdir(exist_ok=True)
        plots.append(plots_dir / "curves.png")
        chosen = curve_metrics(curves, [a[0] for a in (f_axis, u_axis) if a])
        drawn = plot_curves(ok, curves, chosen, params, plots[-1])
    else:
        drawn = {}
    groups, group_front = (seed_groups(ok, params, metrics) if "seed" in params else []), []
    if groups:
        if f_axis and u_axis:
            plots.append(plots_dir / "tradeoff_seeds.png")
            group_front = plot_tradeoff_groups(groups, f_axis, u_axis, baselines, plots[-1])
        atomic_write(sweep_dir / "report_seeds.csv", seeds_csv(groups))
    rows_csv = [{**r, **{f"param:{p}": parse_overrides(r["overrides"]).get(p) for p in params},
                 "pareto": r["job"] in front} for r in rows]
    atomic_write(sweep_dir / "report.csv", to_csv(rows_csv, extra=[f"param:{p}" for p in params] + ["pareto"]))
    axes = (f_axis, u_axis) if f_axis and u_axis else None
    atomic_write(sweep_dir / "report.md", markdown(sweep_dir, rows, params, metrics, axes, front, plots, baselines,
                                                   groups, group_front))
    return {"rows": rows, "params": params, "pareto": front, "plots": plots, "axes": axes, "groups": groups, "curves": drawn,
            "group_pareto": group_front, "param_plots": by_param,
            "robustness": robustness, "csv": sweep_dir / "report.csv", "md": sweep_dir / "report.md"}


def _baselines(sweep_dir: Path, ok: list[dict]) -> dict:
    """Target and reference metrics from the first ok job (all jobs of a sweep share them)."""
    import json

    for r in ok:
        try:
            b = json.loads((sweep_dir / r["job"] / "results.json").read_text(encoding="utf-8")).get("baselines") or {}
        except (OSError, ValueError):
            continue
        if b:
            attacked = ((json.loads((sweep_dir / r["job"] / "results.json").read_text(encoding="utf-8"))
                         .get("robustness") or {}).get("attacked_reference") or {})
            return {**{k: v for k, v in b.items() if isinstance(v, dict)},
                    **{f"reference@{a}": v for a, v in attacked.items() if isinstance(v, dict)}}
    return {}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="unlearning-report", description=__doc__.splitlines()[0])
    ap.add_argument("sweep_dir", help="the sweep folder (hydra.sweep.dir), e.g. outputs/sweeps/<time>")
    ap.add_argument("--forget", help="forget-side metric for the trade-off plot, NAME[:max|min] (default forget_quality:max)")
    ap.add_argument("--utility", help="utility metric, NAME[:max|min] (default model_utility:max)")
    args = ap.parse_args(argv)
    try:
        out = report(args.sweep_dir, args.forget, args.utility)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    rows = out["rows"]
    bad = [r for r in rows if r["status"] != "ok"]
    print(f"{len(rows)} jobs ({len(bad)} failed or missing) -> {out['md']}, {out['csv']}, {len(out['plots'])} plots")
    for r in bad:
        print(f"  job {r['job']}: {r['status']}: {r['error'] or ''}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
