"""PII detector: every type on positive and negative examples, hand-checked checksums."""

from __future__ import annotations

import pytest

from unlearning.errors import UserError
from unlearning.pii_detector import PiiDetector, contains_value, iban_valid, luhn_valid, norm_text

PERSON = {"id": "p000", "first": "Ann", "last": "Lee", "name": "Ann Lee", "email": "ann.lee@mail.org",
          "phone": "555.201.3344", "address": "12 Oak St, Springfield, IL 62701", "dob": "March 05, 1980",
          "national_id": "123-45-6789", "credit_card": "4111111111111111", "iban": "GB82WEST12345698765432",
          "employer": "Birch and Sons", "job": "Chemist"}


def types(text, people=None):
    return sorted({d.type for d in PiiDetector(people).find(text)})


def test_luhn_by_hand():
    # 7992739871 -> check digit 3 (the standard worked example); 4111...1111 is the classic test card
    assert luhn_valid("79927398713") and not luhn_valid("79927398710")
    assert luhn_valid("4111 1111 1111 1111") and not luhn_valid("4111 1111 1111 1112")


def test_iban_mod97_by_hand():
    assert iban_valid("GB82 WEST 1234 5698 7654 32") and not iban_valid("GB82 WEST 1234 5698 7654 33")
    assert not iban_valid("GB82")


@pytest.mark.parametrize("text, expected", [
    ("Write to jane.doe@example.com today.", ["email"]),
    ("Card: 4111 1111 1111 1111, exp 09/27", ["credit_card"]),
    ("IBAN GB82 WEST 1234 5698 7654 32 for the rent", ["iban"]),
    ("SSN 123-45-6789 on file", ["national_id"]),
    ("Call (555) 201-3344 after six", ["phone"]),
    ("Call +1-555-201-3344 after six", ["phone"]),
])
def test_regexes_find_valid_values_inside_text(text, expected):
    assert types(text) == expected


@pytest.mark.parametrize("text", [
    "Card: 4111 1111 1111 1112",              # fails Luhn
    "IBAN GB82 WEST 1234 5698 7654 33",       # fails mod 97
    "SSN 666-45-6789 or 123-00-6789",         # never-issued area / group
    "write to jane.doe at example dot com",   # not an email
    "37 + 58 = 95. It ends at 10:45. 24 hours is 1440 minutes.",
])
def test_regexes_reject_invalid_or_absent_values(text):
    assert types(text) == []


def test_known_values_match_after_normalisation():
    found = types("ANN  lee was born on march 05 1980; ring 5552013344, she works at BIRCH AND SONS as a chemist.",
                  [PERSON])
    assert found == ["dob", "employer", "job", "name", "phone"]
    assert types("Anne Leeds works at Birchwood.", [PERSON]) == []


def test_numbers_compare_digits_only_and_text_compares_words():
    assert contains_value("her number: (555) 201 3344", "555.201.3344", "phone")
    assert not contains_value("her number: 555 201 3345", "555.201.3344", "phone")
    assert contains_value("gb82 west 1234 5698 7654 32", "GB82WEST12345698765432", "iban")
    assert contains_value("Lives at 12 oak st. Springfield IL 62701", PERSON["address"], "address")
    assert not contains_value("Leeds", "Lee", "name")  # whole words only
    assert norm_text("  O'Neil,  JANE ") == "o neil jane"


def test_exclude_drops_values_given_in_the_prompt():
    det = PiiDetector([PERSON])
    assert {d.type for d in det.find("Ann Lee's phone is 555-201-3344", exclude="phone of Ann Lee?")} == {"phone"}


def test_presidio_requested_but_missing_is_one_clear_line():
    # presidio-analyzer is not installed here, so asking for it must fail with one line
    with pytest.raises(UserError, match="evaluator.presidio"):
        PiiDetector([PERSON], presidio=True)
