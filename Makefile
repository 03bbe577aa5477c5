# The README's two commands: `make book` and `make test`. Both first install the locked
# environment (requirements.txt) into .venv and MathJax (package-lock.json) into node_modules,
# once, and again whenever a lock changes.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
UV_VERSION := 0.13.9

.PHONY: setup book test notebooks benchmarks lock

setup: $(VENV)/.installed node_modules/.installed  ## the locked environment in .venv, lib editable, the book's MathJax

# MathJax, pinned by package-lock.json: the book serves it from its own files (_ext/offline_mathjax.py)
# so that the HTML book works with no network.
node_modules/.installed: package.json package-lock.json
	@command -v npm >/dev/null 2>&1 || { echo "npm not found: the book serves MathJax from its own files," \
		"which npm installs from package-lock.json. Install Node.js." >&2; exit 1; }
	npm ci --silent --no-audit --no-fund
	touch $@

$(VENV)/.installed: requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	touch $@

book: setup  ## build the HTML book into _build/html, warnings as errors
	$(VENV)/bin/jupyter-book build -W --keep-going .

test: setup  ## every test: lib against torch, strict nbval over every notebook (and one per chapter under another CPU's choices), book conventions, browser
	$(PY) -m pytest -n 2 --dist loadfile  # two workers, one per core; a notebook's cells stay together on one

notebooks: setup  ## re-execute every notebook and store its outputs (after changing lib or a lesson)
	$(PY) tools/execute_notebooks.py

benchmarks: setup  ## print the benchmark tables
	for script in benchmarks/*.py; do echo "== $$script"; $(PY) $$script; done

lock:  ## regenerate requirements.txt from requirements.in (every distribution pinned, for Python 3.11 on x86-64 Linux)
	$(PYTHON) -m venv .lock-tools
	.lock-tools/bin/python -m pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)
	.lock-tools/bin/uv pip compile requirements.in --output-file requirements.txt --python-version 3.11 \
		--python-platform x86_64-manylinux_2_28 --annotation-style line
	@echo "requirements.txt regenerated: run 'make test', then commit both files"
