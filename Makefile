# Two entry points: `make run` (a real 10-round simulation on 2 local TFF workers) and `make test`.
# Both create .venv from the pinned lists in requirements/ when it is missing.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin

.PHONY: venv run test lint soak clean

venv: $(VENV)/.installed

$(VENV)/.installed: requirements/lock.txt requirements/tff.txt requirements/image-tools.txt requirements/deploy-tools.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements/lock.txt
	$(BIN)/pip install --quiet --disable-pip-version-check --no-deps -r requirements/tff.txt
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements/image-tools.txt
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements/deploy-tools.txt
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

# pfl-research beside fedrun (`fedrun bench --peers pfl`): its own environment, .venv-peers
# (TensorFlow 2.21, Keras 3), then the opt-in side-by-side test. Not part of venv, test or CI.
PEERS_VENV := .venv-peers
.PHONY: bench-peers
bench-peers: venv $(PEERS_VENV)/.installed
	$(BIN)/python -m pytest -q -rs -m peers tests/peers

$(PEERS_VENV)/.installed: requirements/peers-pfl.txt
	test -x $(PEERS_VENV)/bin/python || $(PYTHON) -m venv $(PEERS_VENV)
	$(PEERS_VENV)/bin/pip install --quiet --disable-pip-version-check --no-deps -r requirements/peers-pfl.txt
	touch $@

# The Dockerfile built (podman, offline, from wheels built here) and run: two worker containers and
# a coordinator must train the model a local run trains. As root on Debian; installs podman if
# missing; minutes. Not part of test or CI.
.PHONY: image-test
image-test: venv
	$(BIN)/python -m pytest -q -rs -s -m image tests/image

clean:
	rm -rf $(VENV) runs
