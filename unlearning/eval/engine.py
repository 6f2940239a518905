"""The shared evaluation engine: batched teacher-forced log-probs and batched greedy generation.

Every evaluator (TOFU, MUSE, PII) goes through these two functions, so a likelihood
pass per (split, answer variant) feeds every metric that needs it, and guided
decoding (classifier-free guidance, `generation.guidance`) works for all of them.
Written by hand: length-sorted batching and per-token statistics (argmax hits and
the mean/variance of log p under the model's own distribution, for Min-K%++).

Under a multi-process launch where every process holds the whole model (one GPU each, DDP),
each process runs every N-th of the length-sorted batches and the results are exchanged
(`distributed.all_gather`): N processes evaluate N times as fast, and since each batch is the
one a single process would run (same rows, same padding), the numbers are the same.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from unlearning.data.base import IGNORE, collate, prompt_ids
from unlearning.distributed import all_gather, eval_share
from unlearning.generation import greedy_config, guidance_of, system_prompt_of
from unlearning.precision import precision


@dataclass
class TokenScores:
    """Per answer token (labels != -100), in order."""

    logp: np.ndarray            # log p(label token | prefix)
    hit: np.ndarray             # argmax prediction == label
    mu: np.ndarray | None = None    # E_{z~p}[log p(z)] at that position (Min-K%++)
    var: np.ndarray | None = None   # Var_{z~p}[log p(z)]

    @property
    def avg_nll(self) -> float:
        return float(-self.logp.mean()) if len(self.logp) else float("nan")


MASKS = ("lengths", "not_pad")


def _masked(batch: dict, pad_id: int, mask: str) -> dict:
    """The batch's attention mask: from the sequence lengths (collate), or OpenUnlearning's `input_ids != pad_id`,
    which also hides every in-sequence token equal to the pad id (every `<|im_end|>` where pad = eos)."""
    if mask not in MASKS:
        raise ValueError(f"attention mask {mask!r}: use one of {MASKS}")
    if mask == "not_pad":
        batch["attention_mask"] = (batch["input_ids"] != pad_id).long()
    return batch


def _batches(order: list[int], size: int):
    for i in range(0, len(order), size):
        yield order[i : i + size]


def _my_batches(order: list[int], size: int) -> tuple[list[list[int]], bool]:
    """This process's share of the batches (every N-th), and whether it shows the progress bar (the first does)."""
    r, n = eval_share()
    return list(_batches(order, size))[r::n], r == 0


def _everyone(mine: dict, count: int) -> list:
    """The per-item results of every process's batches, in item order (indices 0..count-1)."""
    if eval_share()[1] == 1:
        return [mine[i] for i in range(count)]
    merged = {}
    for part in all_gather(mine):
        merged.update(part)
    return [merged[i] for i in range(count)]


