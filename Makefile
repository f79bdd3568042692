# Two commands do all the set-up on a fresh machine (Python 3.11, no GPU):
#   make reproduce   # venv + CPU torch + nopelens, then the main job on the embedded default
#   make test        # venv + CPU torch + nopelens[dev], then tests, doctests and notebooks
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
OUT    ?= results
PROFILE ?= quick
# Torch's CPU build first: a bare `torch` requirement pulls a multi-GB CUDA build.
TORCH  ?= torch==2.13.0
STAMP  := $(VENV)/.nopelens-installed

.PHONY: install reproduce test test-slow lint docs assets bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH)"
	$(BIN)/python -m pip install --quiet -e ".[dev,docs,export,ray]"
	touch $(STAMP)

install: $(STAMP)

reproduce: install
	$(BIN)/nopelens reproduce --out $(OUT) --profile $(PROFILE)

test: install
	$(BIN)/python -m pytest -n 2 --dist loadfile -q -m "not slow" tests
	$(BIN)/python -m pytest -q --doctest-modules nopelens
	NOPELENS_SMALL=1 $(BIN)/python -m pytest -n 2 -q --nbmake notebooks

# The long simulations and fault-injection fuzzers (marked slow); CI runs a bounded sample of each.
test-slow: install
	$(BIN)/python -m pytest -n 2 --dist loadfile -q -m slow tests

# Lint, formatting, layering contracts (import-linter, see pyproject.toml) and types (mypy).
lint: install
	$(BIN)/ruff check nopelens tests benchmarks assets
	$(BIN)/ruff format --check nopelens tests benchmarks assets
	$(BIN)/lint-imports
	$(BIN)/mypy nopelens

# The documentation site (MkDocs Material + mkdocstrings), built offline with --strict into site/;
# notebooks are executed with NOPELENS_SMALL=1 and rendered as pages.
docs: install
	NOPELENS_SMALL=1 NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet

# Regenerate the figures in assets/ (and assets/manifest.json) from the quick profile; needs Chromium.
assets: install
	$(BIN)/python assets/make_assets.py

clean:
	rm -rf $(VENV) $(OUT) site
