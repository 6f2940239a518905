"""The TOFU evaluator's wiring on hand-built inputs: which answer is "correct" per split, which truth-ratio aggregator,
which probability, the 9 model_utility inputs and which items forget_quality compares.

The model is replaced at the evaluator's two model calls only (the mean answer NLL of each scored answer, and the
greedy answers): every NLL below is chosen by hand, so every expected number is computed by hand from them. The
likelihood and generation code itself is held to OpenUnlearning's output in tests/test_parity.py.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from unlearning.data.base import UnlearningData, chat
from unlearning.eval import tofu as tofu_mod
from unlearning.eval.tofu import TofuEvaluator

# mean answer-token NLL of every answer text the evaluator scores
NLL = {
    # forget: answers A1/A2, paraphrases P1/P2, perturbed X*/Y*
    "A1": 1.0, "P1": 2.0, "X1": 3.0, "Y1": 5.0,
    "A2": 1.0, "P2": 1.0, "X2": 1.0, "Y2": 1.0,
    # retain
    "RA": 0.5, "RP": 1.0, "RX": 2.0, "RY": 2.0,
    # real authors / world facts: the original answer is the correct one (no paraphrase scored)
    "AA": 1.0, "AX": 2.0, "AY": 2.0,
    "WA": 2.0, "WX": 1.0, "WY": 3.0,
}
GENERATED = {"forget": ["A1", "nothing"], "retain": ["RA"], "real_authors": ["AA other"], "world_facts": ["no"]}


def data() -> UnlearningData:
    def ex(q, a, para, pert, i):
        return chat(q, a, id=f"{q}{i}", paraphrased_answer=para, perturbed_answer=pert)
    extra = {
        "forget": [ex("f", "A1", "P1", ["X1", "Y1"], 1), ex("f", "A2", "P2", ["X2", "Y2"], 2)],
        "retain": [ex("r", "RA", "RP", ["RX", "RY"], 1)],
        "real_authors": [ex("a", "AA", "unused", ["AX", "AY"], 1)],
        "world_facts": [ex("w", "WA", "unused", ["WX", "WY"], 1)],
    }
    return UnlearningData(name="hand", forget=extra["forget"], retain=extra["retain"], target_train=[], extra=extra)


@pytest.fixture
def evaluated(monkeypatch):
    def avg_nll(self, model, tok, examples, answers, bf16, desc):
        if "paraphrased" in desc and any(a == "unused" for a in answers):
            raise AssertionError("a paraphrase was scored on a split whose truth ratio uses the original answer")
        return np.array([NLL[a] for a in answers]), [None] * len(answers)

    monkeypatch.setattr(TofuEvaluator, "_avg_nll", avg_nll)
    monkeypatch.setattr(TofuEvaluator, "_memorisation", staticmethod(lambda p, scores, rows: {}))
    monkeypatch.setattr(tofu_mod.engine, "answer", lambda model, tok, msgs, n, gen, desc=None:
                        GENERATED[desc.split(":")[0]])
    reference = {"per_item": {"forget": [{"id": "f1", "truth_ratio": 2.0}, {"id": "f2", "truth_ratio": 4.0},
                                         {"id": "relearned", "truth_ratio": 0.0001}]}}
    return TofuEvaluator().evaluate(None, None, data(), None, reference=reference)


def test_forget_truth_ratio_uses_the_paraphrase_and_closer_to_1(evaluated):
    # item 1: TR = exp(-mean(3, 5)) / exp(-2) = e^-2 = 0.135335; item 2: e^-1 / e^-1 = 1
    rows = evaluated["per_item"]["forget"]
    assert [r["truth_ratio"] for r in rows] == pytest.approx([math.exp(-2), 1.0], rel=1e-9)
    # closer_to_1: mean(min(TR, 1/TR)) = (0.135335 + 1) / 2
    assert evaluated["aggregates"]["forget_Truth_Ratio"] == pytest.approx((math.exp(-2) + 1) / 2, rel=1e-9)


def test_forget_and_retain_probabilities_are_plain_answer_probabilities(evaluated):
    a = evaluated["aggregates"]
    assert a["forget_Q_A_Prob"] == pytest.approx(math.exp(-1), rel=1e-12)        # both answers NLL 1
    assert a["forget_Q_A_PARA_Prob"] == pytest.approx((math.exp(-2) + math.exp(-1)) / 2, rel=1e-12)
    assert a["forget_Q_A_PERT_Prob"] == pytest.approx((math.exp(-3) + math.exp(-5) + 2 * math.exp(-1)) / 4, rel=1e-12)
    assert a["retain_Q_A_Prob"] == pytest.approx(math.exp(-0.5), rel=1e-12)


def test_retain_uses_the_paraphrase_and_true_better(evaluated):
    # TR = exp(-2) / exp(-1) = e^-1; true_better = max(0, 1 - e^-1)
    assert evaluated["per_item"]["retain"][0]["truth_ratio"] == pytest.approx(math.exp(-1), rel=1e-9)
    assert evaluated["aggregates"]["retain_Truth_Ratio"] == pytest.approx(1 - math.exp(-1), rel=1e-9)


def test_real_authors_and_world_facts_use_the_original_answer_normalised(evaluated):
    a = evaluated["aggregates"]
    # ra: TR = exp(-2) / exp(-1) = e^-1 -> 1 - e^-1; normalised p = e^-1 / (e^-1 + 2 e^-2)
    assert a["ra_Truth_Ratio"] == pytest.approx(1 - math.exp(-1), rel=1e-9)
    assert a["ra_Q_A_Prob_normalised"] == pytest.approx(math.exp(-1) / (math.exp(-1) + 2 * math.exp(-2)), rel=1e-9)
    # wf: TR = exp(-mean(1, 3)) / exp(-2) = 1 -> max(0, 1 - 1) = 0; p = e^-2 / (e^-2 + e^-1 + e^-3)
    assert a["wf_Truth_Ratio"] == pytest.approx(0.0, abs=1e-9)
    assert a["wf_Q_A_Prob_normalised"] == pytest.approx(
        math.exp(-2) / (math.exp(-2) + math.exp(-1) + math.exp(-3)), rel=1e-9)
    assert "ra_Q_A_Prob" not in a and "ra_Q_A_PARA_Prob" not in a


def test_rouge_is_recall_of_the_answer(evaluated):
    a = evaluated["aggregates"]
    assert a["forget_Q_A_ROUGE"] == pytest.approx(0.5)   # "A1" recalled once of two
    assert a["ra_Q_A_ROUGE"] == pytest.approx(1.0)       # "AA other" contains the whole answer: recall 1
    assert a["wf_Q_A_ROUGE"] == pytest.approx(0.0)


def test_model_utility_is_the_harmonic_mean_of_exactly_the_nine(evaluated):
    a = evaluated["aggregates"]
    # retain: Prob e^-0.5, ROUGE 1, TR 1 - e^-1; ra: normalised p, ROUGE 1, TR 1 - e^-1; wf: p, ROUGE 0, TR ~0
    # (1 - e^-2 / (e^-2 + 1e-10)). A zero among the nine makes the harmonic mean 0 (TOFU's and OpenUnlearning's rule).
    assert a["model_utility"] == 0.0
    nine = [a[k] for k in tofu_mod.UTILITY]
    assert sorted(tofu_mod.UTILITY) == sorted(["retain_Q_A_Prob", "retain_Q_A_ROUGE", "retain_Truth_Ratio",
                                               "ra_Q_A_Prob_normalised", "ra_Q_A_ROUGE", "ra_Truth_Ratio",
                                               "wf_Q_A_Prob_normalised", "wf_Q_A_ROUGE", "wf_Truth_Ratio"])
    assert nine.count(0.0) == 1 and a["wf_Q_A_ROUGE"] == 0.0


def test_model_utility_value_without_zeros(monkeypatch):
    """With wf's answer generated and its TR below 1, the harmonic mean of the nine by hand."""
    monkeypatch.setitem(GENERATED, "world_facts", ["WA"])
    monkeypatch.setitem(NLL, "WY", 5.0)  # wf TR = exp(-3) / exp(-2) = e^-1
    def avg_nll(self, model, tok, examples, answers, bf16, desc):
        return np.array([NLL[a] for a in answers]), [None] * len(answers)
    monkeypatch.setattr(TofuEvaluator, "_avg_nll", avg_nll)
    monkeypatch.setattr(TofuEvaluator, "_memorisation", staticmethod(lambda p, scores, rows: {}))
    monkeypatch.setattr(tofu_mod.engine, "answer", lambda model, tok, msgs, n, gen, desc=None:
                        GENERATED[desc.split(":")[0]])
    a = TofuEvaluator(splits=["retain", "real_authors", "world_facts"]).evaluate(None, None, data(), None)["aggregates"]
    e = math.exp
    nine = [e(-0.5), 1.0, 1 - e(-1),
            e(-1) / (e(-1) + 2 * e(-2)), 1.0, 1 - e(-1),
            e(-2) / (e(-2) + e(-1) + e(-5)), 1.0, 1 - e(-1)]
    assert a["model_utility"] == pytest.approx(9 / sum(1 / v for v in nine), rel=1e-9)
    assert "forget_quality" not in a  # no forget split evaluated, nothing to compare


def test_forget_quality_compares_forget_truth_ratios_on_the_same_items(evaluated):
    # model TRs e^-2 and 1 against the reference's 2 and 4 on the same ids (the third reference item is dropped):
    # KS on 1/TR: {e^2, 1} vs {0.5, 0.25}, fully separated, n = m = 2: exact two-sided p = 2 / C(4, 2) = 1/3
    assert evaluated["aggregates"]["forget_quality"] == pytest.approx(1 / 3, rel=1e-9)
