# The two commands of the README: `make demo` and `make test`.
# Both create .venv and install the project with its test extras first.
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
STAMP   = $(VENV)/.installed

.PHONY: demo test test-fast lint bench docs clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[test]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m celery_persistent.demo

test: $(STAMP)
	$(BIN)/ruff check celery_persistent tests bench
	$(BIN)/mypy
	$(BIN)/python -m pytest -q

# Unit and Lua tests only: no worker subprocess, no Flower (a real Redis is enough).
test-fast: $(STAMP)
	$(BIN)/ruff check celery_persistent tests bench
	$(BIN)/python -m pytest -q --hypothesis-profile=fast tests/unit tests/lua

bench: $(STAMP)
	$(BIN)/pip install --quiet -e ".[test,bench]"
	$(BIN)/python -m bench

docs: $(STAMP)
	$(BIN)/python -m mkdocs build --strict

lint: $(STAMP)
	$(BIN)/ruff check celery_persistent tests bench
	$(BIN)/mypy

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
