# `make pipeline`: set up and run the main job (pre-training at the cpu profile, report in runs/cpu/pretrain).
# `make test`: set up and run the tests.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: venv test pipeline tour bench samples clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e ".[dev,notebooks]"
	touch $(STAMP)

venv: $(STAMP)

test: $(STAMP)
	WANDB_MODE=disabled $(BIN)/python -m pytest -q tests

pipeline: $(STAMP)
	WANDB_MODE=$${WANDB_MODE:-offline} $(BIN)/mimolab pretrain --profile cpu

tour: $(STAMP)
	WANDB_MODE=$${WANDB_MODE:-offline} $(BIN)/mimolab tour --profile cpu

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_model.py --preset cpu --batch 8 --new-tokens 128

samples: $(STAMP)
	$(BIN)/mimolab samples --out data_samples

clean:
	rm -rf $(VENV) runs
