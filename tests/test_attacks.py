"""Robustness attacks: recovery arithmetic by hand, quantization on the tiny model end to end, bad input."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import compose

from unlearning.attacks import fresh_copy, recovery
from unlearning.attacks.quantize import Quantize
from unlearning.errors import UserError
from unlearning.models import TinyLlama
from unlearning.validate import validate


def test_recovery_by_hand():
    # unlearning took forget prob 0.8 -> 0.2; an attack back to 0.5 restores half of it
    assert recovery(0.5, 0.2, 0.8) == pytest.approx(0.5)
    assert recovery(0.2, 0.2, 0.8) == 0.0 and recovery(0.8, 0.2, 0.8) == 1.0
    assert recovery(0.1, 0.2, 0.8) == pytest.approx(-1 / 6)   # the attack removed even more
    assert recovery(0.5, 0.3, 0.3) is None and recovery(None, 0.2, 0.8) is None  # nothing was unlearned / missing


def test_quantization_changes_a_copy_and_leaves_the_model_alone(tmp_path):
    model, tok = TinyLlama(cache_dir=str(tmp_path)).load(["hello world, the quick brown fox"] * 4)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.tensor([tok("the quick brown fox")["input_ids"]])
    with torch.no_grad():
        plain = model(x).logits
        quantized = Quantize(bits=8).apply(fresh_copy(model), tok, None, None)
        attacked = quantized(x).logits
    assert not torch.equal(plain, attacked) and torch.allclose(plain, attacked, atol=0.5)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # the original is untouched
    assert type(quantized.model.layers[0].mlp.down_proj).__name__ == "QLinear"


def test_quant8_attack_on_a_tiny_run(run_tiny, tmp_path):
    plain = run_tiny("save_model=false", out=tmp_path / "plain")
    rec = run_tiny("attack=[quant8]", out=tmp_path / "attacked")
    m = rec["metrics"]
    # the attack's metrics sit beside the plain ones, which are exactly those of a run without it
    assert {k: v for k, v in m.items() if "@" not in k} == plain["metrics"]
    assert "forget_Q_A_Prob@quant8" in m and m["forget_Q_A_Prob@quant8"] != m["forget_Q_A_Prob"]
    target = rec["baselines"]["target"]["forget_Q_A_Prob"]
    assert m["forget_Q_A_Prob@quant8_recovery"] == pytest.approx(
        (m["forget_Q_A_Prob@quant8"] - m["forget_Q_A_Prob"]) / (target - m["forget_Q_A_Prob"]))
    assert (tmp_path / "attacked" / "eval" / "tofu@quant8.json").is_file()
    # the saved unlearned model is the plain one, not the quantized copy
    cfg = json.loads((tmp_path / "attacked" / "model" / "config.json").read_text())
    assert "quantization_config" not in cfg


def test_bad_attack_input_is_one_line_before_any_work(data_dir):
    with pytest.raises(UserError, match="bits=3"):
        validate(compose(["attack=[quant8]", "attacks.quant8.bits=3"]))
    with pytest.raises(UserError, match="unknown option"):
        validate(compose(["attack=[quant8]", "+attacks.quant8.group_size=64"]))
    parts = validate(compose(["attack=[quant8,quant4]", "objective=forget_Q_A_Prob@quant4_recovery"]))
    assert set(parts.attacks) == {"quant8", "quant4"}


def test_an_unknown_attack_is_caught_on_the_command_line(data_dir):
    from pathlib import Path

    from unlearning.cli_checks import check_overrides

    with pytest.raises(UserError, match="unknown option attack=nope"):
        check_overrides(["attack=[quant8,nope]"], str(Path(__file__).resolve().parent.parent / "conf"))
