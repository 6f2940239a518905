"""Robustness attacks: recovery arithmetic by hand, quantization on the tiny model end to end, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import compose

from unlearning.attacks import fresh_copy, recovery
from unlearning.attacks.quantize import Quantize
from unlearning.errors import UserError
from unlearning.models import TinyLlama
from unlearning.validate import validate


def test_recovery_floor_and_its_reason_by_hand():
    from unlearning.attacks import recovery_null_reason

    assert recovery_null_reason(0.5, 0.2, 0.8, 0.05) is None                     # gap 0.6 clears the floor
    why = recovery_null_reason(0.5, 0.2, 0.23, 0.05)                              # gap 0.03 does not
    assert "|target - unlearned| = 0.03 is below robustness.recovery_floor=0.05" in why
    assert recovery_null_reason(0.5, 0.2, 0.15, 0.05) is None                     # the sign does not matter: 0.05
    assert "below" in recovery_null_reason(0.5, 0.2, 0.2, 0)                      # no gap at all, even at floor 0
    assert "no target" in recovery_null_reason(0.5, 0.2, None, 0.05)
    assert "not computed" in recovery_null_reason(None, 0.2, 0.8, 0.05)


def test_worst_case_is_direction_aware_by_hand():
    from unlearning.attacks import worst_case
    from unlearning.eval.tofu import TofuEvaluator

    out = {"forget_Q_A_Prob@a": 0.30, "forget_Q_A_Prob@b": 0.45, "forget_Q_A_Prob@b_vs_reference": 0.12,
           "forget_Truth_Ratio@a": 0.40, "forget_Truth_Ratio@b": 0.70, "forget_Truth_Ratio@a_vs_reference": -0.2,
           "forget_Q_A_ROUGE@a": None, "forget_Q_A_ROUGE@b": float("nan")}
    worst = worst_case(TofuEvaluator, out, ["a", "b"])
    assert worst["forget_Q_A_Prob"] == {"value": 0.45, "attack": "b", "vs_reference": 0.12}   # higher prob: knows more
    assert worst["forget_Truth_Ratio"] == {"value": 0.40, "attack": "a", "vs_reference": -0.2}  # lower TR: knows more
    assert "forget_Q_A_ROUGE" not in worst  # nothing measured: no worst case


def test_recovery_by_hand():
    # unlearning took forget prob 0.8 -> 0.2; an attack back to 0.5 restores half of it
    assert recovery(0.5, 0.2, 0.8) == pytest.approx(0.5)
    assert recovery(0.2, 0.2, 0.8) == 0.0 and recovery(0.8, 0.2, 0.8) == 1.0
    assert recovery(0.1, 0.2, 0.8) == pytest.approx(-1 / 6)   # the attack removed even more
    assert recovery(0.5, 0.3, 0.3) is None and recovery(None, 0.2, 0.8) is None  # nothing was unlearned / missing


def test_quantization_changes_a_copy_and_leaves_the_model_alone(tmp_path):
    model, tok = TinyLlama(cache_dir=str(tmp_path)).load(["hello world, the quick brown fox"] * 4)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.tensor([tok("the quick brown fox")["input_ids"]])
    with torch.no_grad():
        plain = model(x).logits
        quantized = Quantize(bits=8).apply(fresh_copy(model), tok, None, None)
        attacked = quantized(x).logits
    assert not torch.equal(plain, attacked) and torch.allclose(plain, attacked, atol=0.5)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # the original is untouched
    assert type(quantized.model.layers[0].mlp.down_proj).__name__ == "QLinear"


def test_quant8_attack_on_a_tiny_run(run_tiny, tmp_path):
    plain = run_tiny("save_model=false", out=tmp_path / "plain")
    rec = run_tiny("attack=[quant8]", "robustness.recovery_floor=0", out=tmp_path / "attacked")
    m = rec["metrics"]
    # the attack's metrics sit beside the plain ones, which are exactly those of a run without it
    assert {k: v for k, v in m.items() if "@" not in k} == plain["metrics"]
    assert "forget_Q_A_Prob@quant8" in m and m["forget_Q_A_Prob@quant8"] != m["forget_Q_A_Prob"]
    # every term of the recovery measured again, apart from the run: the saved unlearned model and the target stage
    # evaluated as they are by `unlearning-eval`'s code path, and an int8 copy made by hand (round to nearest,
    # per-output-row absmax / 127, the tied lm_head quantized on its own: what optimum-quanto's qint8 does)
    unlearned = _forget_prob(tmp_path / "attacked" / "model", tmp_path / "u")
    target = _forget_prob(Path(rec["stages"]["target"]["path"]), tmp_path / "t")
    attacked = _forget_prob(_rtn_int8_copy(tmp_path / "attacked" / "model", tmp_path / "int8"), tmp_path / "q")
    assert unlearned == pytest.approx(m["forget_Q_A_Prob"], abs=1e-6)
    assert attacked == pytest.approx(m["forget_Q_A_Prob@quant8"], abs=1e-6)
    assert m["forget_Q_A_Prob@quant8_recovery"] == pytest.approx((attacked - unlearned) / (target - unlearned), abs=1e-4)
    assert (tmp_path / "attacked" / "eval" / "tofu@quant8.json").is_file()
    # the control: the same int8 attack on the retain reference, evaluated apart the same way
    reference = Path(rec["stages"]["reference"]["path"])
    attacked_ref = _forget_prob(_rtn_int8_copy(reference, tmp_path / "ref_int8"), tmp_path / "rq")
    assert rec["robustness"]["attacked_reference"]["quant8"]["forget_Q_A_Prob"] == pytest.approx(attacked_ref, abs=1e-6)
    assert m["forget_Q_A_Prob@quant8_vs_reference"] == pytest.approx(attacked - attacked_ref, abs=1e-6)
    control = json.loads((tmp_path / "attacked" / "eval" / "tofu@quant8_reference.json").read_text())
    assert control["aggregates"]["forget_Q_A_Prob"] == rec["robustness"]["attacked_reference"]["quant8"]["forget_Q_A_Prob"]
    # one attack: the worst case is that attack's value, named
    assert m["forget_Q_A_Prob@worst"] == m["forget_Q_A_Prob@quant8"]
    assert rec["robustness"]["worst_case"]["forget_Q_A_Prob"]["attack"] == "quant8"
    # the saved unlearned model is the plain one, not the quantized copy
    cfg = json.loads((tmp_path / "attacked" / "model" / "config.json").read_text())
    assert "quantization_config" not in cfg
    assert "retain_Q_A_Prob@quant8" in m and "model_utility@quant8" in m  # measure=all: the whole evaluator again
    # measure=forget: the forget split alone, with the same forget numbers and recoveries
    forget = run_tiny("attack=[quant8]", "attacks.quant8.measure=forget", "save_model=false",
                      "robustness.recovery_floor=0", out=tmp_path / "forget")["metrics"]
    attacked = {k for k in forget if k.endswith("@quant8")}
    assert attacked and all(k.startswith("forget_") for k in attacked), attacked
    for key in attacked | {k for k in forget if k.endswith("@quant8_recovery")}:
        assert forget[key] == pytest.approx(m[key], abs=1e-9), key
    per_item = json.loads((tmp_path / "forget" / "eval" / "tofu@quant8.json").read_text())["per_item"]
    assert set(per_item) == {"forget"}


def _rtn_int8_copy(folder: Path, out: Path) -> Path:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(folder)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.Linear):
                w = module.weight
                scale = w.abs().amax(dim=1, keepdim=True) / 127
                scale = torch.where(scale == 0, torch.ones_like(scale), scale)  # an all-zero row stays zero
                module.weight = torch.nn.Parameter(torch.round(w / scale).clamp(-127, 127) * scale)
    model.config.tie_word_embeddings = False
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(folder).save_pretrained(out)
    return out


def _forget_prob(folder: Path, out: Path) -> float:
    from conftest import TINY

    from unlearning.evaluate import evaluate_model

    overrides = [o for o in TINY if not o.startswith("model")] + ["model=hf", f"model.path={folder}",
                                                                  "evaluator.generate=false",
                                                                  "dataset.forget_split=forget01"]
    return evaluate_model(compose(overrides), out, overrides)["metrics"]["forget_Q_A_Prob"]


def test_quantized_copy_is_evaluated_without_bf16_autocast(run_tiny, tmp_path, monkeypatch):
    """quanto's int8 CPU matmul refuses bf16 activations; with bf16 evaluation asked for, the attack still runs."""
    monkeypatch.setenv("UNLEARNING_BF16_EMULATED", "1")  # bf16 autocast even on a CPU without native bf16
    rec = run_tiny("attack=[quant8]", "attacks.quant8.measure=forget", "generation.bf16=true",
                   "evaluator.generate=false", "save_model=false", out=tmp_path / "bf16")
    assert rec["status"] == "ok", rec.get("error")
    assert rec["metrics"]["forget_Q_A_Prob@quant8"] > 0
    # one precision for every term of the recovery: its baselines are measured without autocast too, i.e. they are
    # the plain numbers of the same run evaluated in fp32
    fp32 = run_tiny("evaluator.generate=false", "save_model=false", out=tmp_path / "fp32")["metrics"]
    used = json.loads((tmp_path / "bf16" / "eval" / "tofu@quant8.json").read_text())["recovery_baselines"]
    assert used["unlearned"]["forget_Q_A_Prob"] == pytest.approx(fp32["forget_Q_A_Prob"], abs=1e-12)
    assert used["unlearned"]["forget_Q_A_Prob"] != rec["metrics"]["forget_Q_A_Prob"]  # the bf16 plain number


