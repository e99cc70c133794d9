# The two commands of the README: `make demo` and `make test`.
# Both create .venv and install the project with its test extras first.
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
STAMP   = $(VENV)/.installed

.PHONY: demo test test-fast lint bench bench-smoke docs chaos chaos-smoke clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[test]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m celery_persistent.demo

test: $(STAMP)
	$(BIN)/ruff check celery_persistent tests bench chaos
	$(BIN)/mypy
	$(BIN)/python -m pytest -q
	$(BIN)/python -m chaos --smoke
	$(MAKE) bench-smoke

# Unit and Lua tests only: no worker subprocess, no Flower (a real Redis is enough).
test-fast: $(STAMP)
	$(BIN)/ruff check celery_persistent tests bench chaos
	$(BIN)/python -m pytest -q --hypothesis-profile=fast tests/unit tests/lua

bench: $(STAMP)
	$(BIN)/pip install --quiet -e ".[test,bench]"
	$(BIN)/python -m bench

# The benchmark's short smoke, for CI: every scenario but the many-groups one (its own, long, run), quick
# sizes, results in a temporary directory; it fails only if a scenario cannot run, never on a missed target.
bench-smoke: $(STAMP)
	$(BIN)/pip install --quiet -e ".[test,bench]"
	$(BIN)/python -m bench --quick --only overhead,coalescing,large_message,registry,rolling --out "$$(mktemp -d)"

docs: $(STAMP)
	$(BIN)/python -m mkdocs build --strict

# The chaos suite (chaos/): real faults against real workers, on servers of its own
# (never the Redis/RabbitMQ at 6379/5672). `chaos` runs every scenario 5 times and
# writes docs/reliability.md; `chaos-smoke` runs the short subset once, for CI, and
# fails if it misses its targets. Needs root for the network-namespace scenario.
chaos: $(STAMP)
	$(BIN)/python -m chaos

chaos-smoke: $(STAMP)
	$(BIN)/python -m chaos --smoke

lint: $(STAMP)
	$(BIN)/ruff check celery_persistent tests bench chaos
	$(BIN)/mypy

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
