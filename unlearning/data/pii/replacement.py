"""PII-free replacement answers, tried in this order for each PII-bearing answer:

(a) optionally a model told not to use personal data, after the ORPO+CFG paper's data generation (Smirnov
    2024: an instructed model rewrites the answer without PII, an NER detector filters it): a configured model
    answers the same dialogue under a "no personal data" system prompt; only outputs the PII detector passes
    (and that are not empty or degenerate) are kept;
(b) the rewrite (`rewrite`, default): the original answer with each personal value replaced by a neutral
    placeholder naming its kind (`[email address]`), everything else kept, as the paper's rewrites keep the
    answer and drop the personal data; kept where the detector passes it;
(c) the `safe` text of the task template, mostly a refusal: the last fallback.
"""

from __future__ import annotations

import logging

from unlearning.pii_detector import PII_TYPES

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


PLACEHOLDERS = {"name": "[name]", "first": "[first name]", "last": "[last name]",
                **{t: f"[{label}]" for t, label in PII_TYPES.items() if t != "name"}}


def rewrite(answer: str, spans: list[dict]) -> str:
    """`answer` with each span ({"field" or "type", "start", "end"}, as `templates.render` gives them) replaced by
    its placeholder; spans may come in any order but must not overlap."""
    out, end = [], len(answer)
    for span in sorted(spans, key=lambda s: s["start"], reverse=True):
        if span["end"] > end:
            raise ValueError(f"overlapping PII spans at {span['start']}..{span['end']}")
        out.append(answer[span["end"]:end])
        out.append(PLACEHOLDERS.get(span.get("field") or span["type"], PLACEHOLDERS[span["type"]]))
        end = span["start"]
    out.append(answer[:end])
    return "".join(reversed(out))
