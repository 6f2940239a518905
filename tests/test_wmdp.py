"""WMDP's corpora (dataset=wmdp): the hub copies are unreachable here, so the test writes small files in WMDP's own
data/ layout (bio: JSON objects with `text`; cyber: JSON strings, one document per line) and runs the tiny model on
them end to end with lm-eval beside nothing: the target is the model as it is (no fine-tune)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import compose

from unlearning.errors import UserError

BIO = ["Pathogen enhancement protocols describe how a virus is passaged to raise its transmissibility in cells.",
       "short",  # 5 characters: under min_len, dropped
       "Reverse genetics systems rebuild a virus from cloned cDNA segments transfected into cultured cells."]
CYBER = ["A heap overflow in the parser lets an attacker overwrite a function pointer and run shellcode remotely.",
         "Privilege escalation chains a kernel race with a setuid helper to get a root shell on the host."]
WIKI = ["The river flows north through the valley before it reaches the sea at the old harbour town.",
        "The cathedral was built in the twelfth century and rebuilt after a fire in the fifteenth century."]


def write_wmdp(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "bio-forget-corpus.jsonl").write_text("".join(json.dumps({"title": "t", "text": t}) + "\n" for t in BIO))
    (folder / "cyber-forget-corpus.jsonl").write_text("".join(json.dumps(t) + "\n" for t in CYBER))
    (folder / "wikitext.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in WIKI))
    return folder


def test_the_loader_reads_wmdps_layout_with_its_length_filters(tmp_path):
    from unlearning.data.wmdp import load_wmdp

    data = load_wmdp(path=str(write_wmdp(tmp_path / "wmdp")), max_len=60)
    assert [e.answer for e in data.forget] == [BIO[0][:60], BIO[2][:60], CYBER[0][:60], CYBER[1][:60]]
    assert [e.answer for e in data.retain] == [WIKI[0][:60], WIKI[1][:60]]
    assert data.target_train == [] and data.reference_train is None  # the model as it is is the target
    assert all(not e.is_chat for e in data.forget)  # raw text: loss on every token
    assert len(load_wmdp(path=str(tmp_path / "wmdp"), num_forget=1).forget) == 1


def test_missing_files_and_bad_options_are_one_line(tmp_path):
    from unlearning.data.wmdp import load_wmdp

    with pytest.raises(UserError, match=r"WMDP corpus 'bio-forget-corpus': .*bio-forget-corpus.jsonl does not exist "
                                         r"and the hub is offline .* its hub copy cais/wmdp-bio-forget-corpus"):
        load_wmdp(path=str(tmp_path / "empty"))
    with pytest.raises(UserError, match=r"WMDP corpus 'nope': no file"):
        load_wmdp(path=str(write_wmdp(tmp_path / "w")), forget_corpora=["nope"])
    with pytest.raises(UserError, match=r"dataset.min_len=-1 must be"):
        load_wmdp(path=str(tmp_path / "w"), min_len=-1)
    with pytest.raises(UserError, match=r"hold no document longer than dataset.min_len=5000"):
        load_wmdp(path=str(tmp_path / "w"), min_len=5000, max_len=6000)
    with pytest.raises(UserError, match=r"dataset.max_len=10 must exceed dataset.min_len=50"):
        load_wmdp(path=str(tmp_path / "w"), min_len=50, max_len=10)
    with pytest.raises(UserError, match=r"dataset.forget_corpora='bio-forget-corpus' must be a list"):
        load_wmdp(path=str(tmp_path / "w"), forget_corpora="bio-forget-corpus")


def test_rmu_on_wmdp_runs_end_to_end_from_the_model_as_it_is(tmp_path):
    from unlearning.run import run

    folder = write_wmdp(tmp_path / "wmdp")
    overrides = ["model=tiny", "dataset=wmdp", f"dataset.path={folder}", "method=rmu", "evaluator=lm_eval",
                 f"evaluator.include_path={write_task(tmp_path / 'tasks')}", "evaluator.tasks=[tiny_mc]",
                 "trainer.max_steps=2", "trainer.batch_size=2", "max_length=64"]
    record = run(compose(overrides), tmp_path / "run", overrides)
    assert record["stages"]["target"]["built"] is True and "reference" not in record["stages"]
    assert set(record["metrics"]) == {"lm_eval/tiny_mc/acc", "lm_eval/tiny_mc/acc_norm"}
    assert record["metrics"]["lm_eval/tiny_mc/acc"] in (0.0, 0.25, 0.5, 0.75, 1.0)
    import torch

    from unlearning.data.wmdp import load_wmdp
    from unlearning.models import TinyLlama, load_folder

    target, _ = load_folder(record["stages"]["target"]["path"])
    base, _ = TinyLlama().load(load_wmdp(path=str(folder)).corpus)
    assert all(torch.equal(a, b) for a, b in zip(target.state_dict().values(), base.state_dict().values()))  # no fine-tune


def write_task(folder: Path) -> Path:
    from test_lm_eval import write_task as write

    return write(folder)


def test_the_wmdp_rmu_preset_is_wmdps_setting():
    cfg = compose(["experiment=wmdp_rmu"])
    assert cfg.dataset.forget_corpora == ["bio-forget-corpus", "cyber-forget-corpus"]
    assert list(cfg.dataset.retain_corpora) == ["wikitext"]
    assert (cfg.method.layer, list(cfg.method.update_layers), cfg.method.steering_coeff, cfg.method.retain_weight) == \
        (7, [5, 6, 7], 6.5, 1200)
    assert (cfg.trainer.lr, cfg.trainer.batch_size, cfg.trainer.max_steps, cfg.seed) == (5e-5, 4, 150, 42)
    assert list(cfg.evaluator.tasks) == ["wmdp_bio", "wmdp_cyber", "mmlu"] and cfg.model.path == "HuggingFaceH4/zephyr-7b-beta"
