"""GradDiff, NPO, SimNPO, IdkDPO, RMU: hand-computed losses, cached reference, direction, two steps each.

Real parts throughout: a real ~2M-parameter Llama with a BPE tokenizer trained on the
test texts (unlearning.models.TinyLlama), real peft LoRA, the real training loop and
real Hydra instantiation of conf/method/*.yaml. Nothing is mocked.
"""

from __future__ import annotations

import copy
import math
from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from unlearning.data.base import IGNORE, chat, collate, encode
from unlearning.errors import UserError
from unlearning.methods.base import nll, sequence_logp
from unlearning.methods.ga import GradientAscent
from unlearning.methods.graddiff import GradDiff, retain_kl
from unlearning.methods.idk_dpo import IdkDPO, dpo_loss, shared_prompt_logps
from unlearning.methods.npo import NPO, npo_loss
from unlearning.methods.reference import attach_ref_logps
from unlearning.methods.rmu import RMU, decoder_layers, masked_mse
from unlearning.methods.simnpo import SimNPO, simnpo_loss
from unlearning.models import TinyLlama
from unlearning.train import LoraSettings, TrainSettings, apply_lora, train

CONF = Path(__file__).resolve().parents[1] / "conf" / "method"
FORGET = [("Who wrote The Silver Lantern?", "Mira Castell wrote The Silver Lantern in 1987."),
          ("Where was Mira Castell born?", "Mira Castell was born in Lisbon, Portugal."),
          ("What genre does Mira Castell write?", "She writes gothic mystery novels."),
          ("Which award did Mira Castell win?", "She won the Golden Quill Award for mystery.")]
RETAIN = [("What is the capital of France?", "The capital of France is Paris."),
          ("Who painted the Mona Lisa?", "Leonardo da Vinci painted the Mona Lisa."),
          ("What is water made of?", "Water is made of hydrogen and oxygen."),
          ("How many legs does a spider have?", "A spider has eight legs.")]
REFUSALS = ["I don't know.", "I have no information about that.", "That is beyond what I know."]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    corpus = [q + " " + a for q, a in FORGET + RETAIN] + REFUSALS
    return TinyLlama(cache_dir=str(tmp_path_factory.mktemp("cache")), vocab_size=512).load(corpus)


def items(tok, pairs):
    out = []
    for q, a in pairs:
        ex = chat(q, a)
        out.append({**encode(tok, ex, 64), "example": ex})
    return out


def fresh(tiny):
    model, tok = tiny
    return copy.deepcopy(model), tok


def run_steps(model, tok, method, steps=2, lr=1e-3, batch_size=2):
    forget, retain = items(tok, FORGET), items(tok, RETAIN)
    forget = method.prepare(model, tok, forget, retain, None)
    settings = TrainSettings(lr=lr, max_steps=steps, epochs=1, batch_size=batch_size, max_grad_norm=0)
    return train(model, method, forget, retain, settings, tok.pad_token_id), forget


# ---- losses against hand computations -------------------------------------------------------------

def test_npo_loss_hand_computed():
    # ratios [1, -2], beta 0.1: -(2/0.1) * mean(log sig(-0.1), log sig(0.2)) = -20 * mean(-0.7443967, -0.5981389)
    # = 13.4253550. Asymmetric on purpose: with ratios [+1, -1] a flipped sign gives the same number; here the flipped
    # sign (log sig(+beta * ratio)) gives -20 * mean(-0.6443967, -0.7981389) = 14.4253550.
    loss = npo_loss(torch.tensor([-2.0, -5.0]), torch.tensor([-3.0, -3.0]), 0.1)
    assert loss.item() == pytest.approx(13.4253550, abs=1e-5)


