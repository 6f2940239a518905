"""MUSE-News: loader, chunking, subset selection, evaluator, bad input, and a whole tiny run.

Real parts: a small MUSE-format folder written to a temp dir (Faker text, MUSE's own file
layout), the real BPE tokenizers (the tiny model's, trained on the data, and SmolLM2's on real
MUSE articles), a real ~1M-parameter Llama, real Hydra composition and the real entrypoint.
Nothing is mocked.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from faker import Faker
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from unlearning.data.base import IGNORE, Example, encode
from unlearning.data.muse import SEP, backing_articles, chunk_text, load_muse_news, select_forget
from unlearning.errors import UserError
from unlearning.eval import engine
from unlearning.eval.muse import KNOWMEM_STOPS, MuseEvaluator, drop_last, icl_prompt, mia_item, verbmem_item
from unlearning.models import TinyLlama

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("UNLEARNING_DATA_DIR") or ROOT.parent / "shared" / "data")


def write_muse(folder: Path, n_articles: int = 8) -> dict:
    fake = Faker("en_GB")
    Faker.seed(4)
    arts = [SEP.join(fake.paragraph(nb_sentences=6) for _ in range(3)) for _ in range(n_articles)]
    files = {
        "raw/forget.json": arts,
        # MUSE probes are cut across consecutive articles joined by a blank line.
        "privleak/forget.json": [arts[i][40:] + SEP + arts[i + 1] for i in (0, 3, 5)],
        "privleak/holdout.json": [SEP.join(fake.paragraph(nb_sentences=6) for _ in range(4)) for _ in range(3)],
        "privleak/retain.json": [SEP.join(fake.paragraph(nb_sentences=6) for _ in range(3)) for _ in range(3)],
        "verbmem/forget.json": [{"prompt": arts[i][:250], "gt": arts[i][250:400]} for i in (2, 7)],
        "knowmem/forget_qa.json": [{"question": f"Who is {fake.name()}?", "answer": fake.job()} for _ in range(3)],
        "knowmem/retain_qa.json": [{"question": f"Where is {fake.city()}?", "answer": fake.country()} for _ in range(3)],
        "knowmem/forget_qa_icl.json": [{"question": f"Who is {fake.name()}?", "answer": fake.job()} for _ in range(2)],
        "knowmem/retain_qa_icl.json": [{"question": f"Where is {fake.city()}?", "answer": fake.country()} for _ in range(2)],
    }
    for rel, rows in files.items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_text(json.dumps(rows))
    return files


@pytest.fixture(scope="module")
def muse_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("muse_news")
    write_muse(folder)
    return folder


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, muse_dir):
    data = load_muse_news(path=str(muse_dir))
    spec = TinyLlama(cache_dir=str(tmp_path_factory.mktemp("cache")), vocab_size=512, hidden_size=32,
                     num_layers=1, num_heads=2, intermediate_size=64)
    return spec.load(data.corpus)


def test_loader_gives_raw_articles_and_eval_material(muse_dir):
    d = load_muse_news(path=str(muse_dir))
    assert len(d.forget) == 8 and len(d.retain) == 3
    assert all(ex.messages is None for ex in d.forget + d.retain)
    assert d.target_train == d.forget + d.retain and d.reference_train == d.retain
    assert len(d.extra["verbmem"]) == 2 and len(d.extra["privleak_forget"]) == 3
    assert len(d.extra["knowmem_forget_icl"]) == 2 and d.extra["retain_source"] == "privleak_retain"
    assert d.chunker is not None and d.forget[0].answer in d.corpus


def test_chunking_loses_and_duplicates_no_token(muse_dir, tiny):
    _, tok = tiny
    d = load_muse_news(path=str(muse_dir))
    c = d.for_tokenizer(tok, 16)
    assert c.extra["chunk_length"] == 16 and c.for_tokenizer(tok, 16) is c
    for art in d.forget + d.retain:
        pieces = [ex for ex in c.target_train if ex.id.startswith(art.id + "/")]
        assert "".join(p.answer for p in pieces) == art.answer
        ids = [i for p in pieces for i in tok(p.answer, add_special_tokens=False)["input_ids"]]
        assert ids == tok(art.answer, add_special_tokens=False)["input_ids"]
        assert all(len(tok(p.answer, add_special_tokens=False)["input_ids"]) <= 16 for p in pieces)
        # the run's encode keeps every chunk token (EOS is what a full chunk drops)
        assert all(encode(tok, p, 16)["input_ids"][: len(tok(p.answer)["input_ids"])] ==
                   tok(p.answer, add_special_tokens=False)["input_ids"] for p in pieces)
    assert len(c.forget) > len(d.forget)


def test_chunking_with_smollm2_tokenizer_on_real_articles():
    from transformers import AutoTokenizer

    from unlearning.models import SmolLM2

    gguf = SmolLM2().gguf_path()  # the tokenizer only: no model conversion, no heavy run
    tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    articles = json.loads((SHARED / "muse_news" / "raw" / "forget.json").read_text())[:25]
    n_chunks = 0
    for art in articles:
        pieces = chunk_text(tok, art, 64)
        n_chunks += len(pieces)
        assert "".join(pieces) == art
        ids = [i for p in pieces for i in tok(p, add_special_tokens=False)["input_ids"]]
        assert ids == tok(art, add_special_tokens=False)["input_ids"]
        assert max(len(tok(p, add_special_tokens=False)["input_ids"]) for p in pieces) <= 64
    assert n_chunks > len(articles)


def test_subset_keeps_the_articles_behind_the_probes(muse_dir):
    files = json.loads((muse_dir / "raw" / "forget.json").read_text())
    probe = json.loads((muse_dir / "privleak" / "forget.json").read_text())[1]
    assert backing_articles(probe, files) == [3, 4]
    # [3, 4] and [0, 1] fit in 5, [6, 7] would not; the fifth is the first unused article, 2
    assert select_forget(files, [[3, 4], [0, 1], [6, 7]], 5) == [0, 1, 2, 3, 4]
    d = load_muse_news(path=str(muse_dir), num_forget=4, num_retain=1)
    kept = {ex.meta["article"] for ex in d.forget}
    assert len(kept) == 4 and len(d.retain) == 1
    # each kept probe's articles are all trained on; holdout is cut to the same size
    for p in d.extra["privleak_forget"]:
        assert set(backing_articles(p["text"], files)) <= kept
    for v in d.extra["verbmem"]:
        assert set(backing_articles(v["prompt"] + v["gt"], files)) <= kept
    assert len(d.extra["privleak_holdout"]) == len(d.extra["privleak_forget"]) >= 1
    assert len(d.extra["verbmem"]) >= 1


def test_icl_prompt_format():
    icl = [{"question": "Q1?", "answer": "A1"}, {"question": "Q2?", "answer": "A2"}]
    # OpenUnlearning's prompt ends "Answer: " (with the space); its stop strings cut the answer
    assert icl_prompt(icl, "Q3?") == "Question: Q1?\nAnswer: A1\n\nQuestion: Q2?\nAnswer: A2\n\nQuestion: Q3?\nAnswer: "
    assert KNOWMEM_STOPS == ["\n\n", "\nQuestion", "Question:"]


def with_bos(tok):
    """The same tokenizer adding a BOS in front, as Llama's does (the tiny one adds none)."""
    import copy

    from tokenizers.processors import TemplateProcessing

    out = copy.deepcopy(tok)
    out.add_special_tokens({"bos_token": "<s>"})
    bos = out.convert_tokens_to_ids("<s>")
    out.backend_tokenizer.post_processor = TemplateProcessing(single="<s> $A", special_tokens=[("<s>", bos)])
    return out, bos


