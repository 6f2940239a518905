"""Classifier-free guided greedy decoding (config `generation.guidance`, `unlearning/generation.py`), batched.

Each decoding step runs the positive and the negative context of every row in ONE
forward pass over 2B rows (left padding, one KV cache for the whole 2B batch):
`model.generate` drives the loop, and a logits processor combines row i (positive)
with row i+B (negative) and writes the guided scores into both rows, so both pick
the same token and the two contexts stay in step. transformers' built-in
`generate(guidance_scale=, negative_prompt_ids=)` instead runs the negative context
as a second, sequential forward pass per step.

Written by hand: the paired-row logits processor and its stopping criterion (no
library pairs rows of one batch); decoding, caching and stop strings are transformers'.
"""

from __future__ import annotations

import torch
from transformers import LogitsProcessor, LogitsProcessorList, StoppingCriteria, StoppingCriteriaList

from unlearning.data.base import collate
from unlearning.errors import UserError
from unlearning.generation import MODES, Guidance, greedy_config
from unlearning.precision import precision


def combine(pos_logits: torch.Tensor, neg_logits: torch.Tensor, scale: float, mode: str) -> torch.Tensor:
    """Guided next-token scores from the positive and negative contexts' logits."""
    pos_logits, neg_logits = pos_logits.float(), neg_logits.float()
    if mode == "log":
        # Sanchez et al. 2023 ("Stay on topic with Classifier-Free Guidance"): log p_neg + gamma (log p_pos - log p_neg).
        lp, ln = torch.log_softmax(pos_logits, -1), torch.log_softmax(neg_logits, -1)
        return ln + scale * (lp - ln)
    if mode == "prob":
        # Smirnov 2024 ("CFG in LLMs Safety", sec. 5; RGSmirnov/cfg_safety_llm README): same on softmax probabilities.
        pp, pn = torch.softmax(pos_logits, -1), torch.softmax(neg_logits, -1)
        return pn + scale * (pp - pn)
    raise UserError(f"generation.guidance.mode={mode!r} is unknown; use one of {list(MODES)}")


class PairedGuidance(LogitsProcessor):
    """Rows [0, B) are positive contexts, [B, 2B) their negative twins: both get the guided scores."""

    def __init__(self, batch: int, scale: float, mode: str):
        self.batch, self.scale, self.mode = batch, scale, mode

    def __call__(self, input_ids, scores):
        b = self.batch
        guided = combine(scores[:b], scores[b:], self.scale, self.mode)
        return torch.cat([guided, guided], dim=0)


class PairedStop(StoppingCriteria):
    """Stop strings judged on the positive rows only; a twin stops with its row (contexts stay in step)."""

    def __init__(self, batch: int, inner: StoppingCriteria):
        self.batch, self.inner = batch, inner

    def __call__(self, input_ids, scores, **kwargs):
        done = self.inner(input_ids[: self.batch], scores[: self.batch] if scores is not None else None, **kwargs)
        return torch.cat([done, done], dim=0)


@torch.no_grad()
def guided_greedy(model, pos_prompts: list[list[int]], neg_prompts: list[list[int]], max_new_tokens: int,
                  eos_id: int, pad_id: int, guidance: Guidance, bf16: bool = False,
                  stop_strings: list[str] | None = None, tokenizer=None) -> list[list[int]]:
    """New token ids per positive row, decoded greedily under guidance (one 2B-row pass per step)."""
    from transformers import StopStringCriteria

    if len(pos_prompts) != len(neg_prompts):
        raise ValueError(f"{len(pos_prompts)} positive prompts but {len(neg_prompts)} negative ones")
    b = len(pos_prompts)
    batch = collate([{"input_ids": p} for p in list(pos_prompts) + list(neg_prompts)], pad_id, padding_side="left")
    batch = {k: v.to(model.device) for k, v in batch.items()}
    stopping = StoppingCriteriaList()
    if stop_strings:
        stopping.append(PairedStop(b, StopStringCriteria(tokenizer, list(stop_strings))))
    with precision(model, bf16):
        gen = model.generate(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                             generation_config=greedy_config(), max_new_tokens=max_new_tokens,
                             do_sample=False, eos_token_id=eos_id, pad_token_id=pad_id,
                             logits_processor=LogitsProcessorList([PairedGuidance(b, guidance.scale, guidance.mode)]),
                             stopping_criteria=stopping)
    return gen[:b, batch["input_ids"].shape[1]:].tolist()
