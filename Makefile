# The two commands of the README: `make demo` and `make test`. Each builds .venv on first use.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test generate check-generated lint typecheck pytest bench lspci clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/pciback demo

test: $(STAMP) lspci check-generated lint typecheck pytest

# pciutils' lspci decodes the guest view in the tests; Debian ships it.
lspci:
	@command -v lspci >/dev/null 2>&1 || { \
	  echo "installing pciutils (lspci) for the decoder tests"; \
	  (apt-get update -qq && apt-get install -y -qq pciutils >/dev/null) || \
	  echo "warning: could not install pciutils; the lspci tests will be skipped"; }

generate: $(STAMP)
	$(BIN)/pciback-dsl compile -o generated

check-generated: $(STAMP)
	$(BIN)/pciback-dsl compile --check -o generated

lint: $(STAMP)
	$(BIN)/ruff check pciback tests bench
	$(BIN)/ruff format --check pciback tests bench

typecheck: $(STAMP)
	$(BIN)/mypy

pytest: $(STAMP)
	$(BIN)/pytest

bench: $(STAMP)
	@for b in bench/bench_*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