def test_default_scoring_scores_openunlearnings_token_sets(tiny):
    """Hand-made strings: which tokens the default MUSE scoring labels, with and without a BOS."""
    _, tok = tiny
    words = tok("the cat sat on", add_special_tokens=False).input_ids  # ids of the text alone
    bos_tok, bos = with_bos(tok)
    # MIA: no BOS -> nothing conditions the first token, so it is not scored; with a BOS every text token is.
    assert mia_item(tok, "the cat sat on", 2048) == {"input_ids": words, "labels": [IGNORE] + words[1:]}
    assert mia_item(bos_tok, "the cat sat on", 2048) == {"input_ids": [bos] + words, "labels": [IGNORE] + words}
    # at most max_length text tokens (the BOS comes on top)
    assert mia_item(bos_tok, "the cat sat on", 2)["input_ids"] == [bos] + words[:2]
    # Min-K / Min-K++ leave out the last labelled position
    ts = engine.TokenScores(np.array([-1.0, -2.0, -3.0]), np.array([1, 0, 1]), np.zeros(3), np.ones(3))
    assert drop_last(ts).logp.tolist() == [-1.0, -2.0] and drop_last(ts).hit.tolist() == [1, 0]
    # VerbMem: prompt + " " + gt; the ground truth's tokens are labelled, the prompt's are the generation prefix
    prompt_ids = tok("the cat", add_special_tokens=False).input_ids
    gt_ids = tok(" sat on", add_special_tokens=False).input_ids
    item = verbmem_item(bos_tok, "the cat", "sat on", 2048)
    assert item["prefix_ids"] == [bos] + prompt_ids and item["input_ids"] == [bos] + prompt_ids + gt_ids
    assert item["labels"] == [IGNORE] * (1 + len(prompt_ids)) + gt_ids and item["truth"] == "sat on"
    # verbmem_prompt_tokens=1 keeps the prompt's last token only
    cut = verbmem_item(tok, "the cat", "sat on", 2048, keep=1)
    assert cut["prefix_ids"] == prompt_ids[-1:] and cut["labels"] == [IGNORE] + gt_ids