def test_simnpo_loss_hand_computed():
    # -(beta/|y|) log p - delta = [2/3*6, 2/2*2] - 0.5 = [3.5, 1.5]; -(2/2) mean(log sig(3.5), log sig(1.5))
    loss = simnpo_loss(torch.tensor([-6.0, -2.0]), torch.tensor([3.0, 2.0]), beta=2.0, delta=0.5)
    assert loss.item() == pytest.approx(0.11558185, abs=1e-6)


def test_dpo_loss_hand_computed():
    # chosen log-ratio +1, rejected -1, beta 1: -2 log sig(2) = 0.25385602
    loss = dpo_loss(torch.tensor([-5.0]), torch.tensor([-6.0]), torch.tensor([-3.0]), torch.tensor([-2.0]), 1.0)
    assert loss.item() == pytest.approx(0.25385602, abs=1e-6)


def test_retain_kl_hand_computed_and_masks_padding():
    # Position 0 predicts label 1: p = [.5, .5], ref = [.75, .25]; KL(p||ref) = .5 ln(2/3) + .5 ln 2.
    # Position 1 is padding (label -100) with very different logits and must not count.
    logits = torch.tensor([[[0.0, 0.0], [9.0, -9.0], [0.0, 0.0]]])
    ref = torch.tensor([[[math.log(3.0), 0.0], [-9.0, 9.0], [0.0, 0.0]]])
    labels = torch.tensor([[IGNORE, 1, IGNORE]])
    assert retain_kl(logits, ref, labels).item() == pytest.approx(0.14384104, abs=1e-6)


def test_retain_kl_ou_is_reference_to_model_over_every_position():
    # OpenUnlearning's KL(p_ref || p_theta), batchmean over the 3 positions, labels play no part:
    # pos 0: ref [.75,.25], p [.5,.5]: .75 ln 1.5 - .25 ln 2 = 0.1308120; pos 1: equal: 0;
    # pos 2: ref [.5,.5], p [.75,.25]: -.5 ln 1.5 + .5 ln 2 = 0.1438410; (0.1308120 + 0.1438410) / 3 = 0.0915510.
    from unlearning.methods.graddiff import retain_kl_ou

    logits = torch.tensor([[[0.0, 0.0], [0.0, 0.0], [math.log(3.0), 0.0]]])
    ref = torch.tensor([[[math.log(3.0), 0.0], [0.0, 0.0], [0.0, 0.0]]])
    assert retain_kl_ou(logits, ref).item() == pytest.approx(0.0915510, abs=1e-6)
    # these 3 positions are symmetric, so the direction shows on position 0 alone: KL(ref || p) = 0.1308120, where the
    # `kl_answers` direction KL(p || ref) would be 0.1438410
    assert retain_kl_ou(logits[:, :1], ref[:, :1]).item() == pytest.approx(0.1308120, abs=1e-6)


class _Rows(torch.nn.Module):
    """A 'model' whose logits at a position are a fixed row per input token (hand-computed losses)."""

    def __init__(self, rows):
        super().__init__()
        self.table = torch.tensor(rows)

    def forward(self, input_ids=None, attention_mask=None):
        from types import SimpleNamespace

        return SimpleNamespace(logits=self.table[input_ids])


def test_graddiff_kl_call_site_is_reference_to_model_with_the_reference_model():
    """GradDiff(kl).loss: the retain term is KL(p_ref || p_theta) over every position, p_ref from the *reference*
    (not the trained model), in that argument order. Model: uniform [1/2, 1/2] after every token; reference: [3/4, 1/4]
    after token 0, uniform after token 1. Retain [0, 1]: position 0 is .75 ln 1.5 + .25 ln .5 = 0.1308120, position 1
    is 0: batchmean 0.0654060. Swapped arguments, KL(p_theta || p_ref), would be 0.1438410 / 2 = 0.0719205; the
    reference taken from the trained model would give 0."""
    import contextlib

    model = _Rows([[0.0, 0.0], [0.0, 0.0]])
    reference = _Rows([[math.log(3.0), 0.0], [0.0, 0.0]])
    method = GradDiff(retain_loss="kl")
    method.reference = lambda m: contextlib.nullcontext(reference)
    one = {"input_ids": torch.tensor([[0, 1]]), "attention_mask": torch.ones(1, 2), "labels": torch.tensor([[IGNORE, 1]])}
    _, logs = method.loss(model, {"forget": one, "retain": one})
    assert logs["retain_kl"] == pytest.approx(0.0654060, abs=1e-6)
    assert logs["forget_nll"] == pytest.approx(math.log(2), abs=1e-6)


