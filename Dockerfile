# archsearch images: the worker (trains candidates) and the server (runs the search loops).
#
#   docker build --target worker -t archsearch-worker .
#   docker build --target server -t archsearch-server .
#   # CUDA workers: torch's CUDA wheels instead of the CPU ones
#   docker build --target worker --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu128 \
#       -t archsearch-worker:cuda .
#
# torch is installed first and pinned (as `make setup` does), from TORCH_INDEX, so that the
# extras below find it satisfied and pull no other build. Both run as user 1000 (the
# Kubernetes manifests of `archsearch fleet k8s --render` expect it).
ARG PYTHON_VERSION=3.11
FROM python:${PYTHON_VERSION}-slim AS base
ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONUNBUFFERED=1 \
    ARCHSEARCH_CACHE_DIR=/cache
RUN useradd --create-home --uid 1000 --user-group archsearch \
    && mkdir -p /cache && chown archsearch:archsearch /cache
RUN pip install --index-url "${TORCH_INDEX}" "torch==${TORCH_VERSION}"
WORKDIR /src
COPY pyproject.toml README.md ./
COPY proto/ proto/
COPY server/ server/
COPY search/ search/
COPY spaces/ spaces/
COPY surrogates/ surrogates/
COPY worker/ worker/
COPY fleet/ fleet/

FROM base AS worker
RUN pip install '.[worker]'
USER archsearch
WORKDIR /home/archsearch
ENTRYPOINT ["archsearch"]
CMD ["worker", "--help"]

FROM base AS server
RUN pip install '.[server]'
USER archsearch
WORKDIR /home/archsearch
EXPOSE 50051
ENTRYPOINT ["archsearch"]
CMD ["serve", "--host", "0.0.0.0"]
