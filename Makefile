# Two commands: `make quickstart` runs the whole loop on CPU, `make test` runs the tests.
# Both create .venv and install the project on first use.
VENV ?= .venv
PY := $(VENV)/bin/python
# CPU machines: torch 2.13.0 (a CUDA build where pip picks one). Override e.g. TORCH_SPEC="torch==2.13.0 --index-url ...".
TORCH_SPEC ?= torch==2.13.0
MODEL_DIR := models/SmolLM2-135M-Instruct

.PHONY: install quickstart test test-lowest lint
install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH_SPEC)
	$(PY) -m pip install -q -e ".[dev]"
	touch $@

$(MODEL_DIR)/config.json: | $(VENV)/.installed
	$(PY) scripts/fetch_quickstart_model.py --out $(MODEL_DIR)

# The quickstart reads only local files: HF_HUB_OFFLINE keeps libraries from trying the hub.
quickstart: $(VENV)/.installed $(MODEL_DIR)/config.json
	HF_HUB_OFFLINE=1 $(PY) -m bonito_adapt run recipes/quickstart.yaml

test: $(VENV)/.installed $(MODEL_DIR)/config.json
	$(PY) -m pytest

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check bonito_adapt tests scripts

# The same package at the lowest versions pyproject.toml allows (constraints/lowest.txt): the train and
# evaluate tests, which touch those libraries' internals. CI runs it after `make test`.
LOWEST_VENV ?= .venv-lowest
test-lowest: $(MODEL_DIR)/config.json
	python3 -m venv $(LOWEST_VENV)
	$(LOWEST_VENV)/bin/python -m pip install -q --upgrade pip
	$(LOWEST_VENV)/bin/python -m pip install -q $(TORCH_SPEC)
	$(LOWEST_VENV)/bin/python -m pip install -q -e ".[dev]" -c constraints/lowest.txt
	$(LOWEST_VENV)/bin/python -m pytest tests/train tests/evaluate
