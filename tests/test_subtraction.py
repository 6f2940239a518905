"""Model subtraction on a real tiny Llama saved as safetensors: the arithmetic tensor by tensor,
the folder round trip, and the one-line errors (different architecture, bad alpha, no weights)."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

from unlearning.errors import UserError
from unlearning.subtraction import main, read_weights, subtract, subtract_folders

CFG = dict(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
           num_key_value_heads=4, tie_word_embeddings=True)


@pytest.fixture
def folders(tmp_path):
    torch.manual_seed(0)
    base = LlamaForCausalLM(LlamaConfig(**CFG))
    target = LlamaForCausalLM(LlamaConfig(**CFG))
    target.load_state_dict(base.state_dict())
    with torch.no_grad():
        for p in target.parameters():
            p.add_(torch.randn_like(p) * 0.1)   # the "fine-tuning" delta
    base.save_pretrained(tmp_path / "base")
    target.save_pretrained(tmp_path / "target")
    return tmp_path, base, target


def test_arithmetic_in_memory(folders):
    tmp, base, target = folders
    want = {n: b - 0.5 * (t - b) for (n, b), (_, t) in zip(base.named_parameters(), target.named_parameters())}
    subtract(target, tmp / "base", alpha=0.5)
    for n, p in target.named_parameters():
        assert torch.allclose(p, want[n], atol=1e-6), n
    # by hand on one entry: b=1, t=3, alpha=0.5 -> 1 - 0.5 * 2 = 0
    one = LlamaForCausalLM(LlamaConfig(**CFG))
    sd = {n: torch.ones_like(p) for n, p in one.named_parameters()}
    with torch.no_grad():
        for p in one.parameters():
            p.fill_(3.0)
    subtract(one, sd, alpha=0.5)
    assert all(torch.all(p == 0) for p in one.parameters())


def test_folders_round_trip_and_alpha(folders, tmp_path):
    tmp, base, target = folders
    out = subtract_folders(tmp / "base", tmp / "target", tmp / "sub", alpha=1.0)
    got = read_weights(out)
    b, t = read_weights(tmp / "base"), read_weights(tmp / "target")
    for n in b:
        assert torch.allclose(got[n], 2 * b[n] - t[n], atol=1e-6), n
    assert AutoModelForCausalLM.from_pretrained(str(out)).config.hidden_size == 32
    assert not (tmp / "sub.tmp").exists()


def test_different_architecture_is_one_clear_line(folders):
    tmp, _, target = folders
    other = LlamaForCausalLM(LlamaConfig(**{**CFG, "hidden_size": 64}))
    other.save_pretrained(tmp / "other")
    with pytest.raises(UserError, match="differ in architecture") as e:
        subtract(target, tmp / "other")
    assert "\n" not in str(e.value)
    deeper = LlamaForCausalLM(LlamaConfig(**{**CFG, "num_hidden_layers": 3}))
    with pytest.raises(UserError, match="no tensor 'model.layers.2"):
        subtract(deeper, tmp / "base")


@pytest.mark.parametrize("alpha", [0, -1, float("nan"), "x"])
def test_bad_alpha(folders, alpha):
    tmp, _, target = folders
    with pytest.raises(UserError, match="subtraction.scale"):
        subtract(target, tmp / "base", alpha=alpha)


def test_cli_reports_missing_weights_in_one_line(folders, capsys):
    tmp, _, _ = folders
    (tmp / "empty").mkdir()
    rc = main(["--base", str(tmp / "empty"), "--target", str(tmp / "target"), "--out", str(tmp / "o")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "no *.safetensors" in err and "\n" not in err
