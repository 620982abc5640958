# One command installs and runs the tests (`make test`); one installs and runs the demo job (`make demo`).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: install lint test test-fast demo bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[test]"
	touch $@

install: $(VENV)/.installed

# the linters: ruff over the code and the tests, mypy over the two library packages
lint: install
	$(VENV)/bin/ruff check gmm_stream pipeline flows benchmarks tests
	$(VENV)/bin/mypy

# what CI runs (.ci/run): the linters, then every test
test: lint
	$(PY) -m pytest -q

# while developing: the tests not marked slow
test-fast: install
	$(PY) -m pytest -q -m "not slow"

demo: install
	$(VENV)/bin/gmm-stream demo

# the EM benchmark, with its optional peer (mlpack, the "bench" extra)
bench: install
	$(PY) -m pip install -q -e ".[bench]"
	$(PY) benchmarks/bench_em.py

clean:
	rm -rf $(VENV) .pytest_cache
