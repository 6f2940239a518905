"""Small metric functions: arrays in, numbers out (unit-tested by hand).

Definitions follow TOFU (Maini et al. 2024) as implemented in OpenUnlearning
(locuslab/open-unlearning, src/evals/metrics/{memorization,utils}.py), including its
1e-10 guards, so numbers are comparable.
"""

from __future__ import annotations

import re

import numpy as np
from scipy import stats

EPS = 1e-10


def prob_from_avg_nll(avg_nll) -> np.ndarray:
    """TOFU/OpenUnlearning 'probability': exp(-mean answer-token NLL) per item."""
    return np.exp(-np.asarray(avg_nll, dtype=np.float64))


def normalised_prob(correct_avg_nll, wrong_avg_nll) -> np.ndarray:
    """OpenUnlearning probability_w_options: p(correct) / (p(correct) + sum p(wrong)), p = exp(-avg NLL)."""
    correct = prob_from_avg_nll(correct_avg_nll)
    wrong = prob_from_avg_nll(wrong_avg_nll)
    wrong = wrong.sum(axis=tuple(range(1, wrong.ndim))) if wrong.ndim > 1 else wrong
    return correct / (correct + wrong + EPS)


def truth_ratio(correct_avg_nll, wrong_avg_nll) -> np.ndarray:
    """TOFU truth ratio: geometric mean of perturbed-answer probs over the correct (paraphrased) answer's prob.

    Probabilities are length-normalised (exp(-avg NLL)); the geometric mean over perturbed
    answers is exp(-mean of their avg NLLs), as in OpenUnlearning's truth_ratio.
    """
    correct = np.asarray(correct_avg_nll, dtype=np.float64)
    wrong = np.asarray(wrong_avg_nll, dtype=np.float64)
    if wrong.ndim > 1:
        wrong = wrong.mean(axis=tuple(range(1, wrong.ndim)))
    return np.exp(-wrong) / (np.exp(-correct) + EPS)


def tr_closer_to_1(tr) -> float:
    """Forget-set aggregate: mean of min(TR, 1/TR)."""
    tr = np.asarray(tr, dtype=np.float64)
    return float(np.mean(np.minimum(tr, 1 / (tr + EPS))))


def tr_true_better(tr) -> float:
    """Retain / real-authors / world-facts aggregate: mean of max(0, 1 - TR)."""
    tr = np.asarray(tr, dtype=np.float64)
    return float(np.mean(np.maximum(0, 1 - tr)))


def forget_quality(model_tr, reference_tr) -> float:
    """KS-test p-value between the forget truth ratios of the model and of the retain reference."""
    a = 1 / (np.asarray(model_tr, dtype=np.float64) + EPS)
    b = 1 / (np.asarray(reference_tr, dtype=np.float64) + EPS)
    return float(stats.ks_2samp(a, b).pvalue)


def harmonic_mean(values) -> float:
    """Model utility: harmonic mean of the retain / real-authors / world-facts numbers (0 if any is 0)."""
    v = np.asarray(list(values), dtype=np.float64)
    if np.any(v <= 0):
        return 0.0
    return float(stats.hmean(v))


_SCORER = None


def rouge_l(predictions: list[str], references: list[str]) -> list[dict]:
    """ROUGE-L recall and F1 (rouge-score, Porter stemmer on), as OpenUnlearning's eval_text_similarity."""
    global _SCORER
    from rouge_score import rouge_scorer

    if _SCORER is None:
        _SCORER = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    out = []
    for pred, ref in zip(predictions, references):
        s = _SCORER.score(ref, pred)["rougeL"]
        out.append({"rougeL_recall": s.recall, "rougeL_f1": s.fmeasure})
    return out


def degenerate(text: str) -> bool:
    """Empty, no letters or digits, or mostly repeated word trigrams (fewer than half distinct)."""
    if not re.search(r"[0-9A-Za-z]", text or ""):
        return True
    words = text.split()
    if len(words) < 6:
        return False
    grams = [tuple(words[i : i + 3]) for i in range(len(words) - 2)]
    # rep-3 = 1 - distinct/total word trigrams (Welleck et al. 2020, "Neural text generation with unlikelihood training") > 0.5
    return len(set(grams)) / len(grams) < 0.5


def mean_or_none(values) -> float | None:
    """Mean of the values that exist (None skipped); None when there are none (JSON null, shown as '-')."""
    vals = [float(v) for v in values if v is not None]
    return float(np.mean(vals)) if vals else None
