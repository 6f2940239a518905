"""Synthetic PII generator: determinism, splits, PII-free data, replacements, cache, bad input."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from unlearning.data.pii import generate, load_synthetic_pii
from unlearning.errors import UserError
from unlearning.pii_detector import PiiDetector

CONF = str(Path(__file__).resolve().parent.parent / "conf")
SMALL = dict(people=3, dialogues_per_person=2, heldout_per_person=1, pii_free_train=6, pii_free_heldout=4)


def digest(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()


def test_same_seed_gives_byte_identical_data_and_another_seed_does_not():
    assert digest(generate(**SMALL, seed=3)) == digest(generate(**SMALL, seed=3))
    assert digest(generate(**SMALL, seed=3)) != digest(generate(**SMALL, seed=4))


def test_pii_free_dialogues_hold_no_pii_of_anyone():
    data = generate(**SMALL)
    detector = PiiDetector(data["people"])
    texts = [t[k] for split in ("pii_free_train", "pii_free_heldout") for d in data[split]
             for t in d["turns"] for k in ("user", "assistant")]
    assert len(texts) >= 10
    assert [(t, detector.find(t)) for t in texts if detector.find(t)] == []


def test_template_replacements_drop_every_value_of_their_person():
    data = generate(**SMALL)
    detector = PiiDetector(data["people"])
    turns = [t for d in data["train"] for t in d["turns"] if t["pii"]]
    assert turns and all(detector.find(t["assistant"]) for t in turns)  # originals do carry PII
    assert [t["safe"] for t in turns if detector.find(t["safe"])] == []


def test_splits_are_by_dialogue_and_held_out_templates_differ_per_person():
    data = generate(**SMALL)
    train_ids = {d["id"] for d in data["train"]}
    assert train_ids.isdisjoint(d["id"] for d in data["heldout"])
    for p in data["people"]:
        tr = {d["template"] for d in data["train"] if d["person"] == p["id"]}
        ho = {d["template"] for d in data["heldout"] if d["person"] == p["id"]}
        assert len(ho) == 1 and tr.isdisjoint(ho)
    def questions(split):
        return {d["turns"][0]["user"] for d in data[split]}
    assert questions("pii_free_train").isdisjoint(questions("pii_free_heldout"))


def test_probes_cover_every_type_and_are_partly_unseen():
    data = generate(**SMALL)
    probes = data["probes"]
    assert {p["type"] for p in probes} == set(data["pii_types"])
    assert {p["kind"] for p in probes} == {"direct", "completion", "continuation"}
    assert any(p["seen"] for p in probes) and any(not p["seen"] for p in probes)
    for p in probes:
        if p["kind"] == "continuation":  # cut just before the value, which the context does not contain
            assert p["value"] not in p["prefix"] and not p["seen"]
        person = next(x for x in data["people"] if x["id"] == p["person"])
        assert p["value"] == person[p["type"]]


def test_unlearning_data_shape_and_pairs(tmp_path):
    data = load_synthetic_pii(**SMALL, cache_dir=str(tmp_path))
    assert data.retain is None  # no retain set (ORPO+CFG); the reference trains on the dialogues about stand-ins
    assert len(data.reference_train) == len(data.target_train)
    assert not {ex.meta["person"] for ex in data.reference_train} & {p["id"] for p in data.extra["people"]}
    assert data.forget and all(ex.meta["pii"] and ex.meta["rejected"] == ex.answer for ex in data.forget)
    assert all(ex.meta["chosen"] != ex.answer and ex.meta["person"] for ex in data.forget)
    # a second turn's prompt is the dialogue up to it, including the first answer
    second = [ex for ex in data.forget if ex.id.endswith("/1")]
    assert all(len(ex.messages) == 3 and ex.messages[1]["role"] == "assistant" for ex in second)
    # target_train = all training assistant turns, PII-bearing and PII-free
    assert len(data.target_train) > len(data.forget)
    assert any(not ex.meta["pii"] for ex in data.target_train)
    assert {"people", "probes", "heldout", "pii_free_heldout"} <= set(data.extra)


def test_cache_is_written_atomically_and_reused(tmp_path):
    first = load_synthetic_pii(**SMALL, cache_dir=str(tmp_path))
    files = list((tmp_path / "data" / "synthetic_pii").glob("*"))
    assert len(files) == 1 and files[0].suffix == ".json"
    files[0].write_text(files[0].read_text().replace(first.forget[0].answer, "CACHED"))
    again = load_synthetic_pii(**SMALL, cache_dir=str(tmp_path))
    assert again.forget[0].answer == "CACHED"  # read from the cache, not regenerated


def test_hydra_config_builds_the_dataset(tmp_path):
    with initialize_config_dir(config_dir=CONF, version_base=None):
        cfg = compose("config", overrides=["dataset=synthetic_pii", "evaluator=pii", f"cache_dir={tmp_path}",
                                           "dataset.people=2", "dataset.pii_free_train=4", "dataset.pii_free_heldout=2"])
    data = instantiate(cfg.dataset, _convert_="all")
    assert data.name == "synthetic_pii" and len(data.extra["people"]) == 2
    assert instantiate(cfg.evaluator).name == "pii"


def test_model_replacements_keep_only_outputs_the_detector_passes(tmp_path):
    from unlearning.data.pii.replacement import model_replacements
    from unlearning.models import TinyLlama

    data = generate(**SMALL)
    corpus = [t["assistant"] for d in data["train"] for t in d["turns"]]
    # an untrained tiny model emits random tokens: real generation, judged by the real detector
    detector = PiiDetector(data["people"])
    exs = [{"messages": [{"role": "user", "content": "Say hello."}]}] * 2
    out = model_replacements(exs, TinyLlama(cache_dir=str(tmp_path), hidden_size=32, num_layers=1, vocab_size=300),
                             detector, corpus, max_new_tokens=8)
    assert len(out) == 2 and all(o is None or not detector.find(o) for o in out)


@pytest.mark.parametrize("kwargs, where", [
    (dict(locale="xx_XX"), "dataset.locale"),
    (dict(people=0), "dataset.people"),
    (dict(pii_types=["email", "blood_type"]), "dataset.pii_types"),
    (dict(probe_templates={"direct": ["What is the {label}?"]}), "dataset.probe_templates.direct[0]"),
    (dict(probe_templates={"completion": {"phone": "You can reach them at"}}), "dataset.probe_templates.completion.phone"),
    (dict(dialogues_per_person=10, heldout_per_person=10), "dataset.dialogues_per_person"),
])
def test_bad_input_is_one_clear_line(kwargs, where):
    with pytest.raises(UserError) as e:
        generate(**{**SMALL, **kwargs})
    assert where in str(e.value) and "\n" not in str(e.value)


def test_model_replacements_wait_for_the_run_and_are_cached_across_runs(tmp_path):
    """Building the dataset (what validation does) generates nothing; the run's `completed()` does, once.
    Hydra hands the replacement model over as a spec object: the cache key must not depend on its identity."""
    from omegaconf import OmegaConf

    model = {"_target_": "unlearning.models.TinyLlama", "cache_dir": str(tmp_path), "hidden_size": 32,
             "num_layers": 1, "vocab_size": 300}
    cfg = OmegaConf.create({"_target_": "unlearning.data.pii.load_synthetic_pii", "cache_dir": str(tmp_path),
                            **SMALL, "replacement": {"model": model, "max_new_tokens": 4}})
    cached = tmp_path / "data" / "synthetic_pii"
    validated = instantiate(cfg, _convert_="all")
    assert validated.complete is not None and not cached.exists()  # no model loaded, nothing generated
    assert all(ex.meta["chosen"] for ex in validated.forget)      # template replacements meanwhile
    first = validated.completed()
    assert first.complete is None and len(list(cached.glob("*.json"))) == 1
    assert [ex.meta["rejected"] for ex in first.forget] == [ex.meta["rejected"] for ex in validated.forget]
    second = instantiate(cfg, _convert_="all")  # another spec object: the same key, read from the cache
    assert second.complete is None and len(list(cached.glob("*.json"))) == 1
    assert [f.meta for f in first.forget] == [f.meta for f in second.forget]
    # a different replacement model is a different dataset
    load_synthetic_pii(cache_dir=str(tmp_path), **SMALL,
                       replacement={"model": {**model, "hidden_size": 48}, "max_new_tokens": 4}).completed()
    assert len(list(cached.glob("*.json"))) == 2


def test_a_rewrite_replaces_each_value_by_its_placeholder_and_keeps_every_other_character():
    from unlearning.data.pii.replacement import rewrite

    answer = "Hi Ann,\nAnn Lee was born on 03/04/1990; call 555-201-3344."
    spans = [{"type": "name", "field": "first", "start": 3, "end": 6},
             {"type": "phone", "field": "phone", "start": 45, "end": 57},  # given out of order on purpose
             {"type": "name", "field": "name", "start": 8, "end": 15},
             {"type": "dob", "field": "dob", "start": 28, "end": 38}]
    assert rewrite(answer, spans) == ("Hi [first name],\n[name] was born on [date of birth]; call [phone number].")
    assert rewrite("no values here", []) == "no values here"
    with pytest.raises(ValueError, match="overlapping"):
        rewrite(answer, spans + [{"type": "name", "field": "last", "start": 12, "end": 15}])


def _without_spans(text: str, spans: list[dict]) -> str:
    for s in sorted(spans, key=lambda s: s["start"], reverse=True):
        text = text[: s["start"]] + text[s["end"]:]
    return text


def test_every_task_templates_rewrite_holds_no_value_and_keeps_the_answers_other_content(tmp_path):
    """Every task template and lookup of every PII type (all ten types, enough people for every template): the
    chosen answer is the rewrite, holds none of the person's values (exact substring and the detector), and with
    its placeholders removed equals the original with its PII spans removed (all non-PII content kept)."""
    import re

    from unlearning.data.pii import build
    from unlearning.data.pii.replacement import PLACEHOLDERS
    from unlearning.data.pii.templates import TASKS

    data = build(dict(people=12, dialogues_per_person=5, heldout_per_person=0, pii_free_train=2,
                      pii_free_heldout=1), {})
    people = {p["id"]: p for p in data["people"]}
    detector = PiiDetector(data["people"])
    turns = [(d, t) for d in data["train"] for t in d["turns"] if t["pii"]]
    assert {d["template"] for d, _ in turns} == set(TASKS) | {f"lookup_{t}" for t in data["pii_types"]}
    assert {s["type"] for _, t in turns for s in t["pii"]} == set(data["pii_types"])
    placeholder = re.compile("|".join(re.escape(p) for p in PLACEHOLDERS.values()))
    for d, t in turns:
        assert t["safe_source"] == "rewrite", (d["template"], t["safe"])
        values = [v for k, v in people[d["person"]].items() if k not in ("id",) and isinstance(v, str) and len(v) > 3]
        assert [v for v in values if v in t["safe"]] == [] and detector.find(t["safe"]) == []
        assert placeholder.sub("", t["safe"]) == _without_spans(t["assistant"], t["pii"])


def test_the_replacement_chain_model_then_rewrite_then_template_is_counted_in_results(tmp_path):
    """rewrite=false keeps the template text (mostly a refusal) for every pair; the default uses the rewrite; the
    chosen answer's source is in each pair's meta, and results.json counts them (here: a whole tiny run)."""
    from unlearning.data.pii import build
    from unlearning.data.pii.templates import TASKS
    from unlearning.run import chosen_sources

    off = load_synthetic_pii(**SMALL, replacement={"rewrite": False})
    templates = {safe for turns in TASKS.values() for _, _, safe in turns}
    assert {ex.meta["chosen_source"] for ex in off.forget} == {"template"}
    assert all(ex.meta["chosen"] in templates or ex.meta["template"].startswith("lookup_") for ex in off.forget)
    on = load_synthetic_pii(**SMALL)
    assert chosen_sources(on) == {"rewrite": len(on.forget)} and chosen_sources(off) == {"template": len(off.forget)}
    assert [ex.meta["rejected"] for ex in on.forget] == [ex.meta["rejected"] for ex in off.forget]
    assert build(dict(**SMALL), {"rewrite": True}) != build(dict(**SMALL), {"rewrite": False})
    with pytest.raises(UserError, match="dataset.replacement.rewrite='yes' must be true or false"):
        load_synthetic_pii(**SMALL, replacement={"rewrite": "yes"})
