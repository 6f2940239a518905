"""Teacher-forced memorisation metrics from `TokenScores.hit` (argmax == label per answer token).

Definitions as OpenUnlearning implements them (src/evals/metrics/memorization.py):
exact memorisation (Tirumala et al. 2022) and extraction strength (Carlini et al. 2021,
as used by OpenUnlearning). Written by hand: no library computes them; both are a few
lines over the per-token hits the shared engine already returns.
"""

from __future__ import annotations

import numpy as np


def exact_memorization(hit) -> float | None:
    """Fraction of answer positions whose argmax prediction equals the label; None if no answer tokens."""
    hit = np.asarray(hit, dtype=bool)
    if hit.size == 0:
        return None
    # EM = (1/|y|) * sum_t 1[argmax p(.|y<t) == y_t]  (Tirumala et al. 2022; OpenUnlearning exact_memorization)
    return float(hit.mean())


def extraction_strength(hit) -> float:
    """1 - k/|y| for the smallest k whose suffix y[k:] is reproduced token for token by the argmax.

    OpenUnlearning's loop runs k over range(|y|) and breaks at the first matching suffix; when no
    suffix matches the loop ends at k = |y| - 1, so the score is then 1/|y| (same as when only the
    last token matches). We keep that behaviour so numbers compare with OpenUnlearning's.
    Empty answers score 0, as there.
    """
    hit = np.asarray(hit, dtype=bool)
    n = hit.size
    if n == 0:
        return 0.0
    # suffix_ok[k] = all(hit[k:]); the first True is the smallest reproduced suffix start.
    suffix_ok = np.flip(np.cumprod(np.flip(hit))).astype(bool)
    k = int(np.argmax(suffix_ok)) if suffix_ok.any() else n - 1
    # ES = 1 - k/|y|  (Carlini et al. 2021 extraction; OpenUnlearning extraction_strength)
    return 1.0 - k / n