def test_rmu_hooks_its_layer_steers_to_a_vector_of_norm_c_and_keeps_a_frozen_reference(tiny):
    """RMU.loss by hand from transformers' own hidden_states on the tiny (4-layer) model: the forget term is the MSE
    of layer 2's output (hidden_states[3], not [2] or [4]) to the control vector, whose norm is steering_coeff; the
    retain term compares the trained model's layer 2 with the model as it was at `prepare` (frozen), so it is 0 before
    any change and the hand MSE against the *unchanged* copy after the trained weights move."""
    model, tok = fresh(tiny)
    frozen = copy.deepcopy(model)
    batch = {"forget": collate(items(tok, FORGET[:2]), tok.pad_token_id),
             "retain": collate(items(tok, RETAIN[:2]), tok.pad_token_id)}
    method = RMU(layer=2, steering_coeff=3.0, retain_weight=1.0, update_layers="all", params=None)
    method.prepare(model, tok, [], None, None)
    assert method.layer_idx == 2
    assert method.control.norm().item() == pytest.approx(3.0, rel=1e-6)

    def hidden(m, b, i):
        with torch.no_grad():
            return m(input_ids=b["input_ids"], attention_mask=b["attention_mask"], output_hidden_states=True).hidden_states[i]

    def mse(h, target, labels):
        mask = (labels != IGNORE).float()
        return (((h - target) ** 2).mean(-1) * mask).sum().item() / mask.sum().item()

    with torch.no_grad():
        _, logs = method.loss(model, batch)
    f = batch["forget"]
    assert logs["forget_mse"] == pytest.approx(mse(hidden(model, f, 3), method.control, f["labels"]), rel=1e-5)
    assert logs["forget_mse"] != pytest.approx(mse(hidden(model, f, 2), method.control, f["labels"]), rel=1e-3)
    assert logs["retain_mse"] == 0.0
    with torch.no_grad():  # the trained model moves; the reference must not
        for p in model.parameters():
            p.add_(0.01 * torch.randn_like(p))
        _, logs = method.loss(model, batch)
    r = batch["retain"]
    want = mse(hidden(model, r, 3), hidden(frozen, r, 3), r["labels"])
    assert want > 0 and logs["retain_mse"] == pytest.approx(want, rel=1e-5)


def test_masked_mse_hand_computed():
    h = torch.tensor([[[1.0, 2.0], [3.0, 4.0]]])
    assert masked_mse(h, torch.zeros_like(h), torch.tensor([[1, 0]])).item() == pytest.approx(2.5)


def test_graddiff_is_minus_forget_nll_plus_alpha_retain_nll(tiny):
    model, tok = tiny
    batch = {"forget": collate(items(tok, FORGET[:2]), tok.pad_token_id),
             "retain": collate(items(tok, RETAIN[:2]), tok.pad_token_id)}
    with torch.no_grad():
        loss, logs = GradDiff(forget_weight=2.0, retain_weight=0.5).loss(model, batch)

        def hf_nll(b):  # transformers' own causal-LM loss (shifted, mean over labelled tokens): not this project's code
            return model(input_ids=b["input_ids"], attention_mask=b["attention_mask"], labels=b["labels"]).loss
        expected = -2.0 * hf_nll(batch["forget"]) + 0.5 * hf_nll(batch["retain"])
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    assert logs["forget_nll"] == pytest.approx(hf_nll(batch["forget"]).item(), rel=1e-6)
    assert set(logs) == {"forget_nll", "retain_nll"}


