"""Content hashes that name cache entries (stages, evaluations, generated data): 16 hex digits of sha256."""

from __future__ import annotations

import hashlib
import json


def short_hash(obj) -> str:
    """Hash of a JSON-able object, independent of key order."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def texts_hash(texts: list[str]) -> str:
    """Hash of a corpus (the texts a tiny tokenizer is trained on)."""
    return hashlib.sha256("\n".join(texts).encode()).hexdigest()[:16]


def examples_hash(examples) -> str:
    """Hash of a set of Examples: their prompts and answers, in order."""
    h = hashlib.sha256()
    for ex in examples or []:
        h.update(json.dumps([ex.messages, ex.answer], sort_keys=True).encode())
    return h.hexdigest()[:16]
