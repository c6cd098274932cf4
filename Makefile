# lightsr developer entry points. Two are the README contract: `make demo` and `make test`.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-test

.PHONY: demo test lint venv clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

venv: $(BIN)/python
	$(BIN)/pip install -q -e .

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/pip install -q -e ".[test]"
	touch $(STAMP)

demo: venv
	$(BIN)/lightsr demo --out demo

lint: $(STAMP)
	$(BIN)/ruff check src tests

test: $(STAMP)
	@# The browser test of `lightsr serve` drives Debian's Chromium (Playwright brings no browser).
	command -v chromium >/dev/null || (apt-get update -q && apt-get install -y -q chromium)
	$(BIN)/ruff check src tests
	$(BIN)/python -m pytest

clean:
	rm -rf $(VENV) demo build *.egg-info src/*.egg-info
