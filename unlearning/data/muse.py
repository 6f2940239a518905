"""MUSE-News (Shi et al. 2024): raw-text unlearning of BBC articles, and its evaluation material.

The forget corpus is `raw/forget.json`; the retain corpus is chosen by `retain_source`:
`privleak_retain` (`privleak/retain.json`, the local stand-in, 100 seen-but-kept documents) or
`hub_retain1` (the hub's `raw/retain1`). Files come from `path` / `$UNLEARNING_DATA_DIR/muse_news`,
or from the hub (`muse-bench/MUSE-News`, via `datasets`) when no local folder is configured.

Articles are cut into `max_length`-token chunks only once a tokenizer exists (the tiny model's
tokenizer is trained on `data.corpus` after loading): the loader returns whole articles and sets
`UnlearningData.chunker`; the run calls `data = data.for_tokenizer(tok, cfg.max_length)`.
Chunks are cut at character offsets (fast-tokenizer offsets mapping) and a boundary is moved back
until re-encoding each chunk gives back exactly its tokens, so `encode(Example.answer)` loses or
duplicates nothing. Written by hand: that chunking and the subset selection (`num_forget` keeps the
articles the VerbMem / PrivLeak probes were cut from, so the probes stay members of the target).
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

from unlearning.data.base import Example, UnlearningData
from unlearning.errors import UserError, read_json

HUB_ID = "muse-bench/MUSE-News"
HUB_IDS = {"muse_news": HUB_ID, "muse_books": "muse-bench/MUSE-Books"}  # the same layout: raw, verbmem, knowmem, privleak
RETAIN_SOURCES = {"privleak_retain": ("privleak", "retain"), "hub_retain1": ("raw", "retain1")}
SEP = "\n\n"  # MUSE probes are consecutive articles joined by a blank line


def _folder(path, data_dir, name: str = "muse_news") -> Path | None:
    if path:
        folder = Path(path).expanduser()
    elif data_dir:
        folder = Path(data_dir).expanduser() / name
    else:
        return None
    if not folder.is_dir():
        raise UserError(f"{HUB_IDS.get(name, name).split('/')[-1]} folder not found: {folder} (set dataset.path or "
                        f"UNLEARNING_DATA_DIR to the folder that holds {name}/, a copy of the hub's {HUB_IDS.get(name)})")
    return folder


def _load(folder: Path | None, config: str, split: str, hub: str = HUB_ID) -> list:
    """One MUSE file: local `<config>/<split>.json`, else the hub's `config`/`split`."""
    if folder is not None:
        return read_json(folder / config / f"{split}.json")
    try:
        from datasets import load_dataset

        rows = load_dataset(hub, config, split=split)
    except Exception as e:  # offline, or the hub changed: one line, with the fix
        raise UserError(f"could not load {hub} {config}/{split} from the hub ({type(e).__name__}); "
                        f"set UNLEARNING_DATA_DIR or dataset.path to a local copy of {hub}") from None
    return [r["text"] for r in rows] if "text" in rows.column_names else [dict(r) for r in rows]


def _texts(rows: list, where: str) -> list[str]:
    out = []
    for i, r in enumerate(rows):
        t = r.get("text") if isinstance(r, dict) else r
        if not isinstance(t, str):
            raise UserError(f"{where}[{i}] is not a text string; MUSE raw/privleak files are arrays of strings")
        out.append(t)
    return out


def _qa(rows: list, where: str, keys=("question", "answer")) -> list[dict]:
    for i, r in enumerate(rows):
        if not isinstance(r, dict) or any(k not in r for k in keys):
            raise UserError(f"{where}[{i}] lacks {list(keys)}; expected MUSE's {where} format")
    return [{k: r[k] for k in keys} | {"id": f"{i}"} for i, r in enumerate(rows)]


def backing_articles(text: str, articles: list[str]) -> list[int] | None:
    """Indices of the consecutive articles a probe text was cut from (None if not found)."""
    head = text[:200]
    for i, a in enumerate(articles):
        pos = a.find(head)
        if pos < 0:
            continue
        covered, j = len(a) - pos, i
        while covered < len(text) and j + 1 < len(articles):
            j += 1
            covered += len(SEP) + len(articles[j])
        return list(range(i, j + 1))
    return None


