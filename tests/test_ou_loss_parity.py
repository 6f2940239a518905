"""Every method's loss and gradient held to OpenUnlearning's own trainers, on OU's own tensors.

The reference (`../shared/reference/ou_losses_smollm2`, its README says how it was made) is one
`trainer.compute_loss(model, inputs); loss.backward()` per OU trainer (commit d3d7cf9, transformers 4.51.3, fp32,
CPU, 1 thread) on one real batch (4 forget01 + 4 retain99 TOFU items through OU's SmolLM2 pipeline), in two model
states: SmolLM2-135M as converted, and a seeded perturbation of it (the reference model stays unperturbed). Here
the same integer tensors (OU's bool attention mask `input_ids != pad` included, which hides every `<|im_end|>`)
go to this project's `method.loss(model, {"forget": ..., "retain": ...})` at OU's default settings, on the same
weights (the project's GGUF conversion gives the README's `model.safetensors` sha256 byte for byte), and the loss
and the gradient norms OU recorded (float64 norms of the float32 gradients, the tied embedding counted once) are
held to a relative tolerance.

Where the project differs on purpose (UNDIAL's token mean, SimNPO's margin, PDU's dual timing, RMU's token
normalisation in `rmu`'s default), the expected value is computed here by hand from the recorded tensors and the
model's own logits / layer outputs (plain transformers forward passes, never the method code), and the hand
computation of OU's formula is itself checked against OU's record. docs/parity.md has the table these tests print.

Cost: one forward + backward per method and state on SmolLM2-135M (1 thread), the model shared by the module.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import os
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from unlearning.methods.ceu import CEU
from unlearning.methods.ga import GradientAscent
from unlearning.methods.graddiff import GradDiff
from unlearning.methods.idk_dpo import IdkDPO
from unlearning.methods.npo import NPO
from unlearning.methods.pdu import PDU
from unlearning.methods.rmu import RMU
from unlearning.methods.satimp import SatImp
from unlearning.methods.simnpo import SimNPO, simnpo_loss
from unlearning.methods.undial import UNDIAL
from unlearning.methods.wga import WGA

ROOT = Path(__file__).resolve().parent.parent
REF = Path(os.environ.get("UNLEARNING_REFERENCE_DIR", ROOT.parent / "shared" / "reference")) / "ou_losses_smollm2"
STATES = ("initial", "perturbed")
GRAD_PARAMS = ("model.embed_tokens.weight", "model.layers.0.self_attn.q_proj.weight",
               "model.layers.15.mlp.down_proj.weight", "model.layers.29.mlp.down_proj.weight", "model.norm.weight")
# Relative tolerances. OU's records were made on a 2-core Intel Xeon (Sapphire Rapids, AVX512); float32 kernels
# sum in another order on other CPUs. Loss: 2e-5 (largest measured 3.6e-7 on that Xeon, most bit-identical; 6.5e-6
# (CE-U) on a 2-core AMD EPYC with AVX2 only, 2026-12-07; the deliberate differences tested below are >= 1e-3).
# Gradient norms: 5e-5 (largest measured 1.6e-6 on the Xeon, 1.3e-5 on the AMD EPYC, GradDiff_KL perturbed: float32
# accumulation order, the two sides' autograd graphs differ: the project's fused cross_entropy against
# transformers' loss), except where OU sums per-sequence NLL (NPO, IdkDPO): OU computes it with cross_entropy over
# the *transposed* logits, whose fp32 log-softmax along a
# strided dimension is off the exact value (docs/parity.md, "a second, smaller artefact"); its gradient inherits
# that, and the NPO gradient norms differ by up to 1.6e-4 (q_proj of layer 0; 1.4e-4 in the total). Checked off-line:
# the same NPO loss with OU's transposed call reproduces OU's norms to 1e-11, with the contiguous call this
# project's to the last digit, so 3e-4 there is OU's artefact, not a formula difference. The losses agree to the
# loss tolerance even there: the error cancels in model - reference log-ratios.
LOSS_RTOL, GRAD_RTOL = 2e-5, 5e-5
GRAD_RTOL_TRANSPOSED = {"NPO": 3e-4, "IdkDPO": 3e-4}
# Gradients are checked in the perturbed state (where the reference and the model differ, so KL, log-ratios and
# their gradients are not zero), losses in both; UNLEARNING_OU_LOSS_FULL=1 backpropagates everywhere.
FULL = os.environ.get("UNLEARNING_OU_LOSS_FULL") == "1"
# A SmolLM2 backward costs ~10 s on one thread: CI backpropagates for one method of each kind of graph (the KL to a
# frozen copy, per-sequence log-ratios, the layer hook, PDU's two terms); FULL for all (docs/parity.md's table).
GRADIENTS_IN_CI = {"GradDiff_KL", "NPO", "RMU", "PDU"}
MEASURED: dict = {}  # filled by the tests, printed at the end (the docs/parity.md table)


def _tensor(d: dict) -> torch.Tensor:
    return torch.tensor(d["values"], dtype=getattr(torch, d["dtype"]))


@pytest.fixture(scope="module")
def ref() -> dict:
    if not (REF / "records.json").is_file():
        pytest.fail(f"OpenUnlearning's loss records missing: expected {REF}/records.json; put the shared folder "
                    "beside the project (../shared/reference) or set UNLEARNING_REFERENCE_DIR")
    records = json.loads((REF / "records.json").read_text())
    inputs = json.loads((REF / "inputs.json").read_text())
    by_key = {(r["method"], r["state"]): r for r in records["records"]}

    def walk(node):
        return _tensor(node) if "dtype" in node else {k: walk(v) for k, v in node.items()}

    batches = {name: walk(b["tensors"]) for name, b in inputs["batches"].items()}
    return {"meta": records, "records": by_key, "batches": batches}


def params_sha256(model) -> str:
    """The README's recipe: name, then the raw float32 bytes, over sorted named_parameters()."""
    h = hashlib.sha256()
    for name, p in sorted(model.named_parameters()):
        h.update(name.encode())
        h.update(p.detach().contiguous().cpu().numpy().tobytes())
    return h.hexdigest()


