# One command surface: make run, make test, make check, make bench. CI calls `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install tools services run test check format lock bench clean

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
		{ echo "atomfleet needs Python 3.11 or newer ($(PYTHON) is older)"; exit 1; }
	@$(PYTHON) -c 'import ensurepip, venv' 2>/dev/null || { \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv; \
		else echo "install python3-venv (sudo apt-get install python3-venv)"; exit 1; fi; }
	$(PYTHON) -m venv $(VENV)
	# torch first, pinned: nothing later may pull a CUDA build
	$(BIN)/pip install -q -c constraints.txt torch==2.13.0
	$(BIN)/pip install -q -c constraints.txt -e '.[emulators,dev]'
	@touch $(STAMP)

run: install services
	$(BIN)/atomfleet run

# The servers a one-machine run or the tests start themselves when none answers at their URL
# (Debian's redis-server and postgresql), installed here when missing and root: atomfleet
# itself never installs anything. Without root it only says what to install, since a server
# may already run elsewhere.
services:
	@missing=""; \
	command -v redis-server >/dev/null || [ -x /usr/bin/redis-server ] || missing="redis-server"; \
	ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing="$$missing postgresql"; \
	if [ -n "$$missing" ]; then \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
		else echo "to start local servers, install:$$missing (sudo apt-get install$$missing)"; fi; \
	fi

# Tools the tests run for real (never skipped): Prometheus and promtool (Debian's package),
# and a single-node SLURM with munge (Debian's 22.05; tests/slurm_cluster.py starts it).
tools:
	@command -v promtool >/dev/null && command -v prometheus >/dev/null || { \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus; \
		else echo "install Prometheus and promtool (sudo apt-get install prometheus)"; exit 1; fi; }
	@command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v sbatch >/dev/null \
		&& command -v munged >/dev/null || { \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends slurmctld slurmd slurm-client munge; \
		else echo "install SLURM and munge (sudo apt-get install slurmctld slurmd slurm-client munge)"; exit 1; fi; }

test: install tools services
	$(BIN)/python -m pytest

check: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# The images' hashed lock files (deploy/docker/locks/), from pyproject.toml and constraints.txt.
# Keeps the pins it has: run it after changing either; `UPGRADE=1` moves every pin. torch's CPU
# wheel comes from TORCH_CPU_WHEELS, else PIP_FIND_LINKS, else PyTorch's CPU index.
lock: install
	$(BIN)/python deploy/docker/lock.py $(if $(UPGRADE),--upgrade)

# Every figure is a ratio against a baseline measured in the same run (see README).
bench: install
	$(BIN)/python -m bench.bench_intake
	$(BIN)/python -m bench.bench_fleet
	$(BIN)/python -m bench.bench_backlog
	$(BIN)/python -m bench.bench_lists
	$(BIN)/python -m bench.bench_metrics
	$(BIN)/python -m bench.bench_estimates
	$(BIN)/python -m bench.bench_specs

clean:
	rm -rf $(VENV) .atomfleet .mypy_cache .ruff_cache .pytest_cache
