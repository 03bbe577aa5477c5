# The two commands of the README: `make book` and `make test`. Both install what they need first.
PYTHON ?= python3

.PHONY: setup book test notebooks benchmarks

setup:  ## install the Python environment (requirements.txt, lib editable) and the browser test's assets
	$(PYTHON) -m pip install --quiet -r requirements.txt
	@if command -v npm >/dev/null 2>&1; then npm ci --silent --no-audit --no-fund --prefix tests/browser; \
	else echo "npm not found: the browser test will be skipped (install Node.js to run it)"; fi

book: setup  ## build the HTML book into _build/html, warnings as errors
	jupyter-book build -W --keep-going .

test: setup  ## every test: lib against torch, strict nbval over every notebook, book conventions, browser
	$(PYTHON) -m pytest

notebooks:  ## re-execute every notebook and store its outputs (after changing lib or a lesson)
	$(PYTHON) tools/execute_notebooks.py

benchmarks:  ## print the benchmark tables
	$(PYTHON) benchmarks/notebook_times.py
	$(PYTHON) benchmarks/batchnorm_speed.py
