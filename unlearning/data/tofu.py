"""TOFU (Maini et al. 2024): 200 fictitious authors x 20 QA pairs; forget 1/5/10% of the authors.

Reads the hub's JSON Lines files from a local folder (`dataset.path`, default
`$UNLEARNING_DATA_DIR/tofu`) or, when none is configured, the hub id `locuslab/TOFU`
through `datasets`.
"""

from __future__ import annotations

import os
from pathlib import Path

from unlearning.data.base import Example, UnlearningData, chat
from unlearning.errors import UserError, read_json_lines

HUB_ID = "locuslab/TOFU"
SPLITS = {"forget01": "retain99", "forget05": "retain95", "forget10": "retain90"}
QUESTIONS_PER_AUTHOR = 20


def resolve_dir(path: str | None, data_dir: str | None, name: str) -> Path | None:
    """The local folder of a dataset, or None to use the hub."""
    if path:
        p = Path(path).expanduser()
        if not p.is_dir():
            raise UserError(f"dataset.path={path!r} is not a directory; point it at the folder with the {name} files")
        return p
    data_dir = data_dir or os.environ.get("UNLEARNING_DATA_DIR")
    if data_dir:
        p = Path(data_dir).expanduser() / name
        if not p.is_dir():
            raise UserError(f"data directory {p} does not exist (from data_dir / UNLEARNING_DATA_DIR={data_dir!r}); "
                            f"set UNLEARNING_DATA_DIR to the folder that holds {name}/ (here: ../shared/data)")
        return p
    return None


class TofuFiles:
    """Reads one TOFU config by name from the local folder or the hub."""

    def __init__(self, folder: Path | None):
        self.folder = folder

    def rows(self, name: str) -> list[dict]:
        if self.folder is not None:
            return read_json_lines(self.folder / f"{name}.json")
        try:
            from datasets import load_dataset

            return [dict(r) for r in load_dataset(HUB_ID, name, split="train")]
        except Exception as e:  # the hub is unreachable offline
            raise UserError(f"cannot load {HUB_ID}/{name} from the hub ({type(e).__name__}); "
                            "set UNLEARNING_DATA_DIR to a local copy (here: ../shared/data)") from None


def _qa(rows: list[dict], prefix: str) -> list[Example]:
    return [chat(r["question"], r["answer"], id=f"{prefix}{i}", **{k: v for k, v in r.items()
                                                                  if k not in ("question", "answer")})
            for i, r in enumerate(rows)]


def load_tofu(forget_split: str = "forget01", retain_authors: int | None = None, path: str | None = None,
              data_dir: str | None = None, eval_sets: bool = True, **unknown) -> UnlearningData:
    """forget_split in forget01/05/10; `retain_authors` keeps only the first N retain authors (CPU runs)."""
    from unlearning.errors import reject_unknown

    reject_unknown("dataset", "tofu", unknown, ["forget_split", "retain_authors", "path", "data_dir"])
    if not isinstance(forget_split, str) or forget_split not in SPLITS:
        raise UserError(f"dataset.forget_split={forget_split!r} is unknown; use one of {sorted(SPLITS)}")
    # the reference stage trains on the retain authors, and model_utility / forget_quality need them
    if retain_authors is not None and retain_authors < 1:
        raise UserError(f"dataset.retain_authors={retain_authors} must be >= 1 (or null for all): the retain "
                        "reference and model_utility are built from them")
    if path is not None and not isinstance(path, str):
        raise UserError(f"dataset.path={path!r} must be a folder path (a string) or null")
    files = TofuFiles(resolve_dir(path, data_dir, "tofu"))
    forget_rows = files.rows(forget_split)
    retain_rows = files.rows(SPLITS[forget_split])
    if retain_authors is not None:
        retain_rows = retain_rows[: retain_authors * QUESTIONS_PER_AUTHOR]
    forget, retain = _qa(forget_rows, "forget_"), _qa(retain_rows, "retain_")
    extra = {}
    if eval_sets:
        kept = {r["question"] for r in retain_rows}
        extra = {
            "forget": _qa(files.rows(f"{forget_split}_perturbed"), "forget_"),
            "retain": [ex for ex in _qa(files.rows("retain_perturbed"), "retain_")
                       if ex.messages[-1]["content"] in kept],
            "real_authors": _qa(files.rows("real_authors_perturbed"), "ra_"),
            "world_facts": _qa(files.rows("world_facts_perturbed"), "wf_"),
        }
    corpus = [f"{r['question']} {r['answer']}" for r in forget_rows + retain_rows]
    for split in ("real_authors", "world_facts"):
        corpus += [f"{ex.messages[-1]['content']} {ex.answer} {' '.join(ex.meta.get('perturbed_answer', []))}"
                   for ex in extra.get(split, [])]
    return UnlearningData(name=f"tofu_{forget_split}", forget=forget, retain=retain,
                          target_train=forget + retain, reference_train=retain, corpus=corpus, extra=extra)
