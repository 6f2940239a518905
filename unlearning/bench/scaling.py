"""`unlearning-bench scaling`: training and evaluation tokens/s with 1 and N processes, and peak memory per process.

Each configuration is a real `torchrun --standalone --nproc_per_node N` launch of a worker that
trains GA through the shared loop (`unlearning.train.train`) at a fixed global batch (per-process
batch = global / N), on batches of TOFU text cut to `--seq-len` tokens, then scores `--eval-items` such
sequences with the evaluation engine (`unlearning.eval.engine.score`, each process every N-th batch of
`--global-batch`). The CPU threads are split
evenly between the processes (OMP_NUM_THREADS = cores / N), so on a CPU the ratio shows what
distribution costs or gains against one process using every core; on GPUs each process has its own
device. The ratio is against 1 process measured in the same invocation. Written by hand: only the
launcher loop and the table.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path


def parse_args(argv):
    p = argparse.ArgumentParser(prog="unlearning-bench scaling", description=__doc__.splitlines()[0])
    p.add_argument("--models", default="tiny,smollm2_135m", help="comma list: tiny, smollm2_135m")
    p.add_argument("--processes", default="1,2", help="comma list of process counts; the first is the baseline")
    p.add_argument("--global-batch", type=int, default=8)
    p.add_argument("--seq-len", type=int, default=128)
    p.add_argument("--steps", type=int, default=4, help="timed steps")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--eval-items", type=int, default=64, help="sequences scored by the evaluation engine")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--cores", type=int, default=os.cpu_count(), help="CPU threads shared by the processes")
    p.add_argument("--data-dir", default=os.environ.get("UNLEARNING_DATA_DIR"))
    p.add_argument("--cache-dir", default=os.environ.get("UNLEARNING_CACHE", ".cache"))
    p.add_argument("--worker", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def worker(args) -> dict | None:
    import torch

    from unlearning.bench.methods import StepClock, tofu_items
    from unlearning.distributed import broadcast, is_main, wait, world_size
    from unlearning.eval.engine import score
    from unlearning.methods.ga import GradientAscent
    from unlearning.models import SmolLM2, TinyLlama
    from unlearning.train import TrainSettings, train

    torch.manual_seed(0)
    tofu = Path(args.data_dir) / "tofu"
    if args.worker == "tiny":
        from unlearning.errors import read_json_lines

        corpus = [r["question"] + " " + r["answer"] for r in read_json_lines(tofu / "retain90.json")[:400]]
        model, tok = TinyLlama(cache_dir=args.cache_dir, max_position_embeddings=max(1024, args.seq_len)).load(corpus)
    else:
        model, tok = SmolLM2(cache_dir=args.cache_dir).load()
    model.to(f"cuda:{os.environ.get('LOCAL_RANK', '0')}" if args.device == "cuda" else "cpu")
    n = world_size()
    total = args.warmup + args.steps
    forget = tofu_items(tok, tofu / "forget10.json", args.global_batch * total, args.seq_len)
    clock = StepClock()
    settings = TrainSettings(lr=1e-5, epochs=1, max_steps=total, batch_size=args.global_batch)  # the global batch
    train(model, GradientAscent(), forget, None, settings, tok.pad_token_id, logger=clock, desc="bench",
          device=args.device)
    step_s = broadcast((clock.times[-1] - clock.times[args.warmup]) / args.steps)
    evaluated = tofu_items(tok, tofu / "forget10.json", args.eval_items, args.seq_len)
    wait()
    t0 = time.perf_counter()
    score(model, evaluated, tok.pad_token_id, batch_size=args.global_batch)  # split between the processes
    wait()
    eval_s = broadcast(time.perf_counter() - t0)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if args.device == "cuda":
        peak = torch.cuda.max_memory_allocated() / 2**20
    import torch.distributed as dist

    peaks = [peak]
    if n > 1:
        peaks = [None] * n
        dist.all_gather_object(peaks, peak)
    if not is_main():
        return None
    return {"model": args.worker, "processes": n, "step_s": step_s,
            "tokens_per_s": args.global_batch * args.seq_len / step_s, "peak_mib_per_process": max(peaks),
            "eval_tokens_per_s": args.eval_items * args.seq_len / eval_s}


def main(argv=None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.worker:
        from unlearning.distributed import shutdown

        row = worker(args)
        if row is not None:
            print("RESULT " + json.dumps(row), flush=True)
        shutdown()
        return 0
    if not args.data_dir:
        print("unlearning-bench scaling: set UNLEARNING_DATA_DIR or --data-dir (TOFU text)", file=sys.stderr)
        return 2
    counts = [int(c) for c in args.processes.split(",")]
    if any(args.global_batch % c for c in counts):
        print(f"unlearning-bench scaling: --global-batch {args.global_batch} must divide by every process count "
              f"{counts}", file=sys.stderr)
        return 2
    memory = "peak GPU MiB/process" if args.device == "cuda" else "peak RSS MiB/process"
    print(f"# scaling benchmark ({args.device}): GA, global batch {args.global_batch} x {args.seq_len} tokens, "
          f"{args.warmup} warm-up + {args.steps} timed steps, then {args.eval_items} sequences scored for evaluation; "
          f"{args.cores} CPU threads split between the processes")
    print(f"{'model':14} {'processes':>9} {'threads/proc':>12} {'s/step':>8} {'tokens/s':>9} {'vs 1 proc':>9} "
          f"{'eval tokens/s':>13} {'vs 1 proc':>9} {memory:>21}")
    for model in args.models.split(","):
        base = None
        for n in counts:
            threads = max(1, args.cores // n)
            cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={n}",
                   "-m", "unlearning.bench", "scaling", "--worker", model, "--global-batch", str(args.global_batch),
                   "--seq-len", str(args.seq_len), "--steps", str(args.steps), "--warmup", str(args.warmup),
                   "--eval-items", str(args.eval_items),
                   "--device", args.device, "--data-dir", args.data_dir, "--cache-dir", args.cache_dir]
            t0 = time.perf_counter()
            proc = subprocess.run(cmd, capture_output=True, text=True,
                                  env={**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": str(threads)})
            line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
            if proc.returncode != 0 or not line:
                # torchrun ends its report with a rule of '='; the worker's own error sits above it
                tail = "\n".join(proc.stderr.strip().splitlines()[-25:])
                print(f"{model} x{n}: failed (exit {proc.returncode}); the launch's last lines:\n{tail}", file=sys.stderr)
                return 1
            r = json.loads(line[0][7:])
            base = base or r
            print(f"{model:14} {n:9d} {threads:12d} {r['step_s']:8.3f} {r['tokens_per_s']:9.0f} "
                  f"{r['tokens_per_s'] / base['tokens_per_s']:9.2f} {r['eval_tokens_per_s']:13.0f} "
                  f"{r['eval_tokens_per_s'] / base['eval_tokens_per_s']:9.2f} {r['peak_mib_per_process']:21.0f}",
                  flush=True)
            print(f"  ({model} x{n}: launch + run {time.perf_counter() - t0:.0f} s)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
