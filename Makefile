# sparsebench: two commands on a fresh machine, `make sweep` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# The torch build to install (a pip requirement, optionally naming torchvision and an index), and
# VISION=1 to add the torchvision built for it. Pairs: sparsebench/torch_versions.py; README
# "On a GPU cluster" has the lines for CUDA and CPU-only machines.
TORCH_SPEC ?= torch==2.13.0
VISION ?=
SWEEP ?= fmnist_densities
EXECUTOR ?= auto
STAMP := $(VENV)/.setup-stamp
VISION_STAMP := $(VENV)/.vision-stamp
# The vision tests (pytest -m vision) run in an environment of their own, on the tested
# torch/torchvision pair (a CUDA 13 build from PyPI, which runs on a CPU: ~5.7 GB, ~2 min to
# install); VISION_TESTS=0 leaves them out of `make test`.
VISION_TESTS ?= 1
VISION_VENV := .venv-vision
VPY := $(VISION_VENV)/bin/python
VISION_VENV_STAMP := $(VISION_VENV)/.setup-stamp
FMNIST_DIR := /usr/share/datasets/fashion-mnist

.PHONY: setup data sweep test report bench bench-compile bench-width bench-ddp slurm-up slurm-down clean help paper paper-mini paper-report gpu-check

help:
	@echo "make sweep [SWEEP=name] [ARGS=...]  run a sweep (default: $(SWEEP)) and write its report"
	@echo "make test                 set up if needed, then run the whole test suite (VISION_TESTS=0: without"
	@echo "                          the vision tests and their 5.7 GB environment)"
	@echo "make setup [VISION=1]     the environment (.venv); VISION=1 adds the matching torchvision"
	@echo "make report SWEEP=name    tables and figures from results/name"
	@echo "make paper                every paper sweep on the cluster, then results/paper/"
	@echo "make paper-mini           the same in miniature on this CPU: results/paper_mini/"
	@echo "make bench                harness-overhead, sparse-step and score-memory benchmarks"
	@echo "make bench-compile        compiled/eager step ratios and compile times (also in make bench)"
	@echo "make bench-width          always-sparse width-scaling benchmark"
	@echo "make bench-ddp            data-parallel throughput at 1, 2, ... processes (PROCS=1,2)"
	@echo "make gpu-check            every CUDA-only path once (a CUDA machine): results/gpu_check/"
	@echo "make slurm-up/slurm-down  start/stop a one-node SLURM cluster on localhost"

setup: $(STAMP) $(if $(VISION),$(VISION_STAMP)) data

# torch goes in first and pinned: anything unpinned could pull a multi-GB CUDA build.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH_SPEC)
	$(PY) -m pip install -q -e ".[dev]"
	touch $@

# torchvision in the same pip command as torch, so both come from one build (CUDA or CPU);
# then it must import beside that torch, or set-up stops with the pair to install.
$(VISION_STAMP): $(STAMP) sparsebench/torch_versions.py
	vision=$$($(PY) sparsebench/torch_versions.py torchvision-for '$(TORCH_SPEC)') && \
	    $(PY) -m pip install -q $(TORCH_SPEC) "$$vision"
	$(PY) sparsebench/torch_versions.py check
	touch $@

$(VISION_VENV_STAMP): pyproject.toml sparsebench/torch_versions.py
	test -x $(VPY) || $(PYTHON) -m venv $(VISION_VENV)
	$(VPY) -m pip install -q --upgrade pip
	$(VPY) -m pip install -q $$($(PYTHON) sparsebench/torch_versions.py tested)
	$(VPY) -m pip install -q -e ".[dev]"
	$(VPY) sparsebench/torch_versions.py check
	touch $@

# Fashion-MNIST from Debian when no copy is found and apt can be used; never fatal.
data:
	@bash scripts/get_fashion_mnist.sh