def test_bad_attack_input_is_one_line_before_any_work(data_dir):
    with pytest.raises(UserError, match="bits=3"):
        validate(compose(["attack=[quant8]", "attacks.quant8.bits=3"]))
    with pytest.raises(UserError, match="unknown option"):
        validate(compose(["attack=[quant8]", "+attacks.quant8.group_size=64"]))
    parts = validate(compose(["attack=[quant8,quant4]", "objective=forget_Q_A_Prob@quant4_recovery"]))
    assert set(parts.attacks) == {"quant8", "quant4"}
    with pytest.raises(UserError, match=r"attacks.quant8.measure='some' must be one of \['all', 'forget'\]"):
        validate(compose(["attack=[quant8]", "attacks.quant8.measure=some"]))
    with pytest.raises(UserError, match="attacks.relearn.measure='x' must be one of"):
        validate(compose(["attack=[relearn]", "attacks.relearn.measure=x"]))
    with pytest.raises(UserError, match="attacks.quant4.measure=forget: evaluator=muse"):
        validate(compose(["dataset=muse_news", "evaluator=muse", "attack=[quant4]", "attacks.quant4.measure=forget"]))
    # an objective the attack does not measure is refused: data-only attacks measure the forget side alone
    with pytest.raises(UserError, match="objective=model_utility@paraphrase is not a metric"):
        validate(compose(["attack=[paraphrase]", "objective=model_utility@paraphrase"]))
    with pytest.raises(UserError, match="objective=model_utility@quant8 is not a metric"):
        validate(compose(["attack=[quant8]", "attacks.quant8.measure=forget", "objective=model_utility@quant8"]))
    validate(compose(["attack=[quant8]", "objective=model_utility@quant8"]))
    validate(compose(["attack=[paraphrase]", "objective=forget_quality@paraphrase"]))