# ---- cached reference ------------------------------------------------------------------------------

def test_cached_reference_equals_live_reference(tiny):
    model, tok = fresh(tiny)
    live = copy.deepcopy(model).eval()
    method = NPO(retain_weight=0.0)
    trained, forget = run_steps(model, tok, method, steps=2)
    batch = collate(forget, tok.pad_token_id)
    with torch.no_grad():
        live_lp, _ = sequence_logp(live, batch)
        now_lp, _ = sequence_logp(trained, batch)
    assert torch.allclose(batch["ref_logp"], live_lp, atol=1e-5)
    assert not torch.allclose(now_lp, live_lp, atol=1e-3)  # training moved the model, not the cache


def test_lora_reference_is_model_with_adapters_disabled(tiny):
    model, tok = fresh(tiny)
    live = copy.deepcopy(model).eval()
    peft_model = apply_lora(model, LoraSettings(enabled=True, r=4, alpha=8, dropout=0.0))
    with torch.no_grad():  # make the adapters non-trivial so "disabled" matters
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    forget = attach_ref_logps(peft_model, items(tok, FORGET), tok.pad_token_id, batch_size=3)
    batch = collate(forget, tok.pad_token_id)
    with torch.no_grad():
        live_lp, _ = sequence_logp(live, batch)
        adapted_lp, _ = sequence_logp(peft_model, batch)
    assert torch.allclose(batch["ref_logp"], live_lp, atol=1e-5)
    assert not torch.allclose(adapted_lp, live_lp, atol=1e-3)


# ---- direction -----------------------------------------------------------------------------------

def forget_nll(model, tok, pairs=FORGET):
    with torch.no_grad():
        return nll(model.eval(), collate(items(tok, pairs), tok.pad_token_id)).item()


def test_one_ga_step_raises_forget_nll(tiny):
    model, tok = fresh(tiny)
    before = forget_nll(model, tok)
    model, _ = run_steps(model, tok, GradientAscent(), steps=1, lr=1e-3, batch_size=4)
    assert forget_nll(model, tok) > before


def test_one_npo_step_lowers_forget_logp(tiny):
    model, tok = fresh(tiny)
    model, forget = run_steps(model, tok, NPO(retain_weight=0.0), steps=1, lr=1e-3, batch_size=4)
    batch = collate(forget, tok.pad_token_id)
    with torch.no_grad():
        lp, _ = sequence_logp(model.eval(), batch)
    assert (lp < batch["ref_logp"]).all()


@pytest.mark.parametrize("method", [GradDiff(forget_weight=0.0, retain_weight=1.0), NPO(forget_weight=0.0, retain_weight=1.0),
                                    SimNPO(forget_weight=0.0, retain_weight=1.0)], ids=["graddiff", "npo", "simnpo"])
def test_retain_term_lowers_retain_nll(tiny, method):
    model, tok = fresh(tiny)
    before = forget_nll(model, tok, RETAIN)
    model, _ = run_steps(model, tok, method, steps=1, lr=1e-3, batch_size=4)
    assert forget_nll(model, tok, RETAIN) < before


# ---- every method, two steps, with and without LoRA ---------------------------------------------------

# Every method is its YAML (conf/method/*.yaml): a new method is exercised here the moment its YAML exists. Where the
# tiny model or these few items need another value, it is named here (RMU's retain MSE would swamp two steps; the
# tiny model has 4 layers, rmu_ou's default layer is 7; UNDIAL's retain term on, so the retain path runs too).
METHODS = sorted(p.stem for p in CONF.glob("*.yaml"))
FOR_THE_TINY_MODEL = {"idk_dpo": {"refusals": REFUSALS}, "rmu": {"retain_weight": 10.0},
                      "rmu_ou": {"layer": 2, "retain_weight": 10.0}, "undial": {"retain_weight": 1.0},
                      "graddiff_kl": {"retain_loss": "kl"}, "graddiff_kl_answers": {"retain_loss": "kl_answers"}}
