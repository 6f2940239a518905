"""MUSE evaluator (Shi et al. 2024): VerbMem, KnowMem forget/retain, the MIA family and PrivLeak,
plus exact memorisation and extraction strength on the VerbMem probes.

Definitions and tokens as in MUSE and OpenUnlearning (configs/eval/muse*), by default:
- VerbMem: ROUGE-L F1 of the greedy continuation (128 new tokens) of each `verbmem/forget` prompt vs `gt`
  (prompt + " " + gt tokenized with the tokenizer's special tokens, the reference text decoded from them).
- KnowMem: ROUGE-L F1 of greedy answers (32 new tokens, cut at "\\n\\n", "\\nQuestion" or "Question:") to
  `knowmem/{forget,retain}_qa`, with the matching `*_icl` pairs as "Question: ...\\nAnswer: ...\\n\\n" context and the
  prompt ending "Answer: ".
- MIA (LOSS, zlib, Min-K%, Min-K%++; `unlearning/eval/mia.py`) on `privleak/forget` (members) vs
  `privleak/holdout`, each a ROC AUC with forget as the positive class; PrivLeak from the Min-K% AUC
  relative to the retain reference's (`reference`) or `privleak_reference_auc`; null when neither.
MIA documents keep the tokenizer's special tokens (a BOS where it adds one: the first text token is scored), at
most `max_length` (2048) text tokens, and every score leaves out the last labelled position, as OpenUnlearning.
What `compat=openunlearning` adds: its `!= pad` mask, batch sizes and data order, and (its record on a chat model)
KnowMem through the chat template. Prompts are raw text otherwise, as MUSE. Every model call goes through the
shared engine.
Written by hand: only the prompt assembly and the bookkeeping of per-item rows.
"""

from __future__ import annotations

import re

from unlearning.errors import UserError
from unlearning.eval import engine, metrics, mia
from unlearning.eval import openunlearning as ou
from unlearning.eval.memorization import exact_memorization, extraction_strength
from unlearning.eval.metrics import mean_or_none

KNOWMEM_STOPS = ou.MUSE_KNOWMEM_STOPS  # OpenUnlearning's: "\n\n", "\nQuestion", "Question:"
SHARED_CHARS = 64  # relearning "taught" a probe when a run this long of its text is in a held-out chunk


def icl_prompt(icl: list[dict], question: str) -> str:
    """MUSE's few-shot KnowMem prompt as OpenUnlearning builds it (configs/eval/muse_metrics/forget_knowmem_ROUGE.yaml):
    the pairs, then the question, ending "Answer: " (with the space)."""
    shots = "".join(f"Question: {q['question']}\nAnswer: {q['answer']}\n\n" for q in icl)
    return shots + f"Question: {question}\nAnswer: "


def mia_item(tok, text: str, max_length: int) -> dict:
    """A PrivLeak / MIA document as OpenUnlearning scores it: the tokenizer's special tokens (a BOS where it adds
    one, so the first text token is scored), at most `max_length` text tokens; Min-K drops the last labelled
    position afterwards (`drop_last`)."""
    it = ou.completion(tok, "", text, max_length=max_length)
    return {"input_ids": it["input_ids"], "labels": it["labels"]}


def verbmem_item(tok, prompt: str, gt: str, max_length: int, keep: int | None = None) -> dict:
    """VerbMem as OpenUnlearning: prompt + " " + gt with special tokens (ground truth labelled), the generation prefix
    the prompt's own tokens; `keep` cuts the prompt to its last tokens (CPU runs)."""
    it = ou.completion(tok, prompt, gt, insert_space=True, max_length=max_length)
    drop = max(0, len(it["prefix_ids"]) - keep) if keep else 0
    return {"prefix_ids": it["prefix_ids"][drop:], "input_ids": it["input_ids"][drop:], "labels": it["labels"][drop:],
            "truth": ou.completion_truth(tok, it, clean_up=None)}  # decoded as the default's generations are


def drop_last(ts: "engine.TokenScores") -> "engine.TokenScores":
    """OpenUnlearning's tokenwise_logprobs leaves out the last labelled position (its "eos prediction")."""
    return engine.TokenScores(ts.logp[:-1], ts.hit[:-1], ts.mu[:-1] if ts.mu is not None else None,
                              ts.var[:-1] if ts.var is not None else None)


def _ids(tok, text: str) -> list[int]:
    return tok(text, add_special_tokens=False)["input_ids"]


