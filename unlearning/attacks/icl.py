"""In-context attack: each probe is preceded by a few forget-set question/answer pairs about other items.

The model is not changed. The shots are earlier chat turns (user question, assistant answer) drawn,
seeded, from the forget set, never the probed item itself (TOFU: another forget question; synthetic
PII: a forget turn about another person, so its PII can only help the model "remember", never give
the answer away; values shown in the prompt are excluded from leakage by the evaluator). Chat
benchmarks only (TOFU, synthetic PII): MUSE is raw text, refused at validation.
Recovery compares with the plain unlearned and target metrics. Written by hand: the prompt building.
"""

from __future__ import annotations

import dataclasses
import random

from unlearning.errors import UserError

SUPPORTED = ("tofu", "pii")


def with_shots(messages: list[dict], shots: list[dict]) -> list[dict]:
    """The shots go after any system message, before the rest of the conversation."""
    n = next((i for i, m in enumerate(messages) if m["role"] != "system"), len(messages))
    return list(messages[:n]) + shots + list(messages[n:])


class InContext:
    data_only = True  # changes what is asked, not the model
    measure = "forget"  # everything else would be the plain evaluation again (attacks/__init__.py)

    def __init__(self, shots: int = 3, seed: int = 0, **unknown):
        from unlearning.errors import reject_unknown

        reject_unknown("attack", "icl", unknown, ["shots", "seed"])
        if isinstance(shots, bool) or not isinstance(shots, int) or shots < 1:
            raise UserError(f"attacks.icl.shots={shots!r} must be a whole number >= 1")
        self.shots, self.seed = shots, seed

    def check(self, evaluator, data) -> None:
        if evaluator.name not in SUPPORTED:
            raise UserError(f"attack icl is for chat benchmarks ({list(SUPPORTED)}), not evaluator="
                            f"{evaluator.name}; drop icl from attack=[...]")
        if self.shots >= len(data.forget):
            raise UserError(f"attacks.icl.shots={self.shots}: the forget set has only {len(data.forget)} "
                            "examples to draw shots about other items from; use fewer shots")
        if evaluator.name == "pii":  # a PII probe's shots are forget turns about other people (transform below)
            from collections import Counter

            per_person = Counter((ex.meta or {}).get("person") for ex in data.forget)
            probed = {p["person"] for p in data.extra.get("probes", [])}
            fewest = min((len(data.forget) - per_person[person], person) for person in probed) if probed else None
            if fewest is not None and self.shots > fewest[0]:
                raise UserError(f"attacks.icl.shots={self.shots}: only {fewest[0]} forget turns are about people other "
                                f"than {fewest[1]}; use fewer shots or more people (dataset.people)")

    def _shots(self, pool, rng, keep) -> list[dict]:
        chosen = rng.sample([ex for ex in pool if keep(ex)], self.shots)
        return [m for ex in chosen for m in ({"role": "user", "content": ex.messages[-1]["content"]},
                                             {"role": "assistant", "content": ex.answer})]

    def transform(self, evaluator, data):
        rng = random.Random(self.seed)
        pool = list(data.forget)
        if evaluator.name == "tofu":
            forget = []
            for ex in data.extra["forget"]:
                q = ex.messages[-1]["content"]
                shots = self._shots(pool, rng, lambda o, q=q: o.messages[-1]["content"] != q)
                forget.append(dataclasses.replace(ex, messages=with_shots(ex.messages, shots)))
            return dataclasses.replace(data, extra={**data.extra, "forget": forget})
        probes = []
        for p in data.extra["probes"]:
            others = [ex for ex in pool if (ex.meta or {}).get("person") != p["person"]]
            if len(others) < self.shots:
                raise UserError(f"attacks.icl.shots={self.shots}: only {len(others)} forget turns are about people "
                                f"other than {p['person']}; use fewer shots")
            shots = self._shots(others, rng, lambda o: True)
            probes.append({**p, "messages": with_shots(p["messages"], shots)})
        return dataclasses.replace(data, extra={**data.extra, "probes": probes})

    def __repr__(self) -> str:
        return f"InContext(shots={self.shots}, seed={self.seed})"
