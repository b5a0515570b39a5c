#!/usr/bin/env bash
# The release and the light install: the sdist and wheel built from the tree (`python -m build`)
# and checked by `twine check --strict`, then a fresh venv with that wheel and JAX, no
# TensorFlow. Every layer, data_dependent_init, fold and a builder must train under JAX, and the
# commands that need an extra must say which in one line (.ci/light_install.py).
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
python3 -m venv "$work/build-venv"
"$work/build-venv/bin/python" -m pip install --quiet build twine
"$work/build-venv/bin/python" -m build --outdir "$work/dist" "$repo" > "$work/build.log" 2>&1 ||
    { cat "$work/build.log"; exit 1; }
"$work/build-venv/bin/python" -m twine check --strict "$work"/dist/*
wheel="$(ls "$work"/dist/*.whl)"
python3 -m venv "$work/venv"
"$work/venv/bin/python" -m pip install --quiet "$wheel"
echo "pip install $(basename "$wheel") (keras, numpy): site-packages $(du -sh "$work"/venv/lib/python3*/site-packages | cut -f1)"
"$work/venv/bin/python" -m pip install --quiet jax
cd "$work"  # away from the checkout, so the installed package is the one imported
KERAS_BACKEND=jax PATH="$work/venv/bin:$PATH" "$work/venv/bin/python" "$repo/.ci/light_install.py"
# With the `train` extra (scikit-learn, still no TensorFlow): the CLI trains on the digits.
"$work/venv/bin/python" -m pip install --quiet "$wheel[train]"
KERAS_BACKEND=jax "$work/venv/bin/keras-norms-train" --epochs 1 --image-size 12 --batch-size 200 \
    --output "$work/run" --verbose 0
test -f "$work/run/metrics.json" && test -f "$work/run/model.keras"
KERAS_BACKEND=jax "$work/venv/bin/python" -c "import importlib.util as u; assert u.find_spec('tensorflow') is None"
echo "light install with [train]: keras-norms-train ran on JAX without TensorFlow"
