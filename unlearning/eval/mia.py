"""Membership-inference scores (LOSS, zlib, Min-K%, Min-K%++) and their ROC AUC.

Scores follow OpenUnlearning's sign (src/evals/metrics/mia/*.py): every score is
"loss-like", higher = less likely a member. AUCs use the opposite, conventional view:
the forget (member) documents are the positive class and the membership score is
minus the attack score, i.e. `roc_auc_score(is_member, -score)`. This is numerically the
same as OpenUnlearning's `roc_auc_score([0]*forget + [1]*holdout, score)`:
AUC -> 1 when the model recognises the forget set (not unlearned), 0.5 when forget and
holdout are indistinguishable. MUSE reports AUC as 1 - this value; `privleak` converts.

Written by hand: the per-document scores (a few numpy lines each); the AUC is scikit-learn's.
"""

from __future__ import annotations

import zlib as _zlib

import numpy as np
from sklearn.metrics import roc_auc_score


def loss_score(logp) -> float:
    # LOSS attack (Yeom et al. 2018): mean token NLL of the document.
    return float(-np.mean(logp))


def zlib_score(logp, text: str) -> float:
    # zlib attack (Carlini et al. 2021): NLL / zlib-compressed byte length, as OpenUnlearning's ZLIBAttack.
    return loss_score(logp) / max(len(_zlib.compress(text.encode("utf-8"))), 1)


def _bottom_k_mean(values, k: float) -> float:
    values = np.sort(np.asarray(values, dtype=np.float64))
    num_k = max(1, int(len(values) * k))
    return float(np.mean(values[:num_k]))


def min_k_score(logp, k: float = 0.4) -> float:
    # Min-K% Prob (Shi et al. 2024): minus the mean of the lowest k-fraction of token log-probs.
    return -_bottom_k_mean(logp, k)


def min_k_pp_score(logp, mu, var, k: float = 0.4) -> float:
    # Min-K%++ (Zhang et al. 2024): (log p(x_t) - mu_t) / sigma_t, mu/sigma^2 of log p under the model's own
    # next-token distribution; variance clamped at 1e-6 as OpenUnlearning does; then minus the bottom-k mean.
    z = (np.asarray(logp) - np.asarray(mu)) / np.sqrt(np.clip(np.asarray(var), 1e-6, None))
    return -_bottom_k_mean(z, k)


def scores(ts, text: str, k: float = 0.4) -> dict[str, float]:
    """All four attack scores of one document from its `TokenScores` (needs mu/var: score(..., stats=True))."""
    if len(ts.logp) == 0:
        return {"loss": 0.0, "zlib": 0.0, "min_k": 0.0, "min_k_plus_plus": 0.0}
    return {"loss": loss_score(ts.logp), "zlib": zlib_score(ts.logp, text),
            "min_k": min_k_score(ts.logp, k), "min_k_plus_plus": min_k_pp_score(ts.logp, ts.mu, ts.var, k)}


def auc(forget_scores, holdout_scores) -> float:
    """ROC AUC with forget = positive member class and membership score = -attack score."""
    f, h = np.asarray(forget_scores, dtype=float), np.asarray(holdout_scores, dtype=float)
    labels = np.concatenate([np.ones(len(f)), np.zeros(len(h))])
    return float(roc_auc_score(labels, -np.concatenate([f, h])))


def privleak(auc_model: float | None, auc_reference: float | None) -> float | None:
    """MUSE PrivLeak in percent from member-positive AUCs (this module's convention).

    MUSE (Shi et al. 2024) defines PrivLeak = (AUC_unl - AUC_retain) / AUC_retain * 100 with its AUC
    equal to 1 - ours, as OpenUnlearning's privleak does (score = 1 - auc; +1e-10 in the denominator).
    ~0 is best; strongly negative = forget set still recognised (under-unlearned); positive = over-unlearned.
    """
    if auc_model is None or auc_reference is None:
        return None
    muse_model, muse_ref = 1.0 - auc_model, 1.0 - auc_reference
    return (muse_model - muse_ref) / (muse_ref + 1e-10) * 100.0
