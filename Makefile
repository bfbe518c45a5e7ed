# The two commands the README promises, and the benchmark.
PY := .venv/bin/python

.PHONY: setup run test bench
setup:
	@bash scripts/setup.sh

run: setup
	$(PY) scripts/main_job.py

# Every tier on every host set-up built (ComfyUI 0.3.75 and upstream 0.33.0; see scripts/test_hosts.py).
test: setup
	$(PY) scripts/test_hosts.py

# Every benchmark, each writing bench/results/<name>.{json,csv,md}. The GPU profile (full-size
# canvases) is the default of each script; on a CPU-only machine the lighter profile below runs.
bench: setup
	$(eval GPU := $(shell $(PY) -c "import torch; print(int(torch.cuda.is_available()))" 2>/dev/null))
	$(PY) bench/vae_bench.py
	$(PY) bench/tiled_diffusion_bench.py $(if $(filter 1,$(GPU)),,--canvases 512 1024 --tile 256 --overlap 32 --untiled-max 1024)
	$(PY) bench/progressive_bench.py
	$(PY) bench/progressive_bench.py --wall --name progressive_wall $(if $(filter 1,$(GPU)),,--final 512 --steps 4 --refine-steps 1)
	$(PY) bench/chess_bench.py $(if $(filter 1,$(GPU)),--sd15,--results 1024 2048 4096)
	$(PY) bench/upscale_quality_bench.py
	$(PY) bench/lanczos_memory_bench.py
	$(PY) bench/vae_padding_bench.py
	$(PY) bench/context_cost_bench.py
	$(PY) bench/gigapixel_bench.py --vae-mode sampled $(if $(filter 1,$(GPU)),--sd15 --results 2048 4096 8192,)
