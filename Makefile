# The README's two commands: `make run` (the app on the embedded models) and `make test`.
# Both create .venv/ and install what is missing; a second run installs nothing.

VENV := .venv
PYTHON := $(VENV)/bin/python
STAMP := $(VENV)/.installed

# llama.cpp's default native build crashes (SIGSEGV in the AMX int8 kernels) on
# recent Intel server CPUs; a portable AVX2 build works everywhere we run.
export CMAKE_ARGS := -DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON

.PHONY: install run lint test bench browser

$(PYTHON):
	python3 -m venv $(VENV)
	$(PYTHON) -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(PYTHON)
	$(PYTHON) -m pip install --editable ".[dev]"
	touch $(STAMP)

install: $(STAMP)

run: install
	$(VENV)/bin/chainlit run app.py -w

# The browser tests drive Debian's Chromium: test tools that download their own
# browser cannot reach their servers from these machines.
CHROMIUM := /usr/bin/chromium
$(CHROMIUM):
	$(if $(filter 0,$(shell id -u)),,sudo) apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $(if $(filter 0,$(shell id -u)),,sudo) apt-get install -y -qq chromium >/dev/null

browser: $(CHROMIUM)

# Lint, format and type checks (configured in pyproject.toml); `make test` runs them first.
lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

test: install browser lint
	$(PYTHON) -m pytest

bench: install
	$(PYTHON) -m bench.decode
