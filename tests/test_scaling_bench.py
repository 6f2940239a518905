"""`unlearning-bench scaling` end to end: real torchrun launches of 1 and 2 processes on the tiny model.

Only the table's shape and sanity are asserted (a test never compares wall times)."""

from __future__ import annotations

import os
import subprocess
import sys

from conftest import ROOT


def test_scaling_bench_prints_training_and_evaluation_rows(data_dir, session_cache):
    cmd = [sys.executable, "-m", "unlearning.bench", "scaling", "--models", "tiny", "--processes", "1,2",
           "--steps", "1", "--global-batch", "2", "--eval-items", "6", "--seq-len", "64",
           "--data-dir", str(data_dir), "--cache-dir", str(session_cache)]
    p = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=300,
                       env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert p.returncode == 0, p.stderr[-2000:]
    lines = p.stdout.splitlines()
    assert "eval tokens/s" in lines[1]
    rows = [ln.split() for ln in lines[2:]]
    assert [r[:3] for r in rows] == [["tiny", "1", "2"], ["tiny", "2", "1"]]
    for r in rows:
        step_s, tokens, ratio, eval_tokens, eval_ratio, peak = map(float, r[3:])
        assert step_s > 0 and tokens > 0 and eval_tokens > 0 and peak > 100  # MiB of a real process
    assert float(rows[0][5]) == float(rows[0][7]) == 1.0  # the baseline is the first row


def test_scaling_bench_refuses_an_uneven_split(data_dir):
    p = subprocess.run([sys.executable, "-m", "unlearning.bench", "scaling", "--processes", "1,3",
                        "--global-batch", "8", "--data-dir", str(data_dir)], capture_output=True, text=True,
                       cwd=ROOT, timeout=120)
    assert p.returncode == 2
    assert p.stderr.strip() == ("unlearning-bench scaling: --global-batch 8 must divide by every process count "
                                "[1, 3]")
