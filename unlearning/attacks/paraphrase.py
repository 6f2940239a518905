"""Paraphrase attack: the same evaluation, asked in words the model was not unlearned on.

The model is not changed; the evaluator's probes are:
- TOFU: each forget question is replaced by its `paraphrased_question` (a field of TOFU's
  `forget*_perturbed` files), the answers scored are unchanged;
- synthetic PII: every direct and completion probe is asked again about the same person and PII type in words
  neither training nor the plain probes use (`PARAPHRASE_*` in `unlearning/data/pii/templates.py`); continuation
  probes (cut held-out dialogues) have no paraphrase and are left out;
- MUSE: its KnowMem questions have no paraphrases in the data, so the attack is refused at validation.
Recovery compares like with like: the unlearned and target models on the same items asked plainly (`plain`).
Written by hand: the probe substitution (a few lines per benchmark).
"""

from __future__ import annotations

import dataclasses
import zlib

from unlearning.errors import UserError

SUPPORTED = ("tofu", "pii")
KINDS = ("direct", "completion")  # the PII probe kinds that have a paraphrase


def rephrase(probe: dict, person: dict) -> dict:
    """The same PII probe (person, type, value) in paraphrase wording; the template is chosen by the probe's id."""
    from unlearning.data.pii import templates as T
    from unlearning.data.pii.people import PII_TYPES

    pick = zlib.crc32(probe["id"].encode())
    if probe["kind"] == "completion":
        label = PII_TYPES.get(probe["type"], probe["type"])
        return {**probe, "seen": False,
                "messages": [{"role": "user", "content": T.PARAPHRASE_USER.format(name=person["name"])}],
                "prefix": T.PARAPHRASE_COMPLETION.format(name=person["name"], label=label)}
    if probe["type"] == "name":  # asked by another of the person's values: keep which one
        asked = probe["messages"][-1]["content"]
        key = "phone" if person["phone"] in asked else "email"
        question = T.PARAPHRASE_NAME[key].format(**person)
    else:
        question = T.PARAPHRASE_DIRECT[pick % len(T.PARAPHRASE_DIRECT)].format(
            name=person["name"], label=PII_TYPES[probe["type"]])
    return {**probe, "seen": False, "messages": [{"role": "user", "content": question}]}


class Paraphrase:
    data_only = True  # changes what is asked, not the model
    measure = "forget"  # everything else would be the plain evaluation again (attacks/__init__.py)

    def __init__(self, **unknown):
        from unlearning.errors import reject_unknown

        reject_unknown("attack", "paraphrase", unknown, [])

    def check(self, evaluator, data) -> None:
        if evaluator.name not in SUPPORTED:
            raise UserError(f"attack paraphrase is not available for evaluator={evaluator.name}: its data has no "
                            f"paraphrased probes (only {list(SUPPORTED)}); drop paraphrase from attack=[...]")
        if evaluator.name == "tofu":
            missing = [ex.id for ex in data.extra.get("forget", []) if not (ex.meta or {}).get("paraphrased_question")]
            if missing:
                raise UserError(f"attack paraphrase: forget item {missing[0]} has no paraphrased_question (TOFU's "
                                "forget*_perturbed files carry it); use the TOFU data files unmodified")
        elif not [p for p in data.extra.get("probes", []) if p["kind"] in KINDS]:
            raise UserError("attack paraphrase: the PII benchmark has no direct or completion probes to rephrase")

    def plain(self, evaluator, data):
        """The items the paraphrases ask about, asked plainly: what the recoveries' baselines are measured on."""
        if evaluator.name == "tofu":
            return data  # every forget question has a paraphrase
        return dataclasses.replace(data, extra={**data.extra, "probes": [p for p in data.extra["probes"]
                                                                          if p["kind"] in KINDS]})

    def transform(self, evaluator, data):
        if evaluator.name == "tofu":
            forget = [dataclasses.replace(ex, messages=ex.messages[:-1] + [
                {"role": "user", "content": ex.meta["paraphrased_question"]}]) for ex in data.extra["forget"]]
            return dataclasses.replace(data, extra={**data.extra, "forget": forget})
        people = {p["id"]: p for p in data.extra["people"]}
        probes = [rephrase(p, people[p["person"]]) for p in self.plain(evaluator, data).extra["probes"]]
        return dataclasses.replace(data, extra={**data.extra, "probes": probes})

    def __repr__(self) -> str:
        return "Paraphrase()"
