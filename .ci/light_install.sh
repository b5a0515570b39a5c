#!/usr/bin/env bash
# The light install: a fresh venv with `pip install .` and JAX, no TensorFlow.
# Every layer, data_dependent_init, fold and a builder must train under JAX, and the
# commands that need an extra must say which in one line (.ci/light_install.py).
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
python3 -m venv "$work/venv"
"$work/venv/bin/python" -m pip install --quiet "$repo"
echo "pip install . (keras, numpy): site-packages $(du -sh "$work"/venv/lib/python3*/site-packages | cut -f1)"
"$work/venv/bin/python" -m pip install --quiet jax
cd "$work"  # away from the checkout, so the installed package is the one imported
KERAS_BACKEND=jax PATH="$work/venv/bin:$PATH" "$work/venv/bin/python" "$repo/.ci/light_install.py"
# With the `train` extra (scikit-learn, still no TensorFlow): the CLI trains on the digits.
"$work/venv/bin/python" -m pip install --quiet "$repo[train]"
KERAS_BACKEND=jax "$work/venv/bin/keras-norms-train" --epochs 1 --image-size 12 --batch-size 200 \
    --output "$work/run" --verbose 0
test -f "$work/run/metrics.json" && test -f "$work/run/model.keras"
KERAS_BACKEND=jax "$work/venv/bin/python" -c "import importlib.util as u; assert u.find_spec('tensorflow') is None"
echo "light install with [train]: keras-norms-train ran on JAX without TensorFlow"
