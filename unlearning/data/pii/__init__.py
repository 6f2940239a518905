"""`dataset=synthetic_pii`: fictitious people, chat dialogues full of their PII, replacements and probes.

`load_synthetic_pii(**cfg)` generates (or reads from the cache, keyed by the options'
hash, written atomically) and returns `UnlearningData`:
forget = PII-bearing assistant turns of the training dialogues (meta: chosen = PII-free
replacement, rejected = original, person, pii); retain = None; target_train = every
training assistant turn (PII-bearing and PII-free); extra = people, probes, held-out and
PII-free held-out dialogues for `unlearning.eval.pii`.
"""

from __future__ import annotations

import json
import logging

from unlearning.data.base import Example, UnlearningData
from unlearning.errors import UserError
from unlearning.hashing import short_hash
from unlearning.results import atomic_write

from .generator import generate

log = logging.getLogger(__name__)

FORMAT = 3  # bump when generated content changes, so old caches are not reused


def turn_examples(dialogues: list[dict], only_pii: bool = False) -> list[Example]:
    """One chat Example per assistant turn; messages = the dialogue before that answer."""
    out = []
    for d in dialogues:
        messages: list[dict] = []
        for i, turn in enumerate(d["turns"]):
            messages = messages + [{"role": "user", "content": turn["user"]}]
            if turn["pii"] or not only_pii:
                meta = {"person": d["person"], "template": d["template"],
                        "pii": [{"type": s["type"], "value": s["value"]} for s in turn["pii"]]}
                if turn["pii"]:
                    meta.update(chosen=turn["safe"], rejected=turn["assistant"],
                                chosen_source=turn.get("safe_source", "template"))
                out.append(Example(answer=turn["assistant"], messages=list(messages), id=f"{d['id']}/{i}", meta=meta))
            messages = messages + [{"role": "assistant", "content": turn["assistant"]}]
    return out


def texts(data: dict) -> list[str]:
    out = []
    for split in ("train", "heldout", "pii_free_train", "pii_free_heldout"):
        for d in data[split]:
            for t in d["turns"]:
                out += [t["user"], t["assistant"]] + ([t["safe"]] if t.get("safe") else [])
    out += [p["prefix"] for p in data["probes"] if p["prefix"]] + [p["messages"][-1]["content"] for p in data["probes"]]
    return out


def _plain(obj):
    """OmegaConf containers -> plain Python (for hashing and instantiation)."""
    try:
        from omegaconf import OmegaConf

        if OmegaConf.is_config(obj):
            return OmegaConf.to_container(obj, resolve=True)
    except ImportError:
        pass
    return obj


def _stable(replacement: dict) -> dict:
    """The replacement options as the cache key sees them: Hydra instantiates `model` (a `${model}` node)
    into a spec object, whose repr carries a memory address; its fingerprint and load options are stable."""
    model = replacement.get("model")
    if model is None or isinstance(model, (dict, str)):
        return replacement
    return {**replacement, "model": {**model.fingerprint(), **model.load_kwargs()}}


def build(options: dict, replacement: dict) -> dict:
    """The generated data with each PII-bearing turn's `safe` answer from the chain model -> rewrite -> template
    (`replacement.py`) and its `safe_source` ("model", "rewrite" or "template")."""
    from unlearning.pii_detector import PiiDetector

    from .replacement import rewrite

    data = generate(**options)
    detector = PiiDetector(data["people"])
    if replacement.get("rewrite", True):
        for d in data["train"]:
            for t in d["turns"]:
                if t["pii"] and not detector.find(text := rewrite(t["assistant"], t["pii"])):
                    t["safe"], t["safe_source"] = text, "rewrite"
    if replacement.get("model"):
        from .replacement import model_replacements

        turns = [(d, i) for d in data["train"] for i, t in enumerate(d["turns"]) if t["pii"]]
        examples = [{"messages": _messages_before(d, i)} for d, i in turns]
        answers = model_replacements(examples, replacement["model"], detector, texts(data),
                                     system_prompt=replacement.get("system_prompt"),
                                     max_new_tokens=replacement.get("max_new_tokens", 96),
                                     batch_size=replacement.get("batch_size", 8), bf16=replacement.get("bf16", False))
        for (d, i), answer in zip(turns, answers):
            if answer is not None:
                d["turns"][i]["safe"], d["turns"][i]["safe_source"] = answer, "model"
    return data


def _messages_before(d: dict, i: int) -> list[dict]:
    msgs = []
    for t in d["turns"][:i]:
        msgs += [{"role": "user", "content": t["user"]}, {"role": "assistant", "content": t["assistant"]}]
    return msgs + [{"role": "user", "content": d["turns"][i]["user"]}]


