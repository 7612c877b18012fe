# syntax=docker/dockerfile:1.7
# GPU worker image: vLLM generation + GPU verifiers, consuming jobs from Redis Streams (`weaver worker`).
# Build from the repository root:  docker build -f deploy/docker/gpu.Dockerfile -t weaver-gpu:0.1.0 .
# Based on the vLLM release image so CUDA, torch and vLLM come as one tested set; weights are mounted
# at /models at run time (see deploy/k8s), never baked in or downloaded.

FROM vllm/vllm-openai:v0.33.0
LABEL org.opencontainers.image.title="weaver-rerank (GPU worker)" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY models ./models
COPY workers ./workers
COPY service ./service
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# Keep the CUDA builds of torch and vLLM that the base image ships: pin them as constraints.
RUN pip freeze | grep -iE '^(torch|vllm)==' > /tmp/base-constraints.txt \
    && pip install --constraint /tmp/base-constraints.txt . \
    && rm /tmp/base-constraints.txt
# bubblewrap is the code_tests sandbox boundary (docs/security.md); the pod needs user namespaces.
# Version left to the base image's distribution (0.6 on Ubuntu 22.04 works; 0.8+ adds --disable-userns).
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends bubblewrap \
    && rm -rf /var/lib/apt/lists/*
RUN groupadd --system --gid 10001 weaver \
    && useradd --system --uid 10001 --gid weaver --home-dir /home/weaver --create-home weaver \
    && rm -rf /src
ENV PYTHONUNBUFFERED=1 \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    VLLM_NO_USAGE_STATS=1 \
    HOME=/home/weaver
WORKDIR /home/weaver
USER 10001:10001
EXPOSE 9400
HEALTHCHECK --interval=30s --timeout=5s --start-period=600s --retries=3 \
    CMD ["python3", "-c", "import urllib.request,sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:9400/metrics', timeout=3).status != 200)"]
ENTRYPOINT ["weaver"]
# Kubernetes passes its own args (deploy/k8s/components/distributed/worker-deployment.yaml).
CMD ["worker", "--redis-url", "redis://redis:6379/0", "--worker-config", "/etc/weaver/worker.yaml", "--metrics-port", "9400"]
