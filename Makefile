# The two commands the README promises, and the benchmark.
PY := .venv/bin/python

.PHONY: setup run test bench
setup:
	@bash scripts/setup.sh

run: setup
	$(PY) scripts/main_job.py

test: setup
	$(PY) -m pytest tests -q

bench: setup
	$(PY) bench/vae_bench.py
