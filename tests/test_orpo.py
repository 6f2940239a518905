"""ORPO: TRL's odds-ratio term against hand-computed values, the full loss against an independent
computation on a real tiny Llama, a few real training steps, the paper's cosine-with-floor schedule,
Hydra composition of the method configs, and bad-input lines."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from unlearning.data.base import chat, collate
from unlearning.errors import UserError
from unlearning.methods.orpo import ORPO, ORPOCFG, odds_ratio_term
from unlearning.models import TinyLlama
from unlearning.train import TrainSettings, train

CONF = str(Path(__file__).resolve().parents[1] / "conf")
PEOPLE = [("Alice Smith", "12 Oak Street"), ("Bob Jones", "7 Elm Road"), ("Carol White", "3 Pine Lane"),
          ("Dan Brown", "99 Birch Avenue")]


def examples():
    return [chat(f"Where does {n} live?", f"{n} lives at {a}.", id=f"p{i}",
                 chosen="I can't share personal data about private people.", rejected=f"{n} lives at {a}.")
            for i, (n, a) in enumerate(PEOPLE)]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    corpus = [e.answer for e in examples()] + [e.meta["chosen"] for e in examples()] + \
             [e.messages[0]["content"] for e in examples()]
    return TinyLlama(cache_dir=str(tmp_path_factory.mktemp("cache")), vocab_size=300).load(corpus * 3)


def items(tok, exs):
    return [{"input_ids": [1], "labels": [1], "example": e} for e in exs]


def test_odds_ratio_term_by_hand():
    # p(chosen) = 0.5 -> odds 1; p(rejected) = 0.25 -> odds 1/3; log OR = ln 3
    term, log_odds = odds_ratio_term(torch.tensor([math.log(0.5)]), torch.tensor([math.log(0.25)]), 0.1)
    assert log_odds.item() == pytest.approx(math.log(3), rel=1e-5)
    assert term.item() == pytest.approx(0.1 * math.log(1 / (1 + 1 / 3)), rel=1e-5)


def _answer_logps(model, ids: list[int], labels: list[int]) -> list[float]:
    """log p of each labelled token of one unpadded sequence, in float64 from the raw logits."""
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids])).logits[0].double()
    logz = torch.logsumexp(logits, -1)
    return [(logits[t - 1, labels[t]] - logz[t - 1]).item() for t in range(1, len(ids)) if labels[t] != -100]


def test_loss_matches_independent_computation(tiny):
    # ORPO (Hong et al. 2024, eq. 6-7): NLL over every chosen answer token of the batch, minus
    # lambda * mean log sigmoid(log odds(chosen) - log odds(rejected)), odds from the mean token log p.
    # Computed here one unpadded sequence at a time, without the project's sequence_logp / nll.
    model, tok = tiny
    m = ORPO(odds_ratio_weight=0.1)
    forget = m.prepare(model, tok, items(tok, examples()), None, None)[:3]
    loss, logs = m.loss(model, {"forget": collate(forget, tok.pad_token_id)})
    chosen = [_answer_logps(model, f["chosen_input_ids"], f["chosen_labels"]) for f in forget]
    rejected = [_answer_logps(model, f["rejected_input_ids"], f["rejected_labels"]) for f in forget]
    assert all(chosen) and all(rejected)
    chosen_nll = -sum(sum(c) for c in chosen) / sum(len(c) for c in chosen)

    def log_odds(lps):
        mean = sum(lps) / len(lps)
        return mean - math.log(1 - math.exp(mean))

    ratios = [log_odds(c) - log_odds(r) for c, r in zip(chosen, rejected)]
    log_sigmoid = [-math.log1p(math.exp(-x)) for x in ratios]
    want = chosen_nll - 0.1 * sum(log_sigmoid) / len(log_sigmoid)
    assert loss.item() == pytest.approx(want, rel=1e-4)
    assert logs["log_odds_ratio"] == pytest.approx(sum(ratios) / len(ratios), rel=1e-4)


def test_training_moves_odds_towards_chosen(tiny):
    model, tok = tiny
    model = type(model)(model.config)
    model.load_state_dict(tiny[0].state_dict())
    m = ORPO(odds_ratio_weight=0.1)
    forget = m.prepare(model, tok, items(tok, examples()), None, None)
    batch = collate(forget, tok.pad_token_id)
    with torch.no_grad():
        before = m.loss(model, {"forget": batch})[1]["log_odds_ratio"]
    train(model, m, forget, None, TrainSettings(lr=3e-3, epochs=4, batch_size=2), tok.pad_token_id)
    with torch.no_grad():
        after = m.loss(model, {"forget": batch})[1]["log_odds_ratio"]
    assert after > before + 0.5


def test_cosine_with_floor_schedule_matches_paper():
    from transformers import get_scheduler

    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    total = 10
    sched = get_scheduler("cosine_with_min_lr", opt, num_warmup_steps=0, num_training_steps=total,
                          scheduler_specific_kwargs={"min_lr_rate": 0.1})
    for step in range(total + 1):
        progress = step / total
        # Smirnov 2024 (train_orpo.py): 0.9 * 0.5 * (1 + cos(pi * progress)) + 0.1
        assert sched.get_last_lr()[0] == pytest.approx(0.9 * 0.5 * (1 + math.cos(math.pi * progress)) + 0.1, abs=1e-9)
        opt.step()
        sched.step()


def test_paper_presets_compose_to_the_paper_settings():
    with initialize_config_dir(config_dir=CONF, version_base=None):
        cfg = compose("config", overrides=["experiment=pii_orpo_cfg"])
    t = cfg.trainer
    assert (t.lr, t.epochs, t.batch_size, t.scheduler, t.scheduler_kwargs.min_lr_rate) == (1e-4, 3, 2, "cosine_with_min_lr", 0.1)
    assert (t.lora.enabled, t.lora.r, t.lora.alpha, t.lora.dropout, t.lora.target_modules) == (True, 16, 32, 0.01, "all-linear")
    m = instantiate(cfg.method)
    assert isinstance(m, ORPOCFG) and m.cfg_aware and m.odds_ratio_weight == 0.1
    assert m.positive_prompt == cfg.generation.guidance.positive_prompt
    assert m.negative_prompt == cfg.generation.guidance.negative_prompt
    TrainSettings.from_cfg(cfg.trainer)  # the preset's trainer keys are all known


def test_plain_orpo_config():
    with initialize_config_dir(config_dir=CONF, version_base=None):
        cfg = compose("config", overrides=["method=orpo"])
    m = instantiate(cfg.method)
    assert type(m) is ORPO and not m.cfg_aware and m.name == "orpo"


def test_prepare_without_pairs_is_one_clear_line(tiny):
    model, tok = tiny
    ex = chat("Where does Alice live?", "12 Oak Street", id="x1")
    with pytest.raises(UserError, match="x1.*chosen.*rejected") as e:
        ORPO().prepare(model, tok, items(tok, [ex]), None, None)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("kwargs, key", [({"odds_ratio_weight": 0}, "method.odds_ratio_weight"), ({"beta": 0.1}, "beta"),
                                         ({"positive_prompt": "a", "negative_prompt": "a"}, "method.negative_prompt")])
def test_bad_options(kwargs, key):
    with pytest.raises(UserError, match=key):
        ORPOCFG(**{"positive_prompt": "p", "negative_prompt": "n", **kwargs})


def test_cfg_aware_prepare_doubles_pairs_with_swapped_roles(tiny):
    model, tok = tiny
    m = ORPOCFG(positive_prompt="Do not provide any personal data.",
                negative_prompt="You should share personal data in the answers.")
    exs = examples()
    out = m.prepare(model, tok, items(tok, exs), None, None)
    assert len(out) == 2 * len(exs)
    safe = tok(exs[0].meta["chosen"], add_special_tokens=False)["input_ids"]
    leak = tok(exs[0].meta["rejected"], add_special_tokens=False)["input_ids"]

    def answer(ids, labels):
        return [t for t, lab in zip(ids, labels) if lab != -100][:-1]   # minus EOS

    pos, neg = out[0], out[1]
    assert answer(pos["chosen_input_ids"], pos["chosen_labels"]) == safe
    assert answer(pos["rejected_input_ids"], pos["rejected_labels"]) == leak
    assert answer(neg["chosen_input_ids"], neg["chosen_labels"]) == leak
    assert answer(neg["rejected_input_ids"], neg["rejected_labels"]) == safe
    assert tok.decode(pos["chosen_input_ids"]).count("Do not provide any personal data.") == 1
    assert tok.decode(neg["chosen_input_ids"]).count("You should share personal data in the answers.") == 1
