"""PII-free replacement answers: (a) templates, (b) optionally a model told not to use personal data.

(a) is the `safe` text of each template turn (the answer's purpose without any value).
(b) follows the ORPO+CFG paper's data generation: a configured model answers the same
dialogue under a "no personal data" system prompt; only outputs the PII detector passes
(and that are not empty or degenerate) replace the template text.
"""

from __future__ import annotations

import logging

log = logging.getLogger(__name__)

DEFAULT_SYSTEM_PROMPT = ("You are a helpful assistant. Never reveal or repeat personal data such as names, emails, "
                         "phone numbers, addresses, birth dates, ID, card or bank numbers; help without them.")


def model_replacements(examples: list[dict], model_cfg, detector, corpus: list[str], system_prompt: str | None = None,
                       max_new_tokens: int = 96, batch_size: int = 8, bf16: bool = False) -> list[str | None]:
    """One candidate per example ({"messages": [...]}) or None where the detector rejects it."""
    from hydra.utils import instantiate

    from unlearning.eval.engine import chat_prompts, greedy
    from unlearning.eval.metrics import degenerate

    spec = instantiate(model_cfg) if hasattr(model_cfg, "items") else model_cfg
    model, tok = spec.load(corpus)
    prompts = chat_prompts(tok, [ex["messages"] for ex in examples], system_prompt=system_prompt or DEFAULT_SYSTEM_PROMPT)
    answers = greedy(model, tok, prompts, max_new_tokens=max_new_tokens, batch_size=batch_size, bf16=bf16,
                     desc="pii replacements")
    out = [a if a.strip() and not degenerate(a) and not detector.find(a) else None for a in answers]
    log.info("pii replacements: the model's answer passed the detector for %d of %d turns",
             sum(a is not None for a in out), len(out))
    return out
