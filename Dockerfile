# facefoundry on an NVIDIA GPU: CUDA runtime, ffmpeg, onnxruntime-gpu, a non-root user.
# Weights are not baked in: mount them at /weights (see docker-compose.yml and README.md).
FROM nvidia/cuda:12.6.3-cudnn-runtime-ubuntu24.04

ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX=https://download.pytorch.org/whl/cu126
# "[scale]" adds Ray Serve and the Redis client (docker compose --profile scale builds it so).
ARG EXTRAS=""

ENV DEBIAN_FRONTEND=noninteractive \
    PIP_NO_CACHE_DIR=1 \
    PYTHONUNBUFFERED=1 \
    PATH=/opt/venv/bin:$PATH

RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv ffmpeg curl ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && python3 -m venv /opt/venv

WORKDIR /app
RUN pip install "torch==${TORCH_VERSION}" --index-url "${TORCH_INDEX}"
COPY pyproject.toml README.md ./
COPY server ./server
COPY pipelines ./pipelines
COPY scripts ./scripts
COPY weights/manifest.toml ./manifest.toml
# The CPU onnxruntime from the dependency list is swapped for the CUDA build.
RUN pip install ".${EXTRAS}" \
 && pip uninstall -y onnxruntime \
 && pip install onnxruntime-gpu

RUN useradd --create-home --uid 10001 facefoundry \
 && mkdir -p /data /weights \
 && chown facefoundry:facefoundry /data /weights
USER facefoundry

ENV FACEFOUNDRY_HOST=0.0.0.0 \
    FACEFOUNDRY_PORT=8000 \
    FACEFOUNDRY_DEVICE=cuda:0 \
    FACEFOUNDRY_WEIGHTS_DIR=/weights \
    FACEFOUNDRY_MANIFEST=/app/manifest.toml \
    FACEFOUNDRY_KEYS_FILE=/data/keys.json \
    FACEFOUNDRY_JOB_STORE=/data/jobs.sqlite \
    FACEFOUNDRY_OUTPUTS_DIR=/data/outputs

EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
  CMD curl -fsS "http://127.0.0.1:${FACEFOUNDRY_PORT}/health" || exit 1
CMD ["facefoundry", "serve"]
