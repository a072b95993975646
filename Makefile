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
	$(PY) -m pip install --quiet -e '.[dev]'

demo: install
	$(PY) -m clipft sample-data --out sample --seed 0
	$(PY) -m clipft zeroshot --model lite0-minilm \
		--prompts prompts/color.yaml --prompts prompts/sleeve.yaml --prompts prompts/lid.yaml \
		--data sample/catalogue.csv --out results/sample-zeroshot --seed 0

test: install
	$(PY) -m pytest -q
