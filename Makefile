# sparsebench: two commands on a fresh machine, `make sweep` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
TORCH_SPEC ?= torch==2.13.0
SWEEP ?= fmnist_densities
EXECUTOR ?= auto
STAMP := $(VENV)/.setup-stamp
FMNIST_DIR := /usr/share/datasets/fashion-mnist

.PHONY: setup data sweep test report bench bench-width bench-ddp slurm-up slurm-down clean help paper paper-mini paper-report

help:
	@echo "make sweep [SWEEP=name]   run a sweep (default: $(SWEEP)) and write its report"
	@echo "make test                 set up if needed, then run the whole test suite"
	@echo "make report SWEEP=name    tables and figures from results/name"
	@echo "make paper                every paper sweep on the cluster, then results/paper/"
	@echo "make paper-mini           the same in miniature on this CPU: results/paper_mini/"
	@echo "make bench                harness-overhead, sparse-step and score-memory benchmarks"
	@echo "make bench-width          always-sparse width-scaling benchmark"
	@echo "make bench-ddp            data-parallel throughput at 1, 2, ... processes (PROCS=1,2)"
	@echo "make slurm-up/slurm-down  start/stop a one-node SLURM cluster on localhost"

setup: $(STAMP) data

# torch goes in first and pinned: anything unpinned could pull a multi-GB CUDA build.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH_SPEC)
	$(PY) -m pip install -q -e ".[dev]"
	touch $@

# Fashion-MNIST from Debian when no copy is found and apt can be used; never fatal.
data:
	@bash scripts/get_fashion_mnist.sh

sweep: setup
	$(PY) -m sparsebench.sweep $(SWEEP) --executor $(EXECUTOR)
	$(PY) -m sparsebench.report $(SWEEP)

report: setup
	$(PY) -m sparsebench.report $(SWEEP)

# The GSE paper: submit every paper sweep (SLURM where sbatch exists), wait, run figure 8's
# benchmark, write results/paper/ (tables 1-4, figures 2-9, index.md).
paper: setup
	$(PY) -m sparsebench.paper.full --executor $(EXECUTOR)

# The same pipeline in miniature on a CPU (generated CIFAR-format data, small models, 1 % of
# the epochs, one seed): results/paper_mini/.
paper-mini: setup
	$(PY) -m sparsebench.paper.mini

# results/paper/ from whatever has landed so far.
paper-report: setup
	$(PY) -m sparsebench.report --paper

# The SLURM tests run on the local one-node cluster; where it cannot be had (no root, no apt)
# they skip with the reason, so a failure to start it never fails this target.
test: setup
	@bash scripts/slurm_up.sh || echo "make test: no local SLURM cluster (scripts/slurm_up.sh exit $$?); the slurm tests will skip or say why"
	$(PY) -m pytest -q -ra $(PYTEST_ARGS)

slurm-up:
	bash scripts/slurm_up.sh

slurm-down:
	bash scripts/slurm_down.sh

bench: setup
	$(PY) benchmarks/harness_overhead.py
	$(PY) benchmarks/score_memory.py

# Always-sparse execution: the sparse-layer and sparse-conv kernel tables, then MLP and ResNet-20
# width scaling (each child capped in time and predicted memory). The budgets add up to under
# 30 min on an idle 2-core CPU: sparse layer ~2.5 min, sparse conv ~0.2, MLP ≤ 19 (--budget-s),
# ResNet-20 ≤ 7 (--budget-s). BENCH_QUICK=1 runs each at smoke sizes (a few minutes in all).
# Writes results/benchmarks/{sparse_layer,sparse_conv,width_scaling,width_scaling_resnet}.*.
BENCH_ARGS := $(if $(BENCH_QUICK),--quick,)
bench-width: setup
	$(PY) benchmarks/sparse_layer.py $(BENCH_ARGS)
	$(PY) benchmarks/sparse_conv.py $(BENCH_ARGS)
	$(PY) benchmarks/width_scaling.py $(BENCH_ARGS)
	$(PY) benchmarks/width_scaling_cnn.py $(BENCH_ARGS)

# Data-parallel throughput (examples/s) of one run on 1, 2, ... processes through torchrun.
# Writes results/benchmarks/data_parallel.csv; on a GPU node: make bench-ddp PROCS=1,2,4,8
# BENCH_ARGS="--config configs/cifar10_resnet56.yaml epochs=1 device=cuda".
PROCS ?= 1,2
bench-ddp: setup
	$(PY) benchmarks/data_parallel.py --procs $(PROCS) $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache
