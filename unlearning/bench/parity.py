"""`unlearning-bench parity`: TOFU forget01 on SmolLM2-135M scored three ways, held to OpenUnlearning's own output.

Modes (each the real `TofuEvaluator`, fp32, on the same weights and data as the reference):
- `compat`: `evaluator.compat=openunlearning`, compared item by item with OpenUnlearning's recorded values
  (`../shared/reference/ou_tofu_forget01_smollm2`, commit d3d7cf9);
- `compat_lengths`: the same sequences and batches with the attention mask taken from the sequence lengths, so
  its difference from `compat` is what OpenUnlearning's `input_ids != pad` mask alone moves;
- `default`: this project's own scoring (the model's chat template without a system turn, answer + one EOS,
  lengths mask, exact log-softmax).
Prints, per metric, the reference's aggregate, each mode's, the largest per-item |compat - reference| and the
shifts between modes; `--out` keeps every mode's result (JSON) for later tables.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

MODES = ("compat", "compat_lengths", "default")
# our aggregate -> (reference metric, per-item field of ours, per-item field of the reference)
METRICS = {
    "forget_Q_A_Prob": ("forget_Q_A_Prob", "answer_prob", "prob"),
    "forget_Q_A_PARA_Prob": ("forget_Q_A_PARA_Prob", "para_prob", "prob"),
    "forget_Q_A_PERT_Prob": ("forget_Q_A_PERT_Prob", "pert_probs", "prob"),
    "forget_Truth_Ratio": ("forget_truth_ratio", "truth_ratio", "score"),
    "forget_Q_A_ROUGE": ("forget_Q_A_ROUGE", "rougeL_recall", "rougeL_recall"),
    "forget_extraction_strength": ("extraction_strength", "extraction_strength", "score"),
    "retain_Q_A_Prob": ("retain_Q_A_Prob", "answer_prob", "prob"),
    "retain_Q_A_PARA_Prob": ("retain_Q_A_PARA_Prob", "para_prob", "prob"),
    "retain_Q_A_PERT_Prob": ("retain_Q_A_PERT_Prob", "pert_probs", "prob"),
    "retain_Truth_Ratio": ("retain_Truth_Ratio", "truth_ratio", "score"),
    "retain_Q_A_ROUGE": ("retain_Q_A_ROUGE", "rougeL_recall", "rougeL_recall"),
    "ra_Q_A_Prob_normalised": ("ra_Q_A_Prob_normalised", "prob", "prob"),
    "ra_Truth_Ratio": ("ra_Truth_Ratio", "truth_ratio", "score"),
    "ra_Q_A_ROUGE": ("ra_Q_A_ROUGE", "rougeL_recall", "rougeL_recall"),
    "wf_Q_A_Prob_normalised": ("wf_Q_A_Prob_normalised", "prob", "prob"),
    "wf_Truth_Ratio": ("wf_Truth_Ratio", "truth_ratio", "score"),
    "wf_Q_A_ROUGE": ("wf_Q_A_ROUGE", "rougeL_recall", "rougeL_recall"),
    "model_utility": ("model_utility", None, None),
}
PREFIX = {"forget": "forget", "retain": "retain", "ra": "real_authors", "wf": "world_facts"}


def parse_args(argv):
    here = Path(__file__).resolve().parents[2]
    p = argparse.ArgumentParser(prog="unlearning-bench parity", description=__doc__.splitlines()[0])
    p.add_argument("--modes", default=",".join(MODES), help=f"comma list of {' | '.join(MODES)}")
    p.add_argument("--max-items", type=int, default=None, help="first N questions per split (default: all)")
    p.add_argument("--no-generate", action="store_true", help="likelihood metrics only (no ROUGE, no model_utility)")
    p.add_argument("--reference", default=str(here.parent / "shared" / "reference" / "ou_tofu_forget01_smollm2"))
    p.add_argument("--data-dir", default=os.environ.get("UNLEARNING_DATA_DIR"))
    p.add_argument("--out", default="outputs/parity", help="folder for each mode's result (JSON)")
    p.add_argument("--from", dest="saved", nargs="+", help="print the table from folders earlier runs wrote (their "
                   "<mode>.json), evaluating nothing; a later folder's values replace an earlier one's (e.g. a "
                   "--no-generate run over a full one), and model_utility is recomputed from the merged nine")
    return p.parse_args(argv)


def evaluate(mode: str, model, tok, data, args) -> dict:
    from omegaconf import OmegaConf

    from unlearning.eval.tofu import TofuEvaluator

    ev = TofuEvaluator(compat=None if mode == "default" else "openunlearning", max_items=args.max_items,
                       generate=not args.no_generate, batch_size=32)
    if mode == "compat_lengths":
        ev.mask = "lengths"
    ctx = type("Ctx", (), {"generation": OmegaConf.create({"batch_size": 32, "bf16": False}), "max_length": 512})()
    t = time.perf_counter()
    result = ev.evaluate(model, tok, data, ctx)
    result["seconds"] = time.perf_counter() - t
    return result


def per_item(result: dict, metric: str) -> list:
    """Our per-item values of a metric (lists flattened), in item order."""
    _, field, _ = METRICS[metric]
    rows = result["per_item"].get(PREFIX[metric.split("_")[0]], [])
    out = []
    for r in rows:
        v = r.get(field)
        out += v if isinstance(v, list) else [v]
    return out


def reference_items(ref: dict, metric: str, n: int) -> list:
    name, _, field = METRICS[metric]
    out = []
    for i in range(n):
        v = ref[name]["value_by_index"][str(i)][field]
        out += v if isinstance(v, list) else [v]
    return out


def _shift(aggs: dict, a: str, b: str, width: int) -> str:
    """aggs[a] - aggs[b], or '-' where one of the modes did not measure the metric (e.g. --no-generate)."""
    if aggs.get(a) is None or aggs.get(b) is None:
        return f"{'-':>{width}}"
    return f"{aggs[a] - aggs[b]:>+{width}.4f}"


def table(results: dict, ref: dict) -> list[str]:
    modes = list(results)
    head = f"{'metric':<28}{'OU (reference)':>15}" + "".join(f"{m:>15}" for m in modes)
    if "compat" in results:
        head += f"{'max|item Δ| vs OU':>19}"
    if {"compat", "compat_lengths"} <= set(results):
        head += f"{'mask shift':>12}"
    if {"compat", "default"} <= set(results):
        head += f"{'default-compat':>15}"
    lines = [head, "-" * len(head)]
    for metric, (name, field, _) in METRICS.items():
        aggs = {m: r["aggregates"].get(metric) for m, r in results.items()}
        if all(v is None for v in aggs.values()):
            continue
        line = f"{metric:<28}{ref[name]['agg_value']:>15.6f}" + "".join(
            f"{v:>15.6f}" if v is not None else f"{'-':>15}" for v in aggs.values())
        if "compat" in results:
            if field is None:
                line += f"{abs(aggs['compat'] - ref[name]['agg_value']):>19.2e}"
            else:
                ours = per_item(results["compat"], metric)
                theirs = reference_items(ref, metric, len(results["compat"]["per_item"][PREFIX[metric.split('_')[0]]]))
                line += f"{max(abs(a - b) for a, b in zip(ours, theirs)):>19.2e}"
        if {"compat", "compat_lengths"} <= set(results):
            line += _shift(aggs, "compat_lengths", "compat", 12)
        if {"compat", "default"} <= set(results):
            line += _shift(aggs, "default", "compat", 15)
        lines.append(line)
    if "compat" in results and "generation" in (results["compat"]["per_item"].get("forget") or [{}])[0]:
        same = total = 0
        for prefix, split in PREFIX.items():
            for i, row in enumerate(results["compat"]["per_item"].get(split, [])):
                total += 1
                same += row["generation"] == ref[f"{prefix}_Q_A_ROUGE"]["value_by_index"][str(i)]["generation"]
        lines.append(f"compat generations identical to OU's: {same} of {total}")
    lines.append("seconds: " + ", ".join(f"{m} {r['seconds']:.0f}" for m, r in results.items()))
    return lines


def merged(folders: list[str], modes: list[str]) -> dict:
    """Each mode's result from the folders in order, later values replacing earlier ones item by item."""
    from unlearning.eval import metrics
    from unlearning.eval.tofu import UTILITY

    out: dict = {}
    for folder in folders:
        for mode in modes:
            path = Path(folder) / f"{mode}.json"
            if not path.is_file():
                continue
            new = json.loads(path.read_text())
            old = out.setdefault(mode, {"aggregates": {}, "per_item": {}, "seconds": 0.0})
            old["aggregates"].update(new["aggregates"])
            old["seconds"] += new.get("seconds", 0.0)
            for split, rows in new["per_item"].items():
                have = old["per_item"].setdefault(split, [{} for _ in rows])
                for a, b in zip(have, rows):
                    a.update(b)
    for result in out.values():
        if all(k in result["aggregates"] for k in UTILITY):
            result["aggregates"]["model_utility"] = metrics.harmonic_mean(result["aggregates"][k] for k in UTILITY)
    return out