@pytest.fixture(scope="module")
def models(ref):
    """{state: model}: SmolLM2 as this project converts it, and the README's seeded perturbation of a copy."""
    from unlearning.models import SmolLM2

    before = torch.get_num_threads()
    torch.set_num_threads(1)  # as the records (and conftest's OMP_NUM_THREADS=1); put back for later test files
    spec = SmolLM2()
    digest = hashlib.sha256((spec.folder() / "model.safetensors").read_bytes()).hexdigest()
    assert digest == ref["meta"]["model_safetensors_sha256"], "the project's GGUF conversion changed its bytes"
    initial, _ = spec.load()
    initial.train()
    assert params_sha256(initial) == ref["records"]["GradAscent", "initial"]["trained_model_params_sha256"]
    perturbed = copy.deepcopy(initial)
    g = torch.Generator().manual_seed(1234)
    with torch.no_grad():
        for _name, p in sorted(perturbed.named_parameters()):
            p.data.add_(torch.randn(p.shape, generator=g, dtype=torch.float32) * 1e-3)
    assert params_sha256(perturbed) == ref["records"]["GradAscent", "perturbed"]["trained_model_params_sha256"]
    yield {"initial": initial, "perturbed": perturbed}
    torch.set_num_threads(before)


def rel(a: float, b: float) -> float:
    return abs(a - b) / max(abs(b), 1e-30)


def grad_norms(model) -> dict:
    """OU's record: float64 L2 norms of the float32 gradients, the tied embedding / LM head counted once."""
    named = dict(model.named_parameters())

    def norm(g):
        return torch.linalg.vector_norm(g, dtype=torch.float64).item()

    out = {n: None if named[n].grad is None else norm(named[n].grad) for n in GRAD_PARAMS}
    out["total_float64"] = math.sqrt(sum(norm(p.grad) ** 2 for p in named.values() if p.grad is not None))
    return out


