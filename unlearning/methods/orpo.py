"""ORPO unlearning (Hong et al. 2024) on chosen/rejected pairs, and its CFG-aware variant (Smirnov 2024).

loss = NLL(chosen answer) - lambda * log sigmoid(log odds(chosen) - log odds(rejected)),
odds from length-averaged answer log-probs, lambda = `method.odds_ratio_weight` = TRL's `beta` (0.1).

TRL policy: the odds-ratio term is TRL's code, reached through `trl.experimental` (not a stable
API), so pyproject pins `trl>=1.16,<1.17`, the range tested here; `tests/test_orpo.py` also checks
the term against the paper's formula computed by hand, so a TRL change cannot pass unnoticed.

The odds-ratio term and the length-averaged log-probs are TRL's own code
(`trl.experimental.orpo.ORPOTrainer.odds_ratio_loss` / `.get_batch_logps`), called
inside our shared loop: `odds_ratio_loss` only reads the trainer's `beta` and
`self.accelerator.device`, so it is called with a two-attribute stand-in for the
trainer instead of building a Trainer. Not TRL's: the NLL term, which TRL 1.16
takes over prompt + answer tokens, while the ORPO paper (eq. 6) and this issue
take it over the chosen answer only (`unlearning.methods.base.nll` on the answer labels).
Chosen and rejected run in one forward pass (2B rows), as TRL's `concatenated_forward` does.

`orpo` trains on each forget example's own (chosen, rejected) pair; `orpo_cfg`
(`cfg_aware=True`) on the CFG-aware pairs of `unlearning.data.pairs.cfg_aware_pairs`:
under the positive system prompt the safe answer is chosen, under the negative
system prompt the roles swap, so guidance at decoding time has a direction to push.
"""

from __future__ import annotations

import os
from types import SimpleNamespace

import torch
import torch.nn.functional as F

from unlearning.data.base import IGNORE, encode
from unlearning.errors import UserError
from unlearning.methods.base import Method, count, reject_unknown, require_positive, rows_mean, share


def _trl_orpo():
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")  # TRL marks ORPO experimental; we pin the version
    from trl.experimental.orpo import ORPOTrainer

    return ORPOTrainer


def odds_ratio_term(chosen_logps: torch.Tensor, rejected_logps: torch.Tensor, beta: float):
    """TRL's per-example `beta * log sigmoid(log odds ratio)` and the mean log odds ratio (for logging)."""
    trainer = SimpleNamespace(beta=beta, accelerator=SimpleNamespace(device=chosen_logps.device))
    losses, _, _, _, log_odds = _trl_orpo().odds_ratio_loss(trainer, chosen_logps, rejected_logps)
    return losses, log_odds


def _pad_to(t: torch.Tensor, width: int, value) -> torch.Tensor:
    return F.pad(t, (0, width - t.shape[1]), value=value)


class ORPO(Method):
    name = "orpo"
    needs_retain = False
    needs_chat = True
    needs_pairs = True

    def __init__(self, odds_ratio_weight: float = 0.1, cfg_aware: bool = False, positive_prompt: str | None = None,
                 negative_prompt: str | None = None, **unknown):
        reject_unknown(self.name, unknown, ["odds_ratio_weight", "cfg_aware", "positive_prompt", "negative_prompt"])
        require_positive(self.name, "odds_ratio_weight", odds_ratio_weight)
        self.odds_ratio_weight, self.cfg_aware = float(odds_ratio_weight), bool(cfg_aware)
        self.positive_prompt, self.negative_prompt = positive_prompt, negative_prompt
        if self.cfg_aware:
            self.name = "orpo_cfg"
            if not positive_prompt or not negative_prompt or positive_prompt.strip() == negative_prompt.strip():
                raise UserError(f"method.positive_prompt={positive_prompt!r} / method.negative_prompt={negative_prompt!r}: "
                                "CFG-aware ORPO needs two different non-empty system prompts "
                                "(conf/method/orpo_cfg.yaml takes them from generation.guidance)")

    def prepare(self, model, tokenizer, forget, retain, ctx):
        examples = []
        for i, it in enumerate(forget):
            if "example" not in it:
                raise UserError(f"method={self.name}: forget item {i} carries no 'example'; "
                                "ORPO needs the dataset's Example objects (the run attaches them)")
            examples.append(it["example"])
        from unlearning.data.pairs import cfg_aware_pairs, preference_pairs

        if self.cfg_aware:
            examples = cfg_aware_pairs(examples, self.positive_prompt, self.negative_prompt)
        else:
            examples = preference_pairs(examples)
        max_len = getattr(ctx, "max_length", 512) if ctx is not None else 512
        return [pair_item(tokenizer, ex, max_len, self.name) for ex in examples]

    def loss(self, model, batch):
        f = batch["forget"]
        n = f["chosen_input_ids"].shape[0]
        width = max(f["chosen_input_ids"].shape[1], f["rejected_input_ids"].shape[1])
        # right padding is masked out and carries no labels, so its token id is irrelevant (0)
        ids = torch.cat([_pad_to(f["chosen_input_ids"], width, 0), _pad_to(f["rejected_input_ids"], width, 0)])
        mask = torch.cat([_pad_to(f["chosen_attention_mask"], width, 0), _pad_to(f["rejected_attention_mask"], width, 0)])
        labels = torch.cat([_pad_to(f["chosen_labels"], width, IGNORE), _pad_to(f["rejected_labels"], width, IGNORE)])
        logits = model(input_ids=ids, attention_mask=mask).logits.float()
        chosen_nll = F.cross_entropy(logits[:n, :-1].reshape(-1, logits.size(-1)), labels[:n, 1:].reshape(-1),
                                     ignore_index=IGNORE, reduction="sum")
        chosen_nll = chosen_nll / max(count(f, "targets", int((labels[:n, 1:] != IGNORE).sum()), "chosen_"), 1)
        # ORPO's odds use length-averaged answer log-probs (TRL: average_log_prob=True).
        logps = _trl_orpo().get_batch_logps(logits, labels, average_log_prob=True)
        ratio, log_odds = odds_ratio_term(logps[:n], logps[n:], self.odds_ratio_weight)
        loss = chosen_nll - rows_mean(ratio, f, "chosen_")
        return loss, {"chosen_nll": chosen_nll.item(), "log_odds_ratio": log_odds.item() * share(f, "rows", n, "chosen_"),
                      "chosen_logp": rows_mean(logps[:n], f, "chosen_").item(),
                      "rejected_logp": rows_mean(logps[n:], f, "rejected_").item()}


def pair_item(tokenizer, ex, max_length: int, method: str = "orpo") -> dict:
    """Encoded chosen and rejected answers of one Example (meta `chosen` / `rejected`)."""
    meta = ex.meta or {}
    missing = [k for k in ("chosen", "rejected") if not meta.get(k)]
    if missing:
        raise UserError(f"method={method}: example {ex.id or '?'} has no {missing} answer in its meta; "
                        "ORPO needs a dataset with preference pairs (e.g. dataset=synthetic_pii)")
    c = encode(tokenizer, ex, max_length, answer=meta["chosen"])
    r = encode(tokenizer, ex, max_length, answer=meta["rejected"])
    return {"chosen_input_ids": c["input_ids"], "chosen_labels": c["labels"],
            "rejected_input_ids": r["input_ids"], "rejected_labels": r["labels"]}


class ORPOCFG(ORPO):
    """`method=orpo_cfg`: ORPO on CFG-aware pairs."""

    def __init__(self, **kwargs):
        kwargs.setdefault("cfg_aware", True)
        super().__init__(**kwargs)
