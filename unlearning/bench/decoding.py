"""`unlearning-bench decoding`: greedy decoding throughput, plain vs classifier-free guided.

Three decoders on the same prompts (SmolLM2-135M by default, batch 8, 64 new tokens), in one run,
interleaved, median of `--repeats` timings each:
  plain     model.generate, greedy (the baseline every ratio is against)
  ours      unlearning.eval.guided.guided_greedy: positive + negative contexts in one 2B-row pass per step
  builtin   transformers' generate(guidance_scale=, negative_prompt_ids=): a second, sequential
            forward pass per step for the negative context
EOS is replaced by a token id the model never emits so that every decoder runs exactly
`--new-tokens` steps (tokens/s = batch x steps / seconds; the run checks the step count).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch

QUESTIONS = [
    "What is the phone number of Maria Lopez?",
    "Write a short email to my landlord about a broken heater.",
    "Where does John Carter live? Give the full address.",
    "Summarise the benefits of regular exercise in two sentences.",
    "What is Emily Chen's date of birth and social security number?",
    "Explain what an IBAN is.",
    "Draft a reminder for a dentist appointment next Tuesday.",
    "Which company does Peter Novak work for, and what is his email?",
]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="unlearning-bench decoding", description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2_135m", choices=["smollm2_135m", "tiny"])
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--scale", type=float, default=3.0)
    ap.add_argument("--mode", default="log", choices=["log", "prob"])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=True, help="bf16 autocast (default on)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    ap.add_argument("--cache-dir", default=os.environ.get("UNLEARNING_CACHE", ".cache"))
    args = ap.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    from transformers.utils import logging as hf_logging

    from unlearning.data.base import collate
    from unlearning.eval.engine import chat_prompts
    from unlearning.eval.guided import guided_greedy
    from unlearning.generation import Guidance, greedy_config
    from unlearning.models import SmolLM2, TinyLlama
    from unlearning.precision import precision

    hf_logging.set_verbosity_error()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    if args.model == "tiny":
        model, tok = TinyLlama(cache_dir=args.cache_dir).load(QUESTIONS * 4)
    else:
        model, tok = SmolLM2(cache_dir=args.cache_dir).load()
    model.eval()
    g = Guidance(scale=args.scale, mode=args.mode)
    qs = [QUESTIONS[i % len(QUESTIONS)] for i in range(args.batch)]
    msgs = [[{"role": "user", "content": q}] for q in qs]
    pos = chat_prompts(tok, msgs, g.positive_prompt)
    neg = chat_prompts(tok, msgs, g.negative_prompt)
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    never = len(tok) - 1 if len(tok) - 1 not in (pad, tok.eos_token_id) else len(tok) - 2  # an EOS never emitted
    n = args.new_tokens
    pb = collate([{"input_ids": p} for p in pos], pad, padding_side="left")
    nb = collate([{"input_ids": p} for p in neg], pad, padding_side="left")
    common = dict(generation_config=greedy_config(), max_new_tokens=n, do_sample=False,
                  eos_token_id=never, pad_token_id=pad)

    @torch.no_grad()
    def plain():
        with precision(model, args.bf16):
            out = model.generate(input_ids=pb["input_ids"], attention_mask=pb["attention_mask"], **common)
        return out.shape[1] - pb["input_ids"].shape[1]

    def ours():
        return len(guided_greedy(model, pos, neg, n, never, pad, g, bf16=args.bf16)[0])

    @torch.no_grad()
    def builtin():
        with precision(model, args.bf16):
            out = model.generate(input_ids=pb["input_ids"], attention_mask=pb["attention_mask"],
                                 negative_prompt_ids=nb["input_ids"], negative_prompt_attention_mask=nb["attention_mask"],
                                 guidance_scale=args.scale, **common)
        return out.shape[1] - pb["input_ids"].shape[1]

    runs = {"plain greedy": plain, "this CFG (one 2B pass)": ours, "transformers CFG (builtin)": builtin}
    if args.mode == "prob":
        runs.pop("transformers CFG (builtin)")  # transformers implements only the log formula
    for fn in runs.values():  # warm-up (allocator, kernels)
        fn()
    times: dict[str, list[float]] = {k: [] for k in runs}
    for _ in range(args.repeats):
        for name, fn in runs.items():
            t = time.perf_counter()
            steps = fn()
            times[name].append(time.perf_counter() - t)
            if steps != n:
                raise SystemExit(f"{name} ran {steps} steps instead of {n}; timings would not compare")
    base = statistics.median(times["plain greedy"])
    print(f"decoding: model={args.model} batch={args.batch} new_tokens={n} gamma={args.scale} mode={args.mode} "
          f"bf16={args.bf16} threads={torch.get_num_threads()} repeats={args.repeats} (median)")
    print(f"{'decoder':<30}{'s/batch':>10}{'tokens/s':>11}{'x plain':>9}")
    for name, ts in times.items():
        m = statistics.median(ts)
        print(f"{name:<30}{m:>10.3f}{args.batch * n / m:>11.1f}{m / base:>9.2f}")
    return 0