def select_forget(articles: list[str], probes: list[list[int] | None], num: int) -> list[int]:
    """Up to `num` article indices: first whole backing sets of probes (in probe order), then the rest."""
    chosen: list[int] = []
    for back in probes:
        if back and len(set(chosen) | set(back)) <= num:
            chosen += [i for i in back if i not in chosen]
    chosen += [i for i in range(len(articles)) if i not in chosen][: num - len(chosen)]
    return sorted(chosen)


def load_muse_news(path: str | None = None, data_dir: str | None = None, retain_source: str = "privleak_retain",
                   num_forget: int | None = None, num_retain: int | None = None,
                   name: str = "muse_news") -> UnlearningData:
    if retain_source not in RETAIN_SOURCES:
        raise UserError(f"dataset.retain_source={retain_source!r} is not one of {sorted(RETAIN_SOURCES)}")
    for key, n in (("num_forget", num_forget), ("num_retain", num_retain)):
        if n is not None and n < 1:
            raise UserError(f"dataset.{key}={n} must be >= 1 (or null for all articles)")
    folder = _folder(path, data_dir if data_dir is not None else os.environ.get("UNLEARNING_DATA_DIR"), name)
    hub = HUB_IDS.get(name, HUB_ID)

    forget_all = _texts(_load(folder, "raw", "forget", hub=hub), "raw/forget")
    if folder is not None and retain_source == "hub_retain1" and not (folder / "raw" / "retain1.json").is_file():
        raise UserError(f"dataset.retain_source=hub_retain1 but {folder / 'raw' / 'retain1.json'} does not exist "
                        "(the local copy has no retain1); use dataset.retain_source=privleak_retain")
    retain = _texts(_load(folder, *RETAIN_SOURCES[retain_source], hub=hub), "/".join(RETAIN_SOURCES[retain_source]))
    verbmem = _qa(_load(folder, "verbmem", "forget", hub=hub), "verbmem/forget", ("prompt", "gt"))
    pl_forget = [{"id": f"{i}", "text": t}
                 for i, t in enumerate(_texts(_load(folder, "privleak", "forget", hub=hub), "privleak/forget"))]
    pl_holdout = [{"id": f"{i}", "text": t}
                  for i, t in enumerate(_texts(_load(folder, "privleak", "holdout", hub=hub), "privleak/holdout"))]
    extra = {f"knowmem_{s}{icl}": _qa(_load(folder, "knowmem", f"{s}_qa{icl}", hub=hub), f"knowmem/{s}_qa{icl}")
             for s in ("forget", "retain") for icl in ("", "_icl")}

    keep = [i for i, a in enumerate(forget_all) if a.strip()]
    if num_forget is not None and num_forget < len(keep):
        vm_back = [backing_articles(v["prompt"] + v["gt"], forget_all) for v in verbmem]
        pl_back = [backing_articles(p["text"], forget_all) for p in pl_forget]
        # Interleave VerbMem and PrivLeak probes so a small subset keeps some of each.
        probes = [b for pair in zip(vm_back, pl_back) for b in pair]

        def subset(n):
            keep = [i for i in select_forget(forget_all, probes, n) if forget_all[i].strip()]
            kept = set(keep)
            return (keep, [v for v, b in zip(verbmem, vm_back) if b and set(b) <= kept],
                    [p for p, b in zip(pl_forget, pl_back) if b and set(b) <= kept])

        keep, verbmem_kept, pl_kept = subset(num_forget)
        if not verbmem_kept or not pl_kept:  # MUSE's probes need their backing articles: a metric with no items
            smallest = next((n for n in range(num_forget + 1, len(forget_all) + 1) if all(subset(n)[1:])), None)
            raise UserError(f"dataset.num_forget={num_forget} keeps no "
                            f"{' or '.join(k for k, v in (('VerbMem', verbmem_kept), ('PrivLeak', pl_kept)) if not v)} "
                            "probe whose articles are all kept; raise it"
                            + (f" (the smallest that keeps both: {smallest})" if smallest else "") + " or null for all")
        verbmem, pl_forget = verbmem_kept, pl_kept
        pl_holdout = pl_holdout[: len(pl_forget)]  # balanced classes for the AUC
    retain = [t for t in retain if t.strip()][:num_retain]
    if not keep:
        raise UserError("MUSE-News forget corpus is empty after filtering (raw/forget.json has no non-empty "
                        "article, or dataset.num_forget selects none)")
    if not retain:
        raise UserError(f"MUSE-News retain corpus ({retain_source}) is empty after filtering; "
                        "check the file or dataset.num_retain")

    forget_ex = [Example(answer=forget_all[i], id=f"forget/{i}", meta={"article": i}) for i in keep]
    retain_ex = [Example(answer=t, id=f"retain/{i}", meta={"article": i}) for i, t in enumerate(retain)]
    extra.update(verbmem=verbmem, privleak_forget=pl_forget, privleak_holdout=pl_holdout,
                 retain_source=retain_source, chunk_length=None)
    corpus = [e.answer for e in forget_ex + retain_ex] + [p["text"] for p in pl_holdout] + \
        [f"Question: {q['question']}\nAnswer: {q['answer']}" for k in extra if k.startswith("knowmem") for q in extra[k]]
    return UnlearningData(name=name, forget=forget_ex, retain=retain_ex, target_train=forget_ex + retain_ex,
                          reference_train=retain_ex, corpus=corpus, extra=extra, chunker=chunk_data)


