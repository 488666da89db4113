# make demo: install (once) and inpaint an image with half its pixels missing.   make test: install (once) and run the tests.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.dipcert-installed

.PHONY: demo test bench install clean options

$(STAMP): pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[test,compare,dask]'
	@touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/dipcert solve --image builtin:camera --operator inpainting --keep-fraction 0.5 --noise-std 0 \
		--seed 0 --out out/demo
	@echo "pictures: out/demo/summary.png, out/demo/reconstruction.png, out/demo/observation.png"

test: $(STAMP)
	$(BIN)/python -m pytest -q

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_gd.py
	$(BIN)/python benchmarks/bench_methods.py
	$(BIN)/python benchmarks/bench_fused.py

clean:
	rm -rf $(VENV) out .pytest_cache

options: $(STAMP)  # regenerate the README's option reference from the registries
	$(BIN)/python -c "from dipcert.cli import write_option_reference; write_option_reference('README.md')"