# The report of what completed is written even when some runs failed or diverged; the exit
# status is still the sweep's (2: bad input, nothing ran, no report). ARGS passes options and
# overrides through: make sweep SWEEP=x ARGS="--skip-data-check --retry-failed density=0.1,0.05"
# SPARSEBENCH_COMMAND: the sweep's resume hint names this make command (with the variables given
# on the command line or in the environment), not the python line below.
GIVEN = $(strip $(foreach v,SWEEP EXECUTOR ARGS,$(if $(filter command line environment,$(origin $(v))),$(v)='$($(v))')))
sweep: setup
	@status=0; SPARSEBENCH_COMMAND="make sweep $(GIVEN)" \
	  $(PY) -m sparsebench.sweep $(SWEEP) --executor $(EXECUTOR) $(ARGS) || status=$$?; \
	if [ $$status -ne 2 ]; then \
	  $(PY) -m sparsebench.report $(basename $(notdir $(SWEEP))) || { [ $$status -ne 0 ] || status=$$?; }; \
	fi; exit $$status

report: setup
	$(PY) -m sparsebench.report $(SWEEP)

# The GSE paper: submit every paper sweep (SLURM where sbatch exists), wait, run figure 8's
# benchmark, write results/paper/ (tables 1-4, figures 2-9, index.md).
paper: setup
	$(PY) -m sparsebench.paper.full --executor $(EXECUTOR) $(ARGS)

# The same pipeline in miniature on a CPU (generated CIFAR-format data, small models, 1 % of
# the epochs, one seed): results/paper_mini/.
paper-mini: setup
	$(PY) -m sparsebench.paper.mini

# results/paper/ from whatever has landed so far.
paper-report: setup
	$(PY) -m sparsebench.report --paper

# The SLURM tests run on the local one-node cluster; where it cannot be had (no root, no apt)
# they skip with the reason, so a failure to start it never fails this target.
# The main suite in .venv, then the vision tests in .venv-vision; pytest's exit code 5 (no test
# selected, e.g. PYTEST_ARGS naming one file) is not a failure.
test: setup $(if $(filter 1,$(VISION_TESTS)),$(VISION_VENV_STAMP))
	@bash scripts/slurm_up.sh || echo "make test: no local SLURM cluster (scripts/slurm_up.sh exit $$?); the slurm tests will skip or say why"
	@rc=0; $(PY) -m pytest -q -ra -m "not vision" $(PYTEST_ARGS) || { r=$$?; [ $$r -eq 5 ] || rc=$$r; }; \
	if [ "$(VISION_TESTS)" = 1 ]; then \
	    $(VPY) -m pytest -q -ra -m vision $(PYTEST_ARGS) || { r=$$?; [ $$r -eq 5 ] || rc=$$r; }; \
	fi; exit $$rc

slurm-up:
	bash scripts/slurm_up.sh

slurm-down:
	bash scripts/slurm_down.sh

# Every method, model, precision and engine once on a CUDA machine in under 8 minutes, plus the
# kernel benchmarks and a one-GPU NCCL run: results/gpu_check/report.md. Exits 2 without CUDA.
# No set-up step: a GPU machine runs the checkout with its own python3 (torch, PyYAML, numpy,
# pandas, tqdm; no submitit, no network).
gpu-check:
	PYTHONPATH=. $(if $(wildcard $(PY)),$(PY),$(PYTHON)) scripts/gpu_check.py $(GPU_CHECK_ARGS)

bench: setup
	$(PY) benchmarks/harness_overhead.py
	$(PY) benchmarks/tracking_overhead.py
	$(PY) benchmarks/score_memory.py
	$(PY) benchmarks/compile_speed.py

# compiled/eager step ratios and compile times (MLP, ResNet-20, SimpleViT-tiny; inductor on the
# CPU compiles each model for tens of seconds to minutes): results/benchmarks/compile_speed.csv
bench-compile: setup
	$(PY) benchmarks/compile_speed.py

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
	rm -rf $(VENV) $(VISION_VENV) .pytest_cache