@torch.no_grad()
def seq_logp(model, b: dict, prefix: str = "") -> torch.Tensor:
    """log p(answer | prompt) per sequence, by hand (the reference's cached statistic that `prepare` attaches)."""
    logits = model(input_ids=b[prefix + "input_ids"], attention_mask=b[prefix + "attention_mask"]).logits[:, :-1]
    labels = b[prefix + "labels"][:, 1:]
    ce = F.cross_entropy(logits.float().reshape(-1, logits.size(-1)), labels.reshape(-1), reduction="none")
    return -ce.view(labels.shape).sum(-1)


def run(models, method, state: str, batch: dict, needs_prepare: bool = False,
        name: str = "") -> tuple[float, dict | None, dict]:
    """One `method.loss` + backward on the state's model (the loss alone, no backward, in the initial state and for
    methods outside GRADIENTS_IN_CI, unless FULL): the reference is the unperturbed model, as in OU."""
    model = models[state]
    backward = FULL or (state == "perturbed" and name in GRADIENTS_IN_CI)
    if needs_prepare:  # the reference (a frozen copy) is taken from the unperturbed model, as OU's deep copy is
        method.prepare(models["initial"], None, [], None, None)
    if hasattr(method, "layer_idx"):
        method.trainable(model)
    model.zero_grad(set_to_none=True)
    try:
        with torch.enable_grad() if backward else torch.no_grad():
            loss, logs = method.loss(model, batch)
        if not backward:
            return loss.item(), None, logs
        loss.backward()
        return loss.item(), grad_norms(model), logs
    finally:
        model.zero_grad(set_to_none=True)
        method.reference = None  # free the copy


def check(ref, name: str, state: str, loss: float, norms: dict | None, label: str | None = None) -> None:
    rec = ref["records"][name, state]
    want = rec["loss"]["value"]
    d = rel(loss, want)
    worst_grad = None
    if norms is not None:
        worst_grad = 0.0
        for key, value in norms.items():
            expected = rec["grad_norms"][key]
            if expected is None:
                assert value is None, f"{name} {state}: {key} has a gradient; OU's has none"
                continue
            assert value is not None, f"{name} {state}: {key} has no gradient; OU's has {expected['value']}"
            worst_grad = max(worst_grad, rel(value, expected["value"]))
    MEASURED[label or name, state] = (want, loss, d, worst_grad)
    assert d <= LOSS_RTOL, f"{name} {state}: loss {loss!r} vs OU's {want!r} (relative {d:.2e})"
    tol = GRAD_RTOL_TRANSPOSED.get(name, GRAD_RTOL)
    assert worst_grad is None or worst_grad <= tol, f"{name} {state}: gradient norms off by {worst_grad:.2e} relative"


PLAIN = ("GradAscent", "GradDiff_NLL", "GradDiff_KL", "SimNPO", "WGA", "SatImp", "CEU")
FACTORIES = {
    "GradAscent": lambda: GradientAscent(),
    "GradDiff_NLL": lambda: GradDiff(forget_weight=1.0, retain_weight=1.0, retain_loss="nll"),
    "GradDiff_KL": lambda: GradDiff(forget_weight=1.0, retain_weight=1.0, retain_loss="kl"),
    "SimNPO": lambda: SimNPO(beta=4.5, forget_weight=0.125, retain_weight=1.0, delta=0.0),
    "WGA": lambda: WGA(beta=1.0, forget_weight=1.0, retain_weight=1.0),
    "SatImp": lambda: SatImp(beta1=5.0, beta2=1.0, forget_weight=0.1, retain_weight=1.0),
    "CEU": lambda: CEU(ignore_first_n_answer_tokens=1),
}


@pytest.mark.parametrize("state", STATES)
@pytest.mark.parametrize("name", PLAIN)
def test_loss_and_gradients_equal_openunlearnings(ref, models, name, state):
    b = ref["batches"]["plain"]
    method = FACTORIES[name]()
    loss, norms, _ = run(models, method, state, {"forget": dict(b["forget"]), "retain": dict(b["retain"])},
                         needs_prepare=name == "GradDiff_KL", name=name)
    check(ref, name, state, loss, norms)