@torch.no_grad()
def score(model, items: list[dict], pad_id: int, batch_size: int = 16, stats: bool = False,
          bf16: bool = False, desc: str | None = None, mask: str = "lengths", sort: bool = True,
          cross_entropy: bool = False) -> list[TokenScores]:
    """Teacher-forced scores of the labelled tokens of each encoded item (input_ids, labels).

    `sort=False` batches in data order, `mask="not_pad"` builds OpenUnlearning's mask and `cross_entropy=True`
    takes log p from torch's cross_entropy over the transposed logits, as its `evaluate_probability` does
    (`evaluator.compat`): in fp32 on CPU that log-softmax along a strided dimension is off the exact value by up to
    ~1e-4 nats per item on a 49k vocabulary, which `label_stats` is not (README, "Parity with OpenUnlearning")."""
    from tqdm.auto import tqdm

    model.eval()
    order = sorted(range(len(items)), key=lambda i: len(items[i]["input_ids"])) if sort else list(range(len(items)))
    out: dict[int, TokenScores] = {}
    batches, shows = _my_batches(order, batch_size)
    for idx in tqdm(batches, desc=desc, disable=desc is None or not shows, leave=False):
        batch = collate([{"input_ids": items[i]["input_ids"], "labels": items[i]["labels"]} for i in idx], pad_id)
        batch = {k: v.to(model.device) for k, v in _masked(batch, pad_id, mask).items()}
        with precision(model, bf16):
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        labels = batch["labels"][:, 1:]
        labelled = labels != IGNORE
        lp, hit, mu, var = label_stats(logits[:, :-1][labelled], labels[labelled], stats)
        if cross_entropy:
            lp = -torch.nn.functional.cross_entropy(logits[:, :-1].float().transpose(1, 2), labels,
                                                    ignore_index=IGNORE, reduction="none")[labelled]
        lengths = labelled.sum(1).tolist()
        start = 0
        for row, i in enumerate(idx):  # the labelled positions of row `row` are the next lengths[row] entries
            end = start + lengths[row]
            out[i] = TokenScores(
                logp=lp[start:end].double().cpu().numpy(),
                hit=hit[start:end].cpu().numpy(),
                mu=mu[start:end].double().cpu().numpy() if stats else None,
                var=var[start:end].double().cpu().numpy() if stats else None,
            )
            start = end
    return _everyone(out, len(items))


def label_stats(logits: torch.Tensor, labels: torch.Tensor, stats: bool = False, chunk: int = 1024):
    """For N labelled positions (logits [N, V], labels [N]): log p(label), argmax == label and, for Min-K%++,
    the mean and variance of log p under p. Computed `chunk` positions at a time in fp32, so no full-vocabulary
    fp32 log-softmax of the whole batch is ever held (batch 16 x 1024 tokens x 128k vocabulary would be 8 GiB);
    prompt positions (no label) are never scored at all."""
    lp, hit, mu, var = [], [], [], []
    for s in range(0, labels.shape[0], chunk):
        x = logits[s : s + chunk].float()
        y = labels[s : s + chunk]
        lse = torch.logsumexp(x, dim=-1)
        lp.append(x.gather(-1, y.unsqueeze(-1)).squeeze(-1) - lse)
        hit.append(x.argmax(-1) == y)
        if stats:
            logp = x - lse.unsqueeze(-1)
            p = logp.exp()
            m = (p * logp).sum(-1)
            mu.append(m)
            var.append((p * logp.square()).sum(-1) - m.square())

    def cat(parts, dtype=torch.float32):
        return torch.cat(parts) if parts else logits.new_zeros(0, dtype=dtype)

    return cat(lp), cat(hit, torch.bool), (cat(mu) if stats else None), (cat(var) if stats else None)


def chat_prompts(tokenizer, messages_list: list[list[dict]], system_prompt: str | None = None) -> list[list[int]]:
    """Token ids of chat prompts; `system_prompt` (if set) replaces/sets the system turn."""
    out = []
    for msgs in messages_list:
        if system_prompt is not None:
            msgs = [{"role": "system", "content": system_prompt}] + [m for m in msgs if m["role"] != "system"]
        out.append(prompt_ids(tokenizer, msgs))
    return out


def cut(text: str, stop_strings) -> str:
    for s in stop_strings or ():
        if s and s in text:
            text = text.split(s)[0]
    return text.strip()


@torch.no_grad()
def decode(tokenizer, ids: list[int], clean_up: bool | None = None) -> str:
    """Token ids to text without special tokens. `clean_up=True` applies the tokenizer's clean-up of tokenization
    spaces (" 's" -> "'s", " ," -> ","...) explicitly: transformers 4.x did so in `decode`, 5.x no longer does for
    every tokenizer (SmolLM2's "a 'safer" stays), and OpenUnlearning's output was decoded by 4.51."""
    if not clean_up:
        kwargs = {} if clean_up is None else {"clean_up_tokenization_spaces": False}
        return tokenizer.decode(ids, skip_special_tokens=True, **kwargs)
    # once: the clean-up is not idempotent ("x  ." -> "x ." -> "x."), and 5.x still applies it for some tokenizers
    return tokenizer.clean_up_tokenization(tokenizer.decode(ids, skip_special_tokens=True,
                                                            clean_up_tokenization_spaces=False))