def test_evaluator_on_tiny_model(muse_dir, tiny):
    model, tok = tiny
    data = load_muse_news(path=str(muse_dir))
    ev = MuseEvaluator(max_length=256, verbmem_max_new_tokens=6, knowmem_max_new_tokens=4, max_items=3)
    out = ev.evaluate(model, tok, data, None)
    agg = out["aggregates"]
    for key in ("forget_verbmem_ROUGE", "forget_knowmem_ROUGE", "retain_knowmem_ROUGE", "exact_memorization",
                "extraction_strength", "mia_loss", "mia_zlib", "mia_min_k", "mia_min_k_plus_plus"):
        assert 0.0 <= agg[key] <= 1.0, key
    assert agg["privleak"] is None  # no reference and no configured AUC
    assert len(out["per_item"]["privleak_forget"]) == 3 and len(out["per_item"]["knowmem_retain"]) == 3
    assert {"loss", "zlib", "min_k", "min_k_plus_plus"} <= set(out["per_item"]["privleak_holdout"][0])
    # the AUC is the per-item scores' AUC, counted by hand (Mann-Whitney): the share of (forget, holdout) pairs whose
    # forget score is the lower, i.e. more member-like (ties count half)
    f = [r["min_k"] for r in out["per_item"]["privleak_forget"]]
    h = [r["min_k"] for r in out["per_item"]["privleak_holdout"]]
    pairs = [(a < b) + 0.5 * (a == b) for a in f for b in h]
    assert agg["mia_min_k"] == pytest.approx(sum(pairs) / len(pairs))
    ref = {"aggregates": {"mia_min_k": 0.3}}
    with_ref = MuseEvaluator(max_length=256, verbmem_max_new_tokens=6, knowmem_max_new_tokens=4, max_items=3,
                             privleak_reference_auc=0.9).evaluate(model, tok, data, None, reference=ref)["aggregates"]
    assert with_ref["privleak_reference_auc"] == 0.3  # the reference model's result wins over the config value
    assert with_ref["privleak"] == pytest.approx(((1 - with_ref["mia_min_k"]) - 0.7) / 0.7 * 100)


