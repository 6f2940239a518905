"""Chunked label statistics equal the full-vocabulary log-softmax they replace (within 1e-5)."""

from __future__ import annotations

import torch

from unlearning.eval.engine import label_stats


def test_chunked_label_stats_equal_the_full_log_softmax():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(37, 5003, generator=g) * 4
    labels = torch.randint(0, 5003, (37,), generator=g)
    logits[3, labels[3]] = 50.0  # one confident hit
    full = torch.log_softmax(logits, -1)
    p = full.exp()
    mu_ref = (p * full).sum(-1)
    var_ref = (p * full.square()).sum(-1) - mu_ref.square()
    for chunk in (1, 8, 1024):
        lp, hit, mu, var = label_stats(logits, labels, stats=True, chunk=chunk)
        assert torch.allclose(lp, full.gather(-1, labels[:, None])[:, 0], atol=1e-5)
        assert torch.equal(hit, full.argmax(-1) == labels) and bool(hit[3])
        assert torch.allclose(mu, mu_ref, atol=1e-5) and torch.allclose(var, var_ref, atol=1e-4)
    lp, hit, mu, var = label_stats(logits[:0], labels[:0])
    assert lp.shape == (0,) and hit.dtype == torch.bool and mu is None and var is None
