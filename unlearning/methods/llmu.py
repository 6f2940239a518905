"""LLMU (Yao et al. 2023, "Large Language Model Unlearning", arXiv 2310.10683; kevinyaobytedance/llm_unlearn
unlearn_harm.py): bad_weight * gradient ascent on the forget answers + random_weight * NLL of unrelated answers given
the forget questions (the random mismatch) + normal_weight * KL(p_original || p_theta) on normal (retain) data.

As the paper's code: each sequence's loss is the mean over its answer tokens, then the mean over the batch; the
KL sums over the vocabulary and averages over every position of the retain batch. Differences, each on purpose:
the mismatched answers are drawn once per forget question before training (the code draws K per batch and shares
them across its questions), from the run's retain answers (the code: TruthfulQA's), and only their answer tokens
are scored (the code's start index counts a BatchEncoding's keys, not its tokens, so it also scores the question).
Two more differences, documented: the code divides each sequence's summed NLL by its answer length + 1
positions, this project by its labelled tokens, which include the appended EOS; and the code's normal-data term is
cross-entropy against the reference's distribution (KL + the reference's entropy, a constant), logged here as the KL
itself (`normal_kl`): the same gradient, a logged value lower by the reference's entropy.
OpenUnlearning has no LLMU.
"""

from __future__ import annotations

import random

import torch

from unlearning.data.base import encode
from unlearning.errors import UserError
from unlearning.methods.base import Method, reject_unknown, require_coefficients, rows_mean, token_logps
from unlearning.methods.graddiff import retain_kl_ou
from unlearning.methods.reference import Reference


def answer_mean_nll(model, batch: dict, prefix: str = "") -> torch.Tensor:
    """Mean over sequences of each sequence's mean answer-token NLL (llm_unlearn's utils.get_answer_loss)."""
    out = model(input_ids=batch[prefix + "input_ids"], attention_mask=batch[prefix + "attention_mask"])
    lp, mask = token_logps(out.logits, batch[prefix + "labels"])
    return rows_mean(-(lp.sum(-1)) / mask.sum(-1).clamp(min=1), batch, prefix)


class LLMU(Method):
    name = "llmu"
    needs_chat = True  # the mismatch term pairs forget questions with other answers

    def __init__(self, bad_weight: float = 0.5, random_weight: float = 1.0, normal_weight: float = 1.0,
                 mismatch_answers: int = 5, seed: int = 0, **unknown):
        reject_unknown(self.name, unknown, ["bad_weight", "random_weight", "normal_weight", "mismatch_answers", "seed"])
        require_coefficients(self.name, bad_weight=bad_weight, random_weight=random_weight, normal_weight=normal_weight)
        if isinstance(mismatch_answers, bool) or not isinstance(mismatch_answers, int) or mismatch_answers < 1:
            raise UserError(f"method.mismatch_answers={mismatch_answers!r} must be an integer >= 1 (the paper's K: 5)")
        self.bad_weight, self.random_weight, self.normal_weight = float(bad_weight), float(random_weight), float(normal_weight)
        self.k, self.seed = mismatch_answers, int(seed)
        self.needs_retain = self.random_weight > 0 or self.normal_weight > 0  # the answers and the normal data
        self.reference = None

    def prepare(self, model, tokenizer, forget, retain, ctx):
        if self.random_weight > 0:
            pool = [r["example"].answer for r in retain or [] if "example" in r]
            if not pool:
                raise UserError("method=llmu: the random mismatch draws answers from the retain set, which is empty; "
                                "pick a dataset with one or set method.random_weight=0")
            rng, max_len = random.Random(self.seed), getattr(ctx, "max_length", None) or 512
            for item in forget:
                for k, answer in enumerate(rng.sample(pool, min(self.k, len(pool)))):
                    enc = encode(tokenizer, item["example"], max_len, answer=answer)
                    item[f"mismatch{k}_input_ids"], item[f"mismatch{k}_labels"] = enc["input_ids"], enc["labels"]
            self.k = min(self.k, len(pool))
        if self.normal_weight > 0:
            self.reference = Reference(model, ctx)
        return forget

    def loss(self, model, batch):
        f = batch["forget"]
        forget_nll = answer_mean_nll(model, f)
        loss, logs = -self.bad_weight * forget_nll, {"forget_nll": forget_nll.item()}
        if self.random_weight > 0:
            # K passes, not one of K*B rows: on a 2-core CPU one pass took 15.5 s a step against 13.7 s and peaked
            # 829 MiB higher (docs/methods.md, the step benchmark)
            mismatch = sum(answer_mean_nll(model, f, f"mismatch{k}_") for k in range(self.k)) / self.k
            loss = loss + self.random_weight * mismatch
            logs["mismatch_nll"] = mismatch.item()
        if self.normal_weight > 0:
            r = batch["retain"]
            logits = model(input_ids=r["input_ids"], attention_mask=r["attention_mask"]).logits
            with self.reference(model) as ref:
                ref_logits = ref(input_ids=r["input_ids"], attention_mask=r["attention_mask"]).logits
            kl = retain_kl_ou(logits, ref_logits, r)
            loss = loss + self.normal_weight * kl
            logs["normal_kl"] = kl.item()
        return loss, logs
