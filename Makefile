# `make demo` and `make test` are the whole set-up: they create .venv (unless a virtual
# environment is already active), install clipft into it, then run.
PYTHON ?= python3.11
VENV ?= .venv

ifdef VIRTUAL_ENV
PY := python
else
PY := $(VENV)/bin/python
endif

.PHONY: install demo test

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)

install: $(if $(VIRTUAL_ENV),,$(VENV)/bin/python)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e '.[dev]'

demo: install
	$(PY) -m clipft demo --out demo --seed 0

test: install
	$(PY) -m pytest -q
