"""Fictitious people from Faker, each PII value tagged with its type.

Faker does the names, numbers and addresses (its credit-card numbers are Luhn-valid,
its IBANs carry valid check digits); written here: tying the email to the name, dropping
phone extensions, and the fixed date format the detector and probes rely on.
"""

from __future__ import annotations

import re

from unlearning.errors import UserError
from unlearning.pii_detector import NUMERIC_TYPES, PII_TYPES  # noqa: F401  (the data's PII types are the detector's)


def check_types(types, key: str = "dataset.pii_types") -> list[str]:
    types = list(types)
    unknown = [t for t in types if t not in PII_TYPES]
    if unknown:
        raise UserError(f"{key}: unknown PII type(s) {unknown}; known: {sorted(PII_TYPES)}")
    if not types:
        raise UserError(f"{key} is empty; list at least one of {sorted(PII_TYPES)}")
    return types


def faker_for(locale: str, seed: int):
    from faker import Faker

    try:
        fake = Faker(locale)
    except AttributeError:
        raise UserError(f"dataset.locale={locale!r} is not a Faker locale; use e.g. en_US, en_GB, de_DE, fr_FR") from None
    fake.seed_instance(seed)
    return fake


def _ascii_word(s: str) -> str:
    return re.sub(r"[^a-z]", "", s.lower()) or "user"


def make_people(n: int, seed: int = 0, locale: str = "en_US") -> list[dict]:
    """`n` distinct people: {"id", "first", "last", "name", <pii type>: value, ...}."""
    if n < 1:
        raise UserError(f"dataset.people={n} must be >= 1 (the benchmark needs people whose data to unlearn)")
    fake = faker_for(locale, seed)
    people, seen = [], set()
    while len(people) < n:
        first, last = fake.first_name(), fake.last_name()
        if (first, last) in seen or last in {p["last"] for p in people}:
            continue  # unique surnames keep partial (surname-only) leakage unambiguous
        seen.add((first, last))
        people.append({
            "id": f"p{len(people):03d}",
            "first": first,
            "last": last,
            "name": f"{first} {last}",
            "email": f"{_ascii_word(first)}.{_ascii_word(last)}@{fake.free_email_domain()}",
            "phone": re.split(r"\s*x", fake.phone_number())[0],
            "address": fake.address().replace("\n", ", "),
            "dob": fake.date_of_birth(minimum_age=20, maximum_age=80).strftime("%B %d, %Y"),
            "national_id": fake.ssn(),
            "credit_card": fake.credit_card_number(),
            "iban": fake.iban(),
            "employer": fake.company(),
            "job": fake.job(),
        })
    return people


def decoys_for(people: list[dict], types, seed: int, locale: str) -> list[dict]:
    """One stand-in per person whose name parts and values of `types` are nowhere among the people's: the retain
    reference trains on the same dialogues about them, so it never sees a value the probes ask for."""
    fields = ["first", "last", "name", *types]
    real = {str(p[f]) for p in people for f in fields}
    out, n = [], len(people)
    for size in (4 * n + 8, 20 * n + 40):
        pool = make_people(size, seed=seed + 1_000_003, locale=locale)  # its own Faker stream: the people stay as they are
        out = [q for q in pool if not {str(q[f]) for f in fields} & real][:n]
        if len(out) == n:
            return [{**q, "id": f"{p['id']}-decoy"} for p, q in zip(people, out)]
    raise UserError(f"could not draw {n} stand-in people whose {', '.join(types)} differ from every real person's "
                    f"(found {len(out)}); lower dataset.people or drop a pii type with few values (job, employer)")


def pii_of(person: dict, types) -> list[dict]:
    return [{"type": t, "value": person[t]} for t in types]
