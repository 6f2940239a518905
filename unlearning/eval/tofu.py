"""TOFU evaluator: Q_A_Prob, Q_A_ROUGE, Truth Ratio on forget / retain / real authors / world facts,
forget_quality (KS test against the retain reference) and model_utility (harmonic mean of 9 numbers).

Definitions as in TOFU and OpenUnlearning (see `unlearning/eval/metrics.py`). One batched
likelihood pass per (split, answer variant) feeds every metric that needs it.
"""

from __future__ import annotations

import numpy as np

from unlearning.data.base import Example, encode
from unlearning.eval import engine, memorization, metrics
from unlearning.eval import openunlearning as ou

# Which answer is "correct" for the truth ratio: TOFU compares perturbed answers with the
# paraphrased answer on forget/retain, and with the original answer on real authors/world facts.
SPLITS = {
    "forget": {"prefix": "forget", "tr_correct": "paraphrased_answer", "normalised_prob": False},
    "retain": {"prefix": "retain", "tr_correct": "paraphrased_answer", "normalised_prob": False},
    "real_authors": {"prefix": "ra", "tr_correct": "answer", "normalised_prob": True},
    "world_facts": {"prefix": "wf", "tr_correct": "answer", "normalised_prob": True},
}
UTILITY = ["retain_Q_A_Prob", "retain_Q_A_ROUGE", "retain_Truth_Ratio",
           "ra_Q_A_Prob_normalised", "ra_Q_A_ROUGE", "ra_Truth_Ratio",
           "wf_Q_A_Prob_normalised", "wf_Q_A_ROUGE", "wf_Truth_Ratio"]


