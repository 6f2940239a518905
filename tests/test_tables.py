"""`unlearning-table`: Markdown tables from run folders, and the README block they regenerate."""

from __future__ import annotations

import json

import pytest

from unlearning.errors import UserError
from unlearning.tables import main, markdown, rows_of, update_file


def _run(folder, metrics, baselines=None, method="orpo_cfg", status="ok"):
    folder.mkdir(parents=True)
    (folder / "results.json").write_text(json.dumps({"status": status, "method": method, "metrics": metrics,
                                                     "baselines": baselines or {}}))
    return folder


def test_rows_and_markdown_by_hand(tmp_path):
    a = _run(tmp_path / "a", {"leakage_rate": 0.25, "leakage_rate@cfg3": 0.125, "n": 3},
             {"target": {"leakage_rate": 0.5, "n": 3}})
    rows = rows_of([json.loads((a / "results.json").read_text())])
    assert [r[0] for r in rows] == ["target", "orpo_cfg", "orpo_cfg @cfg3"]
    assert markdown(rows, ["leakage_rate"]).splitlines() == [
        "| row | leakage_rate |", "|---|---|", "| target | 0.5 |", "| orpo_cfg | 0.25 |", "| orpo_cfg @cfg3 | 0.125 |"]


def test_update_replaces_only_the_marked_block(tmp_path, capsys):
    a = _run(tmp_path / "a", {"m": 1.0})
    readme = tmp_path / "README.md"
    readme.write_text("before\n<!-- table:main -->\nold\n<!-- /table:main -->\nafter\n")
    assert main([str(a), "--update", str(readme), "--marker", "main", "--labels", "GA"]) == 0
    assert readme.read_text() == "before\n<!-- table:main -->\n| row | m |\n|---|---|\n| GA | 1 |\n<!-- /table:main -->\nafter\n"
    with pytest.raises(UserError, match="table:other"):
        update_file(readme, "other", "x")


def test_bad_input_is_one_line(tmp_path, capsys):
    bad = _run(tmp_path / "bad", {}, status="diverged")
    assert main([str(bad)]) == 2 and "diverged" in capsys.readouterr().err
    assert main([str(tmp_path / "nowhere")]) == 2 and "no results.json" in capsys.readouterr().err
