"""IdkDPO: DPO that prefers a refusal ("I don't know") over the forget answer, + retain NLL.

Chosen = a refusal drawn (seeded) per forget example, rejected = the forget answer. OpenUnlearning draws a new
refusal each time an item is loaded (`QAwithIdkDataset`, the global RNG); here one per item, before training, on
purpose: a draw per load depends on the data order, the process count and the accumulation split.
The reference log-probs of both are computed once in `prepare` (one model in memory).
TRL's DPO loss lives inside `DPOTrainer._compute_loss` (it needs a Trainer instance and
its own batch layout), so it cannot be called from the shared loop; the formula is the
one line in `dpo_loss` (TRL's loss_type="sigmoid" with the 2/beta scale of the NPO paper).
TRL policy: the formula is owned here (no TRL import), unit-tested against hand-computed values.
Chosen and rejected share the question, so by default (`share_prompt`) the prompt runs once
and its KV cache (transformers' DynamicCache, cropped between the two) feeds both answers.
Written by hand: that shared-prompt pass (no library does it for training).
"""

from __future__ import annotations

import os
import random
from pathlib import Path

import torch
import torch.nn.functional as F

from unlearning.data.base import IGNORE, encode
from unlearning.errors import UserError
from unlearning.methods.base import Method, reject_unknown, require_coefficients, require_positive, rows_mean, sequence_logp
from unlearning.methods.reference import attach_ref_logps, train_bf16


def dpo_loss(chosen, ref_chosen, rejected, ref_rejected, beta: float, batch: dict | None = None):
    # DPO (Rafailov et al. 2023), scaled 2/beta as in NPO's IdkDPO baseline:
    # -(2/beta) * mean log sigmoid(beta * ((lp - lp_ref)(chosen) - (lp - lp_ref)(rejected))).
    return -(2.0 / beta) * rows_mean(F.logsigmoid(beta * ((chosen - ref_chosen) - (rejected - ref_rejected))), batch or {})


def load_refusals(path: str | Path) -> list[str]:
    p = Path(path)
    if not p.is_file():
        raise UserError(f"refusal file not found: {p} (method.refusal_file; set UNLEARNING_DATA_DIR or "
                        "give method.refusal_file=<one refusal a line> or method.refusals=[...])")
    lines = [ln.strip() for ln in p.read_text(encoding="utf-8").splitlines() if ln.strip()]
    if not lines:
        raise UserError(f"refusal file {p} is empty (method.refusal_file): put one refusal sentence a line")
    return lines


def shared_prompt_logps(model, batch: dict) -> tuple | None:
    """log p(rejected|x) and log p(chosen|x) with the shared prompt run once (its KV cache feeds both).

    Same values as two full forward passes, for about (|x| + |y_r| + |y_c|) tokens instead of
    2|x| + |y_r| + |y_c|, and the LM head only on answer positions. None when a row's chosen and
    rejected sequences do not share their prompt (raw-text examples): the caller runs two passes.
    """
    ids, labels = batch["input_ids"], batch["labels"]
    c_ids, c_labels = batch["chosen_input_ids"], batch["chosen_labels"]
    ans, c_ans = labels != IGNORE, c_labels != IGNORE
    if not (ans.any(1).all() and c_ans.any(1).all()):
        return None
    starts, c_starts = ans.float().argmax(1), c_ans.float().argmax(1)
    if not torch.equal(starts, c_starts) or int(starts.min()) == 0:
        return None
    b, width = len(starts), int(starts.max())
    prompt = ids.new_zeros((b, width))
    pmask = torch.zeros_like(prompt)
    for i, s in enumerate(starts.tolist()):
        if not torch.equal(ids[i, :s], c_ids[i, :s]):
            return None
        prompt[i, width - s :], pmask[i, width - s :] = ids[i, :s], 1  # left padding: last column is real
    out = model(input_ids=prompt, attention_mask=pmask, position_ids=(pmask.cumsum(1) - 1).clamp(min=0),
                use_cache=True, logits_to_keep=1)
    first, cache = out.logits[:, -1], out.past_key_values
    lps = []
    for seq, _lab, mask in ((ids, labels, ans), (c_ids, c_labels, c_ans)):
        n = int(mask.sum(1).max())
        cont = seq.new_zeros((b, n))
        cmask = torch.zeros_like(cont)
        for i, s in enumerate(starts.tolist()):
            k = int(mask[i].sum())
            cont[i, :k], cmask[i, :k] = seq[i, s : s + k], 1
        pos = starts.unsqueeze(1) + torch.arange(n, device=seq.device).unsqueeze(0)
        extra = cache.get_seq_length() - width  # the previous continuation, if any: drop it, keep the prompt
        if extra > 0:  # crop(-n) removes n tokens on every allowed version; crop(0) would empty the cache on 4.56-4.57
            cache.crop(-extra)
        logits = model(input_ids=cont, attention_mask=torch.cat([pmask, cmask], 1), position_ids=pos,
                       past_key_values=cache, use_cache=True).logits
        # Token j of the answer is predicted at answer position j-1, the first one at the prompt's end.
        logits = torch.cat([first.unsqueeze(1), logits[:, :-1]], 1)
        lp = torch.log_softmax(logits.float(), -1).gather(-1, cont.unsqueeze(-1)).squeeze(-1)
        lps.append((lp * cmask).sum(1))
    return lps[0], lps[1]