class TofuEvaluator:
    name = "tofu"
    objective = "forget_quality"  # the headline metric a sweep optimises when `objective` is null
    forget_metrics = ("forget_Q_A_Prob", "forget_Q_A_ROUGE", "forget_Truth_Ratio")  # attacks report recovery
    higher_means_forgotten = ("forget_Truth_Ratio",)  # min(TR, 1/TR), TR = P(wrong) / P(right): 1 = cannot tell them apart
    uses_reference = True

    def __init__(self, batch_size: int | None = None, max_new_tokens: int = 200, max_items: int | None = None,
                 splits: list[str] | None = None, generate: bool = True, compat: str | None = None, **unknown):
        from unlearning.errors import reject_unknown

        reject_unknown("evaluator", "tofu", unknown, ["batch_size", "max_new_tokens", "max_items", "splits", "generate",
                                                      "compat"])
        # compat=openunlearning: OpenUnlearning's prompts, tokens, mask and batches (unlearning/eval/openunlearning.py)
        self.compat = ou.check(compat, "evaluator.compat")
        for key, value, least in (("batch_size", batch_size, 1), ("max_new_tokens", max_new_tokens, 1),
                                  ("max_items", max_items, 1)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < least):
                from unlearning.errors import UserError

                raise UserError(f"evaluator.{key}={value!r} must be a whole number >= {least}"
                                + (" (or null)" if key != "max_new_tokens" else ""))
        self.batch_size = batch_size or (ou.BATCH_SIZE if self.compat else 16)
        self.mask = ou.MASK if self.compat else "lengths"  # `unlearning-bench parity` also runs compat with "lengths"
        self.max_new_tokens, self.max_items = max_new_tokens, max_items
        self.splits = list(splits or SPLITS)
        self.generate = generate
        unknown = set(self.splits) - set(SPLITS)
        if unknown:
            from unlearning.errors import UserError

            raise UserError(f"evaluator.splits has unknown split(s) {sorted(unknown)}; use {sorted(SPLITS)}")

    def check_generation(self, generation) -> None:
        """Called in the validation phase: OpenUnlearning has no guided decoding to be compatible with."""
        ou.check_unguided(self.compat, generation)

    def requires(self) -> list[str]:
        """The dataset's `extra` entries this evaluator reads (checked before any work)."""
        return list(self.splits)

    def without(self, data, held):
        """This data with the held-out forget questions removed from the forget split (the relearning attack)."""
        import dataclasses

        asked = {ex.messages[-1]["content"] for ex in held}
        rest = [ex for ex in data.extra.get("forget", []) if ex.messages[-1]["content"] not in asked]
        return dataclasses.replace(data, extra={**data.extra, "forget": rest})

    def forget_side(self) -> "TofuEvaluator":
        """This evaluator on the forget split alone (attacks measure only what they can change: `measure`)."""
        import copy

        side = copy.copy(self)
        side.splits = [s for s in self.splits if s == "forget"]
        return side

    def metric_names(self, data=None) -> set[str]:
        names = set()
        for split in self.splits:
            spec = SPLITS[split]
            p = spec["prefix"]
            names |= {f"{p}_Q_A_Prob_normalised" if spec["normalised_prob"] else f"{p}_Q_A_Prob", f"{p}_Truth_Ratio",
                      f"{p}_exact_memorization", f"{p}_extraction_strength"}
            if spec["tr_correct"] != "answer":
                names |= {f"{p}_Q_A_PARA_Prob", f"{p}_Q_A_PERT_Prob"}
            if self.generate:
                names.add(f"{p}_Q_A_ROUGE")
        if set(UTILITY) <= names:
            names.add("model_utility")
        if "forget" in self.splits:
            names.add("forget_quality")
        return names

    def _avg_nll(self, model, tok, examples: list[Example], answers: list[str], bf16: bool, desc: str):
        if self.compat:
            items = [ou.encode(tok, ex.messages, a, self.system) for ex, a in zip(examples, answers)]
            scores = engine.score(model, items, tok.pad_token_id, self.batch_size, bf16=bf16, desc=desc,
                                  mask=self.mask, sort=False, cross_entropy=True)
        else:
            items = [encode(tok, ex, self.max_length, answer=a) for ex, a in zip(examples, answers)]
            scores = engine.score(model, items, tok.pad_token_id, self.batch_size, bf16=bf16, desc=desc)
        return np.array([s.avg_nll for s in scores]), scores

    def evaluate(self, model, tokenizer, data, ctx=None, reference: dict | None = None) -> dict:
        """Per split: likelihoods -> probability -> truth ratio -> memorisation -> generations; then the summaries."""
        gen = getattr(ctx, "generation", None) or {}
        bf16 = gen.get("bf16", False)  # true, false or "auto" (unlearning/precision.py)
        self.max_length = getattr(ctx, "max_length", 512) if ctx is not None else 512
        self.system = (gen.get("system_prompt") if hasattr(gen, "get") else None) or ou.SYSTEM_PROMPT
        aggregates: dict = {}
        per_item: dict = {}
        for split in self.splits:
            examples = list(data.extra.get(split, []))[: self.max_items or None]
            if not examples:
                continue
            p = SPLITS[split]["prefix"]
            rows = [{"id": ex.id, "question": next(m["content"] for m in reversed(ex.messages) if m["role"] == "user"),
                     "answer": ex.answer} for ex in examples]
            nlls = self._likelihoods(model, tokenizer, split, examples, bf16)
            aggregates.update(self._probability(split, nlls, rows))
            aggregates.update(self._truth_ratio(split, nlls, rows))
            aggregates.update(self._memorisation(p, nlls["scores"], rows))
            if self.generate:
                aggregates.update(self._rouge(model, tokenizer, split, examples, gen, rows))
            per_item[split] = rows
        aggregates.update(self._summaries(aggregates, per_item, reference))
        return {"aggregates": aggregates, "per_item": per_item}

    def _likelihoods(self, model, tok, split: str, examples: list[Example], bf16: bool) -> dict:
        """One batched pass per answer variant: the answer, its perturbations and (forget/retain) its paraphrase."""
        spec = SPLITS[split]
        correct, scores = self._avg_nll(model, tok, examples, [ex.answer for ex in examples], bf16, f"{split}: answer")
        n_wrong = len(examples[0].meta["perturbed_answer"])
        flat = [(ex, a) for ex in examples for a in ex.meta["perturbed_answer"][:n_wrong]]
        wrong, _ = self._avg_nll(model, tok, [e for e, _ in flat], [a for _, a in flat], bf16, f"{split}: perturbed")
        out = {"correct": correct, "scores": scores, "wrong": wrong.reshape(len(examples), n_wrong), "para": None}
        if spec["tr_correct"] != "answer":
            out["para"], _ = self._avg_nll(model, tok, examples, [ex.meta["paraphrased_answer"] for ex in examples],
                                           bf16, f"{split}: paraphrased")
        return out

    @staticmethod
    def _probability(split: str, nlls: dict, rows: list[dict]) -> dict:
        spec, p = SPLITS[split], SPLITS[split]["prefix"]
        if spec["normalised_prob"]:
            probs = metrics.normalised_prob(nlls["correct"], nlls["wrong"])
            out = {f"{p}_Q_A_Prob_normalised": float(probs.mean())}
        else:
            probs = metrics.prob_from_avg_nll(nlls["correct"])
            out = {f"{p}_Q_A_Prob": float(probs.mean())}
        if nlls["para"] is not None:
            out[f"{p}_Q_A_PARA_Prob"] = float(metrics.prob_from_avg_nll(nlls["para"]).mean())
            out[f"{p}_Q_A_PERT_Prob"] = float(metrics.prob_from_avg_nll(nlls["wrong"]).mean())
        answer_probs = metrics.prob_from_avg_nll(nlls["correct"])
        wrong_probs = metrics.prob_from_avg_nll(nlls["wrong"])
        para_probs = metrics.prob_from_avg_nll(nlls["para"]) if nlls["para"] is not None else None
        for i, (row, pr) in enumerate(zip(rows, probs)):
            row["prob"] = float(pr)  # the split's headline probability (normalised over the options on ra / wf)
            row.update(answer_prob=float(answer_probs[i]), pert_probs=[float(x) for x in wrong_probs[i]])
            if para_probs is not None:
                row["para_prob"] = float(para_probs[i])
        return out

    @staticmethod
    def _truth_ratio(split: str, nlls: dict, rows: list[dict]) -> dict:
        tr = metrics.truth_ratio(nlls["correct"] if nlls["para"] is None else nlls["para"], nlls["wrong"])
        for row, t in zip(rows, tr):
            row["truth_ratio"] = float(t)
        value = metrics.tr_closer_to_1(tr) if split == "forget" else metrics.tr_true_better(tr)
        return {f"{SPLITS[split]['prefix']}_Truth_Ratio": value}

    @staticmethod
    def _memorisation(p: str, scores, rows: list[dict]) -> dict:
        # OpenUnlearning scores EM/ES without the last answer token (the EOS prediction)
        em = [memorization.exact_memorization(s.hit[:-1]) for s in scores]
        es = [memorization.extraction_strength(s.hit[:-1]) for s in scores]
        for row, e, x in zip(rows, em, es):
            row.update(exact_memorization=e, extraction_strength=x)
        return {f"{p}_exact_memorization": float(np.mean([e for e in em if e is not None])),
                f"{p}_extraction_strength": float(np.mean(es))}

    def _rouge(self, model, tok, split: str, examples: list[Example], gen, rows: list[dict]) -> dict:
        if self.compat:  # OpenUnlearning's generation: its prompt and mask, batches of 32 in data order, left padding
            prompts = [ou.prompt_ids(tok, ex.messages, self.system) for ex in examples]
            outs = engine.greedy(model, tok, prompts, self.max_new_tokens, self.batch_size, bf16=gen.get("bf16", False),
                                 desc=f"{split}: generate", mask=self.mask, sort=False, clean_up=True)
            truths = [ou.ground_truth(tok, ex.messages, ex.answer, self.system) for ex in examples]
        else:
            outs = engine.answer(model, tok, [ex.messages for ex in examples], self.max_new_tokens, gen,
                                 desc=f"{split}: generate")
            truths = [ex.answer for ex in examples]
        rouge = metrics.rouge_l(outs, truths)
        for row, o, r in zip(rows, outs, rouge):
            row.update(generation=o, rougeL_recall=r["rougeL_recall"], rougeL_f1=r["rougeL_f1"])
        return {f"{SPLITS[split]['prefix']}_Q_A_ROUGE": float(np.mean([r["rougeL_recall"] for r in rouge]))}

    @staticmethod
    def _summaries(aggregates: dict, per_item: dict, reference: dict | None) -> dict:
        """model_utility (harmonic mean of the 9 retain/ra/wf numbers) and forget_quality (KS test vs the reference)."""
        out = {}
        if all(k in aggregates for k in UTILITY):
            out["model_utility"] = metrics.harmonic_mean(aggregates[k] for k in UTILITY)
        ref_rows = (reference or {}).get("per_item", {}).get("forget")
        if ref_rows and "forget" in per_item:  # the same items on both sides (relearn evaluates a remainder)
            ids = {r["id"] for r in per_item["forget"]}
            ref_rows = [r for r in ref_rows if r["id"] in ids]
        if ref_rows and "forget" in per_item:
            out["forget_quality"] = metrics.forget_quality([r["truth_ratio"] for r in per_item["forget"]],
                                                           [r["truth_ratio"] for r in ref_rows])
        return out
