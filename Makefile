# lightsr developer entry points. Two are the README contract: `make demo` and `make test`.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-test

.PHONY: demo test lint venv clean

$(BIN)/python:
	@echo "Creating the virtual environment $(VENV) with $(PYTHON)..."
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

venv: $(BIN)/python
	@echo "Installing lightsr and its dependencies (torch, OpenCV, ONNX Runtime) into $(VENV);"
	@echo "the first time this downloads about 1 GB and takes a few minutes..."
	$(BIN)/pip install -q --progress-bar on -e .

$(STAMP): $(BIN)/python pyproject.toml
	@echo "Installing lightsr with its test extras into $(VENV) (a few minutes the first time)..."
	$(BIN)/pip install -q --progress-bar on -e ".[test]"
	touch $(STAMP)

demo: venv
	$(BIN)/lightsr demo --out demo

lint: $(STAMP)
	$(BIN)/ruff check src tests

test: $(STAMP)
	@# The browser test of `lightsr serve` drives Debian's Chromium (Playwright brings no browser).
	command -v chromium >/dev/null || (apt-get update -q && apt-get install -y -q chromium)
	$(BIN)/ruff check src tests
	@echo "Running the test suite: up to 20 minutes on 2 CPU cores; a dot per test, % at line ends."
	$(BIN)/python -m pytest --durations=10

clean:
	rm -rf $(VENV) demo build *.egg-info src/*.egg-info
