#!/usr/bin/env bash
# The GPU goals on a machine with JAX and no TensorFlow, in one run of under 5 minutes:
# the digits main job under KERAS_BACKEND=jax (accuracy, training wall time <= 30 s), every
# builder and norm under model.fit (runs, finite loss, images/s), and the training-step ratios
# of weight normalization, Normalized Convolution and NormProp to their plain layers, printed
# as one table (benchmarks/gpu_check.py says how each is measured).
#
#     bash benchmarks/gpu_check.sh          (from a copy of the tree, with .whl/ beside it)
#
# The machine needs Python 3.12 with JAX (CUDA), numpy, scikit-learn, h5py, ml-dtypes, rich,
# absl-py, packaging, pip and setuptools; keras and what else it needs come as wheels in .whl/
# (no network there; .whl/ is git-ignored), fetched beforehand on a machine with one (optree
# imports typing_extensions, which that image lacks):
#
#     python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#         --implementation cp --platform manylinux_2_28_x86_64 \
#         --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
#         --platform manylinux2014_x86_64 --platform manylinux1_x86_64 \
#         -d .whl keras==3.15.1 namex optree typing-extensions
#
# (on 2026-12-08: keras 3.15.1, namex 0.1.0, optree 0.20.0, typing_extensions 4.16.0).
#
# The wheels and then the project (pip install --no-deps --no-build-isolation --no-index: the
# repository's training/ and export/ folders become keras_norms.training and
# keras_norms.export only through setup.cfg's package_dir) go into $GPU_CHECK_SITE (default
# /tmp/site), put first on PYTHONPATH; the check runs from a temporary directory outside the
# checkout, whose keras_norms/ folder would shadow the installed package.
#
# Environment:
#   OUT=DIR                   also write the report as DIR/gpu_check.json
#   GPU_CHECK_INSTALL=0       install nothing: use this environment's keras and keras_norms
#   GPU_CHECK_TINY=1          tiny sizes, seconds of work per part (tests/test_gpu_check.py)
#   GPU_CHECK_NORMS=all|default          the papers' builders: every norm (default; tiny:
#                                        default) or each builder's default norm
#   GPU_CHECK_APPLICATIONS=none|default|all   the keras.applications builders (default: none)
#   GPU_CHECK_BUDGET_S=210    no builder's fit starts later than this after the check's start
#   PYTHON                    the interpreter (default python3)
#
# Exit status: 0 when every part ran (an unmet goal is a "no" in the table), else non-zero.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-python3}"
export KERAS_BACKEND=jax
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-3}"

echo "== devices"
if command -v nvidia-smi >/dev/null 2>&1; then
    nvidia-smi -L || true
else
    echo "nvidia-smi: not found"
fi

if [ "${GPU_CHECK_INSTALL:-1}" != 0 ]; then
    SITE="${GPU_CHECK_SITE:-/tmp/site}"
    shopt -s nullglob
    wheels=("$REPO"/.whl/*.whl)
    shopt -u nullglob
    if [ "${#wheels[@]}" -eq 0 ]; then
        echo "gpu_check.sh: error: no wheels in $REPO/.whl/ (see this script's header)" >&2
        exit 1
    fi
    echo "== installing into $SITE: $(cd "$REPO/.whl" && echo *.whl)"
    mkdir -p "$SITE"
    "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target "$SITE" "${wheels[@]}"
    # A fresh copy of the tracked sources, so that no build/ folder of an earlier run is reused.
    SOURCE="$(mktemp -d)"
    tar -C "$REPO" --exclude=./.git --exclude=./.whl --exclude=./build --exclude=./results \
        --exclude=./runs --exclude=./site --exclude='*.egg-info' --exclude=__pycache__ \
        --exclude=.hypothesis --exclude=.pytest_cache --exclude=.ruff_cache -cf - . |
        tar -C "$SOURCE" -xf -
    "$PYTHON" -m pip install -q --no-index --no-deps --no-build-isolation --no-compile \
        --no-cache-dir --upgrade --target "$SITE" "$SOURCE"
    rm -rf "$SOURCE"
    for package in keras_norms/training keras_norms/export keras_norms/models/networks; do
        if [ ! -f "$SITE/$package/__init__.py" ]; then
            echo "gpu_check.sh: error: the install lacks $package" >&2
            exit 1
        fi
    done
    export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
fi

args=()
if [ "${GPU_CHECK_TINY:-0}" != 0 ]; then
    args+=(--tiny)
fi
if [ -n "${GPU_CHECK_NORMS:-}" ]; then
    args+=(--norms "$GPU_CHECK_NORMS")
fi
if [ -n "${GPU_CHECK_APPLICATIONS:-}" ]; then
    args+=(--applications "$GPU_CHECK_APPLICATIONS")
fi
if [ -n "${GPU_CHECK_BUDGET_S:-}" ]; then
    args+=(--budget-s "$GPU_CHECK_BUDGET_S")
fi
if [ -n "${OUT:-}" ]; then
    mkdir -p "$OUT"
    args+=(--json "$(cd "$OUT" && pwd)/gpu_check.json")
fi

# Outside the checkout: its keras_norms/ folder must not shadow the installed package.
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
cd "$WORK"
if ! "$PYTHON" -c "import jax, keras, keras_norms.training; print('jax devices:', jax.devices()); \
print('keras', keras.__version__, 'from', keras.__file__); \
print('keras_norms from', keras_norms.__file__)"; then
    echo "gpu_check.sh: error: jax, keras or keras_norms.training does not import (a wheel" \
        "missing from .whl/? see this script's header)" >&2
    exit 1
fi
echo "== check"
"$PYTHON" "$REPO/benchmarks/gpu_check.py" ${args[@]+"${args[@]}"}