def test_an_unknown_attack_is_caught_on_the_command_line(data_dir):
    from pathlib import Path

    from unlearning.cli_checks import check_overrides

    with pytest.raises(UserError, match="unknown option attack=nope"):
        check_overrides(["attack=[quant8,nope]"], str(Path(__file__).resolve().parent.parent / "conf"))


def test_relearn_attack_brings_forgotten_answers_back(run_tiny, tmp_path):
    """GA lowers the forget answers' probability; relearning 2 of them raises the others' back towards the target."""
    overrides = ["method=ga", "trainer.max_steps=4", "attack=[relearn]", "attacks.relearn.examples=2",
                 "attacks.relearn.steps=8", "attacks.relearn.lr=3e-3", "evaluator.generate=false", "save_model=false"]
    rec = run_tiny(*overrides, "robustness.recovery_floor=0", out=tmp_path / "relearn")
    m = rec["metrics"]
    assert m["forget_Q_A_Prob@relearn_recovery"] > 0, m["forget_Q_A_Prob@relearn_recovery"]
    # the control relearns the same 2 items on the reference and is scored on the same rest
    control = json.loads((tmp_path / "relearn" / "eval" / "tofu@relearn_reference.json").read_text())["per_item"]
    assert [r["question"] for r in control["forget"]] == [r["question"] for r in
                                                         json.loads((tmp_path / "relearn" / "eval" / "tofu@relearn.json")
                                                                    .read_text())["per_item"]["forget"]]
    assert m["forget_Q_A_Prob@relearn_vs_reference"] == pytest.approx(
        m["forget_Q_A_Prob@relearn"] - rec["robustness"]["attacked_reference"]["relearn"]["forget_Q_A_Prob"], abs=1e-12)
    per_item = json.loads((tmp_path / "relearn" / "eval" / "tofu@relearn.json").read_text())["per_item"]
    from conftest import TINY

    parts = validate(compose(TINY + overrides))
    held = {ex.messages[-1]["content"] for ex in parts.attacks["relearn"].held_out(parts.data)}
    evaluated = {row["question"] for row in per_item["forget"]}
    assert len(held) == 2 and evaluated and not held & evaluated  # evaluated only on questions it did not train on