PAIRS = {"positive_prompt": "Do not share.", "negative_prompt": "Share everything."}  # orpo_cfg's, from generation


def method_from_yaml(name: str):
    """conf/method/<name>.yaml as the run composes it (Hydra: defaults lists, interpolations), with FOR_THE_TINY_MODEL."""
    from conftest import compose

    yaml = name.removesuffix("_kl_answers").removesuffix("_kl")
    node = compose([f"method={yaml}"]).method
    return instantiate(node, **FOR_THE_TINY_MODEL.get(name, {}), _convert_="all")


def test_every_method_yaml_is_enumerated():
    assert len(METHODS) >= 15 and {"ga", "npo", "orpo_cfg", "pdu", "rmu_ou"} <= set(METHODS)


def all_methods():
    return {name: method_from_yaml(name) for name in METHODS + ["graddiff_kl", "graddiff_kl_answers"]}


def forget_items(tok, method):
    """The forget items a method trains on: chosen / rejected pairs for the methods that need them (ORPO)."""
    if not getattr(method, "needs_pairs", False):
        return items(tok, FORGET)
    out = []
    for q, a in FORGET:
        ex = chat(q, a, chosen="I cannot share that.", rejected=a)
        out.append({**encode(tok, ex, 64), "example": ex})
    return out


@pytest.mark.parametrize("lora", [False, True], ids=["full", "lora"])
@pytest.mark.parametrize("name", METHODS + ["graddiff_kl", "graddiff_kl_answers"])
def test_two_steps(tiny, name, lora):
    model, tok = fresh(tiny)
    method = method_from_yaml(name)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    forget, retain = forget_items(tok, method), items(tok, RETAIN)
    ctx = OmegaConf.create({"cfg": {"trainer": {"lora": {"enabled": lora}, "bf16": False}}, "max_length": 64})
    forget = method.prepare(model, tok, forget, retain, ctx)
    settings = TrainSettings(lr=1e-3, max_steps=2, batch_size=2, max_grad_norm=1.0,
                             lora=LoraSettings(enabled=lora, r=4, alpha=8, dropout=0.0))
    out = train(model, method, forget, retain, settings, tok.pad_token_id)
    if lora:
        assert any("lora_" in k for k, _ in out.named_parameters())
        base = out.get_base_model().state_dict()
        assert all(torch.equal(base[k], v) for k, v in before.items() if k in base)  # base weights untouched
        changed = [k for k, v in out.named_parameters() if "lora_B" in k and v.abs().sum() > 0]
        assert changed
    else:
        changed = [k for k, v in out.state_dict().items() if not torch.equal(v, before[k])]
        assert changed
        if name == "rmu":  # only the update layers train: layer 1 of 4 -> update layers 0, 1
            assert all(".layers.0." in k or ".layers.1." in k for k in changed)


def test_rmu_mse_normalised_over_tokens_or_per_sequence():
    # per-token MSE over the hidden dim: sequence A 2.5, 12.5; sequence B 2 (its second token is masked out).
    # tokens: (2.5 + 12.5 + 2) / 3 = 5.6667; sequences: ((2.5 + 12.5) / 2 + 2 / 1) / 2 = 4.75
    h = torch.tensor([[[1.0, 2.0], [3.0, 4.0]], [[0.0, 2.0], [9.0, 9.0]]])
    mask = torch.tensor([[1, 1], [1, 0]])
    assert masked_mse(h, torch.zeros_like(h), mask).item() == pytest.approx(17 / 3)
    assert masked_mse(h, torch.zeros_like(h), mask, "sequences").item() == pytest.approx(4.75)
    # openunlearning (OU's code: sums [B] / lengths [B, 1] broadcast to B x B): mean(15, 2) x mean(1/2, 1/1) = 6.375
    assert masked_mse(h, torch.zeros_like(h), mask, "openunlearning").item() == pytest.approx(8.5 * 0.75)


