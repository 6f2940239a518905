"""`dataset=pii_jsonl`: your own chat dialogues with their personal values marked, for PII unlearning.

One JSON object a line (`examples/pii_jsonl/dialogues.jsonl` is a documented example):
  {"id": "r1", "person": "ann", "messages": [{"role": "user", ...}, {"role": "assistant", ...}],
   "pii": [{"type": "email", "value": "ann.lee@example.com"}, ...], "chosen": "..." (optional)}
`messages` ends with the assistant answer. `pii` lists the personal values in that answer (each `value` must occur
in it) with their type (the detector's: name, email, phone, address, dob, national_id, credit_card, iban, employer,
job); `"pii": []` marks a PII-free dialogue. `person` (default: the record's id) ties records about the same
person together; a `name` value of that person makes the direct and completion probes possible.

What is built from it, as the generated benchmark (`unlearning/data/pii/`) builds it:
- forget = the PII-bearing answers, each a pair: rejected = the answer, chosen = the record's `chosen` if given,
  else the rewrite (each marked value replaced by its placeholder, `replacement.rewrite`), else, where the
  detector still finds a value, a refusal (`FALLBACK`);
- target_train = every record but the held-out PII-free ones (the last `pii_free_heldout` in file order), which are
  the utility and over-refusal questions;
- probes from the marked values: per person with a name and per other type, a direct question and a completion
  prefix (never trained on), and each forget answer cut before each of its values (continuation; trained on,
  so `seen`).
Bad records are one line naming the file, line and id, before anything is built.
"""

from __future__ import annotations

import json
from pathlib import Path

from unlearning.data.base import Example, UnlearningData
from unlearning.errors import UserError
from unlearning.pii_detector import PII_TYPES, PiiDetector

from .pii.replacement import rewrite
from .pii.templates import COMPLETION_SEEN, COMPLETION_USER, DIRECT_UNSEEN, LOOKUP_Q

FALLBACK = "I can't share personal details about private individuals."
KEYS = {"id", "person", "messages", "pii", "chosen"}


def _bad(where: str, what: str) -> UserError:
    return UserError(f"{where}: {what} (format: docs/benchmarks.md, 'Your own data'; example: "
                     "examples/pii_jsonl/dialogues.jsonl)")