def test_benign_finetuning_uses_no_forget_item(data_dir):
    for overrides in ([], PII):
        parts = validate(compose(overrides + ["attack=[benign]", "attacks.benign.examples=4"]))
        picked = parts.attacks["benign"].picked(parts.data)
        forget = parts.data.forget
        assert len(picked) == 4 and not {ex.id for ex in picked} & {ex.id for ex in forget}
        assert not {ex.answer for ex in picked} & {ex.answer for ex in forget}
        if overrides:  # PII: dialogues with no person and no personal data in them
            assert all(ex.meta["person"] is None and not ex.meta["pii"] for ex in picked)
        else:          # TOFU: retain questions, about authors the forget set is not about
            assert {ex.id for ex in picked} <= {ex.id for ex in parts.data.retain}
    free = [ex for ex in validate(compose(PII)).data.target_train if ex.meta["person"] is None]  # PII-free turns
    with pytest.raises(UserError, match=f"attacks.benign.examples=500: synthetic_pii has {len(free)} examples unrelated"):
        validate(compose(PII + ["attack=[benign]", "attacks.benign.examples=500"]))
    with pytest.raises(UserError, match="attacks.benign.steps=0"):
        validate(compose(["attack=[benign]", "attacks.benign.steps=0"]))


def test_benign_attack_on_a_tiny_run(run_tiny, tmp_path):
    rec = run_tiny("attack=[benign]", "attacks.benign.examples=2", "attacks.benign.steps=2", "evaluator.generate=false",
                   "save_model=false", out=tmp_path / "benign")
    m = rec["metrics"]
    assert m["forget_Q_A_Prob@benign"] != m["forget_Q_A_Prob"]  # the fine-tune moved the model
    assert "retain_Q_A_Prob@benign" not in m                     # measure: forget by default
    control = rec["robustness"]["attacked_reference"]["benign"]
    assert m["forget_Q_A_Prob@benign_vs_reference"] == pytest.approx(m["forget_Q_A_Prob@benign"]
                                                                     - control["forget_Q_A_Prob"], abs=1e-12)
    per_item = json.loads((tmp_path / "benign" / "eval" / "tofu@benign.json").read_text())["per_item"]
    assert len(per_item["forget"]) == len(json.loads((tmp_path / "benign" / "eval" / "tofu.json").read_text())
                                          ["per_item"]["forget"])  # every forget item is evaluated