class MuseEvaluator:
    name = "muse"
    objective = "privleak"  # the headline metric a sweep optimises when `objective` is null
    forget_metrics = ("forget_verbmem_ROUGE", "forget_knowmem_ROUGE", "mia_min_k")  # attacks report recovery
    uses_reference = True

    def __init__(self, max_length: int = 1024, verbmem_max_new_tokens: int = 128, knowmem_max_new_tokens: int = 32,
                 icl_shots: int | None = None, verbmem_prompt_tokens: int | None = None, mia_k: float = 0.4,
                 max_items: int | None = None, privleak_reference_auc: float | None = None,
                 batch_size: int | None = None, compat: str | None = None, **unknown):
        from unlearning.errors import reject_unknown

        reject_unknown("evaluator", "muse", unknown, ["max_length", "verbmem_max_new_tokens", "knowmem_max_new_tokens",
                                                      "icl_shots", "verbmem_prompt_tokens", "mia_k", "max_items",
                                                      "privleak_reference_auc", "batch_size", "compat"])
        # compat=openunlearning: its tokens (special tokens, 2048-token texts, the space before VerbMem's ground truth),
        # chat-template KnowMem, `!= pad` mask, batch sizes and scored positions (unlearning/eval/openunlearning.py)
        self.compat = ou.check(compat, "evaluator.compat")
        self.mask = ou.MASK if self.compat else "lengths"  # `unlearning-bench parity` also runs compat with "lengths"
        if not 0 < mia_k <= 1:
            raise UserError(f"evaluator.mia_k={mia_k} must be in (0, 1] (MUSE uses 0.4)")
        if privleak_reference_auc is not None and not 0 <= privleak_reference_auc < 1:
            raise UserError(f"evaluator.privleak_reference_auc={privleak_reference_auc} must be in [0, 1)")
        self.max_length, self.mia_k, self.max_items = max_length, mia_k, max_items
        self.verbmem_new, self.knowmem_new = verbmem_max_new_tokens, knowmem_max_new_tokens
        self.icl_shots, self.verbmem_prompt_tokens = icl_shots, verbmem_prompt_tokens
        self.privleak_reference_auc, self.batch_size = privleak_reference_auc, batch_size

    def check_generation(self, generation) -> None:
        """Called in the validation phase: OpenUnlearning has no guided decoding to be compatible with."""
        ou.check_unguided(self.compat, generation)

    def requires(self) -> list[str]:
        """The dataset's `extra` entries this evaluator reads (checked before any work)."""
        return ["verbmem", "knowmem_forget", "knowmem_retain", "privleak_forget", "privleak_holdout"]

    def without(self, data, held):
        """This data without the forget probes the held-out forget text teaches directly (the relearning attack):
        VerbMem and PrivLeak-forget items sharing a run of `SHARED_CHARS` characters with a held-out chunk, and
        KnowMem forget questions whose answer appears (whole words, any case) in one. MUSE's probes carry no link
        to the chunks, so text overlap is the link."""
        import dataclasses

        taught = [ex.answer for ex in held]
        runs = {t[i:i + SHARED_CHARS] for t in taught for i in range(max(len(t) - SHARED_CHARS, 0) + 1)}

        def shares(text: str) -> bool:
            if len(text) < SHARED_CHARS:
                return any(text in t for t in taught)
            return any(text[i:i + SHARED_CHARS] in runs for i in range(len(text) - SHARED_CHARS + 1))

        def answered(answer: str) -> bool:
            pattern = re.compile(rf"(?<!\w){re.escape(answer.strip())}(?!\w)", re.IGNORECASE)
            return bool(answer.strip()) and any(pattern.search(t) for t in taught)

        extra = dict(data.extra)
        extra["verbmem"] = [v for v in extra.get("verbmem", []) if not shares(v["prompt"] + v["gt"])]
        extra["privleak_forget"] = [p for p in extra.get("privleak_forget", []) if not shares(p["text"])]
        extra["knowmem_forget"] = [q for q in extra.get("knowmem_forget", []) if not answered(q["answer"])]
        return dataclasses.replace(data, extra=extra)

    def metric_names(self, data=None) -> set[str]:
        return {"forget_verbmem_ROUGE", "exact_memorization", "extraction_strength", "forget_knowmem_ROUGE",
                "retain_knowmem_ROUGE", "privleak", "privleak_reference_auc",
                *(f"mia_{a}" for a in ("loss", "zlib", "min_k", "min_k_plus_plus"))}

    def _take(self, rows):
        return list(rows)[: self.max_items] if self.max_items else list(rows)

    def evaluate(self, model, tokenizer, data, ctx=None, reference: dict | None = None) -> dict:
        gen = getattr(ctx, "generation", None) or {}
        self.bs = int(self.batch_size or gen.get("batch_size", 16))
        self.bf16 = gen.get("bf16", False)
        agg: dict = {}
        per_item: dict = {}
        if self.compat:
            self._verbmem_ou(model, tokenizer, data.extra, agg, per_item)
            for split in ("forget", "retain"):
                self._knowmem_ou(model, tokenizer, data.extra, split, agg, per_item)
        else:
            self._verbmem(model, tokenizer, data.extra, agg, per_item)
            for split in ("forget", "retain"):
                self._knowmem(model, tokenizer, data.extra, split, agg, per_item)
        self._mia(model, tokenizer, data.extra, agg, per_item)
        ref_auc = (reference or {}).get("aggregates", {}).get("mia_min_k")
        if ref_auc is None:
            ref_auc = self.privleak_reference_auc
        agg["privleak_reference_auc"] = ref_auc
        agg["privleak"] = mia.privleak(agg.get("mia_min_k"), ref_auc)
        return {"aggregates": agg, "per_item": per_item}

    def _verbmem(self, model, tok, extra, agg, per_item):
        rows = self._take(extra.get("verbmem", []))
        if not rows:
            return
        room = self.max_length - self.verbmem_new
        if room < 1:
            raise UserError(f"evaluator.max_length={self.max_length} leaves no room for a VerbMem prompt before "
                            f"{self.verbmem_new} new tokens; raise evaluator.max_length")
        keep = min(room, self.verbmem_prompt_tokens or room)
        items = [verbmem_item(tok, r["prompt"], r["gt"], self.max_length, keep) for r in rows]
        outs = engine.greedy(model, tok, [it["prefix_ids"] for it in items], self.verbmem_new, self.bs, None, self.bf16,
                             desc="muse verbmem")
        rouge = metrics.rouge_l(outs, [it["truth"] for it in items])
        # Teacher-forced memorisation of gt after its prompt (OpenUnlearning scores MUSE EM/ES on verbmem).
        scores = engine.score(model, [{"input_ids": it["input_ids"], "labels": it["labels"]} for it in items],
                              tok.pad_token_id, self.bs, bf16=self.bf16, desc="muse verbmem em")
        out = []
        for r, o, rg, s in zip(rows, outs, rouge, scores):
            out.append({"id": r["id"], "generation": o, "gt": r["gt"], "rougeL_f1": rg["rougeL_f1"],
                        # OpenUnlearning drops the last labelled position from EM/ES
                        "exact_memorization": exact_memorization(s.hit[:-1]),
                        "extraction_strength": extraction_strength(s.hit[:-1])})
        per_item["verbmem_forget"] = out
        agg["forget_verbmem_ROUGE"] = mean_or_none(r["rougeL_f1"] for r in out)
        agg["exact_memorization"] = mean_or_none(r["exact_memorization"] for r in out)
        agg["extraction_strength"] = mean_or_none(r["extraction_strength"] for r in out)

    def _knowmem(self, model, tok, extra, split, agg, per_item):
        rows = self._take(extra.get(f"knowmem_{split}", []))
        if not rows:
            return
        icl = list(extra.get(f"knowmem_{split}_icl", []))[: self.icl_shots]
        prompts = [tok(icl_prompt(icl, r["question"]), add_special_tokens=True)["input_ids"] for r in rows]
        longest = max(len(p) for p in prompts)
        if longest + self.knowmem_new > self.max_length:
            raise UserError(f"evaluator.max_length={self.max_length} is smaller than the KnowMem {split} ICL prompt "
                            f"({longest} tokens + {self.knowmem_new} new); raise evaluator.max_length "
                            "or lower evaluator.icl_shots")
        outs = engine.greedy(model, tok, prompts, self.knowmem_new, self.bs, KNOWMEM_STOPS, self.bf16,
                             desc=f"muse knowmem {split}")
        rouge = metrics.rouge_l(outs, [r["answer"] for r in rows])
        out = [{"id": r["id"], "question": r["question"], "answer": r["answer"], "generation": o,
                "rougeL_f1": rg["rougeL_f1"]} for r, o, rg in zip(rows, outs, rouge)]
        per_item[f"knowmem_{split}"] = out
        agg[f"{split}_knowmem_ROUGE"] = mean_or_none(r["rougeL_f1"] for r in out)

    def _verbmem_ou(self, model, tok, extra, agg, per_item):
        """VerbMem as OpenUnlearning: prompt + " " + gt with special tokens, 128 new tokens from the prompt (batch 8,
        left padding, data order), ROUGE-L F1 against the decoded ground truth; EM / ES teacher-forced on it."""
        rows = self._take(extra.get("verbmem", []))
        if not rows:
            return
        items = [ou.completion(tok, r["prompt"], r["gt"], insert_space=True) for r in rows]
        bs = ou.MUSE_BATCH["verbmem"]
        outs = engine.greedy(model, tok, [it["prefix_ids"] for it in items], self.verbmem_new, bs, None, self.bf16,
                             desc="muse verbmem", mask=self.mask, sort=False, clean_up=True)
        rouge = metrics.rouge_l(outs, [ou.completion_truth(tok, it) for it in items])
        scores = engine.score(model, [{"input_ids": it["input_ids"], "labels": it["labels"]} for it in items],
                              tok.pad_token_id, bs, bf16=self.bf16, desc="muse verbmem em", mask=self.mask, sort=False)
        out = [{"id": r["id"], "generation": o, "gt": r["gt"], "rougeL_f1": rg["rougeL_f1"],
                "exact_memorization": exact_memorization(s.hit[:-1]), "extraction_strength": extraction_strength(s.hit[:-1])}
               for r, o, rg, s in zip(rows, outs, rouge, scores)]
        per_item["verbmem_forget"] = out
        agg["forget_verbmem_ROUGE"] = mean_or_none(r["rougeL_f1"] for r in out)
        agg["exact_memorization"] = mean_or_none(r["exact_memorization"] for r in out)
        agg["extraction_strength"] = mean_or_none(r["extraction_strength"] for r in out)

    def _knowmem_ou(self, model, tok, extra, split, agg, per_item):
        """KnowMem as OpenUnlearning's record on a chat model: the ICL pairs as earlier chat turns under its system
        prompt, 32 greedy tokens (batch 16, left padding, `!= pad` mask), cut at its stop strings; ROUGE-L F1."""
        rows = self._take(extra.get(f"knowmem_{split}", []))
        if not rows:
            return
        icl = list(extra.get(f"knowmem_{split}_icl", []))[: self.icl_shots]
        msgs = [ou.icl_messages(icl, r["question"]) for r in rows]
        outs = engine.greedy(model, tok, [ou.prompt_ids(tok, m) for m in msgs], self.knowmem_new,
                             ou.MUSE_BATCH["knowmem"], ou.MUSE_KNOWMEM_STOPS, self.bf16, desc=f"muse knowmem {split}",
                             mask=self.mask, sort=False, clean_up=True)
        rouge = metrics.rouge_l(outs, [ou.ground_truth(tok, m, r["answer"]) for m, r in zip(msgs, rows)])
        out = [{"id": r["id"], "question": r["question"], "answer": r["answer"], "generation": o,
                "rougeL_f1": rg["rougeL_f1"]} for r, o, rg in zip(rows, outs, rouge)]
        per_item[f"knowmem_{split}"] = out
        agg[f"{split}_knowmem_ROUGE"] = mean_or_none(r["rougeL_f1"] for r in out)

    def _mia(self, model, tok, extra, agg, per_item):
        sides = {s: self._take(extra.get(f"privleak_{s}", [])) for s in ("forget", "holdout")}
        if not sides["forget"] or not sides["holdout"]:
            return
        for side, rows in sides.items():
            # OpenUnlearning's tokens in both modes (special tokens, the text cut at max_length, the last labelled
            # position dropped); compat adds its mask, batches and order
            items = [mia_item(tok, r["text"], ou.MUSE_MAX_LENGTH if self.compat else self.max_length) for r in rows]
            ts = engine.score(model, items, tok.pad_token_id, ou.MUSE_BATCH["mia"] if self.compat else self.bs,
                              stats=True, bf16=self.bf16, desc=f"muse mia {side}",
                              **({"mask": self.mask, "sort": False} if self.compat else {}))
            ts = [drop_last(t) for t in ts]
            # zlib uses the text actually scored (after truncation), as OpenUnlearning decodes input_ids.
            per_item[f"privleak_{side}"] = [
                {"id": r["id"], **mia.scores(s, tok.decode(it["input_ids"], skip_special_tokens=True), self.mia_k)}
                for r, it, s in zip(rows, items, ts)]
        for attack in ("loss", "zlib", "min_k", "min_k_plus_plus"):
            agg[f"mia_{attack}"] = mia.auc([r[attack] for r in per_item["privleak_forget"]],
                                           [r[attack] for r in per_item["privleak_holdout"]])
