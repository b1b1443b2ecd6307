#!/usr/bin/env bash
# The GPU check of issue 24 (benchmarks/bench_gpu.py) on a GPU machine that has torch, transformers,
# accelerate, tensorboard and pyyaml but not the rest of what this project installs, and no network.
#
# Here, on a machine with pip access (once; the wheels go to .whl/, which git ignores through .git/info/exclude):
#     benchmarks/gpu_check.sh fetch
# There, from the repository root (the device tool: carry [".whl"], timeout_s 600):
#     bash benchmarks/gpu_check.sh run                      # every section, cut at LIMIT seconds (default 540)
#     bash benchmarks/gpu_check.sh run --only index         # a section a cut-short run missed (rows of the
#                                                          # earlier run on the same GPU are kept)
# It installs the wheels into /tmp/site (no dependencies resolved, nothing downloaded), puts them and this
# checkout on PYTHONPATH and runs the bench. Results: benchmarks/results/gpu.json and gpu.md, copied with
# the bench's log to $OUT when that is set; back here, put gpu.json in benchmarks/results/ and run
# `.venv/bin/python benchmarks/run_all.py --render-only` to rewrite docs/performance.md.
set -uo pipefail
cd "$(dirname "$0")/.."
WHEELS=${WHEELS:-.whl}
LIMIT=${LIMIT:-540}
# The core's and the train extra's packages the GPU image lacks (soundfile needs cffi, cffi needs pycparser);
# versions as this project's .venv has them. av (only for formats libsndfile lacks) is not needed here.
PACKAGES="webdataset braceexpand soundfile cffi pycparser soxr"

fetch() {
    local py=${PYTHON:-.venv/bin/python}
    grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
    mkdir -p "$WHEELS"
    for name in $PACKAGES; do
        version=$("$py" -c "from importlib.metadata import version; print(version('$name'))") || exit 1
        "$py" -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
            --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
            --platform manylinux2014_x86_64 --platform manylinux_2_31_x86_64 --platform manylinux_2_24_x86_64 \
            --platform manylinux1_x86_64 -d "$WHEELS" "$name==$version" || exit 1
    done
    ls -l "$WHEELS"
}

run() {
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site "$WHEELS"/*.whl || exit 1
    export PYTHONPATH="/tmp/site:$PWD${PYTHONPATH:+:$PYTHONPATH}" HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || true
    python3 -c "import torch, transformers, accelerate; print('torch', torch.__version__, 'CUDA', torch.version.cuda, 'transformers', transformers.__version__, 'accelerate', accelerate.__version__)"
    local log=${TMPDIR:-/tmp}/gpu_check.log
    timeout --signal=INT --kill-after=20 "$LIMIT" python3 benchmarks/bench_gpu.py "$@" 2>&1 | tee "$log"
    local rc=${PIPESTATUS[0]}
    if [ -n "${OUT:-}" ]; then
        cp benchmarks/results/gpu.json benchmarks/results/gpu.md "$log" "$OUT"/ 2>/dev/null || true
    fi
    echo "bench_gpu.py exit code $rc (124: cut at ${LIMIT} s; the rows measured by then are saved)"
    return "$rc"
}

case "${1:-}" in
    fetch) fetch ;;
    run) shift; run "$@" ;;
    *) echo "usage: $0 fetch | run [bench_gpu.py arguments]" >&2; exit 2 ;;
esac
