"""`unlearning-bench parity`: TOFU forget01 or MUSE-News on SmolLM2-135M scored three ways, held to OpenUnlearning's own output.

Modes (each the real `TofuEvaluator` / `MuseEvaluator`, fp32, on the same weights and data as the reference):
- `compat`: `evaluator.compat=openunlearning`, compared item by item with OpenUnlearning's recorded values
  (`../shared/reference/ou_tofu_forget01_smollm2` or `ou_muse_news_smollm2`, commit d3d7cf9);
- `compat_lengths`: the same sequences and batches with the attention mask taken from the sequence lengths, so
  its difference from `compat` is what OpenUnlearning's `input_ids != pad` mask alone moves;
- `default`: this project's own scoring (TOFU: the model's chat template without a system turn, answer + one EOS,
  lengths mask, exact log-softmax; MUSE: `conf/evaluator/muse.yaml` as it ships, raw-text KnowMem prompts).
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
# our aggregate -> (reference metric, our per-item splits, per-item field of ours, per-item field of the reference);
# no splits: an aggregate alone
TOFU = {
    "forget_Q_A_Prob": ("forget_Q_A_Prob", ["forget"], "answer_prob", "prob"),
    "forget_Q_A_PARA_Prob": ("forget_Q_A_PARA_Prob", ["forget"], "para_prob", "prob"),
    "forget_Q_A_PERT_Prob": ("forget_Q_A_PERT_Prob", ["forget"], "pert_probs", "prob"),
    "forget_Truth_Ratio": ("forget_truth_ratio", ["forget"], "truth_ratio", "score"),
    "forget_Q_A_ROUGE": ("forget_Q_A_ROUGE", ["forget"], "rougeL_recall", "rougeL_recall"),
    "forget_extraction_strength": ("extraction_strength", ["forget"], "extraction_strength", "score"),
    "retain_Q_A_Prob": ("retain_Q_A_Prob", ["retain"], "answer_prob", "prob"),
    "retain_Q_A_PARA_Prob": ("retain_Q_A_PARA_Prob", ["retain"], "para_prob", "prob"),
    "retain_Q_A_PERT_Prob": ("retain_Q_A_PERT_Prob", ["retain"], "pert_probs", "prob"),
    "retain_Truth_Ratio": ("retain_Truth_Ratio", ["retain"], "truth_ratio", "score"),
    "retain_Q_A_ROUGE": ("retain_Q_A_ROUGE", ["retain"], "rougeL_recall", "rougeL_recall"),
    "ra_Q_A_Prob_normalised": ("ra_Q_A_Prob_normalised", ["real_authors"], "prob", "prob"),
    "ra_Truth_Ratio": ("ra_Truth_Ratio", ["real_authors"], "truth_ratio", "score"),
    "ra_Q_A_ROUGE": ("ra_Q_A_ROUGE", ["real_authors"], "rougeL_recall", "rougeL_recall"),
    "wf_Q_A_Prob_normalised": ("wf_Q_A_Prob_normalised", ["world_facts"], "prob", "prob"),
    "wf_Truth_Ratio": ("wf_Truth_Ratio", ["world_facts"], "truth_ratio", "score"),
    "wf_Q_A_ROUGE": ("wf_Q_A_ROUGE", ["world_facts"], "rougeL_recall", "rougeL_recall"),
    "model_utility": ("model_utility", [], None, None),
}
MUSE = {
    "forget_verbmem_ROUGE": ("forget_verbmem_ROUGE", ["verbmem_forget"], "rougeL_f1", "rougeL_f1"),
    "extraction_strength": ("extraction_strength", ["verbmem_forget"], "extraction_strength", "score"),
    "forget_knowmem_ROUGE": ("forget_knowmem_ROUGE", ["knowmem_forget"], "rougeL_f1", "rougeL_f1"),
    "retain_knowmem_ROUGE": ("retain_knowmem_ROUGE", ["knowmem_retain"], "rougeL_f1", "rougeL_f1"),
    # OU's record keeps the per-document scores under mia_min_k.forget / .holdout
    "mia_min_k": ("mia_min_k", ["privleak_forget", "privleak_holdout"], "min_k", "score"),
    "privleak": ("privleak", [], None, None),
}
BENCHMARKS = {
    "tofu": {"metrics": TOFU, "reference": "ou_tofu_forget01_smollm2", "file": "TOFU_EVAL.json",
             "title": "TOFU forget01"},
    "muse": {"metrics": MUSE, "reference": "ou_muse_news_smollm2", "file": "MUSE_EVAL.json",
             "title": "MUSE-News"},
}
# OU's record computes PrivLeak against its default reference AUC, 0.5 (no retain model was evaluated)
MUSE_PRIVLEAK_REFERENCE_AUC = 0.5


def parse_args(argv):
    here = Path(__file__).resolve().parents[2]
    p = argparse.ArgumentParser(prog="unlearning-bench parity", description=__doc__.splitlines()[0])
    p.add_argument("--benchmark", choices=list(BENCHMARKS), default="tofu")
    p.add_argument("--modes", default=",".join(MODES), help=f"comma list of {' | '.join(MODES)}")
    p.add_argument("--max-items", type=int, default=None, help="first N items per split (default: all)")
    p.add_argument("--no-generate", action="store_true",
                   help="TOFU: likelihood metrics only (no ROUGE, no model_utility)")
    p.add_argument("--splits", default=None, help="TOFU: comma list of splits to evaluate (forget, retain, "
                   "real_authors, world_facts; default all; model_utility needs all four)")
    p.add_argument("--reference", default=None, help="folder with OU's TOFU_EVAL.json / MUSE_EVAL.json (default: "
                   "../shared/reference/ou_tofu_forget01_smollm2 or ou_muse_news_smollm2)")
    shared = here.parent / "shared" / "data"
    p.add_argument("--data-dir", default=os.environ.get("UNLEARNING_DATA_DIR") or (str(shared) if shared.is_dir() else None),
                   help="the benchmark's data (default: UNLEARNING_DATA_DIR, else ../shared/data, else the hub)")
    p.add_argument("--metrics", default=None, help="comma list: print only these rows (e.g. the README's headline "
                   "metrics); default: every metric")
    p.add_argument("--out", default=None, help="folder for each mode's result (JSON); default outputs/parity "
                   "(TOFU) or outputs/parity_muse")
    p.add_argument("--from", dest="saved", nargs="+", help="print the table from folders earlier runs wrote (their "
                   "<mode>.json), evaluating nothing; a later folder's values replace an earlier one's (e.g. a "
                   "--no-generate run over a full one), and model_utility is recomputed from the merged nine")
    args = p.parse_args(argv)
    bench = BENCHMARKS[args.benchmark]
    args.reference = args.reference or str(here.parent / "shared" / "reference" / bench["reference"])
    args.out = args.out or ("outputs/parity" if args.benchmark == "tofu" else "outputs/parity_muse")
    return args


def evaluate(mode: str, model, tok, data, args) -> dict:
    from omegaconf import OmegaConf

    compat = None if mode == "default" else "openunlearning"
    if args.benchmark == "tofu":
        from unlearning.eval.tofu import TofuEvaluator

        ev = TofuEvaluator(compat=compat, max_items=args.max_items, generate=not args.no_generate, batch_size=32,
                           splits=args.splits.split(",") if args.splits else None)
    else:
        from unlearning.eval.muse import MuseEvaluator

        shipped = OmegaConf.to_container(OmegaConf.load(Path(__file__).resolve().parents[2] / "conf" / "evaluator"
                                                        / "muse.yaml"))
        shipped.pop("_target_")
        ev = MuseEvaluator(**{**shipped, "compat": compat, "max_items": args.max_items,
                              "privleak_reference_auc": MUSE_PRIVLEAK_REFERENCE_AUC})
    if mode == "compat_lengths":
        ev.mask = "lengths"
    # conf/generation/greedy.yaml's batch size (MUSE's default mode uses it; TOFU and compat set their own), fp32
    ctx = type("Ctx", (), {"generation": OmegaConf.create({"batch_size": 16, "bf16": False}), "max_length": 512})()
    t = time.perf_counter()
    result = ev.evaluate(model, tok, data, ctx)
    result["seconds"] = time.perf_counter() - t
    return result


def per_item(result: dict, spec: tuple) -> list:
    """Our per-item values of a metric (lists flattened), in item order, split after split."""
    _, splits, field, _ = spec
    out = []
    for split in splits:
        for r in result["per_item"].get(split, []):
            v = r.get(field)
            out += v if isinstance(v, list) else [v]
    return out


def reference_items(ref: dict, spec: tuple, counts: list[int]) -> list:
    """The reference's values for the first counts[i] items of each of the metric's splits, flattened alike."""
    name, splits, _, field = spec
    tables = [ref[name]["value_by_index"]] if len(splits) == 1 else [ref[name][s]["value_by_index"]
                                                                      for s in ("forget", "holdout")]
    out = []
    for by_index, n in zip(tables, counts):
        for i in range(n):
            v = by_index[str(i)][field]
            out += v if isinstance(v, list) else [v]
    return out


def generations(result: dict, ref: dict, metrics: dict) -> tuple[int, int]:
    """How many of our generations equal the reference's, over every metric whose items record one."""
    same = total = 0
    for name, splits, _, _ in metrics.values():
        if len(splits) != 1:
            continue
        for i, row in enumerate(result["per_item"].get(splits[0], [])):
            theirs = ref[name].get("value_by_index", {}).get(str(i), {})
            if "generation" in row and "generation" in theirs:
                total += 1
                same += row["generation"] == theirs["generation"]
    return same, total


