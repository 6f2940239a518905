"""`unlearning-bench parity`'s table on hand-made results: per-item maxima, mode shifts and generation counts,
for TOFU's one-split metrics and MUSE's two-sided Min-K% (no model is run; the command's evaluations are the
evaluators that tests/test_parity.py holds to OpenUnlearning's output)."""

from __future__ import annotations

import json

import pytest

from unlearning.bench import parity


def muse_reference() -> dict:
    return {
        "forget_verbmem_ROUGE": {"agg_value": 0.5, "value_by_index": {
            "0": {"rougeL_f1": 0.4, "generation": "a b"}, "1": {"rougeL_f1": 0.6, "generation": "c d"}}},
        "extraction_strength": {"agg_value": 0.1, "value_by_index": {"0": {"score": 0.1}, "1": {"score": 0.1}}},
        "forget_knowmem_ROUGE": {"agg_value": 0.2, "value_by_index": {"0": {"rougeL_f1": 0.2, "generation": "x"}}},
        "retain_knowmem_ROUGE": {"agg_value": 0.3, "value_by_index": {"0": {"rougeL_f1": 0.3, "generation": "y"}}},
        "mia_min_k": {"agg_value": 0.25, "auc": 0.25,
                      "forget": {"value_by_index": {"0": {"score": 5.0}, "1": {"score": 6.0}}},
                      "holdout": {"value_by_index": {"0": {"score": 7.0}, "1": {"score": 8.0}}}},
        "privleak": {"agg_value": 50.0},
    }


def muse_result(shift: float, gen1: str) -> dict:
    return {"seconds": 10.0,
            "aggregates": {"forget_verbmem_ROUGE": 0.5 + shift, "extraction_strength": 0.1,
                           "forget_knowmem_ROUGE": 0.2, "retain_knowmem_ROUGE": 0.3, "mia_min_k": 0.25,
                           "privleak": 50.0 + shift},
            "per_item": {
                "verbmem_forget": [{"rougeL_f1": 0.4, "extraction_strength": 0.1, "generation": "a b"},
                                   {"rougeL_f1": 0.6 + shift, "extraction_strength": 0.1, "generation": gen1}],
                "knowmem_forget": [{"rougeL_f1": 0.2, "generation": "x"}],
                "knowmem_retain": [{"rougeL_f1": 0.3, "generation": "y"}],
                # holdout document 1 off by 0.003: the largest per-item Min-K difference, on the second side
                "privleak_forget": [{"min_k": 5.0}, {"min_k": 6.001}],
                "privleak_holdout": [{"min_k": 7.0}, {"min_k": 8.003}]}}


def rows(lines: list[str]) -> dict[str, list[str]]:
    return {line.split()[0]: line.split()[1:] for line in lines[2:] if line and not line.startswith(("compat ", "seconds"))}


def test_muse_table_maxima_shifts_and_generations():
    results = {"compat": muse_result(0.0, "c d"), "default": muse_result(0.02, "c e")}
    lines = parity.table(results, muse_reference(), parity.MUSE)
    got = rows(lines)
    # columns: OU, compat, default, max|item delta| vs OU, default - compat
    assert got["mia_min_k"] == ["0.250000", "0.250000", "0.250000", "3.00e-03", "+0.0000"]
    assert got["forget_verbmem_ROUGE"] == ["0.500000", "0.500000", "0.520000", "0.00e+00", "+0.0200"]
    assert got["privleak"] == ["50.000000", "50.000000", "50.020000", "0.00e+00", "+0.0200"]
    # generations recorded by OU: 2 VerbMem + 1 + 1 KnowMem, all equal in compat (default's are not counted)
    assert "compat generations identical to OU's: 4 of 4" in lines
    assert lines[-1] == "seconds: compat 10, default 10"


def test_tofu_table_flattens_perturbed_lists_and_reads_saved_modes(tmp_path):
    ref = {"forget_Q_A_PERT_Prob": {"agg_value": 0.3, "value_by_index": {"0": {"prob": [0.2, 0.4]}}}}
    compat = {"aggregates": {"forget_Q_A_PERT_Prob": 0.3}, "per_item": {"forget": [{"pert_probs": [0.2, 0.41]}]},
              "seconds": 1.0}
    lengths = {"aggregates": {"forget_Q_A_PERT_Prob": 0.35}, "per_item": {"forget": [{"pert_probs": [0.25, 0.45]}]},
               "seconds": 2.0}
    (tmp_path / "compat.json").write_text(json.dumps(compat))
    (tmp_path / "compat_lengths.json").write_text(json.dumps(lengths))
    got = rows(parity.table(parity.merged([str(tmp_path)], ["compat", "compat_lengths"]), ref,
                            {"forget_Q_A_PERT_Prob": parity.TOFU["forget_Q_A_PERT_Prob"]}))
    # max |compat - OU| over the flattened perturbed answers: |0.41 - 0.4| = 0.01; mask shift 0.35 - 0.3
    assert got["forget_Q_A_PERT_Prob"] == ["0.300000", "0.300000", "0.350000", "1.00e-02", "+0.0500"]


@pytest.mark.parametrize("argv, message", [
    (["--modes", "compat,nope"], "unknown mode(s) ['nope']"),
    (["--benchmark", "muse", "--reference", "/nonexistent"], "no reference at /nonexistent/MUSE_EVAL.json"),
    (["--max-items", "0"], "--max-items=0 must be at least 1"),
    (["--benchmark", "muse", "--metrics", "mia_min_k,forget_Q_A_Prob"], "--metrics: unknown ['forget_Q_A_Prob'] for muse"),
])
def test_bad_input_is_one_line(argv, message, capsys, tmp_path):
    for name in ("TOFU_EVAL.json", "MUSE_EVAL.json"):  # a reference folder, so that the check after it is reached
        (tmp_path / name).write_text("{}")
    if "--reference" not in argv:
        argv = [*argv, "--reference", str(tmp_path)]
    assert parity.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
