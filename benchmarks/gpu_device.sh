#!/usr/bin/env bash
# The GPU checks on a lent GPU machine whose Python has torch and transformers but no Ray and no
# registry to install from (benchmarks/README.md):
#   benchmarks/gpu_device.sh wheels   here: fill .whl/ (git-ignored) with what that machine lacks,
#                                     Ray repacked without its Java jars, RLlib, Serve and LLM parts
#                                     (79 MB wheel -> 26 MB tar.xz, under the 64 MiB a call carries)
#   benchmarks/gpu_device.sh run      there (carry .whl): install them, run bench_gpu_train through
#                                     the harness, copy results.json, BENCHMARKS.md and the log to $OUT
#   benchmarks/gpu_device.sh wsmvlp   there, a second call if device time is left (not yet timed):
#                                     bench_gpu_wsmvlp, the weakly-supervised model's MFU and ceiling
#   benchmarks/gpu_device.sh compile  there, a third (about 5 min): bench_gpu_compile, the towers
#                                     compiled against eager
#   benchmarks/gpu_device.sh ernie    there, if time is left (not yet timed): bench_gpu_ernie,
#                                     ERNIE-UniX²'s MFU and ceiling
# `run` trains Ray bf16, then plain bf16 and fp32 (Ray's overhead and bf16's gain in one call). The
# last run on an H200 (Ray bf16 + fp32, before plain runs were added) trained in 4.5 min, then
# overran 330 s while deleting 10 GB of checkpoints (hence RAY_TIMEOUT 540); the plain-only fallback
# took 2.5 min; starting the machine takes 1-2 min more.
set -euo pipefail
cd "$(dirname "$0")/.."
WHL=.whl
PLATFORMS=(--platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64)
PACKAGES=(pydantic==2.14.4 pydantic_core==2.50.5 annotated_types typing_inspection webdataset==0.2.111
          braceexpand==0.1.7 jsonschema jsonschema-specifications referencing rpds-py tensorboardX
          simplejpeg==1.9.0)

install() {  # the wheels carried in .whl, on the path of a python that has torch and transformers
  site=/tmp/mvlp-site
  if [ ! -d "$site/ray" ]; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$site" "$WHL"/*.whl
    tar -xJf "$WHL/ray.tar.xz" -C "$site"
  fi
  export PYTHONPATH="$site:$PWD" PYTHONUNBUFFERED=1
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  python3 -c 'import torch, transformers, ray; print("torch", torch.__version__, "transformers", transformers.__version__, "ray", ray.__version__)'
}

case "${1:-}" in
  wheels)
    mkdir -p "$WHL"
    grep -qx "/$WHL/" .git/info/exclude 2>/dev/null || echo "/$WHL/" >> .git/info/exclude
    pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
      "${PLATFORMS[@]}" -d "$WHL" "${PACKAGES[@]}"
    tmp=$(mktemp -d)
    pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
      "${PLATFORMS[@]}" -d "$tmp" "ray==$(.venv/bin/python -c 'import ray; print(ray.__version__)')"
    (cd "$tmp" && unzip -q ray-*.whl && rm ray-*.whl \
      && rm -rf ray/jars ray/rllib ray/serve ray/llm ray/dashboard/client/build/static/js/*.map \
      && tar -cf - . | xz -9 -T0 > ray.tar.xz)
    mv "$tmp/ray.tar.xz" "$WHL/" && rm -rf "$tmp"
    du -sh "$WHL"
    ;;
  run)
    install
    status=0
    # Ray Train first; should Ray not come up in that machine's sandbox, the same loop in one process
    timeout "${RAY_TIMEOUT:-540}" python3 -m benchmarks.harness --runs "${RUNS:-1}" --only gpu_train 2>&1 \
      | tee "${OUT:-.}/gpu_bench.log" || status=$?
    if [ "$status" != 0 ]; then
      python3 -m ray.scripts.scripts stop --force >/dev/null 2>&1 || true  # frees the GPU for the fallback
      status=0
      GPU_RUNNER=plain python3 -m benchmarks.harness --runs "${RUNS:-1}" --only gpu_train 2>&1 \
        | tee "${OUT:-.}/gpu_bench_plain.log" || status=$?
    fi
    cp -r benchmarks/results.json BENCHMARKS.md benchmarks/profiles "${OUT:-.}/" 2>/dev/null || true
    exit "$status"
    ;;
  wsmvlp|compile|ernie)
    install
    status=0
    timeout "${BENCH_TIMEOUT:-540}" python3 -m benchmarks.harness --runs 1 --only "gpu_$1" 2>&1 \
      | tee "${OUT:-.}/gpu_$1.log" || status=$?
    cp -r benchmarks/results.json BENCHMARKS.md benchmarks/profiles "${OUT:-.}/" 2>/dev/null || true
    exit "$status"
    ;;
  *)
    echo "usage: $0 wheels|run|wsmvlp|compile|ernie" >&2
    exit 2
    ;;
esac