@pytest.mark.parametrize("state", STATES)
def test_npo(ref, models, state):
    b = ref["batches"]["plain"]
    forget = dict(b["forget"], ref_logp=seq_logp(models["initial"], b["forget"]))
    loss, norms, _ = run(models, NPO(beta=0.1, retain_weight=1.0), state, {"forget": forget, "retain": b["retain"]},
                         name="NPO")
    check(ref, "NPO", state, loss, norms)


@pytest.mark.parametrize("state", STATES)
def test_idk_dpo(ref, models, state):
    """OU's DPO on the idk alternates: chosen = the alternate (a refusal), rejected = the original answer. Two full
    passes (share_prompt=false): the shared-prompt pass builds its own mask from the label positions, and OU's mask
    hides the prompt's `<|im_end|>` tokens, so on OU's tensors only the two passes see what OU's model saw."""
    b = ref["batches"]["idk"]
    orig, alt = b["forget"]["original"], b["forget"]["alternate"]
    forget = dict(orig, **{"chosen_" + k: v for k, v in alt.items()},
                  ref_logp=seq_logp(models["initial"], orig), chosen_ref_logp=seq_logp(models["initial"], alt))
    method = IdkDPO(beta=0.1, retain_weight=1.0, refusals=["unused"], share_prompt=False)
    loss, norms, _ = run(models, method, state, {"forget": forget, "retain": b["retain"]})
    check(ref, "IdkDPO", state, loss, norms)


def rmu_method(normalise: str) -> RMU:
    # OU's RMU.yaml: module model.layers.7, steering_coeff 2, alpha 1, EMBED_DIFF, every parameter trained
    return RMU(layer=7, update_layers="all", params=None, steering_coeff=2.0, retain_weight=1.0, seed=0,
               normalise=normalise)


@torch.no_grad()
def rmu_by_hand(ref, models, state: str) -> tuple[float, float]:
    """RMU's loss per sequence, then over the batch, and `normalise=tokens`'s (over the batch's answer tokens), by
    hand from transformers' own hidden_states[8] (the output of decoder layer 7; index 0 is the embeddings)."""
    b = ref["batches"]["plain"]
    cv = torch.tensor([float(x) for x in ref["records"]["RMU", state]["rmu"]["control_vec"]])

    def layer7(model, x):
        return model(input_ids=x["input_ids"], attention_mask=x["attention_mask"], output_hidden_states=True).hidden_states[8]

    trained, frozen = models[state], models["initial"]
    f_tok = (layer7(trained, b["forget"]) - cv).square().mean(-1)
    r_tok = (layer7(trained, b["retain"]) - layer7(frozen, b["retain"])).square().mean(-1)
    fm, rm = (b["forget"]["labels"] != -100).float(), (b["retain"]["labels"] != -100).float()

    def per_seq(x, m):
        return ((x * m).sum(1) / m.sum(1)).mean().item()

    def per_tok(x, m):
        return ((x * m).sum() / m.sum()).item()

    return per_seq(f_tok, fm) + per_seq(r_tok, rm), per_tok(f_tok, fm) + per_tok(r_tok, rm)


