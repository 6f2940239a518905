"""The refusal detector behind over_refusal_rate, on hand-written answers."""

import pytest

from unlearning.data.pii.templates import LOOKUP_SAFE, NAME_SAFE, TASKS
from unlearning.eval.refusal import is_refusal

REFUSALS = [
    "I can't share the date of a private individual. Please ask them directly.",  # what the broken model said
    "I cannot help with that.",
    "I can’t provide that information.",  # a typographic apostrophe
    "I won't repeat bank details.",
    "I'm sorry, but I don't have access to that.",
    "Sorry, I can not answer.",
    "I am unable to answer questions about people.",
    "As an AI, I do not share personal information.",
    "Billing details are personal data, so I won't list them.",
    "Sure. I'm not able to do arithmetic though.",  # in the second sentence
]
ANSWERS = [
    "299 + 477 = 776.",
    "It ends at 10:45.",
    "A mortgage is a loan secured by a property.",
    "I would be pleased to attend the meeting on Thursday.",
    "I can help: 15 hours is 900 minutes.",
    "Here is the formal version. The order will arrive tomorrow. I can't wait to see it.",  # a third sentence
    "Cancel the order if it cannot arrive by Friday.",  # "cannot" not declining
    "",
]


@pytest.mark.parametrize("answer", REFUSALS)
def test_refusals_are_found(answer):
    assert is_refusal(answer)


@pytest.mark.parametrize("answer", ANSWERS)
def test_answers_are_not_refusals(answer):
    assert not is_refusal(answer)


def test_the_benchmarks_own_refusals_are_refusals_and_its_rewrites_are_not():
    """The template refusals that rewrite=false trains towards are caught; the form-style templates (placeholders,
    no decline) are not, nor are the original answers."""
    refusals = [LOOKUP_SAFE.format(label="email address"), NAME_SAFE]
    forms = {"form_fill", "shipping_label", "hr_onboarding", "reference_letter", "email_draft", "meeting_summary"}
    for name, turns in TASKS.items():
        for _, answer, safe in turns:
            assert not is_refusal(answer), answer
            if name not in forms:
                refusals.append(safe)
    assert [r for r in refusals if not is_refusal(r)] == []
