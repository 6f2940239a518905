"""Shared test set-up: offline hub, the benchmark data beside the project, one stage cache per session.

Tests that need ../shared/data fail (never skip) with a message saying how to provide it.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CONF_DIR = str(ROOT / "conf")
os.environ["HF_HUB_OFFLINE"] = "1"  # the hub is unreachable here; nothing may download at test time
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Tiny models gain nothing from a second thread, and parallel test processes (joblib sweeps)
# oversubscribe the cores badly with OpenMP spin-waiting (a sweep test went from 217 s to 14 s).
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("UNLEARNING_DATA_DIR", str((ROOT.parent / "shared" / "data").resolve()))

# Small, fast settings for whole runs on the tiny model (seconds, not minutes).
TINY = [
    "model=tiny", "dataset=tofu", "dataset.retain_authors=2", "evaluator.max_items=6",
    "evaluator.max_new_tokens=16", "model.finetune.epochs=2", "trainer.max_steps=2", "trainer.lr=1e-3",
]


def pytest_collection_modifyitems(config, items):
    """`gpu` tests run where CUDA is visible; elsewhere they are reported as skipped, with the reason."""
    import torch

    if torch.cuda.is_available():
        return
    if os.environ.get("UNLEARNING_REQUIRE_GPU") == "1":  # a GPU CI sets it: a lost GPU fails, never skips
        raise pytest.UsageError("UNLEARNING_REQUIRE_GPU=1 but torch sees no CUDA device")
    skip = pytest.mark.skip(reason="gpu test: no CUDA device visible here (run `make test` on a GPU machine)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def data_dir() -> Path:
    d = Path(os.environ["UNLEARNING_DATA_DIR"])
    if not (d / "tofu" / "forget01.json").is_file():
        pytest.fail(f"benchmark data missing: expected {d}/tofu/forget01.json; put the shared data beside the "
                    "project (../shared/data) or set UNLEARNING_DATA_DIR")
    return d


@pytest.fixture(scope="session", autouse=True)
def session_cache(tmp_path_factory) -> Path:
    """One stage cache for the whole session, so tiny targets are fine-tuned once."""
    d = os.environ.get("UNLEARNING_TEST_CACHE") or str(tmp_path_factory.mktemp("cache"))
    os.environ["UNLEARNING_CACHE"] = d
    return Path(d)


def compose(overrides: list[str]):
    """Compose the real Hydra config (conf/) with overrides, as the CLI does."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return hydra_compose(config_name="config", overrides=overrides)


@pytest.fixture
def run_tiny(tmp_path, data_dir):
    """Run the whole pipeline on the tiny model with extra overrides; returns the results record."""
    from unlearning.run import run

    def _run(*overrides: str, out: Path | None = None) -> dict:
        cfg = compose(TINY + list(overrides))
        return run(cfg, out or tmp_path / "run", list(overrides))

    return _run


def write_tiny_checkpoint(folder: Path, data_dir: Path) -> Path:
    """An HF-format folder (a tiny Llama and its BPE tokenizer trained on TOFU text), as a published checkpoint or a
    hub snapshot would be laid out."""
    from unlearning.data.tofu import load_tofu
    from unlearning.models import TinyLlama

    model, tok = TinyLlama().load(load_tofu(data_dir=str(data_dir), retain_authors=2).corpus)
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder
