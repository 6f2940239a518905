"""`unlearning-bench methods`: seconds/step, tokens/s and peak RSS of every unlearning method.

Each method runs in a fresh subprocess (so peak RSS is that method's alone) through the
real shared loop (`unlearning.train.train`) on `smollm2_135m`, batch 4 x 128 tokens of
TOFU text (forget10 questions whose answers are the author's answers joined, cut at 128
tokens; retain batches the same from retain90). Step times are read after the warm-up
steps. Ratios are against GA measured in the same invocation. Rows `npo:retain_weight=0` and
`idk_dpo:retain_weight=0` isolate the forget term (GA has no retain term); `npo_live_ref` is NPO
with a live reference model instead of the cached log-probs, to show what the cache saves.
Run it under the heavy-run lock: `flock /tmp/unlearning-heavy.lock unlearning-bench methods`.
Written by hand: the subprocess driver and the step clock (a logger the loop calls each step).
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
from types import SimpleNamespace

DEFAULT = ("ga,graddiff,npo,npo:retain_weight=0,npo_live_ref:retain_weight=0,simnpo,idk_dpo,idk_dpo:retain_weight=0,rmu,"
           "wga,satimp,ceu,undial,llmu,pdu")
CONF = Path(__file__).resolve().parents[2] / "conf" / "method"


def parse_args(argv):
    p = argparse.ArgumentParser(prog="unlearning-bench methods", description=__doc__.splitlines()[0])
    p.add_argument("--methods", default=DEFAULT, help="comma list of NAME[:key=value...] (conf/method/NAME.yaml)")
    p.add_argument("--steps", type=int, default=3, help="timed steps per method")
    p.add_argument("--warmup", type=int, default=1, help="untimed steps first")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--seq-len", type=int, default=128)
    p.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=True, help="bf16 autocast (trainer.bf16)")
    p.add_argument("--data-dir", default=os.environ.get("UNLEARNING_DATA_DIR"))
    p.add_argument("--cache-dir", default=os.environ.get("UNLEARNING_CACHE", ".cache"))
    p.add_argument("--worker", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def tofu_items(tok, path: Path, n: int, seq_len: int) -> list[dict]:
    from unlearning.data.base import chat, encode
    from unlearning.errors import read_json_lines

    rows = read_json_lines(path)
    out = []
    for i in range(n):
        q = rows[i % len(rows)]["question"]
        answer = " ".join(rows[(i + k) % len(rows)]["answer"] for k in range(8))
        ex = chat(q, answer)
        item = encode(tok, ex, seq_len)
        if len(item["input_ids"]) != seq_len:
            raise SystemExit(f"bench: could not fill {seq_len} tokens from {path}")
        out.append({**item, "example": ex})
    return out


def build_method(spec: str):
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    name, *overrides = spec.split(":")
    live = name == "npo_live_ref"
    cfg = OmegaConf.load(CONF / f"{'npo' if live else name}.yaml")
    cfg = OmegaConf.merge(cfg, OmegaConf.from_dotlist(overrides))
    method = instantiate(cfg)
    if live:
        method = _live_npo(method)
    return method


def _live_npo(npo):
    """NPO with the reference recomputed by a second model every step (the uncached baseline)."""
    from unlearning.methods.base import sequence_logp
    from unlearning.methods.npo import npo_loss
    from unlearning.methods.reference import Reference

    class LiveNPO(type(npo)):
        def prepare(self, model, tokenizer, forget, retain, ctx):
            self.reference = Reference(model, ctx)
            return forget

        def loss(self, model, batch):
            f = batch["forget"]
            with self.reference(model) as ref:
                ref_lp, _ = sequence_logp(ref, f)
            logp, _ = sequence_logp(model, f)
            return self.forget_weight * npo_loss(logp, ref_lp, self.beta), {}

    live = LiveNPO.__new__(LiveNPO)
    live.__dict__.update(npo.__dict__)
    live.needs_retain = False
    return live


class StepClock:
    """The loop calls `log` after every optimiser step: record when."""

    def __init__(self):
        self.times = [time.perf_counter()]

    def log(self, logs, step=None):
        self.times.append(time.perf_counter())


def worker(args) -> dict:
    import torch
    from omegaconf import OmegaConf

    from unlearning.models import SmolLM2
    from unlearning.train import TrainSettings, train

    torch.manual_seed(0)
    model, tok = SmolLM2(cache_dir=args.cache_dir).load()
    tofu = Path(args.data_dir or "") / "tofu"
    total = args.warmup + args.steps
    n = args.batch_size * total
    forget = tofu_items(tok, tofu / "forget10.json", n, args.seq_len)
    retain = tofu_items(tok, tofu / "retain90.json", 64, args.seq_len)
    method = build_method(args.worker)
    ctx = SimpleNamespace(cfg=OmegaConf.create({"trainer": {"bf16": args.bf16, "lora": {"enabled": False}}}),
                          data_dir=args.data_dir, max_length=args.seq_len)
    t0 = time.perf_counter()
    forget = method.prepare(model, tok, forget, retain, ctx)
    prepare_s = time.perf_counter() - t0
    clock = StepClock()
    settings = TrainSettings(lr=1e-5, epochs=1, max_steps=total, batch_size=args.batch_size, bf16=args.bf16)
    train(model, method, forget, retain, settings, tok.pad_token_id, logger=clock, desc="bench")
    step_s = (clock.times[-1] - clock.times[args.warmup]) / args.steps
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"method": args.worker, "step_s": step_s, "tokens_per_s": args.batch_size * args.seq_len / step_s,
            "peak_rss_mib": peak_mib, "prepare_s": prepare_s}


def main(argv=None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.worker:
        print("RESULT " + json.dumps(worker(args)), flush=True)
        return 0
    if not args.data_dir:
        print("unlearning-bench methods: set UNLEARNING_DATA_DIR or --data-dir (TOFU text)", file=sys.stderr)
        return 2
    specs = [s for s in args.methods.split(",") if s]
    if not specs or specs[0] != "ga":
        specs = ["ga"] + [s for s in specs if s != "ga"]  # the baseline, measured in this run
    base = ["--steps", str(args.steps), "--warmup", str(args.warmup), "--batch-size", str(args.batch_size),
            "--seq-len", str(args.seq_len), "--bf16" if args.bf16 else "--no-bf16", "--data-dir", args.data_dir,
            "--cache-dir", args.cache_dir]
    rows = []
    print(f"# methods benchmark: smollm2_135m, batch {args.batch_size} x {args.seq_len} tokens, "
          f"{args.warmup} warm-up + {args.steps} timed steps, bf16={args.bf16}, torch threads per process default")
    for spec in specs:
        cmd = [sys.executable, "-m", "unlearning.bench", "methods", *base, "--worker", spec]
        proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
        line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
        if proc.returncode != 0 or not line:
            print(f"{spec}: failed (exit {proc.returncode}): {proc.stderr.strip().splitlines()[-1:]}", file=sys.stderr)
            return 1
        rows.append(json.loads(line[0][7:]))
        r = rows[-1]
        print(f"  done {spec}: {r['step_s']:.2f} s/step", file=sys.stderr, flush=True)
    ga = rows[0]
    print(f"{'method':24} {'s/step':>8} {'tokens/s':>9} {'peak RSS MiB':>13} {'time/GA':>8} {'RSS/GA':>7} {'prepare s':>10}")
    for r in rows:
        print(f"{r['method']:24} {r['step_s']:8.2f} {r['tokens_per_s']:9.1f} {r['peak_rss_mib']:13.0f} "
              f"{r['step_s'] / ga['step_s']:8.2f} {r['peak_rss_mib'] / ga['peak_rss_mib']:7.2f} {r['prepare_s']:10.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