def test_relearn_evaluates_only_what_the_held_out_chunks_do_not_teach(muse_dir):
    files = json.loads((muse_dir / "raw" / "forget.json").read_text())
    data = load_muse_news(path=str(muse_dir))
    ev, answer = MuseEvaluator(), data.extra["knowmem_forget"][0]["answer"]
    # a chunk of article 2 (150 characters of VerbMem probe 0's prompt), one of article 3 (PrivLeak probe 1's
    # start) and KnowMem answer 0 in capitals
    held = [Example(answer=files[2][100:400]), Example(answer=files[3][40:140] + " " + answer.upper() + ".")]
    rest = ev.without(data, held).extra
    assert [v["id"] for v in rest["verbmem"]] == ["1"]
    assert [p["id"] for p in rest["privleak_forget"]] == ["0", "2"]
    assert [q["id"] for q in rest["knowmem_forget"]] == ["1", "2"]
    assert rest["privleak_holdout"] == data.extra["privleak_holdout"] and rest["knowmem_retain"] == data.extra["knowmem_retain"]
    # fewer than 64 shared characters, or the answer inside a longer word, teaches nothing
    kept = ev.without(data, [Example(answer=files[7][250:300] + " x" + answer + "y")]).extra
    assert len(kept["verbmem"]) == 2 and len(kept["knowmem_forget"]) == 3


def test_relearn_attack_on_a_tiny_muse_run(tmp_path, muse_dir):
    out = tmp_path / "run"
    r = _cli(TINY_RUN + [f"dataset.path={muse_dir}", f"cache_dir={tmp_path / 'cache'}", f"hydra.run.dir={out}",
                         "attack=[relearn]", "attacks.relearn.examples=2", "attacks.relearn.steps=2"], {})
    assert r.returncode == 0, r.stderr[-3000:]
    m = json.loads((out / "results.json").read_text())["metrics"]
    assert 0 <= m["forget_verbmem_ROUGE@relearn"] <= 1 and 0 <= m["mia_min_k@relearn"] <= 1
    assert {f"{k}@relearn_recovery" for k in MuseEvaluator.forget_metrics} <= set(m)
    attacked = json.loads((out / "eval" / "muse@relearn.json").read_text())["per_item"]
    plain = json.loads((out / "eval" / "muse.json").read_text())["per_item"]
    assert len(attacked["privleak_forget"]) <= len(plain["privleak_forget"])


def test_configs_compose_and_instantiate(muse_dir):
    with initialize_config_dir(version_base="1.3", config_dir=str(ROOT / "conf")):
        cfg = compose("config", overrides=["dataset=muse_news", "evaluator=muse", f"dataset.path={muse_dir}",
                                           "dataset.num_retain=2"])
    data = instantiate(cfg.dataset, _convert_="all")
    ev = instantiate(cfg.evaluator, _convert_="all")
    assert data.name == "muse_news" and len(data.retain) == 2
    assert isinstance(ev, MuseEvaluator) and ev.mia_k == 0.4 and ev.verbmem_new == 128 and ev.knowmem_new == 32


def test_bad_input_is_one_clear_line(tmp_path, muse_dir, tiny):
    with pytest.raises(UserError, match=r"muse_news.*raw/forget.json|raw/forget.json"):
        load_muse_news(path=str(tmp_path))  # empty folder: names the missing file
    with pytest.raises(UserError, match="UNLEARNING_DATA_DIR"):
        load_muse_news(path=str(tmp_path / "missing"))
    with pytest.raises(UserError, match="num_forget"):
        load_muse_news(path=str(muse_dir), num_forget=0)
    with pytest.raises(UserError, match="retain_source"):
        load_muse_news(path=str(muse_dir), retain_source="retain2")
    with pytest.raises(UserError, match="privleak_retain"):
        load_muse_news(path=str(muse_dir), retain_source="hub_retain1")
    empty = tmp_path / "empty"
    write_muse(empty)
    (empty / "raw" / "forget.json").write_text(json.dumps(["", "  "]))
    with pytest.raises(UserError, match="empty after filtering"):
        load_muse_news(path=str(empty))
    model, tok = tiny
    with pytest.raises(UserError, match="smaller than the KnowMem forget ICL prompt"):
        MuseEvaluator(max_length=40, verbmem_max_new_tokens=4).evaluate(model, tok, load_muse_news(path=str(muse_dir)), None)


