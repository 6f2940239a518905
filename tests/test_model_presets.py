"""Model presets for the families OpenUnlearning ships configs for (conf/model/<preset>.yaml over `hf`).

The hub is unreachable here (HF_HUB_OFFLINE=1), so each preset's hub id must be refused in one line before any
work, and a local folder in the same layout, written by the test from a tiny Llama config, stands in for it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import CONF_DIR, ROOT, compose, write_tiny_checkpoint

from unlearning.errors import UserError

PRESETS = {  # preset -> hub id (OpenUnlearning's configs/model/*.yaml name the same models)
    "llama32_1b": "meta-llama/Llama-3.2-1B-Instruct", "llama32_3b": "meta-llama/Llama-3.2-3B-Instruct",
    "llama31_8b": "meta-llama/Llama-3.1-8B-Instruct", "llama2_7b_chat": "meta-llama/Llama-2-7b-chat-hf",
    "llama2_7b": "meta-llama/Llama-2-7b-hf", "qwen25_1_5b": "Qwen/Qwen2.5-1.5B-Instruct",
    "qwen25_3b": "Qwen/Qwen2.5-3B-Instruct", "qwen25_7b": "Qwen/Qwen2.5-7B-Instruct",
    "phi35_mini": "microsoft/Phi-3.5-mini-instruct", "phi15": "microsoft/phi-1_5", "gemma_7b_it": "google/gemma-7b-it",
    "zephyr_7b_beta": "HuggingFaceH4/zephyr-7b-beta",
}


def test_every_family_has_a_preset():
    assert sorted(PRESETS) == sorted(p.stem for p in Path(CONF_DIR, "model").glob("*.yaml")
                                     if p.stem not in ("tiny", "smollm2_135m", "hf"))


@pytest.fixture(scope="module")
def local_copy(tmp_path_factory, data_dir) -> Path:
    """A folder in a hub checkpoint's layout (config.json, safetensors, tokenizer files): a tiny Llama."""
    return write_tiny_checkpoint(tmp_path_factory.mktemp("hub_copy") / "Llama-3.2-1B-Instruct", data_dir)


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_preset_names_its_hub_id_and_is_refused_offline_in_one_line(preset, data_dir):
    from unlearning.validate import validate

    cfg = compose([f"model={preset}"])
    assert cfg.model.path == PRESETS[preset] and cfg.model.trust_remote_code is False
    assert cfg.model.dtype == "auto" and cfg.model.finetune.bf16 == "auto"  # bf16 on a CUDA GPU, fp32 on CPU
    with pytest.raises(UserError, match=rf"model={preset} is the hub id {PRESETS[preset]}, but the hub is offline"
                                        r".*model\.path=<folder"):
        validate(cfg)


@pytest.mark.parametrize("preset", sorted(set(PRESETS) - {"phi35_mini", "gemma_7b_it"}))
def test_preset_validates_with_a_local_copy(preset, local_copy, data_dir):
    """(phi35_mini and gemma_7b_it name an end-of-turn token the tiny tokenizer lacks: next test.)"""
    from unlearning.validate import validate

    cfg = compose([f"model={preset}", f"model.path={local_copy}"])
    parts = validate(cfg)
    assert parts.spec.name == preset and cfg.model.dtype == "float32"  # `auto` resolved on this CPU


def test_dtype_auto_is_bfloat16_on_a_gpu():
    from unlearning.precision import resolve_auto

    cfg = compose(["model=llama32_1b"])
    resolve_auto(cfg, "cuda")
    assert cfg.model.dtype == "bfloat16" and cfg.trainer.bf16 is True


def test_end_of_turn_token_and_base_model_tags(local_copy):
    """A preset's eos_token closes answers (refused if the tokenizer lacks it); the base-model presets' template
    writes OpenUnlearning's `Question: ... Answer:` tags."""
    from transformers import AutoTokenizer

    from unlearning.data.base import Example, encode
    from unlearning.models import finish_tokenizer

    tok = AutoTokenizer.from_pretrained(local_copy)
    tok.add_special_tokens({"additional_special_tokens": ["<|end|>"]})
    finish_tokenizer(tok, eos_token="<|end|>")
    assert tok.eos_token == "<|end|>" and encode(tok, Example("Paris", [{"role": "user", "content": "Q"}]))[
        "input_ids"][-1] == tok.convert_tokens_to_ids("<|end|>")
    with pytest.raises(UserError, match=r"model\.eos_token='<end_of_turn>' is not a token of this tokenizer"):
        finish_tokenizer(AutoTokenizer.from_pretrained(local_copy), eos_token="<end_of_turn>")

    template = compose(["model=phi15"]).model.chat_template
    base = finish_tokenizer(AutoTokenizer.from_pretrained(local_copy), chat_template=template)
    chat = [{"role": "user", "content": "Who wrote X?"}, {"role": "assistant", "content": "Jane."}]
    assert base.apply_chat_template(chat[:1], tokenize=False, add_generation_prompt=True) == "Question: Who wrote X?\nAnswer:"
    assert base.apply_chat_template(chat, tokenize=False) == "Question: Who wrote X?\nAnswer: Jane.\n\n"


