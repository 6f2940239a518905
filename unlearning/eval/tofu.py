"""TOFU evaluator: Q_A_Prob, Q_A_ROUGE, Truth Ratio on forget / retain / real authors / world facts,
forget_quality (KS test against the retain reference) and model_utility (harmonic mean of 9 numbers).

Definitions as in TOFU and OpenUnlearning (see `unlearning/eval/metrics.py`). One batched
likelihood pass per (split, answer variant) feeds every metric that needs it.
"""

from __future__ import annotations

import numpy as np

from unlearning.data.base import Example, encode
from unlearning.eval import engine, memorization, metrics

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
    uses_reference = True

    def __init__(self, batch_size: int = 16, max_new_tokens: int = 200, max_items: int | None = None,
                 splits: list[str] | None = None, generate: bool = True, **_):
        self.batch_size, self.max_new_tokens, self.max_items = batch_size, max_new_tokens, max_items
        self.splits = list(splits or SPLITS)
        self.generate = generate
        unknown = set(self.splits) - set(SPLITS)
        if unknown:
            from unlearning.errors import UserError

            raise UserError(f"evaluator.splits has unknown split(s) {sorted(unknown)}; use {sorted(SPLITS)}")

    def _avg_nll(self, model, tok, examples: list[Example], answers: list[str], bf16: bool, desc: str):
        items = [encode(tok, ex, self.max_length, answer=a) for ex, a in zip(examples, answers)]
        scores = engine.score(model, items, tok.pad_token_id, self.batch_size, bf16=bf16, desc=desc)
        return np.array([s.avg_nll for s in scores]), scores

    def evaluate(self, model, tokenizer, data, ctx=None, reference: dict | None = None) -> dict:
        gen = getattr(ctx, "generation", None) or {}
        bf16 = bool(gen.get("bf16", False))
        self.max_length = getattr(ctx, "max_length", 512) if ctx is not None else 512
        aggregates: dict = {}
        per_item: dict = {}
        for split in self.splits:
            spec = SPLITS[split]
            examples = list(data.extra.get(split, []))[: self.max_items or None]
            if not examples:
                continue
            p = spec["prefix"]
            rows = [{"id": ex.id, "question": ex.messages[-1]["content"], "answer": ex.answer} for ex in examples]
            correct_nll, correct_scores = self._avg_nll(model, tokenizer, examples, [ex.answer for ex in examples],
                                                        bf16, f"{split}: answer")
            n_wrong = len(examples[0].meta["perturbed_answer"])
            flat = [(ex, a) for ex in examples for a in ex.meta["perturbed_answer"][:n_wrong]]
            wrong_nll, _ = self._avg_nll(model, tokenizer, [e for e, _ in flat], [a for _, a in flat], bf16,
                                         f"{split}: perturbed")
            wrong_nll = wrong_nll.reshape(len(examples), n_wrong)
            if spec["normalised_prob"]:
                probs = metrics.normalised_prob(correct_nll, wrong_nll)
                aggregates[f"{p}_Q_A_Prob_normalised"] = float(probs.mean())
            else:
                probs = metrics.prob_from_avg_nll(correct_nll)
                aggregates[f"{p}_Q_A_Prob"] = float(probs.mean())
            if spec["tr_correct"] == "answer":
                tr_correct_nll = correct_nll
            else:
                tr_correct_nll, _ = self._avg_nll(model, tokenizer, examples,
                                                  [ex.meta["paraphrased_answer"] for ex in examples], bf16,
                                                  f"{split}: paraphrased")
                aggregates[f"{p}_Q_A_PARA_Prob"] = float(metrics.prob_from_avg_nll(tr_correct_nll).mean())
                aggregates[f"{p}_Q_A_PERT_Prob"] = float(metrics.prob_from_avg_nll(wrong_nll).mean())
            tr = metrics.truth_ratio(tr_correct_nll, wrong_nll)
            aggregates[f"{p}_Truth_Ratio"] = (metrics.tr_closer_to_1(tr) if split == "forget"
                                              else metrics.tr_true_better(tr))
            # OpenUnlearning scores EM/ES without the last answer token (the EOS prediction)
            em = [memorization.exact_memorization(s.hit[:-1]) for s in correct_scores]
            es = [memorization.extraction_strength(s.hit[:-1]) for s in correct_scores]
            aggregates[f"{p}_exact_memorization"] = float(np.mean([e for e in em if e is not None]))
            aggregates[f"{p}_extraction_strength"] = float(np.mean(es))
            for row, pr, t, e, x in zip(rows, probs, tr, em, es):
                row.update(prob=float(pr), truth_ratio=float(t), exact_memorization=e, extraction_strength=x)
            if self.generate:
                outs = engine.answer(model, tokenizer, [ex.messages for ex in examples], self.max_new_tokens, gen,
                                     desc=f"{split}: generate")
                rouge = metrics.rouge_l(outs, [ex.answer for ex in examples])
                aggregates[f"{p}_Q_A_ROUGE"] = float(np.mean([r["rougeL_recall"] for r in rouge]))
                for row, o, r in zip(rows, outs, rouge):
                    row.update(generation=o, rougeL_recall=r["rougeL_recall"], rougeL_f1=r["rougeL_f1"])
            per_item[split] = rows
        if all(k in aggregates for k in UTILITY):
            aggregates["model_utility"] = metrics.harmonic_mean(aggregates[k] for k in UTILITY)
        ref_rows = (reference or {}).get("per_item", {}).get("forget")
        if ref_rows and "forget" in per_item:
            ref_tr = [r["truth_ratio"] for r in ref_rows]
            aggregates["forget_quality"] = metrics.forget_quality([r["truth_ratio"] for r in per_item["forget"]],
                                                                  ref_tr)
        return {"aggregates": aggregates, "per_item": per_item}
