# The two commands the README promises on a fresh clone:
#   make demo   set up, then run the main job (dvc repro on the default offline profile)
#   make test   set up, then run the test suite
# and, on a machine with root and buildah (no Docker daemon needed; see docker/):
#   make images build the train and serve images of the Dockerfile, then smoke-test both
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: setup system-deps demo test images image-tools

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

# image-tools: tests/docker/test_container.py builds the serve image and serves a model from it.
test: setup system-deps image-tools
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m pytest --durations=15 -q

# buildah builds and runs the images; debootstrap makes their Python base (docker/build_base.sh).
image-tools:
	@command -v buildah >/dev/null 2>&1 && command -v debootstrap >/dev/null 2>&1 || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq buildah debootstrap >/dev/null; }

# The train image's smoke run trains and exports a tests-profile model; the serve image serves it.
images: setup image-tools
	PYTHON=$(CURDIR)/$(BIN)/python docker/build.sh train serve
	PYTHON=$(CURDIR)/$(BIN)/python docker/smoke.sh train   # leaves build/images/smoke-train/export
	PYTHON=$(CURDIR)/$(BIN)/python docker/smoke.sh serve --model build/images/smoke-train/export