@pytest.mark.parametrize("state", STATES)
def test_rmu_openunlearning_normalisation_equals_ous_records(ref, models, state):
    """`normalise=openunlearning` (method=rmu_ou) is OU's compute_activation_loss as its code runs: the per-sequence
    sums [B] divided by the lengths kept as [B, 1] broadcast to B x B, i.e. mean(sums) x mean(1 / lengths). Also the
    control vector (OU's numbers exactly), the hooked depth (no gradient above layer 7) and the frozen reference
    (retain term 0 in the initial state)."""
    b = ref["batches"]["plain"]
    method = rmu_method("openunlearning")
    loss, norms, logs = run(models, method, state, {"forget": b["forget"], "retain": b["retain"]}, needs_prepare=True,
                            name="RMU")
    # OU draws torch.rand(1, 1, 576) after torch.manual_seed(0), normalised, times 2: the same numbers
    rec = ref["records"]["RMU", state]
    assert torch.equal(method.control.float(), torch.tensor([float(x) for x in rec["rmu"]["control_vec"]]))
    if state == "initial":
        assert logs["retain_mse"] == 0.0 == rec["components"]["retain_loss"]["value"]
    if norms is not None:
        assert norms["model.layers.15.mlp.down_proj.weight"] is None and norms["model.norm.weight"] is None
        assert norms["model.layers.0.self_attn.q_proj.weight"] is not None
    check(ref, "RMU", state, loss, norms, label="RMU (normalise=openunlearning, rmu_ou)")


def test_rmu_sequence_and_token_normalisations_by_hand(ref, models):
    """`sequences` (what OU's code means: mean of sums / lengths) and `tokens` (rmu's default: over the batch's
    answer tokens), by hand from layer 7's output in the initial state; both differ from OU's records."""
    b = ref["batches"]["plain"]
    seq_hand, tok_hand = rmu_by_hand(ref, models, "initial")
    want = ref["records"]["RMU", "initial"]["loss"]["value"]
    for normalise, hand in (("sequences", seq_hand), ("tokens", tok_hand)):
        method = rmu_method(normalise)
        method.prepare(models["initial"], None, [], None, None)
        with torch.no_grad():
            loss, _ = method.loss(models["initial"], {"forget": b["forget"], "retain": b["retain"]})
        method.reference = None
        assert rel(loss.item(), hand) <= LOSS_RTOL
        assert rel(hand, want) > 1e-2  # a real difference: the answers have different lengths
        MEASURED[f"RMU (normalise={normalise})", "initial"] = (want, loss.item(), rel(loss.item(), want), None)