def test_a_local_copy_stands_in_for_the_hub_id_end_to_end(local_copy, tmp_path):
    """unlearning-eval on model=llama32_1b with model.path= the local copy: loaded, evaluated, recorded."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    code = "import sys; from unlearning.__main__ import eval_main; sys.exit(eval_main())"
    r = subprocess.run([sys.executable, "-c", code, "model=llama32_1b", f"model.path={local_copy}",
                        "dataset.forget_split=forget01", "dataset.retain_authors=2", "evaluator.max_items=2",
                        "evaluator.max_new_tokens=4", f"hydra.run.dir={tmp_path / 'ev'}"],
                       capture_output=True, text=True, cwd=ROOT, env=env, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    record = json.loads((tmp_path / "ev" / "results.json").read_text())
    assert record["model"] == "llama32_1b" and record["config"]["model"]["path"] == str(local_copy)
    assert record["config"]["model"]["dtype"] == "float32" and len(record["metrics"]) > 10


@pytest.mark.parametrize("overrides, message", [
    (["model.eos_token='<end_of_turn>'"], r"model\.eos_token='<end_of_turn>' is not a token of this tokenizer"),
    (["model.pad_token='<nope>'"], r"model\.pad_token='<nope>' is not a token of this tokenizer"),
    (["model.chat_template='{{ bad'"], r"model\.chat_template does not compile"),
    # the folder's config.json: max_position_embeddings 1024 (the tiny Llama's)
    (["max_length=4096"], r"max_length=4096 exceeds the model's 1024 positions"),
    (["dataset=muse_news", "evaluator=muse", "evaluator.max_length=4096"],
     r"evaluator\.max_length=4096 exceeds the model's 1024 positions"),
])
def test_a_local_folders_tokens_template_and_positions_are_checked_before_weights_load(overrides, message, local_copy,
                                                                                      data_dir):
    """Validation reads the folder's tokenizer and config.json only (the weights load minutes later for 7B models)."""
    from unlearning.validate import validate

    with pytest.raises(UserError, match=message):
        validate(compose(["model=hf", f"model.path={local_copy}", *overrides]))


def test_config_values_use_each_architectures_own_names(tmp_path):
    """GPT-2 calls its positions n_positions (64 here), a multimodal config keeps them in text_config (96 here): both
    are read as max_position_embeddings; a folder without a config gives None."""
    from transformers import GPT2Config, LlamaConfig, LlavaConfig

    from unlearning.models import config_value

    GPT2Config(n_positions=64, n_layer=1, n_embd=8, n_head=2).save_pretrained(tmp_path / "gpt2")
    LlavaConfig(text_config=LlamaConfig(max_position_embeddings=96, num_hidden_layers=3)).save_pretrained(
        tmp_path / "llava")
    assert config_value(tmp_path / "gpt2", "max_position_embeddings") == 64
    assert config_value(tmp_path / "llava", "max_position_embeddings") == 96
    assert config_value(tmp_path / "llava", "num_hidden_layers") == 3
    assert config_value(tmp_path / "nothing", "max_position_embeddings") is None


@pytest.mark.parametrize("env, datasets, expected", [
    ({"HF_HUB_OFFLINE": "1"}, False, True), ({"HF_HUB_OFFLINE": "ON"}, False, True),
    ({"TRANSFORMERS_OFFLINE": "yes"}, False, True), ({"HF_HUB_OFFLINE": "0"}, False, False),
    ({"HF_DATASETS_OFFLINE": "1"}, False, False), ({"HF_DATASETS_OFFLINE": "1"}, True, True), ({}, True, False),
])
def test_offline_follows_huggingface_hubs_rule(env, datasets, expected, monkeypatch):
    from unlearning.hub import offline

    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert offline(datasets=datasets) is expected


def test_smollm2s_positions_bound_max_length(data_dir):
    from unlearning.validate import validate

    with pytest.raises(UserError, match=r"max_length=9000 exceeds the model's 8192 positions"):
        validate(compose(["model=smollm2_135m", "max_length=9000"]))


def test_chat_templates_compile_as_transformers_compiles_them():
    """transformers' own extensions ({% break %}, {% generation %}) are valid; a syntax error is one line."""
    from unlearning.models import check_chat_template

    check_chat_template("{% for m in messages %}{% if loop.index > 1 %}{% break %}{% endif %}"
                        "{% generation %}{{ m['content'] }}{% endgeneration %}{% endfor %}")
    with pytest.raises(UserError, match=r"model\.chat_template does not compile"):
        check_chat_template("{% for m in messages %}")


def test_the_unknown_token_may_be_the_pad_token(local_copy):
    """Llama-2's usual `pad_token: <unk>` is a real token even though it maps to unk_token_id."""
    from transformers import AutoTokenizer

    from unlearning.models import finish_tokenizer

    tok = AutoTokenizer.from_pretrained(local_copy)
    if tok.unk_token is None:
        tok.add_special_tokens({"unk_token": "<unk>"})
    assert finish_tokenizer(tok, pad_token=tok.unk_token).pad_token_id == tok.unk_token_id
