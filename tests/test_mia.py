"""MIA scores, AUC direction, PrivLeak and the memorisation metrics on hand-made token scores.

Every expected value is computed by hand in the comments; `TokenScores` objects are the
engine's real dataclass, filled with chosen numbers instead of a model's (nothing else mocked).
"""

from __future__ import annotations

import math
import zlib

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from unlearning.eval import mia
from unlearning.eval.engine import TokenScores
from unlearning.eval.memorization import exact_memorization, extraction_strength

LOGP = np.array([-0.1, -2.0, -0.5, -3.0, -1.0])


def test_loss_and_zlib_scores():
    # mean NLL = (0.1 + 2 + 0.5 + 3 + 1) / 5 = 1.32
    assert mia.loss_score(LOGP) == pytest.approx(1.32)
    text = "the cat sat on the mat"
    assert mia.zlib_score(LOGP, text) == pytest.approx(1.32 / len(zlib.compress(text.encode())))


def test_min_k_bottom_fraction():
    # k=0.4 of 5 tokens -> int(2.0) = 2 lowest: -3.0, -2.0 -> score = 2.5
    assert mia.min_k_score(LOGP, 0.4) == pytest.approx(2.5)
    # k=0.1 -> int(0.5) = 0 -> at least one token: the lowest, -3.0
    assert mia.min_k_score(LOGP, 0.1) == pytest.approx(3.0)
    assert mia.min_k_score(LOGP, 1.0) == pytest.approx(1.32)


def test_min_k_plus_plus_hand_computation():
    logp = np.array([-1.0, -2.0, -0.5, -4.0])
    mu = np.array([-1.5, -1.0, -1.0, -2.0])
    var = np.array([0.25, 1.0, 4.0, 1e-9])  # the last is clamped to 1e-6
    # z = (logp - mu) / sqrt(var): (0.5/0.5, -1/1, 0.5/2, -2/1e-3) = (1, -1, 0.25, -2000)
    # k=0.5 -> 2 lowest: -2000, -1 -> score = -mean = 1000.5
    assert mia.min_k_pp_score(logp, mu, var, 0.5) == pytest.approx(1000.5)
    # k=0.75 -> int(3.0) = 3 lowest: -2000, -1, 0.25 -> 2000.75 / 3
    assert mia.min_k_pp_score(logp, mu, var, 0.75) == pytest.approx(2000.75 / 3)


def test_scores_bundle_uses_token_scores():
    ts = TokenScores(logp=LOGP, hit=np.ones(5, bool), mu=LOGP, var=np.ones(5))
    s = mia.scores(ts, "abc", k=0.4)
    assert s["loss"] == pytest.approx(1.32)
    assert s["min_k"] == pytest.approx(2.5)
    assert s["min_k_plus_plus"] == pytest.approx(0.0)  # logp == mu -> z = 0 everywhere


def test_auc_direction_forget_is_positive_member_class():
    members = [0.5, 0.7, 0.9]          # low loss: the model has seen them
    non_members = [2.0, 2.5, 3.0]
    assert mia.auc(members, non_members) == 1.0   # forget fully recognised
    assert mia.auc(non_members, members) == 0.0   # reversed
    # one swapped pair out of 4: forget (1, 3) vs holdout (2, 4) -> pairs with forget lower: 3 of 4
    assert mia.auc([1.0, 3.0], [2.0, 4.0]) == pytest.approx(0.75)


def test_auc_equals_open_unlearning_labelling():
    rng = np.random.default_rng(0)
    f, h = rng.normal(1.0, 1, 30), rng.normal(1.5, 1, 40)
    ou = roc_auc_score([0] * 30 + [1] * 40, np.concatenate([f, h]))  # OpenUnlearning's mia_auc
    assert mia.auc(f, h) == pytest.approx(ou)


def test_privleak_formula():
    # MUSE AUC = 1 - ours: model 1 - 0.9 = 0.1, reference 1 - 0.5 = 0.5 -> (0.1 - 0.5) / 0.5 * 100 = -80
    assert mia.privleak(0.9, 0.5) == pytest.approx(-80.0)
    assert mia.privleak(0.6, 0.6) == pytest.approx(0.0)
    # over-unlearned: forget looks less member-like than holdout -> positive: (0.8 - 0.6) / 0.6 * 100
    assert mia.privleak(0.2, 0.4) == pytest.approx(100 / 3)
    assert mia.privleak(None, 0.5) is None and mia.privleak(0.5, None) is None


def test_exact_memorization():
    assert exact_memorization([True, False, True, True]) == pytest.approx(0.75)
    assert exact_memorization([]) is None


@pytest.mark.parametrize("hits, expected", [
    ([True, True, True, True], 1.0),          # k = 0
    ([False, True, True, True], 0.75),        # k = 1 -> 1 - 1/4
    ([True, False, True, True], 0.5),         # k = 2
    ([True, True, True, False], 0.25),        # no suffix matches: OpenUnlearning's loop ends at k = 3
    ([False, False, False, True], 0.25),      # only the last token: k = 3
    ([], 0.0),
])
def test_extraction_strength(hits, expected):
    assert extraction_strength(hits) == pytest.approx(expected)
    if hits:  # same as OpenUnlearning's loop, written out
        k = 0
        for k in range(len(hits)):
            if all(hits[k:]):
                break
        assert extraction_strength(hits) == pytest.approx(1 - k / len(hits))
    assert not math.isnan(extraction_strength(hits))