@pytest.mark.parametrize("state", STATES)
def test_undial_token_mean_differs_by_what_the_hand_computation_says(ref, models, state):
    """OU averages UNDIAL's cross-entropy over every position of the batch, and at label -100 its advanced index
    wraps to token 49052 (V - 100), whose teacher logit it lowers by beta; the project averages over answer tokens.
    Both by hand from the student's and the teacher's logits; OU's formula must give OU's record."""
    b = ref["batches"]["plain"]["forget"]
    beta = 10.0
    loss, norms, _ = run(models, UNDIAL(beta=beta, forget_weight=1.0, retain_weight=0.0), state, {"forget": b},
                         needs_prepare=True)
    with torch.no_grad():
        s = models[state](input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits[:, :-1].float()
        t = models["initial"](input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits[:, :-1].float()
    y = b["labels"][:, 1:]
    v = s.shape[-1]
    wrapped = torch.where(y == -100, y + v, y)  # what OU's mask[..., labels] = 1 writes
    ce = -(torch.softmax(t - beta * F.one_hot(wrapped, v).float(), -1) * torch.log_softmax(s, -1)).sum(-1)
    ou_hand = ce.mean().item()
    ours_hand = ce[y != -100].mean().item()  # at answer tokens the target is the same; only the average differs
    want = ref["records"]["UNDIAL", state]["loss"]["value"]
    assert rel(ou_hand, want) <= LOSS_RTOL, "the hand computation of OU's formula does not give OU's record"
    assert rel(loss, ours_hand) <= LOSS_RTOL
    assert rel(ours_hand, ou_hand) > 1e-2
    MEASURED["UNDIAL", state] = (want, loss, rel(loss, want), None)
    if norms is not None:
        MEASURED["_undial_grad", state] = (ref["records"]["UNDIAL", state]["grad_norms"]["total_float64"]["value"],
                                           norms["total_float64"])


@pytest.mark.parametrize("state", STATES)
def test_pdu_and_its_dual_step(ref, models, state):
    """PDU's loss at lambda = alpha = 1 is OU's; after the step lambda moves as OU's per-step update moves it
    (dual_warmup_epochs=0) or stays (the default 5). One process, one micro-batch: OU's per-micro-batch update and
    the project's per-optimiser-step update are the same update here (the difference under accumulation is
    test_pdu_dual_timing_under_accumulation)."""
    b = ref["batches"]["plain"]
    method = PDU(retain_loss_eps=0.3, dual_warmup_epochs=0)
    loss, norms, logs = run(models, method, state, {"forget": b["forget"], "retain": b["retain"]}, name="PDU")
    check(ref, "PDU", state, loss, norms)
    check(ref, "PDU_dualupdate", state, loss, norms)
    after = ref["records"]["PDU_dualupdate", state]["pdu_preferences_after"][1]
    method.after_step(1, 0, logs)
    assert rel(method.lam, after) <= LOSS_RTOL
    warm = PDU(retain_loss_eps=0.3)  # OU's default dual_warmup_epochs 5: no update in epoch 0
    warm.after_step(1, 0, logs)
    assert warm.lam == ref["records"]["PDU", state]["pdu_preferences_after"][1] == 1.0


def test_pdu_dual_timing_under_accumulation(ref, models):
    """With the batch split into 2 micro-batches (accumulation 2), OU moves lambda after each micro-batch, so the
    second micro-batch's loss already uses the moved lambda; the project moves it once per optimiser step, on the
    step's retain NLL. The two lambdas after the step, by hand from the halves' retain NLLs (initial model)."""
    r = ref["batches"]["plain"]["retain"]
    eps = 0.3
    halves = []
    with torch.no_grad():
        for sl in (slice(0, 2), slice(2, 4)):
            out = models["initial"](input_ids=r["input_ids"][sl], attention_mask=r["attention_mask"][sl],
                                    labels=r["labels"][sl])
            halves.append(out.loss.item())
    ou_lam = 1.0
    for h in halves:  # OU: after every micro-batch, max(0, lambda + step * (L_r - eps))
        ou_lam = max(0.0, ou_lam + (h - eps))
    whole = ref["records"]["PDU", "initial"]["pdu_log"][0]["retain_loss"]  # the step's retain NLL (whole batch)
    method = PDU(retain_loss_eps=eps, dual_warmup_epochs=0)
    method.after_step(1, 0, {"retain_nll": whole})
    assert rel(method.lam, 1.0 + whole - eps) <= 1e-7
    assert ou_lam - method.lam > 1.0  # OU's lambda has moved twice
    MEASURED["_pdu_timing"] = (halves, ou_lam, method.lam)


def test_simnpo_margin_parameterisation_by_hand(ref):
    """OU writes SimNPO's margin inside the scaling, beta * (NLL/|y| - delta_OU); the project after it,
    -(beta/|y|) log p - delta: delta = beta * delta_OU gives OU's number. By hand from OU's recorded per-sequence
    NLL sums and the label counts of the recorded tensors (no model needed)."""
    rec = ref["records"]["SimNPO", "initial"]
    nll = torch.tensor([x["value"] for x in rec["components"]["forget_nll_sum_per_seq"]], dtype=torch.float64)
    n = (ref["batches"]["plain"]["forget"]["labels"] != -100).sum(-1).double()
    beta, d_ou = 4.5, 0.5

    def ou(delta_ou):
        return (-F.logsigmoid(beta * (nll / n - delta_ou)).mean() * 2 / beta).item()

    assert rel(ou(0.0), rec["components"]["forget_loss"]["value"]) <= 1e-6
    same = simnpo_loss(-nll, n, beta, beta * d_ou).item()
    assert rel(same, ou(d_ou)) <= 1e-12
    other = simnpo_loss(-nll, n, beta, d_ou).item()
    assert rel(other, ou(d_ou)) > 0.1  # the same number in the two conventions is another loss
    MEASURED["_simnpo_margin"] = (ou(d_ou), other, same)


def test_zz_print_the_table():
    """The docs/parity.md table (pytest -s shows it)."""
    for key, value in MEASURED.items():
        print(key, value)
