# Two commands for a newcomer: `make demo` (the main job) and `make test`.
# Both set up .venv first (idempotent: a second run only checks, in seconds).
PY := .venv/bin/python

.PHONY: setup demo test synthetic bench clean-venv

setup:
	bash tools/setup_env.sh

synthetic: setup
	$(PY) datasets/prepare_synthetic.py

demo: setup
	$(PY) demo/run_demo.py

test: setup
	$(PY) -m pytest -q tests

bench: setup
	$(PY) bench/bench_evaluator.py
	$(PY) bench/bench_model.py
	$(PY) bench/bench_dataset_loading.py

clean-venv:
	rm -rf .venv
