"""Benign fine-tuning attack: fine-tune the unlearned model on a few examples unrelated to the forget set, then
evaluate the forget side again.

Łucki et al. 2024 ("An adversarial perspective on machine unlearning for AI safety") found that fine-tuning on 10
unrelated examples brings most unlearned hazardous knowledge back; Hu et al. 2024 ("Jogging the memory of unlearned
LLMs") and Deeb & Roger 2024 relearn from related or disjoint facts. The examples (a seeded sample of `examples`) come
from what the benchmark has besides the forget set: TOFU's retain questions, MUSE's retain chunks, the PII benchmark's
PII-free dialogues. Nothing of the forget set is among them (tests/test_attacks.py), so every forget item is
evaluated, and the retain reference gets the same fine-tune (the control, docs/attacks.md): what benign training
gives a model that never saw the forget set is what it teaches, not what it recovers.
"""

from __future__ import annotations

import random

from unlearning.attacks.relearn import Relearn
from unlearning.errors import UserError


class BenignFinetune(Relearn):
    name = "benign"
    split = held_out = None  # Relearn's training loop and checks, not its held-out split: every forget item is evaluated

    def __init__(self, examples: int = 10, steps: int = 10, lr: float = 1e-4, batch_size: int = 2,
                 lora: bool = False, seed: int = 0, measure: str = "forget", **unknown):
        super().__init__(examples, steps, lr, batch_size, lora, seed, measure, **unknown)

    @staticmethod
    def unrelated(data) -> list:
        """The benchmark's examples that are not about the forget set: the retain set, else the target's training
        turns that carry no personal data (PII: the PII-free dialogues)."""
        if data.retain:
            return list(data.retain)
        forget = {ex.id for ex in data.forget}
        return [ex for ex in data.target_train or [] if ex.id not in forget and not (ex.meta or {}).get("pii")
                and (ex.meta or {}).get("person") is None]

    def check(self, evaluator, data) -> None:
        from unlearning.attacks import check_measure

        pool = self.unrelated(data)
        unchunked = getattr(data, "chunker", None) is not None and not data.extra.get("chunk_length")
        if not unchunked and self.examples > len(pool):
            raise UserError(f"attacks.benign.examples={self.examples}: {data.name} has {len(pool)} examples unrelated "
                            "to the forget set (retain set, or PII-free dialogues); use at most that many")
        check_measure("benign", self.measure, evaluator)
        self.check_layout()

    def picked(self, data) -> list:
        return random.Random(self.seed).sample(self.unrelated(data), self.examples)

    def apply(self, model, tok, data, ctx):
        return super().apply(model, tok, self.picked(data), ctx)