def _shift(aggs: dict, a: str, b: str, width: int) -> str:
    """aggs[a] - aggs[b], or '-' where one of the modes did not measure the metric (e.g. --no-generate)."""
    if aggs.get(a) is None or aggs.get(b) is None:
        return f"{'-':>{width}}"
    return f"{aggs[a] - aggs[b]:>+{width}.4f}"


def table(results: dict, ref: dict, metrics: dict) -> list[str]:
    modes = list(results)
    head = f"{'metric':<28}{'OU (reference)':>15}" + "".join(f"{m:>15}" for m in modes)
    if "compat" in results:
        head += f"{'max|item Δ| vs OU':>19}"
    if {"compat", "compat_lengths"} <= set(results):
        head += f"{'mask shift':>12}"
    if {"compat", "default"} <= set(results):
        head += f"{'default-compat':>15}"
    lines = [head, "-" * len(head)]
    for metric, spec in metrics.items():
        name, splits, _, _ = spec
        aggs = {m: r["aggregates"].get(metric) for m, r in results.items()}
        if all(v is None for v in aggs.values()):
            continue
        line = f"{metric:<28}{ref[name]['agg_value']:>15.6f}" + "".join(
            f"{v:>15.6f}" if v is not None else f"{'-':>15}" for v in aggs.values())
        if "compat" in results:
            if not splits:
                line += f"{abs(aggs['compat'] - ref[name]['agg_value']):>19.2e}"
            else:
                ours = per_item(results["compat"], spec)
                theirs = reference_items(ref, spec, [len(results["compat"]["per_item"][s]) for s in splits])
                line += f"{max(abs(a - b) for a, b in zip(ours, theirs)):>19.2e}"
        if {"compat", "compat_lengths"} <= set(results):
            line += _shift(aggs, "compat_lengths", "compat", 12)
        if {"compat", "default"} <= set(results):
            line += _shift(aggs, "default", "compat", 15)
        lines.append(line)
    if "compat" in results:
        same, total = generations(results["compat"], ref, metrics)
        if total:
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
    out = {mode: out[mode] for mode in modes if mode in out}  # the table's columns in --modes order
    for result in out.values():
        if all(k in result["aggregates"] for k in UTILITY):
            result["aggregates"]["model_utility"] = metrics.harmonic_mean(result["aggregates"][k] for k in UTILITY)
    return out


