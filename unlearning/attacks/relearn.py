"""Relearning attack: fine-tune the unlearned model on a few forget examples, evaluate on the rest.

Held-out forget examples (a seeded sample of `examples` items) are trained on with the shared loop
(`unlearning.train.train`, plain NLL, `steps` steps at `lr`, optionally LoRA); the evaluator then runs
on the forget items that were NOT trained on (`evaluator.without(data, held)`: TOFU drops those
questions, the PII benchmark drops the probes about the held-out turns' person and PII type, MUSE drops the
VerbMem / PrivLeak texts that overlap a held-out chunk and the KnowMem questions it answers). The
recovery baseline is measured on that same remainder: the unlearned model and the target are
evaluated on it too, so the three numbers compare like with like.
"""

from __future__ import annotations

import random

from unlearning.errors import UserError


class Relearn:
    name = "relearn"  # the attack's name in messages (attacks.<name>.*)

    def __init__(self, examples: int = 4, steps: int = 10, lr: float = 1e-4, batch_size: int = 2,
                 lora: bool = False, seed: int = 0, measure: str = "all", **unknown):
        from unlearning.errors import reject_unknown

        reject_unknown("attack", self.name, unknown, ["examples", "steps", "lr", "batch_size", "lora", "seed",
                                                      "measure"])
        for key, value in (("examples", examples), ("steps", steps), ("batch_size", batch_size)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise UserError(f"attacks.{self.name}.{key}={value!r} must be a whole number >= 1")
        if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not lr > 0:
            raise UserError(f"attacks.{self.name}.lr={lr!r} must be a number > 0")
        self.examples, self.steps, self.lr, self.batch_size = examples, steps, float(lr), batch_size
        self.lora, self.seed, self.measure = bool(lora), seed, measure  # measure: checked in check()

    def check(self, evaluator, data) -> None:
        """Called by the validation phase: the evaluator must know how to drop items, and enough must remain."""
        from unlearning.attacks import check_measure

        if not hasattr(evaluator, "without"):
            raise UserError(f"attack relearn needs an evaluator that can evaluate on the rest of the forget set; "
                            f"evaluator={evaluator.name} cannot yet (use it with tofu, pii or muse)")
        # raw MUSE articles: what is held out are chunks, counted again once they exist (run.for_tokenizer)
        unchunked = getattr(data, "chunker", None) is not None and not data.extra.get("chunk_length")
        if not unchunked and self.examples >= len(data.forget):
            raise UserError(f"attacks.relearn.examples={self.examples} leaves nothing to evaluate: the forget set "
                            f"has {len(data.forget)} examples{' (chunks)' if data.extra.get('chunk_length') else ''}; "
                            "hold out fewer")
        check_measure("relearn", self.measure, evaluator)
        self.check_layout()

    def check_layout(self) -> None:
        from unlearning.distributed import world_size

        if self.batch_size % world_size():
            raise UserError(f"attacks.{self.name}.batch_size={self.batch_size} is the batch of one step, which this "
                            f"launch's {world_size()} processes do not divide: use a multiple of {world_size()}")

    def held_out(self, data) -> list:
        return random.Random(self.seed).sample(list(data.forget), self.examples)

    def split(self, evaluator, data):
        held = self.held_out(data)
        return held, evaluator.without(data, held)

    def apply(self, model, tok, held, ctx):
        from unlearning.data.base import encode
        from unlearning.methods.base import FineTune
        from unlearning.train import LoraSettings, TrainSettings, train

        settings = TrainSettings(lr=self.lr, epochs=0, max_steps=self.steps, batch_size=self.batch_size,
                                 seed=self.seed, lora=LoraSettings(enabled=self.lora), max_grad_norm=1.0)
        items = [encode(tok, ex, getattr(ctx, "max_length", 256)) for ex in held]
        if not self.lora:  # a LoRA-unlearned model comes merged, with its base weights still frozen
            model.requires_grad_(True)
        model = train(model, FineTune(), items, None, settings, tok.pad_token_id, desc=f"{self.name} attack")
        return model.merge_and_unload() if self.lora else model

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(examples={self.examples}, steps={self.steps}, lr={self.lr}, lora={self.lora}, "
                f"measure={self.measure})")
