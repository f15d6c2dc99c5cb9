# Two commands do everything on a fresh Debian + Python 3.11 machine:
#   make demo   -> .venv, then the whole workflow on the embedded real data (results/)
#   make test   -> .venv, then the test suite (what CI runs)
# Both install exactly the versions of the lock (src/plus/lock.txt); `make lock` regenerates it.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
CORES ?= 2
STAMP := $(VENV)/.installed
LOCK := src/plus/lock.txt
# the release `make lock` installs first; installs take the lock's pin (2.13.0 resolves to the CPU wheel here,
# an unpinned torch pulls GBs of CUDA packages)
TORCH := 2.13.0
LOCK_VENV := build/lock-venv
# the lock's tool (standard library only: it runs before anything is installed)
ENVTOOL := PYTHONPATH=src $(BIN)/python -m plus.environment
LOCKED_PIP := $(ENVTOOL) pip-install $(LOCK) --quiet

.PHONY: install lock demo test lint dryrun report clean

$(STAMP): pyproject.toml $(LOCK)
	# every step installs the lock's versions (pip constraints); a malformed lock line, a package missing from the
	# lock or a pin pip cannot find stops the install with a message naming it
	PYTHONPATH=src $(PYTHON) -m plus.environment check $(LOCK)
	$(PYTHON) -m venv $(VENV)
	$(LOCKED_PIP) --upgrade pip setuptools
	$(LOCKED_PIP) torch
	$(LOCKED_PIP) --no-build-isolation -e ".[workflow,dev]"
	$(ENVTOOL) verify $(LOCK)
	touch $(STAMP)

install: $(STAMP)

# the newest versions pyproject.toml admits, in a clean virtual environment: then `make test` and commit the lock
# (and envs/plus.yaml, whose pins follow it)
lock:
	rm -rf $(LOCK_VENV)
	$(PYTHON) -m venv $(LOCK_VENV)
	$(LOCK_VENV)/bin/pip install --quiet --upgrade pip setuptools
	$(LOCK_VENV)/bin/pip install --quiet torch==$(TORCH)
	$(LOCK_VENV)/bin/pip install --quiet --no-build-isolation -e ".[workflow,dev]"
	$(LOCK_VENV)/bin/python -m plus.environment write-lock $(LOCK) --conda envs/plus.yaml
	rm -rf $(LOCK_VENV)

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