def main(argv=None) -> int:
    args = parse_args(argv if argv is not None else sys.argv[1:])
    bench = BENCHMARKS[args.benchmark]
    modes = [m for m in args.modes.split(",") if m]
    bad = sorted(set(modes) - set(MODES))
    ref_file = Path(args.reference) / bench["file"]
    problem = (f"unknown mode(s) {bad}; use {list(MODES)}" if bad else
               f"no reference at {ref_file}; give --reference <folder with {bench['file']}>" if not ref_file.is_file()
               else f"--max-items={args.max_items} must be at least 1" if args.max_items is not None and args.max_items < 1
               else None)
    metrics = bench["metrics"]
    if problem is None and args.metrics:
        unknown = sorted(set(args.metrics.split(",")) - set(metrics))
        problem = f"--metrics: unknown {unknown} for {args.benchmark}; use {list(metrics)}" if unknown else None
        metrics = {m: spec for m, spec in metrics.items() if m in args.metrics.split(",")}
    if problem:
        print(f"unlearning-bench parity: {problem}", file=sys.stderr)
        return 2
    import torch

    from unlearning.models import SmolLM2

    ref = json.loads(ref_file.read_text())
    if args.saved:
        results = merged(args.saved, modes)
        print(f"# {bench['title']}, SmolLM2-135M-Instruct, fp32; modes read from {' + '.join(args.saved)}; "
              "OU = OpenUnlearning d3d7cf9's own output")
        print("\n".join(table(results, ref, metrics)))
        return 0
    if args.benchmark == "tofu":
        from unlearning.data.tofu import load_tofu

        data = load_tofu("forget01", data_dir=args.data_dir)
    else:
        from unlearning.data.muse import load_muse_news

        data = load_muse_news(data_dir=args.data_dir)
    model, tok = SmolLM2().load()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results = {}
    with torch.no_grad():
        for mode in modes:
            results[mode] = evaluate(mode, model, tok, data, args)
            (out / f"{mode}.json").write_text(json.dumps(results[mode]))
            print(f"{mode}: {results[mode]['seconds']:.0f} s", file=sys.stderr)
    print(f"# {bench['title']}, SmolLM2-135M-Instruct, fp32, torch {torch.__version__}; "
          f"{args.max_items or 'all'} items per split; OU = OpenUnlearning d3d7cf9's own output")
    recorded = min((len(ref[spec[0]]["value_by_index"]) for spec in metrics.values() if len(spec[1]) == 1), default=0)
    if args.max_items and args.max_items < recorded:
        print(f"# the OU column holds its aggregates over all {recorded} items it recorded; the per-item column "
              f"compares the first {args.max_items}")
    print("\n".join(table(results, ref, metrics)))
    return 0
