# selfish-tokens: `make help` lists the targets.
# Two commands are enough on a fresh clone: `make reproduce` and `make test`;
# both create the virtualenv on first use.

PYTHON  ?= python3
VENV    ?= .venv
PROFILE ?= paper
DEVICE  ?= auto
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
RAY_STAMP := $(VENV)/.installed-ray

.DEFAULT_GOAL := help
.PHONY: help install install-ray test test-slow test-cuda lint lab sync reproduce report paper bench clean distclean

help: ## list the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  \033[1m%-12s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)
	@echo "  variables: PROFILE=$(PROFILE) (smoke|paper|large)  DEVICE=$(DEVICE) (auto|cpu|cuda|mps)"

# torch is installed first and on its own: with CUDA present the default build,
# otherwise the CPU build (a local wheel if pip is configured with one, then the
# official CPU index), so a CPU machine never downloads the CUDA stack. On a machine
# where nvidia-smi runs, the install fails (and says which wheel index to use) unless
# the torch it ends with can use CUDA: a CPU build there would train on the CPU unseen.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	@if $(BIN)/python -c "import torch" 2>/dev/null; then \
	  echo "torch already installed"; \
	elif command -v nvidia-smi >/dev/null 2>&1; then \
	  $(BIN)/pip install "torch>=2.2"; \
	elif $(BIN)/pip install --no-index --no-deps "torch>=2.2" 2>/dev/null; then \
	  $(BIN)/pip install "torch==$$($(BIN)/python -c 'import importlib.metadata as m; print(m.version("torch"))')"; \
	else \
	  $(BIN)/pip install --retries 1 --timeout 20 "torch>=2.2" --index-url https://download.pytorch.org/whl/cpu \
	  || $(BIN)/pip install "torch>=2.2"; \
	fi
	$(BIN)/pip install -e ".[dev]"
	@$(BIN)/python -c "from selfish_lib.engine.training import check_cuda_install as c; raise SystemExit(c())"
	@touch $@

install: $(STAMP) ## create .venv and install selfish_lib with its dependencies

# The ray extra: the Ray executor (`selfish reproduce --executor ray`) and its tests.
$(RAY_STAMP): $(STAMP)
	$(BIN)/pip install -e ".[dev,ray]"
	@touch $@

install-ray: $(RAY_STAMP) ## also install the ray extra (selfish reproduce --executor ray)

test: $(STAMP) ## lint and run the test suite (slow tests excluded)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest

test-slow: $(STAMP) ## run only the slow tests (paper-scale checks)
	$(BIN)/python -m pytest -m slow

test-cuda: $(STAMP) ## run only the CUDA tests (on a machine with a GPU; skipped elsewhere)
	$(BIN)/python -m pytest -m cuda -ra

lint: $(STAMP) ## ruff check and format check
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# notebooks/jupytext.toml pairs each NN_name.py with NN_name.ipynb: `jupytext --sync`
# takes the newer of the two as the source, and JupyterLab (started here or at the
# repository root) writes the .py each time it saves the .ipynb.
sync: $(STAMP) ## (re)generate the .ipynb pairs of notebooks/*.py (or write Lab edits back)
	$(BIN)/jupytext --sync notebooks/*.py

lab: sync ## open the notebooks in JupyterLab (saving a notebook updates its .py)
	$(BIN)/jupyter lab notebooks/

reproduce: $(STAMP) ## execute every notebook for PROFILE into reports/PROFILE/
	$(BIN)/selfish reproduce --profile $(PROFILE) --device $(DEVICE)

report: $(STAMP) ## re-render the HTML of reports/PROFILE/ without re-executing
	$(BIN)/selfish report --profile $(PROFILE)

# One document from the executed chapters of reports/PROFILE/ (after `make reproduce`):
# paper.html (single page, offline) and paper.pdf, printed by Debian's Chromium.
paper: $(STAMP) ## build reports/PROFILE/paper.html and paper.pdf from the executed chapters
	$(BIN)/selfish paper --profile $(PROFILE)

# bench/gpu_check.py is the one-shot GPU check (it asks for CUDA): run by hand, see README.
bench: $(STAMP) ## run the benchmarks in bench/ (prints tables)
	@for b in bench/*.py; do [ $$b = bench/gpu_check.py ] && continue; \
	  echo "== $$b"; $(BIN)/python $$b || exit 1; done

# An .ipynb newer than its .py (or without one) may hold an edit the .py lacks:
# clean names each such notebook and stops before removing anything.
clean: ## remove reports, generated notebook pairs and caches (keeps trained runs)
	@kept=0; for nb in notebooks/*.ipynb; do \
	  [ -e "$$nb" ] || continue; py="$${nb%.ipynb}.py"; \
	  if [ ! -e "$$py" ]; then \
	    echo "make clean: $$nb has no $$py: not a generated pair, not deleted" >&2; kept=1; \
	  elif [ "$$nb" -nt "$$py" ]; then \
	    echo "make clean: $$nb is newer than $$py, not deleted" >&2; kept=1; \
	  fi; \
	done; \
	if [ $$kept = 1 ]; then \
	  echo "make clean: stopped; 'make sync' writes such edits into the .py, or delete the .ipynb by hand" >&2; \
	  exit 1; \
	fi
	rm -rf reports .pytest_cache .ruff_cache
	rm -f notebooks/*.ipynb
	find . -name __pycache__ -type d -prune -exec rm -rf {} +

distclean: clean ## also remove trained runs and the virtualenv
	rm -rf results $(VENV)
