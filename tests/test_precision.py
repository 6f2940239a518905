"""The model config's precision reaches every model of the run, and bf16 runs only where it is native."""

from __future__ import annotations

import pytest
from conftest import compose
from omegaconf import OmegaConf
from safetensors import safe_open

from unlearning.errors import UserError
from unlearning.precision import bf16_effective, device_kind, native_bf16, resolve_auto
from unlearning.validate import validate


def test_model_dtype_reaches_the_stages_and_the_unlearned_model(run_tiny, tmp_path):
    # small: bf16 weights are emulated (slow) on CPUs without native bf16
    rec = run_tiny("model.dtype=bfloat16", "stage.evaluate_target=false", "model.finetune.epochs=1",
                   "evaluator.max_items=2", "evaluator.generate=false", out=tmp_path / "bf16")
    assert rec["status"] == "ok" and rec["provenance"]["model_dtype"] == "bfloat16"
    for folder in (tmp_path / "bf16" / "model", rec["stages"]["target"]["path"]):
        with safe_open(f"{folder}/model.safetensors", "pt") as f:
            name = next(iter(f.keys()))
            assert str(f.get_tensor(name).dtype) == "torch.bfloat16", folder


def test_float16_training_is_refused_before_any_work(data_dir):
    with pytest.raises(UserError, match="model.dtype=float16.*gradient scaler"):
        validate(compose(["model.dtype=float16"]))


def test_bf16_request_runs_where_native_only(monkeypatch):
    assert bf16_effective(False, "cpu") is False
    monkeypatch.delenv("UNLEARNING_BF16_EMULATED", raising=False)
    assert bf16_effective(True, "cpu") is native_bf16("cpu")
    monkeypatch.setenv("UNLEARNING_BF16_EMULATED", "1")  # forced, e.g. to compare numbers with a bf16 machine
    assert bf16_effective(True, "cpu") is True


def test_bf16_auto_is_fp32_on_cpu_and_bf16_on_a_bf16_gpu(data_dir, monkeypatch):
    cfg = compose(["dataset=synthetic_pii", "evaluator=pii"])
    assert cfg.trainer.bf16 == "auto" and cfg.generation.bf16 == "auto" and cfg.model.finetune.bf16 == "auto"
    validate(cfg)  # resolves auto for this machine's device (no GPU here): fp32 everywhere
    assert device_kind("auto") == "cpu" and device_kind("cuda:1") == "cuda"
    for key in ("trainer", "generation", "model.finetune", "dataset.replacement"):
        assert OmegaConf.select(cfg, f"{key}.bf16") is False, key
    gpu = compose(["trainer.bf16=false"])
    resolve_auto(gpu, "cuda")  # what a run on a GPU resolves (decided without touching the GPU)
    assert gpu.generation.bf16 is True and gpu.model.finetune.bf16 is True and gpu.trainer.bf16 is False
    assert bf16_effective("auto", "cpu") is False
    # a CUDA GPU with native bf16 cannot exist here: the capability query is replaced for this check
    monkeypatch.setattr("unlearning.precision.native_bf16", lambda kind: kind == "cuda")
    assert bf16_effective("auto", "cuda") is True


def test_bf16_must_be_true_false_or_auto(data_dir):
    with pytest.raises(UserError, match=r"trainer.bf16='fast' must be true, false or auto"):
        validate(compose(["trainer.bf16=fast"]))


def test_attention_implementation_reaches_the_loaded_model(data_dir, tmp_path):
    from unlearning.models import TinyLlama

    parts = validate(compose(["model.attn_implementation=eager"]))
    assert parts.spec.load_kwargs()["attn_implementation"] == "eager"
    spec = TinyLlama(cache_dir=str(tmp_path), vocab_size=300, attn_implementation="eager")
    model, _ = spec.load(["a small corpus for a tokenizer", "of a few words"])
    assert model.config._attn_implementation == "eager"


def test_unknown_or_missing_attention_implementation(data_dir):
    with pytest.raises(UserError, match=r"model.attn_implementation='fast' is unknown; use one of eager, sdpa"):
        validate(compose(["model.attn_implementation=fast"]))
    import importlib.util

    if importlib.util.find_spec("flash_attn") is None:
        with pytest.raises(UserError, match="flash-attn is not installed"):
            validate(compose(["model.attn_implementation=flash_attention_2"]))