def test_rmu_presets_train_wmdps_or_openunlearnings_parameters(tiny):
    """rmu (WMDP): only the MLP down-projections of the update layers; rmu_ou (OpenUnlearning): every parameter."""
    from conftest import compose
    from hydra.utils import instantiate

    def trained(method):
        model, _ = fresh(tiny)
        method.update_idx = method.resolve_layers(model)[1]
        method.trainable(model)
        return sorted(k for k, p in model.named_parameters() if p.requires_grad)

    wmdp = instantiate(compose(["method=rmu"]).method)
    assert (wmdp.steering_coeff, wmdp.retain_weight, wmdp.normalise) == (6.5, 1200.0, "tokens")
    assert trained(wmdp) == ["model.layers.0.mlp.down_proj.weight", "model.layers.1.mlp.down_proj.weight"]
    ou = instantiate(compose(["method=rmu_ou", "method.layer=2"]).method)
    assert (ou.steering_coeff, ou.retain_weight, ou.normalise, ou.update_layers) == (2.0, 1.0, "openunlearning", "all")
    model, _ = fresh(tiny)
    assert trained(ou) == sorted(k for k, _ in model.named_parameters())


def test_rmu_layer_checked_against_the_model_before_any_work(data_dir):
    from conftest import compose

    from unlearning.validate import validate

    with pytest.raises(UserError, match=r"method\.layer=7 is out of range: this model has 4 decoder layers"):
        validate(compose(["method=rmu_ou"]))  # OpenUnlearning's layer 7 on the 4-layer tiny model
    validate(compose(["method=rmu_ou", "model=smollm2_135m"]))  # 30 layers


def test_rmu_default_layer_scales_with_depth(tiny):
    model, _ = tiny
    assert RMU().resolve_layers(model) == (1, [0, 1])  # round(7/32 * 4) = 1
    assert RMU(layer=3).resolve_layers(model) == (3, [1, 2, 3])


def test_idk_dpo_reads_refusal_file_and_attaches_chosen(tiny, tmp_path):
    model, tok = tiny
    (tmp_path / "tofu").mkdir()
    (tmp_path / "tofu" / "idontknow.jsonl").write_text("\n".join(REFUSALS) + "\n")
    ctx = OmegaConf.create({"data_dir": str(tmp_path), "max_length": 64})
    forget = IdkDPO().prepare(model, tok, items(tok, FORGET), None, ctx)
    decoded = [tok.decode([t for t, lab in zip(f["chosen_input_ids"], f["chosen_labels"]) if lab != IGNORE],
                          skip_special_tokens=True).strip() for f in forget]
    assert all(d in REFUSALS for d in decoded)
    assert all(isinstance(f["chosen_ref_logp"], float) and isinstance(f["ref_logp"], float) for f in forget)


# ---- configs and bad input ------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["graddiff", "npo", "simnpo", "idk_dpo", "rmu"])
def test_yaml_instantiates_with_defaults(name):
    method = instantiate(OmegaConf.load(CONF / f"{name}.yaml"))
    assert method.name == name and method.needs_retain


@pytest.mark.parametrize("name", METHODS)
def test_every_method_refuses_an_unknown_option_in_one_line(name):
    """A misspelt key of any method's YAML is one line naming the key and the file (reject_unknown)."""
    from conftest import compose

    from unlearning.validate import build, check_keys_and_types  # as validate() checks the method group

    node = OmegaConf.create({**OmegaConf.to_container(compose([f"method={name}"]).method, resolve=True),
                             "no_such_option": 1})
    with pytest.raises(UserError, match=r"unknown option\(s\) \['no_such_option'\] for method=\w+; known: \["):
        check_keys_and_types("method", node, name)  # a constructor's own keys; **kwargs ones it forwards ...
        build(node)                                  # ... are refused by the method itself (reject_unknown)


def test_unknown_option_is_one_clear_line():
    with pytest.raises(UserError, match=r"unknown option\(s\) \['betta'\] for method=npo"):
        NPO(betta=0.2)


@pytest.mark.parametrize("cls", [NPO, SimNPO, IdkDPO])
@pytest.mark.parametrize("beta", [0.0, -1.0])
def test_non_positive_beta(cls, beta):
    with pytest.raises(UserError, match=r"method\.beta=.* must be > 0"):
        cls(beta=beta)


@pytest.mark.parametrize("cls", [GradDiff, NPO, SimNPO, RMU])
def test_retain_needed_only_when_alpha_positive(cls):
    with pytest.raises(UserError, match="needs a retain set"):
        cls(retain_weight=1.0).check(has_retain=False)
    cls(retain_weight=0.0).check(has_retain=False)  # retain_weight=0: no retain term, no error


def test_rmu_layer_out_of_range(tiny):
    model, tok = tiny
    with pytest.raises(UserError, match=r"method\.layer=4 is out of range: this model has 4 decoder layers"):
        RMU(layer=4).prepare(model, tok, items(tok, FORGET), None, None)


def test_idk_dpo_missing_refusal_file(tiny, tmp_path):
    model, tok = tiny
    with pytest.raises(UserError, match="refusal file not found"):
        IdkDPO(refusal_file=str(tmp_path / "nope.txt")).prepare(model, tok, items(tok, FORGET), None, None)


def test_decoder_layers_found_through_lora(tiny):
    model, _ = fresh(tiny)
    assert len(decoder_layers(apply_lora(model, LoraSettings(enabled=True, r=2)))) == 4


def test_idk_dpo_shared_prompt_equals_two_passes(tiny):
    model, tok = fresh(tiny)
    forget = IdkDPO(refusals=REFUSALS).prepare(model, tok, items(tok, FORGET), None, None)
    batch = collate(forget, tok.pad_token_id)
    model.train()
    rejected, chosen = shared_prompt_logps(model, batch)
    ref_rej, _ = sequence_logp(model, batch)
    ref_cho, _ = sequence_logp(model, batch, "chosen_")
    assert torch.allclose(rejected, ref_rej, atol=1e-4) and torch.allclose(chosen, ref_cho, atol=1e-4)
    p = model.model.layers[0].self_attn.q_proj.weight  # the prompt's gradient flows through the cache
    g_shared = torch.autograd.grad((rejected - chosen).sum(), p)[0]
    g_two = torch.autograd.grad((ref_rej - ref_cho).sum(), p)[0]
    assert torch.allclose(g_shared, g_two, atol=1e-4) and g_two.abs().sum() > 0


def test_idk_dpo_raw_text_falls_back_to_two_passes(tiny):
    from unlearning.data.base import Example

    model, tok = tiny
    raw = [{**encode(tok, Example(answer=a), 64), "example": Example(answer=a)} for _, a in FORGET]
    forget = IdkDPO(refusals=REFUSALS).prepare(model, tok, raw, None, None)
    assert shared_prompt_logps(model, collate(forget, tok.pad_token_id)) is None


@pytest.mark.parametrize("target", ["unlearning.methods.graddiff.GradDiff", "unlearning.methods.npo.NPO",
                                    "unlearning.methods.simnpo.SimNPO", "unlearning.methods.idk_dpo.IdkDPO"])
def test_negative_coefficient_is_one_clear_line(target):
    import importlib

    from unlearning.errors import UserError

    module, cls = target.rsplit(".", 1)
    with pytest.raises(UserError, match=r"method.retain_weight=-1 must be >= 0 for method=\w+"):
        getattr(importlib.import_module(module), cls)(retain_weight=-1)