def test_relearn_bad_input(data_dir):
    with pytest.raises(UserError, match="attacks.relearn.examples=40 leaves nothing"):
        validate(compose(["attack=[relearn]", "attacks.relearn.examples=40"]))
    from unlearning.attacks.relearn import Relearn

    class Mine:  # a user's evaluator that cannot drop forget items
        name = "mine"

    with pytest.raises(UserError, match="evaluator=mine cannot yet"):
        Relearn().check(Mine(), validate(compose([])).data)
    with pytest.raises(UserError, match="attacks.relearn.steps"):
        validate(compose(["attack=[relearn]", "attacks.relearn.steps=0"]))


def test_without_drops_exactly_the_relearned_items(data_dir):
    parts = validate(compose(["attack=[relearn]", "attacks.relearn.examples=3"]))
    held = parts.attacks["relearn"].held_out(parts.data)
    rest = parts.evaluator.without(parts.data, held).extra["forget"]
    assert len(rest) == len(parts.data.extra["forget"]) - 3
    assert not {ex.messages[-1]["content"] for ex in held} & {ex.messages[-1]["content"] for ex in rest}
    pii = validate(compose(["dataset=synthetic_pii", "evaluator=pii", "dataset.people=2", "attack=[relearn]",
                            "attacks.relearn.examples=2"]))
    taught = pii.attacks["relearn"].held_out(pii.data)
    pairs = {(ex.meta["person"], s["type"]) for ex in taught for s in ex.meta["pii"]}
    left = pii.evaluator.without(pii.data, taught).extra["probes"]
    assert pairs and len(left) < len(pii.data.extra["probes"])
    assert not {(p["person"], p["type"]) for p in left} & pairs


PII = ["dataset=synthetic_pii", "evaluator=pii", "dataset.people=3", "dataset.dialogues_per_person=1",
       "dataset.heldout_per_person=1", "dataset.pii_free_train=4", "dataset.pii_free_heldout=2"]


def test_pii_reference_trains_on_the_same_dialogues_about_stand_ins(data_dir):
    """The PII benchmark's never-trained model: every training dialogue again, about a stand-in person; none of the
    real people's probed values (nor their first or last names) appears anywhere in what it trains on."""
    parts = validate(compose(PII + ["dataset.people=6", "attack=[quant8]"]))
    data = parts.data
    ref_texts = " ".join(m["content"] for ex in data.reference_train for m in ex.messages) + " ".join(
        ex.answer for ex in data.reference_train)
    import re

    values = {p[t] for p in data.extra["people"] for t in data.extra["pii_types"]}
    names = {p[f] for p in data.extra["people"] for f in ("first", "last")}
    assert values and not [v for v in values if v in ref_texts]
    assert names and not [v for v in names if re.search(rf"\b{re.escape(v)}\b", ref_texts)]  # "John" in "Johnson Ltd" is not a name
    assert {p["answer"] if "answer" in p else None for p in data.extra["probes"]}  # the probes exist
    assert len(data.reference_train) == len(data.target_train)  # the same dialogues, turn for turn
    pii_turns = [ex for ex in data.reference_train if ex.meta["pii"]]
    assert len(pii_turns) == len(data.forget)
    assert {ex.meta["template"] for ex in pii_turns} == {ex.meta["template"] for ex in data.forget}


def test_pii_attack_is_compared_with_the_stand_in_reference(tmp_path, data_dir):
    from unlearning.run import run

    overrides = ["model=tiny", *PII, "method=ga", f"cache_dir={tmp_path / 'cache'}", "model.hidden_size=32",
                 "model.num_layers=1", "model.num_heads=2", "model.intermediate_size=64", "model.vocab_size=400",
                 "model.finetune.epochs=1", "trainer.max_steps=2", "trainer.lr=1e-3", "evaluator.max_probes_per_kind=2",
                 "evaluator.max_new_tokens=4", "evaluator.utility_max_new_tokens=4", "attack=[quant8]",
                 "attacks.quant8.measure=forget", "save_model=false"]
    rec = run(compose(overrides), tmp_path / "pii", overrides)
    m = rec["metrics"]
    assert rec["stages"]["reference"]["built"] and "reference" in rec["baselines"]
    control = rec["robustness"]["attacked_reference"]["quant8"]
    for key in ("leakage_rate", "partial_leakage_rate"):
        assert m[f"{key}@quant8_vs_reference"] == pytest.approx(m[f"{key}@quant8"] - control[key], abs=1e-12)
    off = run(compose(overrides + ["robustness.control=false"]), tmp_path / "off", overrides)
    assert off["metrics"]["leakage_rate@quant8_vs_reference"] is None and "reference" not in off["stages"]
    assert "robustness.control=false" in off["robustness"]["null_reasons"]["leakage_rate@quant8_vs_reference"]


