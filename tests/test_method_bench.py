"""The methods benchmark's pieces on the tiny model (the benchmark itself runs smollm2_135m; timing is not tested).

Real parts: conf/method/*.yaml instantiated by Hydra, a real tiny Llama and tokenizer.
"""

from __future__ import annotations

import copy

import pytest
import torch
from test_methods import FORGET, items, tiny  # noqa: F401 (tiny is a fixture)

from unlearning.bench.methods import StepClock, build_method, parse_args
from unlearning.data.base import collate
from unlearning.methods.npo import NPO


def test_spec_overrides_reach_the_method():
    m = build_method("npo:retain_weight=0:beta=0.5")
    assert isinstance(m, NPO) and m.retain_weight == 0.0 and m.beta == 0.5 and not m.needs_retain


def test_live_reference_npo_matches_cached_npo(tiny):  # noqa: F811 (the imported fixture)
    model, tok = tiny
    model = copy.deepcopy(model)
    cached = build_method("npo:retain_weight=0")
    live = build_method("npo_live_ref:retain_weight=0")
    batch_items = cached.prepare(model, tok, items(tok, FORGET), None, None)
    live.prepare(model, tok, items(tok, FORGET), None, None)
    with torch.no_grad():  # perturb the policy so the log-ratio is not zero
        for p in model.parameters():
            p.add_(0.01 * torch.randn_like(p))
    batch = {"forget": collate(batch_items, tok.pad_token_id)}
    with torch.no_grad():
        a, _ = cached.loss(model, batch)
        b, _ = live.loss(model, batch)
    assert a.item() == pytest.approx(b.item(), abs=1e-5)
    assert a.item() != pytest.approx(2 / 0.1 * 0.6931, abs=1e-3)  # not the zero-ratio value 2/beta * ln 2


def test_step_clock_and_args():
    clock = StepClock()
    clock.log({}, step=1)
    assert len(clock.times) == 2 and clock.times[1] >= clock.times[0]
    args = parse_args(["--methods", "ga,npo", "--no-bf16", "--steps", "2"])
    assert args.methods == "ga,npo" and args.bf16 is False and args.steps == 2


def test_every_default_row_builds_and_openunlearnings_other_methods_are_rows():
    """`unlearning-bench methods` with no --methods times these; each spec builds its method from conf/method."""
    from unlearning.bench.methods import DEFAULT

    specs = DEFAULT.split(",")
    assert {"wga", "satimp", "ceu", "undial", "llmu", "pdu"} <= {s.split(":")[0] for s in specs}
    for spec in specs:
        name = spec.split(":")[0].removesuffix("_live_ref")
        assert build_method(spec).name.replace("_", "") == name.replace("_", ""), spec
