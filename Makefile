# Two commands do everything on a fresh Debian + Python 3.11 machine:
#   make demo   -> .venv, then the whole workflow on the embedded real data (results/)
#   make test   -> .venv, then the test suite (what CI runs)
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
CORES ?= 2
STAMP := $(VENV)/.installed

.PHONY: install demo test lint dryrun report clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# torch first, pinned: 2.13.0 resolves to the CPU wheel (an unpinned torch pulls GBs of CUDA packages)
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e ".[workflow,dev]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/snakemake --configfile demo/config.yaml --cores $(CORES) all
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/snakemake --configfile demo/config.yaml --cores $(CORES) \
		--report results/report.html

test: $(STAMP)
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/snakemake --lint

dryrun: $(STAMP)
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/snakemake -n all

clean:
	rm -rf results logs .snakemake