def test_paraphrase_and_icl_change_only_the_probes(data_dir):
    parts = validate(compose(["attack=[paraphrase,icl]", "attacks.icl.shots=2"]))
    forget = parts.data.extra["forget"]
    para = parts.attacks["paraphrase"].transform(parts.evaluator, parts.data).extra["forget"]
    assert [ex.answer for ex in para] == [ex.answer for ex in forget]  # the same answers are scored
    assert para[0].messages[-1]["content"] == forget[0].meta["paraphrased_question"] != forget[0].messages[-1]["content"]
    icl = parts.attacks["icl"].transform(parts.evaluator, parts.data).extra["forget"]
    for plain, shot in zip(forget, icl):
        assert shot.messages[-1] == plain.messages[-1] and len(shot.messages) == len(plain.messages) + 4
        shown = {m["content"] for m in shot.messages[:-1]}
        assert plain.messages[-1]["content"] not in shown and plain.answer not in shown  # other items only

    parts = validate(compose(PII + ["attack=[paraphrase,icl]", "attacks.icl.shots=1"]))
    probes = parts.data.extra["probes"]
    para = parts.attacks["paraphrase"]
    plain, asked = para.plain(parts.evaluator, parts.data).extra["probes"], para.transform(parts.evaluator, parts.data).extra["probes"]
    # the same probes (id, person, PII type, value): every direct and completion probe, no continuation probe
    assert [(p["id"], p["person"], p["type"], p["value"]) for p in asked] == \
        [(p["id"], p["person"], p["type"], p["value"]) for p in plain]
    assert {p["kind"] for p in plain} == {"direct", "completion"} and len(plain) == \
        len([p for p in probes if p["kind"] != "continuation"]) < len(probes)
    # ... in words that neither training nor the plain probes use
    training = " ".join(m["content"] for ex in parts.data.target_train for m in ex.messages or []) + \
        " ".join(ex.answer for ex in parts.data.target_train)
    plain_words = {(p["messages"][-1]["content"], p["prefix"]) for p in probes}
    for p in asked:
        assert not p["seen"] and (p["messages"][-1]["content"], p["prefix"]) not in plain_words
        assert (p["prefix"] or p["messages"][-1]["content"]) not in training
    assert asked[0]["messages"][-1]["content"] == f"Which person does the address {parts.data.extra['people'][0]['email']} belong to?"
    for plain, shot in zip(probes, parts.attacks["icl"].transform(parts.evaluator, parts.data).extra["probes"]):
        assert shot["messages"][-len(plain["messages"]):] == plain["messages"]
        assert plain["value"] not in " ".join(m["content"] for m in shot["messages"][:2])  # another person's turn


def test_paraphrase_and_icl_attacks_on_a_tiny_run(run_tiny, tmp_path):
    rec = run_tiny("attack=[paraphrase,icl]", "evaluator.generate=false", "save_model=false", out=tmp_path / "p")
    m = rec["metrics"]
    for name in ("paraphrase", "icl"):
        assert m[f"forget_Q_A_Prob@{name}"] != m["forget_Q_A_Prob"]
        # only the forget probes change, so only the forget side is measured again (not a copy of the plain numbers)
        assert f"retain_Q_A_Prob@{name}" not in m and f"model_utility@{name}" not in m
        assert f"forget_quality@{name}" in m and f"forget_Q_A_Prob@{name}_recovery" in m
        per_item = json.loads((tmp_path / "p" / "eval" / f"tofu@{name}.json").read_text())["per_item"]
        assert set(per_item) == {"forget"}


