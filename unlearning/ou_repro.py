"""OpenUnlearning's TOFU reproduction table (its docs/repro.md, commit d3d7cf9), filled from this project's runs.

`experiment=tofu_ou_repro` prints it at the end of its sweep (and writes `ou_repro.md` into the sweep folder);
`unlearning-table --ou-repro SWEEP_OR_RUN ...` prints it for any finished TOFU runs. Rows and columns are OU's:
Finetuned (this project's target), Retain (the retain reference), then one row per method; for each forget split
forget_quality, model_utility and forget_truth_ratio (here `forget_Truth_Ratio`). Each cell is this project's
value, then OU's published one for the same architecture.
"""

from __future__ import annotations

import json
from pathlib import Path

from unlearning.errors import UserError

SPLITS = ("forget01", "forget05", "forget10")
COLUMNS = (("forget_quality", "forget_quality"), ("model_utility", "model_utility"),
           ("forget_truth_ratio", "forget_Truth_Ratio"))  # (OU's name, this project's)
ROWS = ("Finetuned", "Retain", "GradAscent", "GradDiff", "IdkDPO", "NPO", "SimNPO", "RMU")
METHOD_ROW = {"ga": "GradAscent", "graddiff": "GradDiff", "idk_dpo": "IdkDPO", "npo": "NPO", "simnpo": "SimNPO",
              "rmu_ou": "RMU"}

# OU's docs/repro.md at d3d7cf9, as published: row -> (forget_quality, model_utility, forget_truth_ratio) per split.
# docs/parity.md quotes the same tables; tests/test_ou_repro.py holds the two equal.
PUBLISHED = {
    "Llama-2-7b-chat-hf": {
        "Finetuned": [("1.27e-03", "0.63", "0.53"), ("5.87e-14", "0.63", "0.51"), ("4.35e-25", "0.63", "0.52")],
        "Retain": [("1.0", "0.63", "0.68"), ("1.0", "0.63", "0.67"), ("1.0", "0.61", "0.68")],
        "GradAscent": [("1.88e-04", "0.55", "0.36"), ("1.94e-119", "0.00e+00", "8.82e-96"),
                       ("1.06e-239", "0.00e+00", "2.21e-32")],
        "GradDiff": [("3.02e-03", "0.57", "0.41"), ("1.94e-119", "0.56", "4.14e-95"), ("1.80e-229", "0.58", "1.46e-07")],
        "IdkDPO": [("0.1", "0.56", "0.67"), ("4.02e-06", "0.04", "0.67"), ("5.42e-13", "0.04", "0.64")],
        "NPO": [("0.4", "0.58", "0.65"), ("0.09", "0.53", "0.71"), ("0.42", "0.54", "0.73")],
        "SimNPO": [("1.27e-03", "0.58", "0.41"), ("1.06e-106", "0.6", "3.94e-05"), ("1.47e-198", "0.6", "3.17e-04")],
        "RMU": [("0.4", "0.62", "0.64"), ("9.59e-10", "0.02", "0.81"), ("6.92e-21", "0.03", "0.81")],
    },
    "Llama-3.2-1B-Instruct": {
        "Finetuned": [("0.01", "0.6", "0.47"), ("1.33e-13", "0.6", "0.47"), ("1.66e-21", "0.6", "0.48")],
        "Retain": [("1.0", "0.60", "0.65"), ("1.0", "0.6", "0.64"), ("1.0", "0.59", "0.63")],
        "GradAscent": [("0.27", "0.33", "0.59"), ("1.94e-119", "0", "2.52e-23"), ("1.06e-239", "0", "2.25e-18")],
        "GradDiff": [("0.77", "0.43", "0.57"), ("1.94e-119", "0.53", "3.87e-34"), ("1.06e-239", "0.49", "3.53e-27")],
        "IdkDPO": [("0.01", "0.51", "0.60"), ("1.12e-05", "0.07", "0.62"), ("4.64e-12", "0.23", "0.6")],
        "NPO": [("0.92", "0.56", "0.66"), ("0.14", "0.45", "0.7"), ("0.02", "0.46", "0.7")],
        "SimNPO": [("0.58", "0.46", "0.55"), ("5.01e-100", "0.58", "4.19e-03"), ("2.47e-203", "0.54", "1.07e-05")],
        "RMU": [("0.16", "0.55", "0.70"), ("4.87e-10", "0.58", "0.77"), ("3.15e-15", "0.59", "0.76")],
    },
}


def architecture(record: dict) -> str | None:
    """OU's table for the run's model: by the base model's name in `model.path` (or a local copy's folder name)."""
    path = str(((record.get("config") or {}).get("model") or {}).get("path") or "")
    return next((arch for arch in PUBLISHED if arch.lower() in path.lower()), None)


def records_of(folders: list[str | Path]) -> list[dict]:
    """results.json of each run folder, or of every job folder of a sweep folder; only finished TOFU runs."""
    records = []
    for folder in map(Path, folders):
        paths = [folder / "results.json"] if (folder / "results.json").is_file() else sorted(
            folder.glob("*/results.json"), key=lambda p: (len(p.parent.name), p.parent.name))
        if not paths:
            raise UserError(f"{folder} holds no results.json, nor job folders with one; give run or sweep folders")
        for p in paths:
            rec = json.loads(p.read_text(encoding="utf-8"))
            if rec.get("status") == "ok" and str(rec.get("dataset")).startswith("tofu"):
                records.append(rec)
    if not records:
        raise UserError(f"no finished TOFU run (results.json with status ok, dataset tofu) in {', '.join(map(str, folders))}")
    return records


def _ours(records: list[dict]) -> dict[tuple[str, str], dict]:
    """(row, split) -> metrics: the baselines of each split's first run, then each method's run."""
    cells: dict[tuple[str, str], dict] = {}
    for rec in records:
        split = str(((rec.get("config") or {}).get("dataset") or {}).get("forget_split") or "")
        for row, name in (("Finetuned", "target"), ("Retain", "reference")):
            if name in (rec.get("baselines") or {}):
                cells.setdefault((row, split), rec["baselines"][name])
        row = METHOD_ROW.get(str(rec.get("method")), str(rec.get("method")))
        cells.setdefault((row, split), rec.get("metrics") or {})
    return cells


def _fmt(v) -> str:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return "-"
    return f"{v:.3g}" if v == 0 or 1e-3 <= abs(v) < 1e3 else f"{v:.2e}"


def table(records: list[dict]) -> str:
    """Markdown: OU's repro.md layout, each cell `this project / OU`; splits no run covered are left out."""
    archs = {architecture(r) for r in records}
    if len(archs) > 1:
        raise UserError(f"the runs use several models ({', '.join(sorted(map(str, archs)))}); give one model's runs")
    arch = archs.pop()
    published = PUBLISHED.get(arch) if arch else None
    ours = _ours(records)
    splits = [s for s in SPLITS if any(sp == s for _, sp in ours)]
    if not splits:
        raise UserError("no run names a TOFU forget split of OU's table (forget01, forget05, forget10)")
    rows = [r for r in ROWS if any((r, s) in ours for s in splits)]
    rows += sorted({r for r, _ in ours} - set(ROWS))  # methods OU's table does not have: ours alone
    head = [f"{s} {ou}" for s in splits for ou, _ in COLUMNS]
    lines = ["| Method | " + " | ".join(head) + " |", "|---" * (len(head) + 1) + "|"]
    for row in rows:
        cells = []
        for s in splits:
            mine = ours.get((row, s), {})
            for k, (_, key) in enumerate(COLUMNS):
                theirs = published[row][SPLITS.index(s)][k] if published and row in published else "-"
                cells.append(f"{_fmt(mine.get(key))} / {theirs}")
        lines.append(f"| {row} | " + " | ".join(cells) + " |")
    what = (f"OU's published {arch} values" if published else
            "OU published no table for this model, so the second value is '-'")
    return (f"TOFU, OU's repro.md layout; each cell: this project / {what} (OU's docs/repro.md, commit d3d7cf9).\n\n"
            + "\n".join(lines))
