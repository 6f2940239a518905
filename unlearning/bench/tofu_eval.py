"""`unlearning-bench tofu_eval`: wall time and peak RSS of the whole TOFU evaluation on SmolLM2-135M.

Runs the real `TofuEvaluator` (forget01: 40 forget, 400 retain, 100 real-authors and
117 world-facts questions; likelihood passes plus 200-token greedy generation) in a
fresh subprocess per setting, so peak RSS is that setting's alone. Baseline = the same
evaluator in fp32 in the same invocation; the other rows are ratios to it.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time


def parse_args(argv):
    p = argparse.ArgumentParser(prog="unlearning-bench tofu_eval", description=__doc__.splitlines()[0])
    p.add_argument("--settings", default="fp32,bf16", help="comma list of fp32 | bf16")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--max-items", type=int, default=None, help="first N questions per split (default: all)")
    p.add_argument("--max-new-tokens", type=int, default=200)
    p.add_argument("--data-dir", default=os.environ.get("UNLEARNING_DATA_DIR"))
    p.add_argument("--worker", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def worker(args) -> dict:
    from omegaconf import OmegaConf

    from unlearning.data.tofu import load_tofu
    from unlearning.eval.tofu import TofuEvaluator
    from unlearning.models import SmolLM2

    bf16 = args.worker == "bf16"
    model, tok = SmolLM2().load()
    data = load_tofu("forget01", data_dir=args.data_dir)
    ctx = type("Ctx", (), {"generation": OmegaConf.create({"batch_size": args.batch_size, "bf16": bf16}),
                           "max_length": 512})()
    ev = TofuEvaluator(batch_size=args.batch_size, max_new_tokens=args.max_new_tokens, max_items=args.max_items)
    t = time.perf_counter()
    result = ev.evaluate(model, tok, data, ctx)
    seconds = time.perf_counter() - t
    n = sum(len(v) for v in result["per_item"].values())
    return {"setting": args.worker, "seconds": seconds, "questions": n,
            "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
            "model_utility": result["aggregates"].get("model_utility")}


def main(argv=None) -> int:
    args = parse_args(argv if argv is not None else sys.argv[1:])
    if args.worker:
        print("RESULT " + json.dumps(worker(args)))
        return 0
    rows = []
    for setting in args.settings.split(","):
        cmd = [sys.executable, "-m", "unlearning.bench", "tofu_eval", "--worker", setting,
               "--batch-size", str(args.batch_size), "--max-new-tokens", str(args.max_new_tokens)]
        if args.max_items:
            cmd += ["--max-items", str(args.max_items)]
        if args.data_dir:
            cmd += ["--data-dir", args.data_dir]
        out = subprocess.run(cmd, capture_output=True, text=True)
        line = [ln for ln in out.stdout.splitlines() if ln.startswith("RESULT ")]
        if out.returncode or not line:
            print(out.stderr[-3000:], file=sys.stderr)
            return 1
        rows.append(json.loads(line[0][7:]))
    base = rows[0]
    print(f"{'setting':<8} {'questions':>9} {'seconds':>9} {'peak RSS GiB':>13} {'time ratio':>11} {'utility':>8}")
    for r in rows:
        print(f"{r['setting']:<8} {r['questions']:>9} {r['seconds']:>9.1f} {r['peak_rss_gib']:>13.2f} "
              f"{r['seconds'] / base['seconds']:>11.2f} {r['model_utility'] or 0:>8.4f}")
    return 0