def test_paraphrase_and_icl_bad_input(data_dir):
    with pytest.raises(UserError, match="paraphrase is not available for evaluator=muse"):
        validate(compose(["attack=[paraphrase]", "dataset=muse_news", "evaluator=muse"]))
    with pytest.raises(UserError, match="icl is for chat benchmarks"):
        validate(compose(["attack=[icl]", "dataset=muse_news", "evaluator=muse"]))
    with pytest.raises(UserError, match="attacks.icl.shots=40"):
        validate(compose(["attack=[icl]", "attacks.icl.shots=40"]))


def test_report_draws_the_robustness_plot(tmp_path):
    import matplotlib.image as mpimg

    from unlearning.report import attacked_metric, report

    sweep = tmp_path / "sweep"
    for job, (method, plain, quant) in {"0": ("ga", 0.2, 0.5), "1": ("npo", 0.3, 0.35)}.items():
        ov = [f"method={method}", "model=tiny"]
        (sweep / job / ".hydra").mkdir(parents=True)
        (sweep / job / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in ov))
        m = {"forget_quality": 0.1, "model_utility": 0.5, "forget_Q_A_Prob": plain, "forget_Q_A_Prob@quant4": quant,
             "forget_Q_A_Prob@quant4_recovery": (quant - plain) / (0.8 - plain),
             "forget_Truth_Ratio@quant4_recovery": 0.1}
        (sweep / job / "results.json").write_text(json.dumps({
            "status": "ok", "overrides": ov, "method": method, "dataset": "tofu", "model": "tiny", "metrics": m,
            "baselines": {"target": {"forget_Q_A_Prob": 0.8}}, "objective": 0.1, "timings": {},
            "robustness": {"attacked_reference": {"quant4": {"forget_Q_A_Prob": 0.2468}}}}))
    rows = [json.loads((sweep / j / "results.json").read_text()) for j in "01"]
    assert attacked_metric(rows) == ("forget_Q_A_Prob", ["quant4"])
    out = report(sweep)
    png = sweep / "plots" / "robustness.png"
    assert png in out["plots"] and mpimg.imread(png).shape[0] > 100
    assert "plots/robustness.png" in out["md"].read_text()
    assert "forget_Q_A_Prob@quant4_recovery" in out["md"].read_text()
    # the never-trained model under the same attack, drawn beside the bars and listed with the baselines
    assert "| reference@quant4 |" in out["md"].read_text() and "0.2468" in out["md"].read_text()


def test_relearn_on_pii_evaluates_only_what_it_did_not_teach(data_dir):
    parts = validate(compose(PII + ["attack=[relearn]", "attacks.relearn.examples=2"]))
    held, rest = parts.attacks["relearn"].split(parts.evaluator, parts.data)
    taught = {(ex.meta["person"], s["type"]) for ex in held for s in ex.meta["pii"]}
    assert taught and len(rest.extra["probes"]) < len(parts.data.extra["probes"])
    assert not any((p["person"], p["type"]) in taught for p in rest.extra["probes"])
    assert parts.data.extra["probes"] is not rest.extra["probes"]  # the run's own data is left as it was


class SubsetIdentity:
    """A data-only attack that changes nothing: the first 3 forget questions, asked exactly as in the plain run."""

    data_only, measure = True, "forget"

    def plain(self, evaluator, data):
        import dataclasses

        return dataclasses.replace(data, extra={**data.extra, "forget": data.extra["forget"][:3]})

    def transform(self, evaluator, data):
        return self.plain(evaluator, data)


def test_an_attack_that_changes_nothing_recovers_exactly_nothing(run_tiny, tmp_path):
    """Every term of a recovery is measured on the same items under the same probes: a subset asked as before gives
    recovery 0 exactly (measured against the whole forget set's numbers, it would not)."""
    rec = run_tiny("+attacks.same._target_=test_attacks.SubsetIdentity", "save_model=false",
                   "robustness.recovery_floor=0", out=tmp_path / "same")
    m = rec["metrics"]
    for key in ("forget_Q_A_Prob", "forget_Q_A_ROUGE", "forget_Truth_Ratio"):
        assert m[f"{key}@same_recovery"] == 0.0, key
    assert m["forget_Q_A_Prob@same"] != m["forget_Q_A_Prob"]  # 3 of the 6 items: the whole set's number differs
    baselines = json.loads((tmp_path / "same" / "eval" / "tofu@same.json").read_text())["recovery_baselines"]
    assert baselines["unlearned"]["forget_Q_A_Prob"] == m["forget_Q_A_Prob@same"]


