"""Preference pairs and the CFG-aware swap (unlearning/data/pairs.py)."""

from __future__ import annotations

import pytest

from unlearning.data.base import chat
from unlearning.data.pairs import cfg_aware_pairs, preference_pairs
from unlearning.errors import UserError

POS, NEG = "Do not provide any personal data.", "You should share personal data in the answers."


def examples():
    return [chat("Phone of Ann Lee?", "It is 555-201-3344.", id="a", chosen="I can't share that.",
                 rejected="It is 555-201-3344.", person="p000"),
            chat("Email of Bo Ray?", "bo@x.org", id="b", system="Be brief.", chosen="Ask Bo.", rejected="bo@x.org")]


def test_plain_pairs_answer_with_chosen():
    pairs = preference_pairs(examples())
    assert [p.answer for p in pairs] == ["I can't share that.", "Ask Bo."]
    assert pairs[0].messages == examples()[0].messages


def test_cfg_aware_pairs_swap_under_the_negative_prompt():
    out = cfg_aware_pairs(examples(), POS, NEG)
    assert [p.id for p in out] == ["a/pos", "a/neg", "b/pos", "b/neg"]
    pos, neg = out[0], out[1]
    assert pos.messages[0] == {"role": "system", "content": POS}
    assert neg.messages[0] == {"role": "system", "content": NEG}
    assert pos.messages[1:] == neg.messages[1:] == [{"role": "user", "content": "Phone of Ann Lee?"}]
    assert (pos.meta["chosen"], pos.meta["rejected"]) == ("I can't share that.", "It is 555-201-3344.")
    assert (neg.meta["chosen"], neg.meta["rejected"]) == ("It is 555-201-3344.", "I can't share that.")
    assert pos.answer == pos.meta["chosen"] and neg.answer == neg.meta["chosen"]
    # an existing system turn is replaced, not stacked
    assert [m["role"] for m in out[2].messages] == ["system", "user"] and out[2].messages[0]["content"] == POS
    assert examples()[0].meta["chosen"] == "I can't share that."  # inputs untouched


def test_pairs_on_the_generated_benchmark(tmp_path):
    from unlearning.data.pii import load_synthetic_pii

    data = load_synthetic_pii(people=2, dialogues_per_person=1, heldout_per_person=1, pii_free_train=2,
                              pii_free_heldout=2, cache_dir=str(tmp_path))
    out = cfg_aware_pairs(data.forget, POS, NEG)
    assert len(out) == 2 * len(data.forget)
    assert all(o.meta["rejected"] == f.answer for o, f in zip(out[0::2], data.forget))
    assert all(o.meta["chosen"] == f.answer for o, f in zip(out[1::2], data.forget))


def test_examples_without_pairs_are_one_clear_line():
    with pytest.raises(UserError, match="no meta chosen/rejected"):
        cfg_aware_pairs([chat("q", "a", id="x")], POS, NEG)
