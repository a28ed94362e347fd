# syntax=docker/dockerfile:1.7
# The mvlp runtime image: Prefect flows, Ray head/workers and RayJob entrypoints all run from it.
#
#   docker build --build-arg VARIANT=cpu  -t mvlp:0.1.0-cpu  .    # Ray head, CPU workers, Prefect worker
#   docker build --build-arg VARIANT=cuda -t mvlp:0.1.0-cuda .    # GPU workers (pretrain, iglue-eval)
#
# Layers, from least to most often changed: OS packages -> Python dependencies (read from
# pyproject.toml alone, without the project) -> eflomal -> project code. Editing code rebuilds only
# the last layer.
#
# eflomal builds its C aligner with `-march=native` (CFLAGS is assigned inside its src/Makefile,
# so an environment CFLAGS does not override it): an image built on a newer CPU dies with SIGILL
# (illegal instruction) on older nodes. We rewrite the flag to EFLOMAL_MARCH, by default
# x86-64-v2 (SSE4.2/POPCNT: every x86 server CPU since ~2009). For the fastest code on a known
# fleet pass e.g. --build-arg EFLOMAL_MARCH=x86-64-v3 (AVX2, Haswell and later) or build on the node.

ARG VARIANT=cpu
ARG EFLOMAL_MARCH=x86-64-v2

# ---- OS layer -------------------------------------------------------------------------------
FROM python:3.11-slim-bookworm AS base-cpu
ENV TORCH_INDEX=https://download.pytorch.org/whl/cpu
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential libgomp1 ca-certificates curl \
 && rm -rf /var/lib/apt/lists/* \
 && ln -s /usr/local/bin/python3 /usr/bin/mvlp-python

FROM nvidia/cuda:12.6.3-cudnn-runtime-ubuntu24.04 AS base-cuda
ENV TORCH_INDEX=https://download.pytorch.org/whl/cu126
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3.12 python3.12-venv python3.12-dev \
      build-essential libgomp1 ca-certificates curl \
 && rm -rf /var/lib/apt/lists/* \
 && ln -s /usr/bin/python3.12 /usr/bin/mvlp-python

FROM base-${VARIANT} AS os
# A non-root user (uid 1000, group users/100), matching runAsUser/runAsGroup in infra/k8s.
RUN (userdel -r ubuntu 2>/dev/null || true) \
 && useradd --uid 1000 --gid 100 --create-home --shell /bin/bash mvlp \
 && mvlp-python -m venv /opt/venv && chown -R 1000:100 /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    HOME=/tmp

# ---- Python dependencies (only pyproject.toml is copied: code edits keep this layer) -----------
FROM os AS deps
ARG EFLOMAL_MARCH
WORKDIR /build
COPY pyproject.toml ./
RUN pip install --upgrade pip wheel setuptools Cython numpy \
 && pip install --index-url "$TORCH_INDEX" "torch==2.13.0" \
 && python -c "import tomllib; p = tomllib.load(open('pyproject.toml', 'rb'))['project']; deps = p['dependencies'] + p['optional-dependencies']['k8s']; open('requirements.txt', 'w').write('\n'.join(d for d in deps if not d.startswith(('torch', 'eflomal'))))" \
 && pip install -r requirements.txt \
 && (pip uninstall -y dataclasses || true)  # img2dataset pulls a py3.6 backport that shadows the stdlib
# eflomal from source with a portable -march (see the header)
RUN pip download --no-deps --no-binary :all: "eflomal==2.0.0" -d /build/src \
 && tar -xzf /build/src/eflomal-2.0.0.tar.gz -C /build/src \
 && sed -i "s/-march=native/-march=${EFLOMAL_MARCH}/" /build/src/eflomal-2.0.0/src/Makefile \
 && grep -q -- "-march=${EFLOMAL_MARCH}" /build/src/eflomal-2.0.0/src/Makefile \
 && pip install --no-build-isolation --no-deps /build/src/eflomal-2.0.0 \
 && rm -rf /build/src

# ---- project code (the only layer a code change rebuilds) --------------------------------------
FROM deps AS runtime
WORKDIR /app
COPY --chown=1000:100 pyproject.toml README.md ./
COPY --chown=1000:100 mvlp_core ./mvlp_core
COPY --chown=1000:100 ray_jobs ./ray_jobs
COPY --chown=1000:100 flows ./flows
COPY --chown=1000:100 data_specs ./data_specs
COPY --chown=1000:100 infra ./infra
COPY --chown=1000:100 prefect.yaml ./
RUN pip install --no-deps --no-build-isolation . && rm -rf build *.egg-info
USER 1000:100
ENV PYTHONPATH=/app
CMD ["mvlp", "--help"]