class IdkDPO(Method):
    name = "idk_dpo"
    needs_chat = True  # the refusal answers the forget question

    def __init__(self, beta: float = 0.1, forget_weight: float = 1.0, retain_weight: float = 1.0, refusals: list | None = None,
                 refusal_file: str | None = None, seed: int = 0, ref_batch_size: int = 8, share_prompt: bool = True,
                 **unknown):
        reject_unknown(self.name, unknown, ["beta", "forget_weight", "retain_weight", "refusals", "refusal_file", "seed",
                                            "ref_batch_size", "share_prompt"])
        require_positive(self.name, "beta", beta)
        require_coefficients(self.name, retain_weight=retain_weight, forget_weight=forget_weight)
        if refusals is not None and not [r for r in refusals if str(r).strip()]:
            raise UserError("method.refusals is an empty list: give refusal sentences or set it to null")
        self.beta, self.forget_weight, self.retain_weight = float(beta), float(forget_weight), float(retain_weight)
        self.refusals = [str(r) for r in refusals] if refusals is not None else None
        self.refusal_file, self.seed, self.ref_batch_size = refusal_file, int(seed), int(ref_batch_size)
        if self.ref_batch_size < 1:
            raise UserError(f"method.ref_batch_size={ref_batch_size} must be >= 1 (forget answers scored per batch "
                            "for the reference log-probs)")
        self.share_prompt = bool(share_prompt)
        self.needs_retain = self.retain_weight > 0

    def check_files(self, data_dir: str | None) -> None:
        """Run by the validation phase (and `--check`): the refusals are there before any model loads."""
        self._refusals(data_dir)

    def _refusals(self, data_dir: str | None) -> list[str]:
        if self.refusals is not None:
            return self.refusals
        path = self.refusal_file
        if not path:
            data_dir = data_dir or os.environ.get("UNLEARNING_DATA_DIR")
            if not data_dir:
                raise UserError("method=idk_dpo needs refusals: set UNLEARNING_DATA_DIR (uses tofu/idontknow.jsonl), "
                                "method.refusal_file=<path> or method.refusals=[...]")
            path = Path(data_dir) / "tofu" / "idontknow.jsonl"
        return load_refusals(path)

    def prepare(self, model, tokenizer, forget, retain, ctx):
        refusals = self._refusals(getattr(ctx, "data_dir", None))
        rng = random.Random(self.seed)
        max_len = getattr(ctx, "max_length", None) or 512
        for item in forget:
            if "example" not in item:
                raise UserError("idk_dpo: forget items carry no 'example' (the run attaches it); "
                                "encode items with the Example they came from")
            chosen = encode(tokenizer, item["example"], max_len, answer=rng.choice(refusals))
            item["chosen_input_ids"], item["chosen_labels"] = chosen["input_ids"], chosen["labels"]
        bf16 = train_bf16(ctx)
        attach_ref_logps(model, forget, tokenizer.pad_token_id, "", self.ref_batch_size, bf16)
        return attach_ref_logps(model, forget, tokenizer.pad_token_id, "chosen_", self.ref_batch_size, bf16)

    def loss(self, model, batch):
        f = batch["forget"]
        shared = shared_prompt_logps(model, f) if self.share_prompt else None
        if shared is None:
            rejected, _ = sequence_logp(model, f)
            chosen, _ = sequence_logp(model, f, "chosen_")
        else:
            rejected, chosen = shared
        forget = dpo_loss(chosen, f["chosen_ref_logp"], rejected, f["ref_logp"], self.beta, f)
        loss = self.forget_weight * forget
        logs = {"forget_dpo": forget.item(), "rejected_logratio": rows_mean(rejected - f["ref_logp"], f).item()}
        return self.with_retain_nll(model, batch, loss, logs)