def _cli(args, env_extra, timeout=900):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", **env_extra}
    return subprocess.run([sys.executable, "-m", "unlearning", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout)


TINY_RUN = ["model=tiny", "model.vocab_size=512", "model.hidden_size=32", "model.num_layers=1", "model.num_heads=2",
            "model.intermediate_size=64", "model.finetune.epochs=1", "dataset=muse_news", "evaluator=muse",
            "max_length=64", "evaluator.max_length=256", "evaluator.verbmem_max_new_tokens=6",
            "evaluator.knowmem_max_new_tokens=4", "evaluator.max_items=3", "trainer.epochs=1", "trainer.batch_size=8",
            "save_model=false"]


def test_whole_tiny_muse_run(tmp_path, muse_dir):
    out = tmp_path / "run"
    r = _cli(TINY_RUN + [f"dataset.path={muse_dir}", f"cache_dir={tmp_path / 'cache'}", f"hydra.run.dir={out}"], {})
    assert r.returncode == 0, r.stderr[-3000:]
    rec = json.loads((out / "results.json").read_text())
    assert rec["status"] == "ok" and rec["dataset"] == "muse_news"
    m, ref, tgt = rec["metrics"], rec["baselines"]["reference"], rec["baselines"]["target"]
    assert 0 <= m["forget_verbmem_ROUGE"] <= 1 and 0 <= m["mia_min_k"] <= 1
    # PrivLeak of the unlearned model and of the target is measured against the retain reference's AUC
    assert m["privleak_reference_auc"] == ref["mia_min_k"] == tgt["privleak_reference_auc"]
    # MUSE's PrivLeak on MUSE's AUC (1 - ours): (AUC_unl - AUC_ref) / AUC_ref * 100
    assert m["privleak"] == pytest.approx(((1 - m["mia_min_k"]) - (1 - ref["mia_min_k"])) / (1 - ref["mia_min_k"]) * 100)
    stage = json.loads((Path(rec["stages"]["target"]["path"]) / "stage.json").read_text())
    assert stage["n_examples"] > 8 + 3  # trained on chunks, not whole articles
    per_item = json.loads((out / "eval" / "muse.json").read_text())["per_item"]
    assert len(per_item["verbmem_forget"]) == 2


def test_cli_bad_input_exits_2_with_one_line(tmp_path, muse_dir):
    r = _cli(TINY_RUN + [f"dataset.path={tmp_path / 'nowhere'}", f"cache_dir={tmp_path / 'cache'}",
                         f"hydra.run.dir={tmp_path / 'run'}"], {}, timeout=300)
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0 and "MUSE-News folder not found" in r.stderr


def test_relearn_counts_chunks_not_articles_and_refuses_before_fine_tuning(tmp_path, muse_dir):
    """What relearn holds out are chunks, known only once the tokenizer cuts the 8 articles: the count is checked
    then, before any stage is built (more chunks than articles, so the validation phase cannot refuse on articles)."""
    r = _cli(TINY_RUN + [f"dataset.path={muse_dir}", f"cache_dir={tmp_path / 'cache'}", f"hydra.run.dir={tmp_path / 'run'}",
                         "attack=[relearn]", "attacks.relearn.examples=500"], {}, timeout=300)
    assert r.returncode == 2, r.stderr[-2000:]
    line = r.stderr.strip().splitlines()[-1]  # above it only the tiny model's build progress bars
    assert "Traceback" not in r.stderr and "attacks.relearn.examples=500 leaves nothing to evaluate" in line, line
    chunks = int(line.split("the forget set has ")[1].split(" ")[0])
    assert 8 < chunks < 500 and "(chunks)" in line
    assert not (tmp_path / "cache" / "stages").exists()  # refused before the target was fine-tuned


def test_muse_books_loads_the_same_layout_from_its_own_folder(tmp_path):
    """MUSE-Books is not on this machine: the test writes MUSE's layout under muse_books/ (as the hub's
    muse-bench/MUSE-Books has it) and loads it through the dataset config."""
    from unlearning.data.muse import load_muse_books

    write_muse(tmp_path / "muse_books")
    data = load_muse_books(data_dir=str(tmp_path))
    assert data.name == "muse_books" and len(data.corpus) > 0
    assert len(data.extra["privleak_forget"]) == 3 and data.extra["verbmem"]
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(config_name="config", overrides=["dataset=muse_books", "evaluator=muse", f"data_dir={tmp_path}"])
    assert instantiate(cfg.dataset).name == "muse_books"
    with pytest.raises(UserError, match=r"MUSE-Books folder not found: .*muse_books .*muse-bench/MUSE-Books"):
        load_muse_books(data_dir=str(tmp_path / "elsewhere"))