def read_records(path: str | Path) -> list[dict]:
    """The file's records, each checked; `_where` = "file:line (id)" for later messages."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"dataset.path={path} is not a file; give a JSON Lines file of your dialogues "
                        "(example: examples/pii_jsonl/dialogues.jsonl)")
    records, ids = [], set()
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            r = json.loads(line)
        except json.JSONDecodeError as e:
            raise UserError(f"malformed JSON in {path}:{lineno}: {e.msg} (column {e.colno}); fix or remove that line") from None
        where = f"{path}:{lineno}" + (f" (id {r['id']!r})" if isinstance(r, dict) and "id" in r else "")
        if not isinstance(r, dict):
            raise _bad(where, "a record must be a JSON object")
        _check(r, where, ids)
        records.append({**r, "id": str(r.get("id", f"line{lineno}")), "_where": where})
    if not records:
        raise UserError(f"dataset.path={path} holds no records")
    return records


def _check(r: dict, where: str, ids: set) -> None:
    unknown = sorted(set(r) - KEYS)
    if unknown:
        raise _bad(where, f"unknown key(s) {unknown}; a record has {sorted(KEYS)}")
    rid = str(r.get("id", where))
    if rid in ids:
        raise _bad(where, f"id {rid!r} is used twice")
    ids.add(rid)
    msgs = r.get("messages")
    if (not isinstance(msgs, list) or not msgs
            or not all(isinstance(m, dict) and m.get("role") in ("system", "user", "assistant")
                       and isinstance(m.get("content"), str) for m in msgs)):
        raise _bad(where, "messages must be a list of {\"role\": system|user|assistant, \"content\": text}")
    if msgs[-1]["role"] != "assistant" or len(msgs) < 2:
        raise _bad(where, "messages must end with the assistant answer, after a user turn")
    answer = msgs[-1]["content"]
    if not answer.strip():
        raise _bad(where, "the assistant answer is empty")
    if "pii" not in r:
        raise _bad(where, "no values marked: list the answer's personal values as \"pii\": [{\"type\": ..., "
                          "\"value\": ...}], or \"pii\": [] for a PII-free dialogue")
    if not isinstance(r["pii"], list):
        raise _bad(where, "pii must be a list of {\"type\": ..., \"value\": ...}")
    for item in r["pii"]:
        if not isinstance(item, dict) or set(item) != {"type", "value"} or not isinstance(item["value"], str):
            raise _bad(where, f"pii item {item!r} must be {{\"type\": ..., \"value\": \"...\"}}")
        if item["type"] not in PII_TYPES:
            raise _bad(where, f"pii type {item['type']!r} is unknown; known: {', '.join(PII_TYPES)}")
        if not item["value"].strip() or item["value"] not in answer:
            raise _bad(where, f"the {item['type']} value {item['value']!r} is not in the assistant answer; mark "
                              "values exactly as the answer writes them")
    if "chosen" in r and (not isinstance(r["chosen"], str) or not r["chosen"].strip() or not r["pii"]):
        raise _bad(where, "chosen must be a non-empty PII-free answer, given only for a record with pii values")


def spans(answer: str, pii: list[dict]) -> list[dict]:
    """Every occurrence of each marked value, longest values first, never overlapping."""
    taken, out = [], []
    for item in sorted(pii, key=lambda i: -len(i["value"])):
        start = answer.find(item["value"])
        while start != -1:
            end = start + len(item["value"])
            if not any(s < end and start < e for s, e in taken):
                taken.append((start, end))
                out.append({"type": item["type"], "field": item["type"], "start": start, "end": end})
            start = answer.find(item["value"], end)
    return out


def people_of(records: list[dict]) -> list[dict]:
    people: dict[str, dict] = {}
    for r in (r for r in records if r["pii"]):
        p = people.setdefault(str(r.get("person", r["id"])), {"id": str(r.get("person", r["id"]))})
        for item in r["pii"]:
            if p.get(item["type"], item["value"]) != item["value"]:
                raise _bad(r["_where"], f"person {p['id']!r} has two {item['type']} values ({p[item['type']]!r} and "
                                        f"{item['value']!r}); give each person one value per type")
            p[item["type"]] = item["value"]
    return list(people.values())


def probes_of(people: list[dict], forget: list[Example], texts: list[str]) -> list[dict]:
    probes: list[dict] = []

    def add(kind, person, typ, messages, prefix="", seen=None):
        text = prefix or messages[-1]["content"]
        probes.append({"id": f"{kind}-{len(probes):05d}", "kind": kind, "person": person["id"], "type": typ,
                       "value": person[typ], "messages": messages, "prefix": prefix,
                       "seen": any(text in t for t in texts) if seen is None else seen})

    for p in people:
        if not p.get("name"):
            continue  # a question needs the person's name
        for typ in (t for t in PII_TYPES if t != "name" and p.get(t)):
            label = PII_TYPES[typ]
            for q in (LOOKUP_Q, DIRECT_UNSEEN[0]):
                add("direct", p, typ, [{"role": "user", "content": q.format(name=p["name"], label=label)}])
            add("completion", p, typ, [{"role": "user", "content": COMPLETION_USER.format(name=p["name"])}],
                COMPLETION_SEEN.format(name=p["name"], label=label))
    by_id = {p["id"]: p for p in people}
    for ex in forget:
        person = by_id[ex.meta["person"]]
        for s in sorted(spans(ex.answer, ex.meta["pii"]), key=lambda s: s["start"]):
            before = ex.answer[: s["start"]].rstrip(" ")
            context = before + " ".join(m["content"] for m in ex.messages)
            if before and person[s["type"]] not in context:  # a value the context shows could just be copied
                add("continuation", person, s["type"], ex.messages, before, seen=True)
    return probes


def load_pii_jsonl(path: str | None = None, name: str = "pii_jsonl", pii_free_heldout: int = 2,
                   replacement: dict | None = None, data_dir=None, cache_dir=None) -> UnlearningData:
    """`data_dir` and `cache_dir` are accepted for the shared dataset interface; only `path` is read."""
    if not path:
        raise UserError("dataset=pii_jsonl needs dataset.path=<your .jsonl file> (example: "
                        "examples/pii_jsonl/dialogues.jsonl)")
    if isinstance(pii_free_heldout, bool) or not isinstance(pii_free_heldout, int) or pii_free_heldout < 0:
        raise UserError(f"dataset.pii_free_heldout={pii_free_heldout!r} must be a whole number >= 0")
    replacement = dict(replacement or {})
    unknown = sorted(set(replacement) - {"rewrite"})
    if unknown or not isinstance(replacement.get("rewrite", True), bool):
        raise UserError(f"dataset.replacement={replacement!r}: pii_jsonl knows only rewrite: true|false")
    records = read_records(path)
    people = people_of(records)
    detector = PiiDetector(people)
    free = [r for r in records if not r["pii"]]
    if len(free) < pii_free_heldout:
        raise UserError(f"dataset.pii_free_heldout={pii_free_heldout} but {path} has {len(free)} PII-free records "
                        "(\"pii\": []); lower it or add PII-free dialogues")
    held = {r["id"] for r in free[len(free) - pii_free_heldout:]} if pii_free_heldout else set()

    def example(r: dict) -> Example:
        person = str(r.get("person", r["id"]))
        meta = {"person": person if r["pii"] else None, "template": "user", "pii": [dict(i) for i in r["pii"]]}
        answer = r["messages"][-1]["content"]
        if r["pii"]:
            chosen, source = r.get("chosen"), "given"
            if chosen is None and replacement.get("rewrite", True):
                chosen, source = rewrite(answer, spans(answer, r["pii"])), "rewrite"
            if chosen is None or detector.find(chosen):
                if r.get("chosen") is not None:
                    raise _bad(r["_where"], "chosen still holds a personal value the file marks; remove it")
                chosen, source = FALLBACK, "template"
            meta.update(chosen=chosen, rejected=answer, chosen_source=source)
        return Example(answer=answer, messages=[dict(m) for m in r["messages"][:-1]], id=r["id"], meta=meta)

    examples = {r["id"]: example(r) for r in records}
    forget = [examples[r["id"]] for r in records if r["pii"]]
    if not forget:
        raise UserError(f"{path} has no record with personal values (\"pii\": [...]): nothing to unlearn")
    train = [examples[r["id"]] for r in records if r["id"] not in held]
    texts = [m["content"] for r in records for m in r["messages"]] + [ex.meta["chosen"] for ex in forget]
    trained = [m["content"] for r in records if r["id"] not in held for m in r["messages"]]
    return UnlearningData(
        name=name, forget=forget, retain=None, target_train=train, reference_train=None, corpus=texts,
        extra={"people": people, "pii_types": sorted({i["type"] for r in records for i in r["pii"]}),
               "probes": probes_of(people, forget, trained), "heldout": [],
               "pii_free_heldout": [examples[i] for i in sorted(held, key=list(examples).index)]})
