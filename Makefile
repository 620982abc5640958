# One command installs and runs the tests (`make test`); one installs and runs the demo job (`make demo`).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: install test demo bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[test]"
	touch $@

install: $(VENV)/.installed

test: install
	$(PY) -m pytest -q

demo: install
	$(VENV)/bin/gmm-stream demo

bench: install
	$(PY) benchmarks/bench_em.py

clean:
	rm -rf $(VENV) .pytest_cache
