# The two commands the README promises on a fresh clone:
#   make demo   set up, then run the main job (dvc repro on the default offline profile)
#   make test   set up, then run the test suite
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: setup system-deps demo test

$(BIN)/cyclegan: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

setup: $(BIN)/cyclegan

# Headless Chromium checks the HTML report and the serving page.
system-deps:
	@command -v chromium >/dev/null 2>&1 || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }

demo: setup
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/dvc repro
	@PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m training.demo_summary

test: setup system-deps
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m pytest --durations=15 -q
