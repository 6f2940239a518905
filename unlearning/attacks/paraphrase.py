"""Paraphrase attack: the same evaluation, asked in words the model was not unlearned on.

The model is not changed; the evaluator's probes are:
- TOFU: each forget question is replaced by its `paraphrased_question` (a field of TOFU's
  `forget*_perturbed` files), the answers scored are unchanged;
- synthetic PII: only the probes whose question or prefix never occurs in training (`seen` false:
  the held-out probe templates of `unlearning/data/pii/templates.py` and continuation probes);
- MUSE: its KnowMem questions have no paraphrases in the data, so the attack is refused at validation.
Recovery compares with the plain (unparaphrased) unlearned and target metrics.
Written by hand: the probe substitution (a few lines per benchmark).
"""

from __future__ import annotations

import dataclasses

from unlearning.errors import UserError

SUPPORTED = ("tofu", "pii")


class Paraphrase:
    data_only = True  # changes what is asked, not the model
    measure = "forget"  # everything else would be the plain evaluation again (attacks/__init__.py)

    def __init__(self, **unknown):
        from unlearning.errors import reject_unknown

        reject_unknown("attack", "paraphrase", unknown, [])

    def check(self, evaluator, data) -> None:
        if evaluator.name not in SUPPORTED:
            raise UserError(f"attack paraphrase is not available for evaluator={evaluator.name}: its data has no "
                            f"paraphrased probes (only {list(SUPPORTED)}); drop paraphrase from attack=[...]")
        if evaluator.name == "tofu":
            missing = [ex.id for ex in data.extra.get("forget", []) if not (ex.meta or {}).get("paraphrased_question")]
            if missing:
                raise UserError(f"attack paraphrase: forget item {missing[0]} has no paraphrased_question (TOFU's "
                                "forget*_perturbed files carry it); use the TOFU data files unmodified")
        elif not [p for p in data.extra.get("probes", []) if not p["seen"]]:
            raise UserError("attack paraphrase: the PII benchmark has no unseen probes; keep "
                            "dataset.unseen_direct_per_type >= 1")

    def transform(self, evaluator, data):
        if evaluator.name == "tofu":
            forget = [dataclasses.replace(ex, messages=ex.messages[:-1] + [
                {"role": "user", "content": ex.meta["paraphrased_question"]}]) for ex in data.extra["forget"]]
            return dataclasses.replace(data, extra={**data.extra, "forget": forget})
        probes = [p for p in data.extra["probes"] if not p["seen"]]
        return dataclasses.replace(data, extra={**data.extra, "probes": probes})

    def __repr__(self) -> str:
        return "Paraphrase()"