def test_an_attack_on_a_model_that_never_learned_leaves_zero_residual(tmp_path, data_dir):
    """The unlearned model *is* the reference (a perfect unlearner): the identity attack's residual is 0 exactly, for
    every forget metric, and so is a weight attack's (quant8 of equal weights); the floor nulls the recoveries
    (unlearned = reference, the target differs, so only the recovery of a gap under the floor is null)."""
    from conftest import TINY

    from unlearning.attacks import run_attacks
    from unlearning.run import RunContext

    parts = validate(compose(TINY + ["evaluator.generate=false"]))
    model, tok = parts.spec.load(parts.data.corpus)
    ctx = RunContext(cfg=compose(TINY), out_dir=None, cache_dir=str(tmp_path), device="cpu", max_length=128,
                     generation=compose(TINY).generation)
    plain = parts.evaluator.evaluate(model, tok, parts.data, ctx)["aggregates"]
    out, notes = run_attacks({"same": SubsetIdentity(), "quant8": Quantize(bits=8)}, parts.evaluator, model, tok,
                             parts.data, ctx, None, plain, None, None, lambda: (fresh_copy(model), tok), 0.05)
    for key in ("forget_Q_A_Prob", "forget_Truth_Ratio"):
        assert out[f"{key}@same_vs_reference"] == 0.0 and out[f"{key}@quant8_vs_reference"] == 0.0, key
        assert out[f"{key}@same_recovery"] is None and "no target" in notes["null_reasons"][f"{key}@same_recovery"]
    assert notes["attacked_reference"]["quant8"]["forget_Q_A_Prob"] == out["forget_Q_A_Prob@quant8"]
    no_ref, notes = run_attacks({"same": SubsetIdentity()}, parts.evaluator, model, tok, parts.data, ctx, None, plain,
                                None, no_reference="no never-trained model: test")
    assert no_ref["forget_Q_A_Prob@same_vs_reference"] is None
    assert notes["null_reasons"]["forget_Q_A_Prob@same_vs_reference"] == "no never-trained model: test"


def test_forget_quality_compares_the_same_items_on_both_sides():
    """forget_quality@relearn: the reference's truth ratios of the relearned items are left out too. Model items a, b
    (TR 1, 1) against reference a, b (1, 1): identical samples, p-value 1 exactly; with the reference's c (TR 100)
    kept, the KS statistic would be 1/3 and p < 1."""
    from unlearning.eval.tofu import TofuEvaluator

    rows = [{"id": "a", "truth_ratio": 1.0}, {"id": "b", "truth_ratio": 1.0}]
    ref = {"per_item": {"forget": rows + [{"id": "c", "truth_ratio": 100.0}]}}
    assert TofuEvaluator._summaries({}, {"forget": rows}, ref)["forget_quality"] == 1.0


def test_narrowing_a_presets_attacks_runs_only_the_picked_ones(data_dir):
    """tofu_smollm2_full sets `measure: forget` for five attacks; `attack=[quant8]` leaves the other four as settings
    without `_target_`, which are not attacks (run_attacks would call `.apply` on a plain dict after training)."""
    from conftest import compose

    from unlearning.validate import validate

    cfg = compose(["experiment=tofu_smollm2_full", "attack=[quant8]"])
    assert set(cfg.attacks) == {"quant8", "relearn", "quant4"}  # what Hydra composes
    assert list(validate(cfg).attacks) == ["quant8"]


def test_the_standard_preset_picks_the_literatures_attacks(data_dir):
    parts = validate(compose(["attack=[standard,quant8]", "attacks.benign.examples=3"]))
    assert list(parts.attacks) == ["relearn", "benign", "quant4", "paraphrase", "icl", "prefix_injection", "role_play",
                                   "background_hint", "multiple_choice", "quant8"]
    assert parts.attacks["benign"].examples == 3 and parts.attacks["quant4"].bits == 4

