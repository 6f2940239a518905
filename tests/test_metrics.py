"""TOFU metric functions against hand-computed values."""

import math

import numpy as np
import pytest

from unlearning.eval import metrics

LN2 = math.log(2)


def test_prob_is_exp_of_minus_mean_nll():
    assert metrics.prob_from_avg_nll([0.0, LN2]) == pytest.approx([1.0, 0.5])


def test_normalised_prob_over_correct_and_perturbed():
    # p(correct)=0.5; p(wrong)=0.5 and 0.25 -> 0.5 / (0.5 + 0.75) = 0.4
    got = metrics.normalised_prob([LN2], [[LN2, 2 * LN2]])
    assert got == pytest.approx([0.4])


def test_truth_ratio_is_geometric_mean_of_perturbed_over_correct():
    # perturbed probs 0.5 and 0.125 -> geometric mean 0.25; correct 0.5 -> TR 0.5
    got = metrics.truth_ratio([LN2], [[LN2, 3 * LN2]])
    assert got == pytest.approx([0.5])


def test_truth_ratio_aggregates():
    assert metrics.tr_closer_to_1([0.5, 2.0]) == pytest.approx(0.5)
    assert metrics.tr_true_better([0.5, 1.5]) == pytest.approx(0.25)


def test_forget_quality_is_ks_p_value():
    assert metrics.forget_quality([1, 2, 3], [1, 2, 3]) == pytest.approx(1.0)
    # disjoint samples of 3 and 3: exact two-sided p = 2 / C(6,3) = 0.1
    assert metrics.forget_quality([1, 2, 3], [10, 11, 12]) == pytest.approx(0.1)


def test_harmonic_mean_and_zero():
    assert metrics.harmonic_mean([1.0, 0.5, 0.25]) == pytest.approx(3 / 7)
    assert metrics.harmonic_mean([1.0, 0.0]) == 0.0


def test_rouge_l_recall_with_stemming():
    r = metrics.rouge_l(["the cat"], ["the cat sat"])[0]
    assert r["rougeL_recall"] == pytest.approx(2 / 3)
    assert r["rougeL_f1"] == pytest.approx(0.8)
    # the Porter stemmer makes "running" match "runs"
    assert metrics.rouge_l(["she runs"], ["she running"])[0]["rougeL_recall"] == pytest.approx(1.0)


def test_truth_ratio_batch_shape():
    tr = metrics.truth_ratio(np.array([LN2, 0.0]), np.array([[LN2, LN2], [0.0, 0.0]]))
    assert tr.shape == (2,) and tr == pytest.approx([1.0, 1.0])
