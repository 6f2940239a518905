"""OpenUnlearning-compatible scoring (`evaluator.compat=openunlearning`): the prompts, tokens, masks and batches
of OpenUnlearning's evaluator (locuslab/open-unlearning, commit d3d7cf9: src/data/utils.py
`preprocess_chat_instance`, src/data/collators.py, src/evals/metrics/utils.py), so its published numbers can be
reproduced (held to its own output on SmolLM2 by tests/test_parity.py).

The differences from this project's own scoring, all OpenUnlearning's choices:
- the system turn `You are a helpful assistant.` (its model configs' `template_args.system_prompt`);
- the scored sequence is the chat template applied to the whole conversation (which closes the answer with the
  template's end-of-turn text) plus one more EOS; no truncation;
- log p from torch's cross_entropy over the transposed logits (its `evaluate_probability`), numerically a little off the
  exact value in fp32 on CPU (up to ~1e-4 nats per item), which the default scoring is not;
- attention mask `input_ids != pad_token_id` in every pass: where pad = eos (SmolLM2's `<|im_end|>`) this also
  hides every in-sequence end-of-turn token, which is the whole reason its numbers differ from a mask built from
  the sequence lengths (0.04-0.16 nats per TOFU forget item on SmolLM2);
- batches of 32 in data order; generation decodes with `clean_up_tokenization_spaces=True`, and ROUGE's ground
  truth is the decoded conversation with the decoded prompt removed.
"""

from __future__ import annotations

from unlearning.data.base import IGNORE, chat_template_ids

NAME = "openunlearning"
COMPAT = (None, NAME)
SYSTEM_PROMPT = "You are a helpful assistant."
BATCH_SIZE = 32
MASK = "not_pad"


def check(value, where: str):
    """`compat` is null (this project's scoring) or `openunlearning`; anything else is one line."""
    if value not in COMPAT:
        from unlearning.errors import UserError

        raise UserError(f"{where}={value!r} is unknown; use null (this project's scoring) or {NAME} "
                        "(OpenUnlearning's prompts, tokens, masks and batches)")
    return value


def check_unguided(compat, generation) -> None:
    """OpenUnlearning decodes without guidance: compat mode with `generation.guidance` / `eval_scales` is refused."""
    if not compat or generation is None:
        return
    from unlearning.generation import guidance_of

    if guidance_of(generation) is not None or (generation.get("eval_scales") or []):
        from unlearning.errors import UserError

        raise UserError(f"evaluator.compat={compat} reproduces OpenUnlearning's scoring, which has no guided decoding; "
                        "drop generation.guidance.scale / generation.eval_scales, or evaluator.compat")


def conversation(messages: list[dict], system: str = SYSTEM_PROMPT) -> list[dict]:
    return [{"role": "system", "content": system}] + [m for m in messages if m["role"] != "system"]


def _ids(out) -> list[int]:
    return list(out["input_ids"] if hasattr(out, "keys") else out)  # transformers >= 5 returns a BatchEncoding


def prompt_ids(tok, messages: list[dict], system: str = SYSTEM_PROMPT) -> list[int]:
    return chat_template_ids(tok, conversation(messages, system), add_generation_prompt=True)


def encode(tok, messages: list[dict], answer: str, system: str = SYSTEM_PROMPT) -> dict:
    """OpenUnlearning's `preprocess_chat_instance`: the templated conversation + EOS, labels after the prompt."""
    chat = conversation(messages, system) + [{"role": "assistant", "content": answer}]
    ids = chat_template_ids(tok, chat, add_generation_prompt=False)
    if ids[-1] != tok.eos_token_id:
        ids.append(tok.eos_token_id)
    n = len(prompt_ids(tok, messages, system))
    return {"input_ids": ids, "labels": [IGNORE] * n + ids[n:]}


def ground_truth(tok, messages: list[dict], answer: str, system: str = SYSTEM_PROMPT) -> str:
    """ROUGE's reference text as OpenUnlearning's `eval_text_similarity` rebuilds it from the token ids."""
    from unlearning.eval.engine import decode

    item = encode(tok, messages, answer, system)
    full = decode(tok, item["input_ids"], clean_up=True)
    prompt = decode(tok, prompt_ids(tok, messages, system), clean_up=True)
    return full.replace(prompt, "").strip()


# MUSE (configs/eval/muse_metrics/*, src/data/utils.py `preprocess_pretraining_instance`)
MUSE_MAX_LENGTH = 2048
MUSE_KNOWMEM_STOPS = ["\n\n", "\nQuestion", "Question:"]
MUSE_BATCH = {"knowmem": 16, "verbmem": 8, "mia": 8}


def completion(tok, prefix: str, text: str, insert_space: bool = False, max_length: int = MUSE_MAX_LENGTH) -> dict:
    """OpenUnlearning's raw-text item: prefix and prefix + text tokenized with the tokenizer's special tokens, the
    text cut at `max_length` tokens, labels on the text (never on index 0)."""
    full = _ids(tok(prefix + (" " if insert_space else "") + text, add_special_tokens=True))
    prefix_ids = _ids(tok(prefix, add_special_tokens=True))
    full = full[: len(prefix_ids) + max_length]
    start = max(len(prefix_ids), 1)
    return {"prefix_ids": prefix_ids, "input_ids": full, "labels": [IGNORE] * start + full[start:]}


def completion_truth(tok, item: dict, clean_up: bool | None = True) -> str:
    """VerbMem's reference text as `eval_text_similarity` rebuilds it: the decoded sequence minus the decoded prefix
    (`clean_up` as the generation it is compared with is decoded: OU's clean-up in compat mode)."""
    from unlearning.eval.engine import decode

    return decode(tok, item["input_ids"], clean_up).replace(decode(tok, item["prefix_ids"], clean_up), "").strip()


def icl_messages(icl: list[dict], question: str) -> list[dict]:
    """KnowMem with a chat template: the in-context pairs as earlier user / assistant turns, then the question."""
    turns = [m for q in icl for m in ({"role": "user", "content": q["question"]},
                                      {"role": "assistant", "content": q["answer"]})]
    return turns + [{"role": "user", "content": question}]