def main(argv=None) -> int:
    args = parse_args(argv if argv is not None else sys.argv[1:])
    modes = [m for m in args.modes.split(",") if m]
    bad = sorted(set(modes) - set(MODES))
    ref_file = Path(args.reference) / "TOFU_EVAL.json"
    if bad or not ref_file.is_file():
        print(f"unlearning-bench parity: unknown mode(s) {bad}; use {list(MODES)}" if bad else
              f"unlearning-bench parity: no reference at {ref_file}; give --reference <folder with TOFU_EVAL.json>",
              file=sys.stderr)
        return 2
    import torch

    from unlearning.data.tofu import load_tofu
    from unlearning.models import SmolLM2

    ref = json.loads(ref_file.read_text())
    if args.saved:
        results = merged(args.saved, modes)
        print(f"# TOFU forget01, SmolLM2-135M-Instruct, fp32; modes read from {' + '.join(args.saved)}; "
              "OU = OpenUnlearning d3d7cf9's own output")
        print("\n".join(table(results, ref)))
        return 0
    model, tok = SmolLM2().load()
    data = load_tofu("forget01", data_dir=args.data_dir)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results = {}
    with torch.no_grad():
        for mode in modes:
            results[mode] = evaluate(mode, model, tok, data, args)
            (out / f"{mode}.json").write_text(json.dumps(results[mode]))
            print(f"{mode}: {results[mode]['seconds']:.0f} s", file=sys.stderr)
    print(f"# TOFU forget01, SmolLM2-135M-Instruct, fp32, torch {torch.__version__}; "
          f"{args.max_items or 'all'} items per split; OU = OpenUnlearning d3d7cf9's own output")
    print("\n".join(table(results, ref)))
    return 0
