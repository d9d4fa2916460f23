# The two commands of the README: `make demo` and `make test`. Each builds .venv on first use.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test generate check-generated lint typecheck pytest bench system-deps clean lab lab-test lab-bench

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/pciback demo

test: $(STAMP) system-deps check-generated lint typecheck pytest

# Debian packages some tests use, installed when missing and possible: pciutils' lspci decodes
# the guest view; libxen-dev's headers check the Xen adapters' declarations. The tests skip
# (saying so) where they cannot be had.
SYSTEM_DEPS_MISSING = $(strip $(if $(shell command -v lspci),,pciutils) \
                              $(if $(wildcard /usr/include/xenctrl.h),,libxen-dev))
system-deps:
	@if [ -n "$(SYSTEM_DEPS_MISSING)" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing $(SYSTEM_DEPS_MISSING) for the tests"; \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
	      apt-get install -y -qq $(SYSTEM_DEPS_MISSING) >/dev/null) || \
	    echo "warning: could not install $(SYSTEM_DEPS_MISSING); their tests will be skipped"; \
	  else \
	    echo "note: $(SYSTEM_DEPS_MISSING) missing (not root or no apt-get); their tests will be skipped"; \
	  fi; \
	fi

generate: $(STAMP)
	$(BIN)/pciback-dsl compile -o generated
	$(BIN)/pciback-dsl report -o docs/policy-report.md
	$(BIN)/pciback-dsl linux -o docs/policy-vs-linux-fields.md
	$(BIN)/python -m pciback.protocol.abi_prepare
	$(BIN)/python -m pciback.cli.docs

# generated/, the reviewers' report and the fields' differences from Linux must be what the
# policy gives now.
check-generated: $(STAMP)
	$(BIN)/pciback-dsl compile --check -o generated
	$(BIN)/python -m pciback.protocol.abi_prepare --check
	$(BIN)/python -m pciback.cli.docs --check
	@$(BIN)/pciback-dsl report | diff -u docs/policy-report.md - >/dev/null || { \
	  $(BIN)/pciback-dsl report | diff -u docs/policy-report.md - | head -40; \
	  echo "docs/policy-report.md is stale: run make generate and commit the result"; exit 1; }
	@echo "docs/policy-report.md is up to date"
	@$(BIN)/pciback-dsl linux | diff -u docs/policy-vs-linux-fields.md - >/dev/null || { \
	  $(BIN)/pciback-dsl linux | diff -u docs/policy-vs-linux-fields.md - | head -40; \
	  echo "docs/policy-vs-linux-fields.md is stale: run make generate and commit the result"; exit 1; }
	@echo "docs/policy-vs-linux-fields.md is up to date"

lint: $(STAMP)
	$(BIN)/ruff check pciback tests bench lab
	$(BIN)/ruff format --check pciback tests bench lab

typecheck: $(STAMP)
	$(BIN)/mypy

pytest: $(STAMP)
	$(BIN)/pytest

bench: $(STAMP)
	@for b in bench/bench_*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

# The real-Xen lab (lab/README.md): minutes per run, root, outside CI.
lab:
	lab/lab.sh build

lab-test:
	lab/lab.sh test

lab-bench:
	lab/lab.sh bench

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
