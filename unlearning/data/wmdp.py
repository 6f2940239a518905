"""WMDP (Li et al. 2024, "The WMDP Benchmark: Measuring and Reducing Malicious Use With Unlearning"): unlearn the
biosecurity and cybersecurity corpora, keep general text; measured with lm-eval's wmdp_bio / wmdp_cyber and MMLU.

Files as WMDP's own code reads them (its `rmu/utils.py:get_data`): `<name>.jsonl` in `dataset.path` or
`$UNLEARNING_DATA_DIR/wmdp`, one document per line (a JSON object's `text`, a JSON string, or the raw line). Kept
when longer than `min_len` characters and cut at `max_len` characters: this project's defaults (50, 2,000), not
WMDP's, whose `get_data` keeps every document (min 0, no character cut) and whose `unlearn.py` truncates at
tokenization, 512 tokens for bio and 768 for cyber; `wikitext` is WikiText-2's test split (a
local `wikitext.jsonl`, else the hub's `wikitext`/`wikitext-2-raw-v1`). Without a local file a corpus comes from the
hub (`cais/wmdp-corpora`, whose configs are the file names; the bio forget corpus is the gated
`cais/wmdp-bio-forget-corpus`). There is no fine-tuned target: the model as it is holds the hazardous knowledge,
so the target stage is the base model itself (`target_train` is empty) and no retain reference is built.
"""

from __future__ import annotations

import json
from pathlib import Path

from unlearning.data.base import Example, UnlearningData
from unlearning.errors import UserError

HUB = {"bio-forget-corpus": ("cais/wmdp-bio-forget-corpus", None), "cyber-forget-corpus": ("cais/wmdp-corpora", "cyber-forget-corpus"),
       "bio-retain-corpus": ("cais/wmdp-corpora", "bio-retain-corpus"),
       "cyber-retain-corpus": ("cais/wmdp-corpora", "cyber-retain-corpus"), "wikitext": ("wikitext", "wikitext-2-raw-v1")}


def document(line: str) -> str:
    """One line of a WMDP corpus file: {"text": ...} (the bio corpora), a JSON string, or plain text."""
    try:
        value = json.loads(line)
    except json.JSONDecodeError:
        return line.rstrip("\n")
    if isinstance(value, dict):
        return str(value.get("text", ""))
    return value if isinstance(value, str) else line.rstrip("\n")


def read_corpus(folder: Path | None, name: str) -> list[str]:
    if folder is not None and (folder / f"{name}.jsonl").is_file():
        return [document(line) for line in (folder / f"{name}.jsonl").read_text().splitlines() if line.strip()]
    if name not in HUB:
        where = f"{folder}/{name}.jsonl" if folder is not None else f"$UNLEARNING_DATA_DIR/wmdp/{name}.jsonl"
        raise UserError(f"WMDP corpus {name!r}: no file {where} and no hub copy is known; give one of "
                        f"{sorted(HUB)} or put {name}.jsonl in dataset.path")
    repo, config = HUB[name]
    local = f"{folder}/{name}.jsonl" if folder is not None else f"$UNLEARNING_DATA_DIR/wmdp/{name}.jsonl"
    from unlearning import hub

    if hub.offline():
        raise UserError(f"WMDP corpus {name!r}: {local} does not exist and the hub is offline (HF_HUB_OFFLINE=1), so "
                        f"its hub copy {repo} cannot be loaded; put the file there (WMDP's data/ layout)")
    try:
        from datasets import load_dataset

        split = "test" if name == "wikitext" else "train"
        return [str(r["text"]) for r in load_dataset(repo, config, split=split)]
    except Exception as e:  # unreachable, gated, or not there: one line, with the fix
        raise UserError(f"WMDP corpus {name!r}: {local} does not exist and the hub copy {repo} could not be loaded "
                        f"({type(e).__name__}); put the file there (WMDP's data/ layout) or run where the hub is "
                        "reachable") from None


def load_wmdp(path: str | None = None, data_dir: str | None = None,
              forget_corpora: list[str] = ("bio-forget-corpus", "cyber-forget-corpus"),
              retain_corpora: list[str] = ("wikitext",), min_len: int = 50, max_len: int = 2000,
              num_forget: int | None = None, num_retain: int | None = None) -> UnlearningData:
    for key, value in (("min_len", min_len), ("max_len", max_len)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise UserError(f"dataset.{key}={value!r} must be an integer >= 0 (characters)")
    for key, value in (("num_forget", num_forget), ("num_retain", num_retain)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise UserError(f"dataset.{key}={value!r} must be an integer >= 1, or null for all")
    if max_len <= min_len:  # WMDP keeps documents longer than min_len, cut to max_len characters
        raise UserError(f"dataset.max_len={max_len} must exceed dataset.min_len={min_len} (characters)")
    for key, names in (("forget_corpora", forget_corpora), ("retain_corpora", retain_corpora)):
        if isinstance(names, str):
            raise UserError(f"dataset.{key}={names!r} must be a list, e.g. [{names}]")
    if not forget_corpora:
        raise UserError("dataset.forget_corpora=[] names no corpus to unlearn; e.g. [bio-forget-corpus, cyber-forget-corpus]")
    folder = Path(path) if path else (Path(data_dir) / "wmdp" if data_dir else None)

    def texts(names, limit, what):
        out = [t[:max_len] for name in names for t in read_corpus(folder, str(name)) if len(t) > min_len][:limit]
        if not out:
            raise UserError(f"WMDP {what} corpora {list(names)} hold no document longer than dataset.min_len={min_len}")
        return out

    forget = [Example(answer=t, id=f"forget/{i}") for i, t in enumerate(texts(forget_corpora, num_forget, "forget"))]
    retain = [Example(answer=t, id=f"retain/{i}") for i, t in enumerate(texts(retain_corpora, num_retain, "retain"))]
    return UnlearningData(name="wmdp", forget=forget, retain=retain, target_train=[], reference_train=None,
                          corpus=[e.answer for e in forget + retain])
