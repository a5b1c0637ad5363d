# Two commands for a newcomer: `make demo` (the main job) and `make test`.
# Both set up .venv first (idempotent: a second run only checks, in seconds).
PY := .venv/bin/python

.PHONY: setup demo test lint format synthetic pretrain bench clean-venv

setup:
	bash tools/setup_env.sh

synthetic: setup
	$(PY) datasets/prepare_synthetic.py

# Re-creates the shipped dcinet_d2/pretrained/synthetic_r50q_c4.pth (35-45 min on 2 cores).
pretrain: setup
	$(PY) tools/pretrain_backbone.py

demo: setup
	$(PY) demo/run_demo.py

test: setup
	$(PY) -m pytest -q tests

# One style (pyproject.toml): ruff's linter, then its formatter in check mode. `make format`
# rewrites the files instead.
lint: setup
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

format: setup
	$(PY) -m ruff check --fix .
	$(PY) -m ruff format .

bench: setup
	$(PY) bench/bench_evaluator.py
	$(PY) bench/bench_model.py
	$(PY) bench/bench_dataset_loading.py

clean-venv:
	rm -rf .venv
