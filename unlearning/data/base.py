"""The data interface every dataset, method and evaluator shares.

An `Example` is either a chat QA example (`messages` before the answer; loss on the
answer tokens only) or a raw text chunk (`messages=None`; loss on every token).
`encode` turns one into `input_ids`/`labels` (-100 where no loss); `collate` pads
any number of such fields generically, so a method can attach its own per-example
fields (reference log-probs, chosen/rejected ids) without touching this module.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Callable

import torch

IGNORE = -100


@dataclass
class Example:
    answer: str                                  # assistant answer, or the raw text
    messages: list[dict] | None = None           # chat turns before the answer; None = raw text
    id: str = ""
    meta: dict = field(default_factory=dict)     # dataset fields: paraphrased/perturbed answers, pairs, PII...

    @property
    def is_chat(self) -> bool:
        return self.messages is not None


def chat(question: str, answer: str, id: str = "", system: str | None = None, **meta) -> Example:
    messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": question}]
    return Example(answer=answer, messages=messages, id=id, meta=meta)


# Llama-3.x templates write "Today Date: <date>" into the system turn, today's unless `date_string` is given: pinned,
# so that a config scores the same on any day (OpenUnlearning's Llama-3.2 preset pins this value). `model.date_string`.
DATE_STRING = "10 Apr 2025"


def chat_template_ids(tokenizer, messages: list[dict], add_generation_prompt: bool) -> list[int]:
    """The chat template's token ids for `messages`, with the tokenizer's pinned date (`model.date_string`)."""
    out = tokenizer.apply_chat_template(messages, add_generation_prompt=add_generation_prompt, tokenize=True,
                                        date_string=getattr(tokenizer, "date_string", DATE_STRING))
    if isinstance(out, dict) or hasattr(out, "keys"):  # transformers >= 5 returns a BatchEncoding
        out = out["input_ids"]
    return list(out)


def prompt_ids(tokenizer, messages: list[dict]) -> list[int]:
    """Token ids of a chat prompt ending with the assistant header (generation prompt); a last assistant message is
    a prefill: its text follows the header, and the answer (or the generation) continues it."""
    if messages and messages[-1]["role"] == "assistant":
        prefill = tokenizer(messages[-1]["content"], add_special_tokens=False)["input_ids"]
        return chat_template_ids(tokenizer, messages[:-1], add_generation_prompt=True) + list(prefill)
    return chat_template_ids(tokenizer, messages, add_generation_prompt=True)


def encode(tokenizer, ex: Example, max_length: int = 512, answer: str | None = None,
           messages: list[dict] | None = None) -> dict:
    """input_ids + labels for one example; `answer`/`messages` override the example's own.

    Chat: prompt via the chat template, then answer tokens + EOS, loss on answer + EOS.
    Raw text: text + EOS, loss on every token that has a left context (all but the first).
    Truncation keeps the prompt and cuts the answer (a raw chunk is cut at the end).
    """
    answer = ex.answer if answer is None else answer
    messages = ex.messages if messages is None else messages
    ans = tokenizer(answer, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    if messages is None:
        ans = ans[:max_length]
        return {"input_ids": ans, "labels": [IGNORE] + ans[1:]}
    prompt = prompt_ids(tokenizer, messages)
    ans = ans[: max(max_length - len(prompt), 1)]
    return {"input_ids": prompt + ans, "labels": [IGNORE] * len(prompt) + ans}


def _pad_value(key: str, pad_id: int):
    if key.endswith("labels"):
        return IGNORE
    if key.endswith("attention_mask"):
        return 0
    return pad_id


def collate(items: list[dict], pad_id: int, padding_side: str = "right", widths: dict | None = None) -> dict:
    """Pad every `*input_ids` / `*labels` field (to `widths[key]` where given, else the longest); add
    `*attention_mask` for each ids field.

    Numbers become tensors; anything else (Example objects, strings) stays a list.
    """
    out: dict = {}
    for key in items[0]:
        values = [it[key] for it in items]
        if isinstance(values[0], (list, tuple)) and (key.endswith("input_ids") or key.endswith("labels")):
            width = max(len(v) for v in values) if widths is None else widths[key]
            pv = _pad_value(key, pad_id)
            rows = []
            for v in values:
                pad = [pv] * (width - len(v))
                rows.append(list(v) + pad if padding_side == "right" else pad + list(v))
            out[key] = torch.tensor(rows, dtype=torch.long)
            if key.endswith("input_ids"):
                mask_key = key[: -len("input_ids")] + "attention_mask"
                masks = [[1] * len(v) + [0] * (width - len(v)) if padding_side == "right"
                         else [0] * (width - len(v)) + [1] * len(v) for v in values]
                out[mask_key] = torch.tensor(masks, dtype=torch.long)
        elif isinstance(values[0], (int, float)) and not isinstance(values[0], bool):
            out[key] = torch.tensor(values, dtype=torch.float32 if isinstance(values[0], float) else torch.long)
        elif isinstance(values[0], torch.Tensor):
            out[key] = torch.stack(values)
        else:
            out[key] = values
    return out


@dataclass
class UnlearningData:
    """What a dataset hands to the run: the sets to unlearn/keep and to build stages from."""

    name: str
    forget: list[Example]
    retain: list[Example] | None
    target_train: list[Example]                    # fine-tune set of the target (forget + retain)
    reference_train: list[Example] | None = None   # fine-tune set of the retain reference
    corpus: list[str] = field(default_factory=list)  # texts a tiny tokenizer is trained on
    extra: dict = field(default_factory=dict)      # dataset-specific material for its evaluator
    # Optional: (data, tokenizer, max_length) -> data, for datasets that can only cut their examples once a
    # tokenizer exists (MUSE chunks articles into max_length-token pieces). The run applies it via for_tokenizer.
    chunker: Callable | None = None
    # Optional: () -> data, work deferred past validation (model-written PII replacements: minutes of
    # generation). The run applies it via completed(), after every check has passed.
    complete: Callable | None = None

    def completed(self) -> "UnlearningData":
        """This data with its deferred work done (itself when there is none)."""
        return self if self.complete is None else self.complete()

    def for_tokenizer(self, tokenizer, max_length: int) -> "UnlearningData":
        """This data as the run should train on it with `tokenizer` (itself unless a chunker is set)."""
        return self if self.chunker is None else self.chunker(self, tokenizer, max_length)

    def fingerprint(self, examples: list[Example] | None) -> str:
        """Content hash of a set of examples (stage cache keys depend on it)."""
        from unlearning.hashing import examples_hash

        return examples_hash(examples)


def example_dict(ex: Example) -> dict:
    return asdict(ex)
