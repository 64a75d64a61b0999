# The two commands a user needs: `make demo` and `make test`. Each creates or
# refreshes .venv itself; a second run with an unchanged pyproject installs nothing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
ANVIL_VERSION := 1.7.1
ANVIL := .tools/node_modules/.bin/anvil

.PHONY: demo test venv tools containers browser protos contract clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev,keras,torch,hf,docker,ray]'
	@# tf-keras (the keras2 extra) requires the 572 MB `tensorflow` wheel; the keras extra's
	@# tensorflow-cpu of the same version serves it.
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps tf-keras==2.21.0
	@touch $(STAMP)

# anvil (a real JSON-RPC Ethereum node) for the --ledger-url tests, pinned through npm.
tools: $(ANVIL)

$(ANVIL):
	npm install --silent --no-audit --no-fund --prefix .tools @foundry-rs/anvil@$(ANVIL_VERSION)
	@touch $(ANVIL)

# A container engine and the images the container tests run (tests/containers): podman set
# up by docker/setup-podman.sh (root; a no-op once done, about 2 min the first time), the
# images built by docker/build-images.sh (skipped when built from the same sources; about
# 7 min the first time on a busy 2-core machine, a few seconds when up to date). Not root
# and no podman: the container tests skip, saying why.
CONTAINER_IMAGES ?= node numpy torch

containers: $(STAMP)
	@if [ "$$(id -u)" = 0 ]; then bash docker/setup-podman.sh --compose --service; \
	 elif ! command -v podman >/dev/null; then \
	   echo "make containers: podman is not installed and setting it up needs root: container tests will skip"; fi
	@if command -v podman >/dev/null; then \
	   PYTHON=$(abspath $(BIN))/python bash docker/build-images.sh $(CONTAINER_IMAGES); fi

# Debian's chromium and chromium-driver for the dashboard's browser test (tests/sn), driven
# by selenium (pinned in pyproject). Root: installed with apt when missing. Not root and
# missing: the browser test skips, saying why.
browser:
	@if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then :; \
	 elif [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver; \
	 else echo "make browser: chromium/chromium-driver are not installed and installing them needs root: the browser test will skip"; fi

demo: $(STAMP)
	$(BIN)/python examples/demo/run.py

test: $(STAMP) $(ANVIL) containers browser
	PATH="$(CURDIR)/.tools/node_modules/.bin:$$PATH" $(BIN)/python -m pytest

# Regenerate checked-in build outputs (tests prove they match their sources).
protos: $(STAMP)
	$(BIN)/python -m swarm.protos.build

contract: $(STAMP)
	$(BIN)/python -m swarm.ledger.build

clean:
	rm -rf $(VENV) .tools .pytest_cache
