"""Starting models built as cached stages: the fine-tuned target and the retain reference.

`cache_dir/stages/<kind>/<hash>/` holds an HF-format model and `stage.json` with exactly
what determined it (base model, data, fine-tune settings, seed). The build runs under a
file lock, so parallel jobs of a sweep build a stage once and the others wait and reuse it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import shutil
import time
from pathlib import Path

from filelock import FileLock

from unlearning.data.base import Example, encode
from unlearning.distributed import broadcast, is_main, wait
from unlearning.hashing import examples_hash, short_hash, texts_hash
from unlearning.methods.base import FineTune
from unlearning.models import cache_root
from unlearning.results import write_json
from unlearning.train import Checkpoints, TrainSettings, latest_checkpoint, train

log = logging.getLogger(__name__)


def stage_key(kind: str, model_fingerprint: dict, corpus: list[str], examples: list[Example],
              settings: TrainSettings, max_length: int) -> dict:
    """Everything that determines a stage's weights; its hash names the cache folder."""
    finetune = {k: v for k, v in dataclasses.asdict(settings).items() if k not in NOT_IN_KEY}
    # batch_size is the global batch: any number of processes and any accumulation split make the same weights
    return {"kind": kind, "model": model_fingerprint, "corpus": texts_hash(corpus), "data": examples_hash(examples),
            "n_examples": len(examples), "finetune": finetune, "max_length": max_length}


# How it trains, not what it learns (grad_accum: how the global batch is split, which changes no number). A stage
# never evaluates during training: `eval_each_epoch` (added after stages had been cached) stays out so those caches
# keep their keys; the older eval_* fields are in every key at defaults.
NOT_IN_KEY = ("save_every", "log_every", "compile", "gradient_checkpointing", "eval_each_epoch", "grad_accum")


def key_hash(key: dict) -> str:
    return short_hash(key)


def ensure_stage(kind: str, spec, corpus: list[str], examples: list[Example], settings: TrainSettings,
                 max_length: int, cache_dir: str | None = None, device: str = "cpu",
                 distributed=None) -> tuple[Path, bool]:
    """The folder of the stage, building it if needed; returns (path, built_now).

    Under a distributed launch every process trains it (one collective fine-tune) and rank 0 writes it;
    only rank 0 takes the file lock. With `save_every` set, an interrupted build resumes from
    `<stage>.partial/checkpoints` the next time it is asked for (the hash guarantees the same config).
    """
    key = stage_key(kind, spec.fingerprint(), corpus, examples, settings, max_length)
    folder = cache_root(cache_dir) / "stages" / kind / key_hash(key)
    folder.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(folder) + ".lock") if is_main() else contextlib.nullcontext():
        if broadcast((folder / "stage.json").exists()):
            log.info("stage %s: reusing cached %s", kind, folder)
            return folder, False
        t0 = time.perf_counter()
        log.info("stage %s: fine-tuning on %d examples -> %s", kind, len(examples), folder)
        model, tok = spec.load(corpus)
        model.to(device)
        partial = folder.with_name(folder.name + ".partial") / "checkpoints"
        if examples:  # no examples (WMDP): the model as it is is the stage, saved once like a fine-tuned one
            items = [encode(tok, ex, max_length) for ex in examples]
            checkpoints = Checkpoints(partial, settings.save_every, latest_checkpoint(partial), key)
            model = train(model, FineTune(), items, None, settings, tok.pad_token_id, desc=f"finetune {kind}",
                          distributed=distributed, device=device, checkpoints=checkpoints,
                          rebuild=lambda: spec.load(corpus)[0])
        if is_main():
            if settings.lora.enabled and examples:
                model = model.merge_and_unload()
            tmp = folder.with_name(folder.name + ".tmp")
            shutil.rmtree(tmp, ignore_errors=True)
            model.save_pretrained(tmp)
            tok.save_pretrained(tmp)
            write_json(tmp / "stage.json", {**key, "build_seconds": round(time.perf_counter() - t0, 2)})
            os.replace(tmp, folder)
            shutil.rmtree(partial.parent, ignore_errors=True)
            log.info("stage %s: built in %.1f s", kind, time.perf_counter() - t0)
        wait()
        return folder, True
