# syntax=docker/dockerfile:1.7
# The mvlp runtime image family: Prefect flows, the Prefect server and worker, Ray heads/workers and
# RayJob entrypoints all run from it. Two variants, one Python:
#
#   docker build --build-arg VARIANT=cpu  -t REGISTRY/mvlp:0.1.0-cpu  .   # Ray heads, CPU workers, Prefect
#   docker build --build-arg VARIANT=cuda -t REGISTRY/mvlp:0.1.0-cuda .   # GPU workers (translate, qa, pretrain, iglue-eval)
#
# One interpreter for every variant. A RayJob's head and CPU workers run the cpu variant and its GPU
# workers the cuda variant, and Ray refuses a node whose Python (major.minor) differs from the
# head's. So both variants start FROM the same python:${PYTHON_VERSION} image: the same interpreter,
# patch level included. The cuda variant gets CUDA the way PyTorch ships it on PyPI: the Linux
# torch wheel there is the CUDA 13.0 build and depends on the CUDA runtime, cuBLAS, cuDNN and NCCL
# as pip wheels (cuda-toolkit[...], nvidia-*-cu13), so no nvidia/cuda base image (with its own
# distribution Python) is needed. Only the driver comes from the node (NVIDIA device plugin +
# container toolkit; CUDA 13 needs driver >= 580). vLLM comes through ray[llm] (the `vllm` extra in
# pyproject.toml), which pins the vLLM release built against that same torch and CUDA.
#
# Versions live in pyproject.toml alone: torch, ray (== rayVersion in infra/k8s) and prefect are
# read from it here. tests/unit/test_images.py checks the invariants (one Python minor in every
# variant, within requires-python; ray pin == every rayVersion; vLLM only in cuda). The image is not
# built by the test suite; `docker build` as above is the check.
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

ARG PYTHON_VERSION=3.11
ARG VARIANT=cpu
ARG EFLOMAL_MARCH=x86-64-v2

# ---- OS layer: the one Python every variant shares ---------------------------------------------
FROM python:${PYTHON_VERSION}-slim-bookworm AS python
# wget: KubeRay's default liveness/readiness probes exec `wget` against the Ray health endpoints
# (operators before the HTTP probes); build-essential: eflomal and any sdist; libgomp1: torch/eflomal.
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential libgomp1 ca-certificates curl wget \
 && rm -rf /var/lib/apt/lists/*

FROM python AS base-cpu
ENV TORCH_INDEX=https://download.pytorch.org/whl/cpu \
    MVLP_EXTRAS="k8s" \
    MVLP_WITHOUT=""

FROM python AS base-cuda
# PyPI's torch wheel for Linux is the CUDA build (CUDA libraries as pip dependencies, see the header).
# No Prefect here: vLLM (ray[llm]) pins fastapi below the release Prefect needs, so the two cannot
# share an environment, and Ray pods never import Prefect (tests/unit/test_layering.py). The cuda
# variant runs Ray GPU workers and the qa job's head (its driver checks for vLLM), never a flow.
ENV TORCH_INDEX=https://pypi.org/simple \
    MVLP_EXTRAS="vllm" \
    MVLP_WITHOUT="prefect" \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility

FROM base-${VARIANT} AS os
# A non-root user (uid 1000, group users/100), matching runAsUser/runAsGroup in infra/k8s.
RUN useradd --uid 1000 --gid 100 --create-home --shell /bin/bash mvlp \
 && python3 -m venv /opt/venv && chown -R 1000:100 /opt/venv
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
# torch first, from the variant's index (the cpu wheel, or PyPI's CUDA wheel); then the project's
# dependencies without MVLP_WITHOUT, plus the variant's extras (MVLP_EXTRAS), which keep that torch
# (`torch==X` accepts X+cpu); eflomal is built below.
RUN pip install --upgrade pip wheel setuptools Cython numpy \
 && python -c "import os, re, tomllib; p = tomllib.load(open('pyproject.toml', 'rb'))['project']; name = lambda d: re.split(r'[^A-Za-z0-9_.-]', d, maxsplit=1)[0].lower(); deps = [d for d in p['dependencies'] if name(d) not in os.environ['MVLP_WITHOUT'].split()] + [d for x in os.environ['MVLP_EXTRAS'].split() for d in p['optional-dependencies'][x]]; open('torch.txt', 'w').write('\n'.join(d for d in deps if name(d) == 'torch')); open('requirements.txt', 'w').write('\n'.join(d for d in deps if name(d) not in ('torch', 'eflomal')))" \
 && pip install --index-url "$TORCH_INDEX" -r torch.txt \
 && pip install -r requirements.txt \
 && (pip uninstall -y dataclasses || true) \
 && python -c "import os, sys, importlib.metadata as m, tomllib; ray = next(d for d in tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies'] if d.startswith('ray[')); assert m.version('ray') == ray.split('==')[1], (m.version('ray'), ray); print('python', sys.version.split()[0], 'ray', m.version('ray'), 'torch', m.version('torch'), 'vllm', m.version('vllm') if 'vllm' in os.environ['MVLP_EXTRAS'].split() else '-')"
# (img2dataset pulls a py3.6 `dataclasses` backport that shadows the stdlib: removed above; the last
# line fails the build when the installed ray is not the pinned one, or vLLM is missing from cuda)
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
