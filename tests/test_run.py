"""Whole tiny runs: stages cached and reused, GA's sign, results files, the stage cache key."""

import json

import pytest
import torch

from unlearning.data.base import chat, collate, encode
from unlearning.methods.base import nll
from unlearning.methods.ga import GradientAscent
from unlearning.models import TinyLlama
from unlearning.stages import key_hash, stage_key
from unlearning.train import TrainSettings


def test_ga_loss_is_minus_forget_nll(tmp_path):
    texts = ["Who wrote Dune? Frank Herbert wrote Dune."] * 4
    model, tok = TinyLlama(cache_dir=str(tmp_path)).load(texts)
    batch = {"forget": collate([encode(tok, chat("Who wrote Dune?", "Frank Herbert wrote Dune."))], tok.pad_token_id)}
    loss, logs = GradientAscent().loss(model, batch)
    assert torch.isclose(loss, -nll(model, batch["forget"]))
    assert logs["forget_nll"] > 0 and loss.item() < 0


def test_one_ga_step_raises_forget_nll(tmp_path):
    from unlearning.train import train

    texts = ["Who wrote Dune? Frank Herbert wrote Dune."] * 4
    model, tok = TinyLlama(cache_dir=str(tmp_path)).load(texts)
    items = [encode(tok, chat("Who wrote Dune?", "Frank Herbert wrote Dune."))]
    batch = collate(items, tok.pad_token_id)
    with torch.no_grad():
        before = nll(model, batch).item()
    train(model, GradientAscent(), items, None, TrainSettings(lr=1e-2, max_steps=1, epochs=0), tok.pad_token_id)
    with torch.no_grad():
        after = nll(model, batch).item()
    assert after > before


def test_stage_key_changes_with_what_determines_the_weights():
    exs = [chat("q", "a")]
    base = stage_key("target", {"kind": "tiny"}, ["c"], exs, TrainSettings(), 256)
    assert key_hash(base) == key_hash(stage_key("target", {"kind": "tiny"}, ["c"], [chat("q", "a")],
                                                TrainSettings(), 256))
    for other in (stage_key("reference", {"kind": "tiny"}, ["c"], exs, TrainSettings(), 256),
                  stage_key("target", {"kind": "smollm2"}, ["c"], exs, TrainSettings(), 256),
                  stage_key("target", {"kind": "tiny"}, ["c"], [chat("q", "b")], TrainSettings(), 256),
                  stage_key("target", {"kind": "tiny"}, ["c"], exs, TrainSettings(lr=1.0), 256),
                  stage_key("target", {"kind": "tiny"}, ["c"], exs, TrainSettings(seed=1), 256),
                  stage_key("target", {"kind": "tiny"}, ["c"], exs, TrainSettings(), 128)):
        assert key_hash(other) != key_hash(base)


def test_whole_tiny_run_then_cached_stages(run_tiny, tmp_path):
    first = run_tiny(out=tmp_path / "first")
    assert first["status"] == "ok"
    m = first["metrics"]
    for key in ("forget_quality", "model_utility", "forget_Q_A_Prob", "forget_Q_A_ROUGE", "forget_Truth_Ratio",
                "retain_Q_A_Prob", "ra_Q_A_Prob_normalised", "wf_Truth_Ratio", "forget_exact_memorization",
                "forget_extraction_strength"):
        assert isinstance(m[key], float), key
    assert {"target", "reference"} <= set(first["baselines"])
    # the wiring, computed here: model_utility is the harmonic mean of the nine retain / real-authors / world-facts
    # numbers (0 when one is 0), and GA lowers the forget answers' probability below the target's
    nine = [m[k] for k in ("retain_Q_A_Prob", "retain_Q_A_ROUGE", "retain_Truth_Ratio", "ra_Q_A_Prob_normalised",
                           "ra_Q_A_ROUGE", "ra_Truth_Ratio", "wf_Q_A_Prob_normalised", "wf_Q_A_ROUGE", "wf_Truth_Ratio")]
    assert m["model_utility"] == pytest.approx(0.0 if min(nine) == 0 else 9 / sum(1 / x for x in nine), rel=1e-9)
    assert m["forget_Q_A_Prob"] < first["baselines"]["target"]["forget_Q_A_Prob"]
    # results.json, per-item evaluation, training log, saved model
    saved = json.loads((tmp_path / "first" / "results.json").read_text())
    assert saved["metrics"]["forget_quality"] == m["forget_quality"]
    per_item = json.loads((tmp_path / "first" / "eval" / "tofu.json").read_text())["per_item"]
    assert len(per_item["forget"]) == 6 and "generation" in per_item["forget"][0]
    probs = [r["answer_prob"] for r in per_item["forget"]]
    assert m["forget_Q_A_Prob"] == pytest.approx(sum(probs) / len(probs), rel=1e-9)  # the mean of the six items
    assert (tmp_path / "first" / "train_log.jsonl").read_text().count("unlearn/loss") == 2
    assert (tmp_path / "first" / "model" / "config.json").exists()
    # a second run reuses the cached target and reference instead of fine-tuning again
    second = run_tiny("method=ga", out=tmp_path / "second")
    assert all(s["built"] is False for s in second["stages"].values())
    assert second["stages"]["target"]["path"] == first["stages"]["target"]["path"]


def test_lora_run_saves_an_adapter(run_tiny, tmp_path):
    rec = run_tiny("trainer.lora.enabled=true", "trainer.lora.r=4", "stage.evaluate_target=false",
                   out=tmp_path / "lora")
    assert rec["status"] == "ok"
    assert (tmp_path / "lora" / "model" / "adapter_config.json").exists()


def test_guidance_scales_and_subtraction_in_one_run(run_tiny, tmp_path):
    rec = run_tiny("generation.eval_scales=[2,{scale:2,mode:prob}]", "subtraction.enabled=true",
                   "stage.evaluate_target=false", "save_model=false", out=tmp_path / "cfg")
    m = rec["metrics"]
    assert "forget_Q_A_ROUGE@cfg2" in m and "forget_Q_A_ROUGE@cfg2_prob" in m
    # likelihood metrics do not depend on decoding; generations do get their own per-item records
    assert m["forget_Q_A_Prob@cfg2"] == m["forget_Q_A_Prob"]
    per_item = json.loads((tmp_path / "cfg" / "eval" / "tofu.json").read_text())["per_item"]
    assert {"cfg2", "cfg2_prob"} <= set(per_item)


def test_table_has_a_column_per_guidance_scale():
    from unlearning.run import table

    rec = {"method": "orpo_cfg", "baselines": {"target": {"leakage_rate": 0.5}},
           "metrics": {"leakage_rate": 0.25, "leakage_rate@cfg3": 0.125}}
    lines = table(rec).splitlines()
    assert lines[0].split() == ["metric", "target", "unlearned", "(orpo_cfg)", "unlearned", "@cfg3"]
    assert lines[2].split() == ["leakage_rate", "0.5", "0.25", "0.125"]