def greedy(model, tokenizer, prompts: list[list[int]], max_new_tokens: int, batch_size: int = 16,
           stop_strings: list[str] | None = None, bf16: bool = False, desc: str | None = None,
           negative_prompts: list[list[int]] | None = None, guidance=None, mask: str = "lengths",
           sort: bool = True, clean_up: bool | None = None) -> list[str]:
    """Batched greedy decoding with left padding; returns the decoded continuations, cut at stops.

    With `guidance` (a `unlearning.generation.Guidance` whose scale != 1) and
    `negative_prompts`, each step runs both contexts in one batched pass (CFG).
    `mask`, `sort` as in `score`; `clean_up` is the decoder's clean_up_tokenization_spaces (None: the tokenizer's).
    """
    from tqdm.auto import tqdm

    model.eval()
    eos = tokenizer.eos_token_id
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i])) if sort else list(range(len(prompts)))
    texts: dict[int, str] = {}
    guided = guidance is not None and guidance.active and negative_prompts is not None
    batches, shows = _my_batches(order, batch_size)
    for idx in tqdm(batches, desc=desc, disable=desc is None or not shows, leave=False):
        if guided:
            from unlearning.eval.guided import guided_greedy  # imports this module's neighbours only

            new = guided_greedy(model, [prompts[i] for i in idx], [negative_prompts[i] for i in idx],
                                max_new_tokens=max_new_tokens, eos_id=eos, pad_id=pad, guidance=guidance,
                                bf16=bf16, stop_strings=stop_strings, tokenizer=tokenizer)
        else:
            batch = collate([{"input_ids": prompts[i]} for i in idx], pad, padding_side="left")
            batch = {k: v.to(model.device) for k, v in _masked(batch, pad, mask).items()}
            kwargs = {"tokenizer": tokenizer} if stop_strings else {}
            with precision(model, bf16):
                gen = model.generate(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                                     generation_config=greedy_config(max_new_tokens, eos, pad, stop_strings),
                                     **kwargs)
            new = gen[:, batch["input_ids"].shape[1]:].tolist()
        for row, i in enumerate(idx):
            toks = new[row]
            if eos in toks:
                toks = toks[: toks.index(eos)]
            texts[i] = cut(decode(tokenizer, toks, clean_up), stop_strings)
    return _everyone(texts, len(prompts))


def answer(model, tokenizer, messages_list: list[list[dict]], max_new_tokens: int, generation=None,
           stop_strings: list[str] | None = None, desc: str | None = None) -> list[str]:
    """Greedy answers to chat prompts with the run's decoding settings (batch size, bf16, CFG).

    Under guidance, the positive context carries the positive system prompt and the
    negative context the negative one; both are decoded in one batched pass per step.
    """
    gen = generation or {}
    batch_size = int(gen.get("batch_size", 16))
    bf16 = gen.get("bf16", False)  # true, false or "auto" (unlearning/precision.py)
    guidance = guidance_of(generation)
    if guidance is None:
        prompts = chat_prompts(tokenizer, messages_list, system_prompt=system_prompt_of(generation))
        return greedy(model, tokenizer, prompts, max_new_tokens, batch_size, stop_strings, bf16, desc)
    pos = chat_prompts(tokenizer, messages_list, system_prompt=guidance.positive_prompt)
    neg = chat_prompts(tokenizer, messages_list, system_prompt=guidance.negative_prompt)
    return greedy(model, tokenizer, pos, max_new_tokens, batch_size, stop_strings, bf16, desc,
                  negative_prompts=neg, guidance=guidance)
