"""OU's TOFU repro.md table (`unlearning/ou_repro.py`): OU's published values as docs/parity.md quotes them, and
the table built from hand-made run records (the sweep-end print of a real sweep: tests/test_sweeps.py)."""

from __future__ import annotations

import json

import pytest
from conftest import ROOT

from unlearning import ou_repro
from unlearning.errors import UserError
from unlearning.tables import main as table_main


def _docs_tables() -> dict[str, dict[str, list[str]]]:
    """The two TOFU tables under docs/parity.md's "OU's published numbers", row -> its nine cells."""
    text = (ROOT / "docs" / "parity.md").read_text()
    tables = {}
    for arch in ("Llama-2-7b-hf-chat", "Llama-3.2-1B-Instruct"):
        block = text.split(f"**TOFU unlearning on the {arch} architecture**", 1)[1].split("\n\n", 2)[1]
        tables[arch] = {cells[0]: cells[1:] for cells in
                        (line.strip("| ").split(" | ") for line in block.splitlines()[2:])}
    return tables


def test_published_values_are_the_ones_docs_quote():
    docs = _docs_tables()
    for arch, doc_arch in (("Llama-2-7b-chat-hf", "Llama-2-7b-hf-chat"), ("Llama-3.2-1B-Instruct", "Llama-3.2-1B-Instruct")):
        ours = {row: [v for split in vals for v in split] for row, vals in ou_repro.PUBLISHED[arch].items()}
        assert ours == docs[doc_arch]
    assert docs["Llama-3.2-1B-Instruct"]["NPO"][0] == "0.92"  # the parse reads the right cells


def _record(method, split, fq, mu, tr, path="meta-llama/Llama-3.2-1B-Instruct", baselines=None):
    return {"status": "ok", "dataset": f"tofu_{split}", "method": method, "baselines": baselines or {},
            "metrics": {"forget_quality": fq, "model_utility": mu, "forget_Truth_Ratio": tr},
            "config": {"model": {"path": path}, "dataset": {"forget_split": split}}}


def test_table_cells_pair_each_run_with_ous_value():
    base = {"target": {"forget_quality": 0.0123, "model_utility": 0.61, "forget_Truth_Ratio": 0.471},
            "reference": {"forget_quality": 1.0, "model_utility": 0.6, "forget_Truth_Ratio": 0.652}}
    records = [_record("npo", "forget01", 0.9, 0.5512, 0.6601, baselines=base),
               _record("ga", "forget05", 1.5e-120, 0.0, 2.5e-23),
               _record("my_loss", "forget01", 0.25, 0.4, 0.5)]
    text = ou_repro.table(records)
    assert "this project / OU's published Llama-3.2-1B-Instruct values" in text
    lines = [line for line in text.splitlines() if line.startswith("| ")]
    assert lines[0] == ("| Method | forget01 forget_quality | forget01 model_utility | forget01 forget_truth_ratio | "
                        "forget05 forget_quality | forget05 model_utility | forget05 forget_truth_ratio |")
    rows = {line.split(" | ")[0][2:]: line for line in lines[1:]}
    assert list(rows) == ["Finetuned", "Retain", "GradAscent", "NPO", "my_loss"]  # OU's order, then methods OU lacks
    assert rows["NPO"] == "| NPO | 0.9 / 0.92 | 0.551 / 0.56 | 0.66 / 0.66 | - / 0.14 | - / 0.45 | - / 0.7 |"
    assert rows["GradAscent"] == ("| GradAscent | - / 0.27 | - / 0.33 | - / 0.59 | 1.50e-120 / 1.94e-119 | 0 / 0 | "
                                  "2.50e-23 / 2.52e-23 |")
    assert rows["Finetuned"].startswith("| Finetuned | 0.0123 / 0.01 | 0.61 / 0.6 | 0.471 / 0.47 | - / 1.33e-13 |")
    assert rows["my_loss"].startswith("| my_loss | 0.25 / - |")


def test_table_refuses_mixed_models_and_no_split():
    with pytest.raises(UserError, match="several models"):
        ou_repro.table([_record("ga", "forget01", 0.1, 0.1, 0.1),
                        _record("ga", "forget01", 0.1, 0.1, 0.1, path="meta-llama/Llama-2-7b-chat-hf")])
    with pytest.raises(UserError, match="forget split"):
        ou_repro.table([_record("ga", "forget20", 0.1, 0.1, 0.1)])


def test_table_command_reads_a_sweep_folder(tmp_path, capsys):
    for job, rec in (("0", _record("npo", "forget01", 0.9, 0.55, 0.66)), ("1", {"status": "failed"}),
                     ("2", _record("simnpo", "forget01", 0.5, 0.45, 0.55))):
        (tmp_path / job).mkdir()
        (tmp_path / job / "results.json").write_text(json.dumps(rec))
    assert table_main(["--ou-repro", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "| NPO | 0.9 / 0.92 |" in out and "| SimNPO | 0.5 / 0.58 |" in out
    assert table_main(["--ou-repro", str(tmp_path / "nothing")]) == 2
    assert "holds no results.json" in capsys.readouterr().err
    assert table_main(["--ou-repro", "--columns", "x", str(tmp_path)]) == 2
