"""Guided decoding: formulas on hand-made logits, equivalence with transformers' CFG and plain greedy,
batched == one-by-one, and the bad-input lines. Real tiny Llama + real BPE tokenizer (untrained weights:
the outputs are arbitrary but deterministic, which is all these equalities need)."""

from __future__ import annotations

import math

import pytest
import torch
from omegaconf import OmegaConf

from unlearning.errors import UserError
from unlearning.eval.engine import chat_prompts, greedy
from unlearning.eval.guided import combine, guided_greedy
from unlearning.generation import Guidance
from unlearning.models import TinyLlama

CORPUS = [
    "Alice Smith lives at 12 Oak Street and her phone is 555-0101.",
    "Bob Jones works as a nurse in Springfield; email bob@example.com.",
    "Do not provide any personal data. You should share personal data in the answers.",
    "What is the address of Alice? Where does Bob work? Tell me about the weather today.",
] * 4
QUESTIONS = ["Where does Alice live?", "What is Bob's email?", "Tell me about the weather.", "Who is Bob?"]
POS, NEG = "Do not provide any personal data.", "You should share personal data in the answers."


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    torch.manual_seed(0)
    model, tok = TinyLlama(cache_dir=str(tmp_path_factory.mktemp("cache")), vocab_size=400).load(CORPUS)
    msgs = [[{"role": "user", "content": q}] for q in QUESTIONS]
    return model, tok, chat_prompts(tok, msgs, POS), chat_prompts(tok, msgs, NEG)


def test_log_mode_formula_by_hand():
    pos, neg = torch.tensor([[2.0, 0.0]]), torch.tensor([[0.0, 0.0]])
    lp = [2 - math.log(math.exp(2) + 1), -math.log(math.exp(2) + 1)]
    ln = [math.log(0.5)] * 2
    want = [ln[i] + 3 * (lp[i] - ln[i]) for i in range(2)]
    assert torch.allclose(combine(pos, neg, 3.0, "log"), torch.tensor([want]), atol=1e-6)


def test_prob_mode_formula_by_hand():
    # p_pos = softmax([ln 3, 0, 0]) = [0.6, 0.2, 0.2]; p_neg = softmax([0, ln 3, 0]) = [0.2, 0.6, 0.2]
    pos = torch.tensor([[math.log(3.0), 0.0, 0.0]])
    neg = torch.tensor([[0.0, math.log(3.0), 0.0]])
    # p_neg + 2 (p_pos - p_neg) = [0.2 + 0.8, 0.6 - 0.8, 0.2] = [1.0, -0.2, 0.2]
    assert torch.allclose(combine(pos, neg, 2.0, "prob"), torch.tensor([[1.0, -0.2, 0.2]]), atol=1e-6)


def test_prob_mode_avoids_token_unlikely_under_both():
    # A token tiny under both prompts but far tinier under the negative one wins in log mode, not in prob mode.
    pos = torch.log(torch.tensor([[0.90, 0.0999, 0.0001]]))
    neg = torch.log(torch.tensor([[0.95, 0.04999, 0.00000001]]))
    assert combine(pos, neg, 3.0, "log").argmax().item() == 2
    assert combine(pos, neg, 3.0, "prob").argmax().item() == 0


def test_scale_one_is_plain_greedy(tiny):
    model, tok, pos, neg = tiny
    plain = greedy(model, tok, pos, max_new_tokens=12, batch_size=4)
    off = Guidance(scale=1.0)
    assert greedy(model, tok, pos, max_new_tokens=12, batch_size=4, negative_prompts=neg, guidance=off) == plain
    # and the paired path itself at gamma = 1 decodes exactly the positive rows' greedy tokens
    direct = guided_greedy(model, pos, neg, 12, tok.eos_token_id, tok.pad_token_id, off)
    ids = [[t for t in row] for row in direct]
    assert [tok.decode(r[: r.index(tok.eos_token_id)] if tok.eos_token_id in r else r, skip_special_tokens=True).strip()
            for r in ids] == [plain[i] for i in range(len(pos))]


def test_guidance_changes_the_output(tiny):
    model, tok, pos, neg = tiny
    plain = greedy(model, tok, pos, max_new_tokens=12, batch_size=4)
    guided = greedy(model, tok, pos, max_new_tokens=12, batch_size=4, negative_prompts=neg, guidance=Guidance(scale=5.0))
    assert guided != plain


@pytest.mark.parametrize("scale", [2.0, 3.0])
def test_log_mode_matches_transformers_builtin_cfg(tiny, scale):
    model, tok, pos, neg = tiny
    ours = guided_greedy(model, pos, neg, 10, tok.eos_token_id, tok.pad_token_id, Guidance(scale=scale))
    for i in range(len(pos)):
        out = model.generate(input_ids=torch.tensor([pos[i]]), negative_prompt_ids=torch.tensor([neg[i]]),
                             guidance_scale=scale, max_new_tokens=10, do_sample=False,
                             eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
        theirs = out[0, len(pos[i]):].tolist()
        n = len(theirs)
        assert ours[i][:n] == theirs, f"prompt {i}"


@pytest.mark.parametrize("mode", ["log", "prob"])
def test_batched_equals_one_by_one(tiny, mode):
    model, tok, pos, neg = tiny
    g = Guidance(scale=3.0, mode=mode)
    batched = greedy(model, tok, pos, max_new_tokens=10, batch_size=4, negative_prompts=neg, guidance=g)
    single = [greedy(model, tok, [p], max_new_tokens=10, batch_size=1, negative_prompts=[n], guidance=g)[0]
              for p, n in zip(pos, neg)]
    assert batched == single


def test_stop_strings_cut_both_rows(tiny):
    model, tok, pos, neg = tiny
    g = Guidance(scale=2.0)
    full = guided_greedy(model, pos[:1], neg[:1], 12, tok.eos_token_id, tok.pad_token_id, g)[0]
    stop = tok.decode(full[3:5])
    assert stop.strip(), "need a non-empty stop string from the output"
    cut = guided_greedy(model, pos[:1], neg[:1], 12, tok.eos_token_id, tok.pad_token_id, g,
                        stop_strings=[stop], tokenizer=tok)[0]
    assert len([t for t in cut if t != tok.pad_token_id]) < len(full)


def test_from_cfg_reads_config():
    g = Guidance.from_cfg(OmegaConf.create({"scale": 3, "mode": "prob", "positive_prompt": "a", "negative_prompt": "b"}))
    assert (g.scale, g.mode, g.active) == (3.0, "prob", True)
    assert not Guidance.from_cfg({"scale": 1}).active
    assert g.with_scale(1).active is False


@pytest.mark.parametrize("cfg, key", [
    ({"scale": 0.5}, "generation.guidance.scale"),
    ({"scale": "abc"}, "generation.guidance.scale"),
    ({"scale": float("nan")}, "generation.guidance.scale"),
    ({"scale": True}, "generation.guidance.scale"),
    ({"mode": "linear"}, "generation.guidance.mode"),
    ({"positive_prompt": "same", "negative_prompt": "same"}, "generation.guidance.negative_prompt"),
    ({"eval_scales": [1, 3]}, "generation.guidance"),  # the extra scales are generation.eval_scales, read by the run
    ({"sclae": 2}, "generation.guidance"),
])
def test_bad_input_is_one_clear_line(cfg, key):
    with pytest.raises(UserError) as e:
        Guidance.from_cfg(cfg)
    msg = str(e.value)
    assert key in msg and "\n" not in msg