def _ids(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def chunk_text(tokenizer, text: str, max_length: int) -> list[str]:
    """Cut `text` into pieces of at most `max_length` tokens whose re-encodings concatenate to `text`'s ids.

    Boundaries sit at token start offsets, so the pieces concatenate to `text` exactly; a boundary
    where re-encoding would merge or split tokens differently is moved back one token at a time.
    """
    if max_length < 1:
        raise UserError(f"max_length={max_length} must be >= 1 to chunk MUSE articles")
    if not getattr(tokenizer, "is_fast", False):
        raise UserError("MUSE chunking needs a fast tokenizer (offsets mapping); load the model's tokenizer.json")
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids, offs = enc["input_ids"], enc["offset_mapping"]
    n = len(ids)
    if n == 0:
        return []

    def char_at(t: int) -> int:
        return len(text) if t >= n else offs[t][0]

    pieces, s = [], 0
    while s < n:
        e = min(s + max_length, n)
        for cand in range(e, s, -1):
            if _ids(tokenizer, text[char_at(s):char_at(cand)]) == ids[s:cand] and (
                    cand >= n or _ids(tokenizer, text[char_at(cand):char_at(min(cand + 8, n))]) == ids[cand:cand + 8]):
                e = cand
                break
        pieces.append(text[char_at(s):char_at(e)])
        s = e
    return pieces


def _chunks(tokenizer, examples: list[Example], max_length: int) -> list[Example]:
    out = []
    for ex in examples:
        for j, piece in enumerate(chunk_text(tokenizer, ex.answer, max_length)):
            out.append(Example(answer=piece, id=f"{ex.id}/{j}", meta={**ex.meta, "chunk": j}))
    return out


def chunk_data(data: UnlearningData, tokenizer, max_length: int) -> UnlearningData:
    """The same data with every article cut into `max_length`-token chunks (idempotent per length)."""
    if data.extra.get("chunk_length") == max_length:
        return data
    forget = _chunks(tokenizer, data.forget, max_length)
    retain = _chunks(tokenizer, data.retain or [], max_length)
    if not forget:
        raise UserError("MUSE-News forget corpus is empty after chunking (no article has any token)")
    return replace(data, forget=forget, retain=retain, target_train=forget + retain, reference_train=retain,
                   extra={**data.extra, "chunk_length": max_length})


def load_muse_books(path: str | None = None, data_dir: str | None = None, retain_source: str = "privleak_retain",
                    num_forget: int | None = None, num_retain: int | None = None) -> UnlearningData:
    """MUSE-Books (the Harry Potter books; `muse-bench/MUSE-Books`): MUSE-News' layout and loader, its own folder
    (`$UNLEARNING_DATA_DIR/muse_books` or `dataset.path`) and hub id."""
    return load_muse_news(path, data_dir, retain_source, num_forget, num_retain, name="muse_books")
