"""LLMU (Yao et al. 2023) and PDU (primal-dual unlearning, OpenUnlearning's PDU): losses on hand-computed values,
the YAML defaults of their sources, one step on the tiny model raising the forget NLL, and PDU's dual variable
moving, carried between steps, checkpointed and resumed."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from test_methods import CONF, FORGET, RETAIN, fresh, items, run_steps, tiny  # noqa: F401
from test_methods import forget_nll as nll_of

from unlearning.data.base import IGNORE, collate
from unlearning.errors import UserError
from unlearning.methods.llmu import LLMU, answer_mean_nll
from unlearning.methods.pdu import PDU, dual_step, flatten_loss
from unlearning.train import Checkpoints, TrainSettings, train

LN2 = math.log(2)


class Fixed(torch.nn.Module):
    """A 'model' returning the given logits, whatever the input (hand-computed losses)."""

    def __init__(self, logits):
        super().__init__()
        self.logits = logits

    def forward(self, input_ids=None, attention_mask=None):
        return SimpleNamespace(logits=self.logits)


class Lookup(torch.nn.Module):
    """A 'model' whose logits at a position are a fixed row per input token (hand-computed losses over batches)."""

    def __init__(self, rows):
        super().__init__()
        self.table = torch.tensor(rows)

    def forward(self, input_ids=None, attention_mask=None):
        return SimpleNamespace(logits=self.table[input_ids])


# vocabulary 4: token 0 -> uniform logits; token 1 -> [1, 2, 3, 6]; token 2 -> [ln 3, 0, 0, 0], so p(0) = 3/6
ROWS = [[0.0, 0.0, 0.0, 0.0], [1.0, 2.0, 3.0, 6.0], [math.log(3), 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]]


def _batch(ids, labels, prefix=""):
    """Tensors as `collate` makes them, for one-row batches given as ids and labels (nothing to pad)."""
    return {prefix + "input_ids": torch.tensor(ids), prefix + "attention_mask": torch.ones(len(ids), len(ids[0])),
            prefix + "labels": torch.tensor(labels)}


def test_llmu_whole_loss_by_hand_with_its_three_weights():
    # forget [2, 0] answering 0 after token 2: NLL ln2. Mismatch 0: [0, 1] answering 1 after uniform: ln4 = 2 ln2;
    # mismatch 1 (a longer sequence, its own batch): [2, 0, 0], answers 0, 0 -> (ln2 + 2 ln2) / 2 = 1.5 ln2; their mean
    # 1.75 ln2. Normal KL on retain [0, 0]: the model is uniform, the reference has p = [1/2, 1/6, 1/6, 1/6] at both
    # positions: KL(ref || model) = 1/2 ln2 + 3/6 ln(2/3) = 1/2 ln(4/3) per position.
    # loss = -0.5 ln2 + 1 * 1.75 ln2 + 1 * 1/2 ln(4/3)
    import contextlib

    method = LLMU(bad_weight=0.5, random_weight=1.0, normal_weight=1.0, mismatch_answers=2)
    method.reference = lambda model: contextlib.nullcontext(Lookup([ROWS[2]] * 4))
    forget = {**_batch([[2, 0]], [[IGNORE, 0]]), **_batch([[0, 1]], [[IGNORE, 1]], "mismatch0_"),
              **_batch([[2, 0, 0]], [[IGNORE, 0, 0]], "mismatch1_")}
    loss, logs = method.loss(Lookup(ROWS), {"forget": forget, "retain": _batch([[0, 0]], [[IGNORE, 0]])})
    assert logs["forget_nll"] == pytest.approx(LN2, abs=1e-6)
    assert logs["mismatch_nll"] == pytest.approx(1.75 * LN2, abs=1e-6)
    assert logs["normal_kl"] == pytest.approx(0.5 * math.log(4 / 3), abs=1e-6)
    assert loss.item() == pytest.approx(-0.5 * LN2 + 1.75 * LN2 + 0.5 * math.log(4 / 3), abs=1e-6)


def test_pdu_whole_loss_by_hand_gamma_lambda_and_eps():
    # forget [2, 1] labelled at position 1: that position's row [1, 2, 3, 6] -> (6 - 3)^2 = 9 (a shifted mask would
    # take position 0's row [ln3, 0, 0, 0]: (0.75 ln3)^2 = 0.68); retain [2, 0] answering 0 after token 2: NLL ln2.
    # gamma 0.5, lambda = alpha = 2, eps 0.3: 0.5 * 9 + 2 * (ln2 - 0.3)
    method = PDU(retain_loss_eps=0.3, gamma=0.5, alpha=2.0)
    loss, logs = method.loss(Lookup(ROWS), {"forget": _batch([[2, 1]], [[IGNORE, 2]]),
                                            "retain": _batch([[2, 0]], [[IGNORE, 0]])})
    assert (logs["forget_flatten"], method.state_dict()["dual_lambda"]) == (pytest.approx(9.0), 2.0)
    assert logs["retain_nll"] == pytest.approx(LN2, abs=1e-6)
    assert loss.item() == pytest.approx(0.5 * 9 + 2 * (LN2 - 0.3), abs=1e-6)


def test_llmu_answer_loss_is_the_mean_of_per_sequence_means():
    # vocabulary 4. Sequence 0: two answer tokens, uniform logits -> NLL ln4 each, mean ln4 = 2 ln2.
    # Sequence 1: one answer token with p = 1/2 (logits [ln2+ln3... ]): logits [0, ln 3, 0, 0] -> p(token 1) = 3/6.
    logits = torch.zeros(2, 3, 4)
    logits[1, 1] = torch.tensor([0.0, math.log(3), 0.0, 0.0])
    labels = torch.tensor([[IGNORE, 2, 3], [IGNORE, IGNORE, 1]])
    batch = {"input_ids": torch.zeros(2, 3, dtype=torch.long), "attention_mask": torch.ones(2, 3), "labels": labels}
    # per sequence then batch: (2 ln2 + ln2) / 2 = 1.5 ln2; a token mean would be (4 ln2 + ln2) / 3
    assert answer_mean_nll(Fixed(logits), batch).item() == pytest.approx(1.5 * LN2, abs=1e-6)


def test_llmu_defaults_are_the_papers_and_the_mismatch_pairs_forget_questions_with_retain_answers(tiny):  # noqa: F811
    method = instantiate(OmegaConf.load(CONF / "llmu.yaml"))
    assert (method.bad_weight, method.random_weight, method.normal_weight, method.k) == (0.5, 1.0, 1.0, 5)
    model, tok = fresh(tiny)
    forget = method.prepare(model, tok, items(tok, FORGET), items(tok, RETAIN), None)
    assert method.k == 4  # only 4 retain answers to draw from
    for item in forget:
        question_ids = [t for t, lab in zip(item["input_ids"], item["labels"]) if lab == IGNORE]
        answers = set()
        for k in range(4):
            ids, labels = item[f"mismatch{k}_input_ids"], item[f"mismatch{k}_labels"]
            assert [t for t, lab in zip(ids, labels) if lab == IGNORE] == question_ids  # the same forget question
            answers.add(tok.decode([t for t in labels if t != IGNORE], skip_special_tokens=True).strip())
        assert answers == {a for _, a in RETAIN}  # 4 distinct retain answers, drawn without replacement


def test_llmu_mismatch_term_equals_each_sequence_scored_alone(tiny):  # noqa: F811
    # the K mismatched copies go through the model as K padded batches; expected: every (question, answer) pair
    # scored alone, unpadded, in float64 from its own logits, averaged per sequence then over all K*B sequences
    model, tok = fresh(tiny)
    model.eval()
    method = LLMU(normal_weight=0.0, mismatch_answers=3)
    forget = method.prepare(model, tok, items(tok, FORGET), items(tok, RETAIN), None)
    with torch.no_grad():
        _, logs = method.loss(model, {"forget": collate(forget, tok.pad_token_id)})
    per_sequence = []
    for item in forget:
        for k in range(3):
            ids, labels = item[f"mismatch{k}_input_ids"], item[f"mismatch{k}_labels"]
            with torch.no_grad():
                logits = model(input_ids=torch.tensor([ids])).logits[0].double()
            logp = torch.log_softmax(logits[:-1], -1)
            answer = [(t - 1, lab) for t, lab in enumerate(labels) if t > 0 and lab != IGNORE]
            per_sequence.append(-sum(logp[pos, lab].item() for pos, lab in answer) / len(answer))
    widths = {max(len(item[f"mismatch{k}_input_ids"]) for item in forget) for k in range(3)}
    assert len(widths) > 1  # the K groups really are padded to different widths
    assert logs["mismatch_nll"] == pytest.approx(sum(per_sequence) / len(per_sequence), abs=1e-4)


def test_llmu_one_step_raises_forget_nll(tiny):  # noqa: F811
    model, tok = fresh(tiny)
    before = nll_of(model, tok)
    model, _ = run_steps(model, tok, LLMU(bad_weight=1.0, mismatch_answers=2), steps=1, lr=1e-3, batch_size=4)
    assert nll_of(model, tok) > before


def test_pdu_flatten_loss_by_hand_on_the_labels_own_positions():
    # positions 0, 1, 2; labels mark positions 1 and 2 (OU: the mask is not shifted). Row 1: [1, 2, 3, 6] -> max 6,
    # mean 3 -> 9; row 2: all equal -> 0; row 0 (far from flat) is not labelled and must not count -> (9 + 0) / 2
    logits = torch.tensor([[[10.0, 0.0, 0.0, 0.0], [1.0, 2.0, 3.0, 6.0], [5.0, 5.0, 5.0, 5.0]]])
    labels = torch.tensor([[IGNORE, 3, 1]])
    assert flatten_loss(logits, labels).item() == pytest.approx(4.5, abs=1e-6)


def test_pdu_dual_step_by_hand():
    assert dual_step(1.0, 0.2, 0.3, 5.0) == pytest.approx(0.5)    # 1 + 5 (0.2 - 0.3)
    assert dual_step(0.1, 0.2, 0.3, 5.0) == 0.0                   # projected onto lambda >= 0
    assert dual_step(2.0, 1.3, 0.3, 1.0) == pytest.approx(3.0)    # a violated constraint raises lambda


def test_pdu_defaults_are_openunlearnings():
    method = instantiate(OmegaConf.load(CONF / "pdu.yaml"))
    assert (method.eps, method.step_size, method.warmup, method.gamma, method.alpha, method.primal_dual) == \
        (0.3, 1.0, 5, 1.0, 1.0, True)
    assert method.lam == 1.0  # lambda starts at alpha


class Log:
    def __init__(self):
        self.rows = []

    def log(self, values, step):
        self.rows.append({"step": step, **values})


def pdu_steps(tiny, method, settings, checkpoints=None):  # noqa: F811
    model, tok = fresh(tiny)
    log = Log()
    train(model, method, items(tok, FORGET), items(tok, RETAIN), settings, tok.pad_token_id, logger=log,
          checkpoints=checkpoints)
    return log.rows


def test_pdu_lambda_follows_dual_ascent_after_the_warm_up_and_survives_a_resume(tiny, tmp_path):  # noqa: F811
    # 4 forget items, batch 4: one step per epoch; warm-up 1 epoch -> step 1 leaves lambda, steps 2.. move it
    settings = TrainSettings(lr=1e-3, epochs=4, batch_size=4, max_grad_norm=0)
    method = PDU(retain_loss_eps=0.5, dual_step_size=2.0, dual_warmup_epochs=1, alpha=1.0)
    rows = pdu_steps(tiny, method, settings, Checkpoints(tmp_path / "ck", every=2))
    lam = [r["unlearn/dual_lambda"] for r in rows]  # the lambda each step's loss used
    nll = [r["unlearn/retain_nll"] for r in rows]
    assert lam[0] == lam[1] == 1.0  # no update after step 1 (warm-up)
    for s in (1, 2):  # after steps 2 and 3: lambda <- max(0, lambda + 2 (L_r - 0.5))
        assert lam[s + 1] == pytest.approx(max(0.0, lam[s] + 2.0 * (nll[s] - 0.5)), rel=1e-6)
    assert method.lam == pytest.approx(max(0.0, lam[3] + 2.0 * (nll[3] - 0.5)), rel=1e-6)
    saved = torch.load(tmp_path / "ck" / "step-2" / "loop_state.pt", weights_only=True)
    assert saved["method"]["dual_lambda"] == pytest.approx(lam[2])  # the lambda step 3 starts from
    resumed = PDU(retain_loss_eps=0.5, dual_step_size=2.0, dual_warmup_epochs=1, alpha=1.0)
    rows_b = pdu_steps(tiny, resumed, settings, Checkpoints(tmp_path / "ck2", resume_from=tmp_path / "ck" / "step-2"))
    assert [r["step"] for r in rows_b] == [3, 4]
    assert [r["unlearn/dual_lambda"] for r in rows_b] == pytest.approx(lam[2:], rel=1e-6)
    assert resumed.lam == pytest.approx(method.lam, rel=1e-6)


def test_pdu_one_step_raises_forget_nll(tiny):  # noqa: F811
    model, tok = fresh(tiny)
    before = nll_of(model, tok)
    model, _ = run_steps(model, tok, PDU(alpha=0.0, primal_dual=False), steps=1, lr=1e-3, batch_size=4)
    assert nll_of(model, tok) > before


@pytest.mark.parametrize("kwargs, message", [
    ({"retain_loss_eps": -0.1}, r"method\.retain_loss_eps=-0\.1 must be >= 0"),
    ({"dual_step_size": 0}, r"method\.dual_step_size=0 must be > 0"),
    ({"dual_warmup_epochs": -1}, r"method\.dual_warmup_epochs=-1 must be an integer >= 0"),
    ({"alpha": -1}, r"method\.alpha=-1 must be >= 0"),
    ({"bogus": 1}, r"unknown option\(s\) \['bogus'\] for method=pdu"),
])
def test_pdu_bounds_out_of_range_are_one_line(kwargs, message):
    with pytest.raises(UserError, match=message):
        PDU(**kwargs)


def test_llmu_bad_settings_are_one_line():
    with pytest.raises(UserError, match=r"method\.mismatch_answers=0 must be an integer >= 1"):
        LLMU(mismatch_answers=0)
    with pytest.raises(UserError, match=r"method\.bad_weight=-1 must be >= 0"):
        LLMU(bad_weight=-1)
