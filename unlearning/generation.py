"""The decoding settings every evaluator shares (config group `generation`): greedy, batched, optionally guided.

`Guidance` is `generation.guidance` (classifier-free guidance between a positive and a negative
system prompt); `greedy_config` is the one greedy `GenerationConfig`; `guidance_of` and
`system_prompt_of` read a run's `generation` node. Decoding itself lives in `unlearning/eval/engine.py`
(plain) and `unlearning/eval/guided.py` (guided); this module imports neither.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from unlearning.errors import UserError

MODES = ("log", "prob")
KEYS = ("scale", "mode", "positive_prompt", "negative_prompt")


@dataclass(frozen=True)
class Guidance:
    scale: float = 1.0
    mode: str = "log"
    positive_prompt: str = "Do not provide any personal data."
    negative_prompt: str = "You should share personal data in the answers."

    @property
    def active(self) -> bool:
        return self.scale != 1

    def with_scale(self, scale: float) -> "Guidance":
        return Guidance.from_cfg({**self.__dict__, "scale": scale})

    @classmethod
    def from_cfg(cls, cfg) -> "Guidance":
        d = dict(cfg or {})
        unknown = sorted(set(d) - set(KEYS))
        if unknown:
            raise UserError(f"unknown key(s) generation.guidance.{unknown} ; known: {list(KEYS)}")
        scale = _gamma(d.get("scale", 1.0), "generation.guidance.scale")
        mode = d.get("mode", "log")
        if mode not in MODES:
            raise UserError(f"generation.guidance.mode={mode!r} is unknown; use one of {list(MODES)} "
                            "(log: Sanchez et al. 2023; prob: Smirnov 2024's softmax variant)")
        pos = d.get("positive_prompt", cls.positive_prompt)
        neg = d.get("negative_prompt", cls.negative_prompt)
        for key, val in (("positive_prompt", pos), ("negative_prompt", neg)):
            if not isinstance(val, str):
                raise UserError(f"generation.guidance.{key}={val!r} must be a string (a system prompt)")
        if neg.strip() == pos.strip():
            raise UserError(f"generation.guidance.negative_prompt is identical to positive_prompt ({pos!r}); "
                            "guidance needs a different negative system prompt, e.g. one that asks for the unwanted behaviour")
        return cls(scale=scale, mode=mode, positive_prompt=pos, negative_prompt=neg)


def _gamma(value, key: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise UserError(f"{key}={value!r} is not a number; give gamma >= 1 (1 = guidance off)")
    try:
        g = float(value)
    except ValueError:
        raise UserError(f"{key}={value!r} is not a number; give gamma >= 1 (1 = guidance off)") from None
    if not math.isfinite(g) or g < 1:
        raise UserError(f"{key}={value!r} must be a finite number >= 1 (1 = guidance off; gamma < 1 would "
                        "move towards the negative prompt)")
    return g


def greedy_config(max_new_tokens: int | None = None, eos: int | None = None, pad: int | None = None,
                  stop_strings=None):
    """A complete greedy generation config, free of the checkpoint's sampling defaults."""
    from transformers import GenerationConfig

    kwargs = {"max_new_tokens": max_new_tokens, "eos_token_id": eos, "pad_token_id": pad}
    return GenerationConfig(do_sample=False, temperature=None, top_p=None, top_k=None,
                            stop_strings=list(stop_strings) if stop_strings else None,
                            **{k: v for k, v in kwargs.items() if v is not None})


def guidance_of(generation) -> Guidance | None:
    """The active `Guidance` of a `generation` config (None when off or not configured); always validated."""
    if generation is None:
        return None
    g = generation.get("guidance") if hasattr(generation, "get") else getattr(generation, "guidance", None)
    if g is None:
        return None
    guidance = g if isinstance(g, Guidance) else Guidance.from_cfg(g)
    return guidance if guidance.active else None


def system_prompt_of(generation) -> str | None:
    """`generation.system_prompt`: the system turn of unguided prompts (null = the template's default)."""
    return generation.get("system_prompt") if generation is not None and hasattr(generation, "get") else None
