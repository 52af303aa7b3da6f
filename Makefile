# Two entry points: `make run` (a real 10-round simulation on 2 local TFF workers) and `make test`.
# Both create .venv from the pinned lists in requirements/ when it is missing.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin

.PHONY: venv run test lint soak clean

venv: $(VENV)/.installed

$(VENV)/.installed: requirements/lock.txt requirements/tff.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements/lock.txt
	$(BIN)/pip install --quiet --disable-pip-version-check --no-deps -r requirements/tff.txt
	$(BIN)/pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	touch $@

run: venv
	$(BIN)/fedrun run --workers 2 --rounds 10 --clients-per-round 32 --out runs/readme --overwrite

test: venv
	$(BIN)/python -m pytest -q -rs

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

soak: venv
	$(BIN)/python -m pytest -q -rs -m soak tests

clean:
	rm -rf $(VENV) runs