def load_synthetic_pii(name: str = "synthetic_pii", people: int = 20, seed: int = 0, locale: str = "en_US",
                       dialogues_per_person: int = 3, heldout_per_person: int = 2, lookups: bool = True,
                       pii_free_train: int = 40, pii_free_heldout: int = 20, pii_types=None,
                       probe_templates=None, unseen_direct_per_type: int = 1, replacement=None,
                       cache_dir: str | None = None, data_dir=None, path=None, _now: bool = False) -> UnlearningData:
    """`data_dir`/`path` are accepted for the shared dataset interface; nothing is read from disk.

    Model-written replacements (minutes of generation) are not made while the run is validated: the data
    comes back with template replacements and `complete` set, and the run completes it (`completed()`)
    after validation, so bad input elsewhere in the config is reported before any generation.
    """
    args = {k: v for k, v in locals().items() if k != "_now"}
    from .people import PII_TYPES

    check_options(locale=locale, dialogues_per_person=dialogues_per_person, heldout_per_person=heldout_per_person,
                  pii_free_train=pii_free_train, pii_free_heldout=pii_free_heldout,
                  unseen_direct_per_type=unseen_direct_per_type, pii_types=pii_types, probe_templates=probe_templates,
                  replacement=replacement)

    options = dict(people=people, seed=seed, locale=locale, dialogues_per_person=dialogues_per_person,
                   heldout_per_person=heldout_per_person, lookups=lookups, pii_free_train=pii_free_train,
                   pii_free_heldout=pii_free_heldout, pii_types=list(PII_TYPES if pii_types is None else _plain(pii_types)),
                   probe_templates=_plain(probe_templates), unseen_direct_per_type=unseen_direct_per_type)
    replacement = dict(_plain(replacement) or {})
    key = short_hash([FORMAT, options, _stable(replacement)])
    data = None
    if cache_dir:
        from unlearning.models import cache_root

        path_ = cache_root(cache_dir) / "data" / "synthetic_pii" / f"{key}.json"
        if path_.exists():
            data = json.loads(path_.read_text(encoding="utf-8"))
            log.info("synthetic_pii: reusing %s", path_)
    if data is None and replacement.get("model") and not _now:
        # the same examples, replacements without the model's
        deferred = to_unlearning_data(build(options, {"rewrite": replacement.get("rewrite", True)}), name)
        deferred.complete = lambda: load_synthetic_pii(**args, _now=True)
        return deferred
    if data is None:
        data = build(options, replacement)
        if cache_dir:
            atomic_write(path_, json.dumps(data, sort_keys=True, ensure_ascii=False))
    return to_unlearning_data(data, name)


REPLACEMENT_KEYS = ("rewrite", "model", "system_prompt", "max_new_tokens", "batch_size", "bf16")


def check_options(locale, pii_types, probe_templates, replacement, **counts) -> None:
    """The options' types and ranges, one line each, before anything is generated (the replacement model's
    settings are otherwise first read after its weights load)."""
    if not isinstance(locale, str):
        raise UserError(f"dataset.locale={locale!r} must be a Faker locale name, e.g. en_US")
    for key, n in counts.items():
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise UserError(f"dataset.{key}={n!r} must be a whole number >= 0")
    if pii_types is not None and not isinstance(_plain(pii_types), list):
        raise UserError(f"dataset.pii_types={pii_types!r} must be a list, e.g. [name, email, phone]")
    if probe_templates is not None and not isinstance(_plain(probe_templates), dict):
        raise UserError(f"dataset.probe_templates={probe_templates!r} must be a mapping "
                        "{direct: [...], completion: {type: prefix}} or null")
    rep = _plain(replacement)
    if rep is None:
        return
    if not isinstance(rep, dict):
        raise UserError(f"dataset.replacement={replacement!r} must be a mapping (conf/dataset/synthetic_pii.yaml)")
    unknown = sorted(set(rep) - set(REPLACEMENT_KEYS))
    if unknown:
        raise UserError(f"unknown option(s) {unknown} for dataset.replacement; known: {list(REPLACEMENT_KEYS)}")
    model = rep.get("model")
    # a model spec (Hydra builds the config's `_target_` first) or a config still to build
    if model is not None and not (hasattr(model, "load") or (isinstance(model, dict) and model.get("_target_"))):
        raise UserError(f"dataset.replacement.model={model!r} must be a model config (e.g. dataset.replacement.model="
                        "${model}) or null")
    if not isinstance(rep.get("rewrite", True), bool):
        raise UserError(f"dataset.replacement.rewrite={rep['rewrite']!r} must be true or false")
    for key in ("max_new_tokens", "batch_size"):
        n = rep.get(key)
        if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
            raise UserError(f"dataset.replacement.{key}={n!r} must be a whole number >= 1")


def to_unlearning_data(data: dict, name: str = "synthetic_pii") -> UnlearningData:
    train_turns = turn_examples(data["train"]) + turn_examples(data["pii_free_train"])
    return UnlearningData(
        name=name,
        forget=turn_examples(data["train"], only_pii=True),
        retain=None,  # this benchmark unlearns without a retain set (ORPO+CFG setting)
        target_train=train_turns,
        # the retain reference: the same dialogues about stand-in people (values nowhere in the probes), built when
        # an attack needs a never-trained model to compare with (robustness.control)
        reference_train=turn_examples(data["reference_train"]) + turn_examples(data["pii_free_train"]),
        corpus=texts(data),
        extra={"people": data["people"], "pii_types": data["pii_types"], "probes": data["probes"],
               "heldout": turn_examples(data["heldout"]), "pii_free_heldout": turn_examples(data["pii_free_heldout"])},
    )


__all__ = ["load_synthetic_pii", "turn_examples", "to_unlearning_data", "generate"]
