"""Preference pairs for unlearning, plain and CFG-aware (ORPO+CFG, "Classifier-free guidance in LLMs Safety").

An Example with `meta["chosen"]` / `meta["rejected"]` is a plain pair (prompt = its
messages). The CFG-aware set holds each pair twice: under the positive system prompt as
is, and under the negative system prompt with chosen and rejected swapped, so that the
model learns what the negative context should produce and guidance can push away from it.
"""

from __future__ import annotations

from dataclasses import replace

from unlearning.data.base import Example
from unlearning.errors import UserError


def _with_system(messages: list[dict], system: str) -> list[dict]:
    return [{"role": "system", "content": system}] + [m for m in messages if m["role"] != "system"]


def preference_pairs(examples: list[Example]) -> list[Example]:
    """Examples that carry a pair; answer = chosen (the supervised side of ORPO)."""
    out = []
    for ex in examples:
        if "chosen" not in ex.meta or "rejected" not in ex.meta:
            raise UserError(f"example {ex.id!r} has no meta chosen/rejected: this method needs a dataset with "
                            "preference pairs (e.g. dataset=synthetic_pii)")
        if not ex.is_chat:
            raise UserError(f"example {ex.id!r} is raw text; preference pairs need chat examples with a prompt")
        out.append(replace(ex, answer=ex.meta["chosen"], meta=dict(ex.meta)))
    return out


def cfg_aware_pairs(examples: list[Example], positive_prompt: str, negative_prompt: str) -> list[Example]:
    """Each pair under `positive_prompt`, then swapped (chosen <-> rejected) under `negative_prompt`."""
    out = []
    for ex in preference_pairs(examples):
        chosen, rejected = ex.meta["chosen"], ex.meta["rejected"]
        out.append(replace(ex, id=f"{ex.id}/pos", answer=chosen, messages=_with_system(ex.messages, positive_prompt),
                           meta={**ex.meta, "chosen": chosen, "rejected": rejected, "context": "positive"}))
        out.append(replace(ex, id=f"{ex.id}/neg", answer=rejected, messages=_with_system(ex.messages, negative_prompt),
                           meta={**ex.meta, "chosen": rejected, "rejected": chosen, "context": "negative"}))
    return out
