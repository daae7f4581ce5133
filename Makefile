# The README's two commands: `make run` (the app on the embedded models) and `make test`.
# Both create .venv/ and install what is missing; a second run installs nothing.

VENV := .venv
PYTHON := $(VENV)/bin/python
STAMP := $(VENV)/.installed

# llama.cpp's default native build crashes (SIGSEGV in the AMX int8 kernels) on
# recent Intel server CPUs; a portable AVX2 build works everywhere we run.
export CMAKE_ARGS := -DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON

.PHONY: install run team lint test bench system-packages messages

$(PYTHON):
	python3 -m venv $(VENV)
	$(PYTHON) -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(PYTHON)
	$(PYTHON) -m pip install --editable ".[dev]"
	touch $(STAMP)

# The /compare page's in-browser runner (wllama: llama.cpp for the browser) comes from the
# npm registry at the versions in its lock file. Without npm the app still runs, and the
# page says that the runner is not installed and how to install it.
RUNNER := web/browser_runner
RUNNER_STAMP := $(RUNNER)/node_modules/.package-lock.json

$(RUNNER_STAMP): $(RUNNER)/package.json $(RUNNER)/package-lock.json
	@if command -v npm >/dev/null 2>&1; then \
		cd $(RUNNER) && npm ci --no-audit --no-fund; \
	else \
		echo "npm is not installed: skipping the in-browser runner of /compare (install Node.js and npm, then run make install)."; \
	fi

install: $(STAMP) $(RUNNER_STAMP)

run: install
	$(VENV)/bin/chainlit run app.py -w

# A whole team's assistant on this machine: PostgreSQL, app processes and nginx in front
# (deploy/team.py; `PROCESSES=3 make team`). Open http://127.0.0.1:8000.
PROCESSES ?= 2
team: install system-packages
	$(PYTHON) -m deploy.team --processes $(PROCESSES)

# Debian's packages the tests drive: Chromium for the browser tests (test tools that download
# their own browser cannot reach their servers from these machines) and a Telugu font for it
# (without one the Telugu browser test's screenshots show empty boxes), PostgreSQL for the team's
# chat store and nginx for its proxy (`make team`); installed once, when missing.
SYSTEM_PACKAGES := chromium fonts-lohit-telu postgresql nginx
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)

system-packages:
	@missing="$$(for package in $(SYSTEM_PACKAGES); do dpkg -s $$package >/dev/null 2>&1 || echo $$package; done)"; \
	if [ -n "$$missing" ]; then \
		echo "Installing Debian packages: $$missing"; \
		$(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing >/dev/null; \
	fi

# The app's own words in other languages (i18n/, docs/translations.md): extract every marked string
# (babel.cfg says where from) into the template, then merge it into each language's catalog
# (i18n/locale/<language>/LC_MESSAGES/messages.po): new strings arrive untranslated, changed ones
# fuzzy. Translate those in the .po; the app compiles a catalog when it first loads it.
LOCALE := i18n/locale
messages: install
	$(VENV)/bin/pybabel --quiet extract --mapping-file=babel.cfg --output-file=$(LOCALE)/messages.pot \
		--add-comments=Translators: --sort-by-file --project=local-knowledge-assistant --version=0.1.0 .
	$(VENV)/bin/pybabel update --input-file=$(LOCALE)/messages.pot --output-dir=$(LOCALE) --domain=messages
	@echo "Now translate what is new or fuzzy in $(LOCALE)/*/LC_MESSAGES/messages.po; tests/test_i18n.py lists it."

# Lint, format and type checks (configured in pyproject.toml); `make test` runs them first.
lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

test: install system-packages lint
	$(PYTHON) -m pytest

bench: install
	$(PYTHON) -m bench.decode
