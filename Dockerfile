# trace-guard sidecar, GPU hosts: on the official vLLM image, engine in-process.
#   docker build -t trace-guard .
#   docker run --gpus all -p 50051:50051 -p 9464:9464 -v /models:/models trace-guard \
#       serve --model /models/Qwen2.5-VL-3B-Instruct --prompt-style chat --host 0.0.0.0
# For CPU hosts see Dockerfile.cpu.
FROM vllm/vllm-openai:v0.11.0

WORKDIR /opt/trace-guard
COPY pyproject.toml README.md ./
COPY guard ./guard
COPY server ./server
COPY proto ./proto
# vLLM (and its CUDA torch) come from the base image; install only trace-guard's own dependencies.
RUN pip install --no-cache-dir -e . && python -m server.pb

EXPOSE 50051 9464
HEALTHCHECK --interval=15s --timeout=5s --start-period=300s \
    CMD python -c "import grpc,sys; from grpc_health.v1 import health_pb2 as h, health_pb2_grpc as g; \
s=g.HealthStub(grpc.insecure_channel('127.0.0.1:50051')); \
sys.exit(0 if s.Check(h.HealthCheckRequest(), timeout=3).status == 1 else 1)"
ENTRYPOINT ["trace-guard"]
CMD ["serve", "--host", "0.0.0.0"]
