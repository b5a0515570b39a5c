"""`benchmarks/gpu_check.sh` end to end on tiny sizes, as on the GPU machine: JAX, no TensorFlow.

.ci/run runs this module in its JAX step (ANY_BACKEND); it skips on the other backends. The
check's Python runs with the packages that the GPU machine lacks hidden (a sitecustomize
module on PYTHONPATH), so that an import of one of them fails here as it would fail there.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import keras
import pytest

from keras_norms.models import BUILDERS

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "benchmarks" / "gpu_check.sh"
RATIOS = (
    "WeightNormalization(Dense) / Dense",
    "WeightNormalization(Conv2D) / Conv2D",
    "NormalizedConv2D / Conv2D",
    "NormPropConv2D / Conv2D+BatchNormalization",
)
# Installed here, absent on the GPU machine (its image: JAX, numpy, scikit-learn, h5py,
# ml-dtypes, rich, absl-py, packaging, pip, setuptools; keras comes as wheels).
HIDDEN = (
    "tensorflow",
    "tensorflow_datasets",
    "tf_keras",
    "tf2onnx",
    "onnx",
    "onnxruntime",
    "ai_edge_litert",
    "torch",
    "matplotlib",
)
SITECUSTOMIZE = f"""
import sys
from importlib.machinery import PathFinder

HIDDEN = {HIDDEN!r}


class HidingPathFinder:
    # PathFinder, except that the HIDDEN packages are not found (as if not installed).

    @staticmethod
    def find_spec(name, path=None, target=None):
        if name.partition(".")[0] in HIDDEN:
            return None
        return PathFinder.find_spec(name, path, target)

    @staticmethod
    def invalidate_caches():
        PathFinder.invalidate_caches()


sys.meta_path[:] = [HidingPathFinder if f is PathFinder else f for f in sys.meta_path]
"""

pytestmark = pytest.mark.skipif(
    keras.backend.backend() != "jax", reason="the GPU check runs on JAX"
)


def _table_rows(stdout):
    """The printed table's rows as dicts of its columns."""
    lines = [line for line in stdout.splitlines() if line.startswith("| ")]
    cells = [line[2:-2].split(" | ") for line in lines]  # "| " + " | ".join(cells) + " |"
    return [dict(zip(cells[0], row)) for row in cells[1:]]


def test_gpu_check_runs_every_part_without_tensorflow(tmp_path):
    hide = tmp_path / "hide"
    hide.mkdir()
    (hide / "sitecustomize.py").write_text(SITECUSTOMIZE)
    out = tmp_path / "out"
    environment = dict(
        os.environ,
        GPU_CHECK_INSTALL="0",
        GPU_CHECK_TINY="1",
        KERAS_BACKEND="jax",
        OUT=str(out),
        PYTHON=sys.executable,
        PYTHONPATH=os.pathsep.join(filter(None, [str(hide), os.environ.get("PYTHONPATH")])),
        # Tiny models: XLA's CPU compilation without LLVM's optimizations takes half the time.
        XLA_FLAGS=" ".join(
            filter(None, [os.environ.get("XLA_FLAGS"), "--xla_backend_optimization_level=0"])
        ),
    )
    result = subprocess.run(
        ["bash", str(SCRIPT)],
        env=environment,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    rows = _table_rows(result.stdout)
    assert {len(row) for row in rows} == {6}
    report = json.loads((out / "gpu_check.json").read_text())
    assert [r["item"] for r in report["rows"]] == [r["item"] for r in rows]

    by_part = {}
    for row in rows:
        by_part.setdefault(row["part"], []).append(row)
    # The main job: its accuracy and its training time against the 30 s goal.
    accuracy, wall_time = by_part["main job"]
    assert accuracy["item"].startswith("convpool_cnn_c wn_mobn on digits")
    assert accuracy["result"].startswith("test accuracy ")
    assert 0.0 <= report["main_job_metrics"]["test_accuracy"] <= 1.0
    assert wall_time["goal"] == "<= 30 s" and wall_time["met"] in ("yes", "no")

    # Every builder and norm has a row: trained (each paper builder's default norm, in the tiny
    # mode) with a finite loss, or listed as not run.
    listed, trained = set(), set()
    for row in by_part["fit"]:
        name, _, norms = row["item"].partition(" ")
        listed |= {(name, norm) for norm in norms.split(", ")}
        if not row["result"].startswith("not run"):
            assert row["met"] == "yes", row
            assert "images/s" in row["result"]
            trained |= {(name, norms)}
    assert listed == {(name, norm) for name, builder in BUILDERS.items() for norm in builder.norms}
    assert trained == {(n, b.norms[0]) for n, b in BUILDERS.items() if not b.application}

    # Each step ratio, with its goal.
    assert [r["item"] for r in by_part["step ratio"]] == list(RATIOS)
    for row in by_part["step ratio"]:
        assert float(row["ratio"].split()[0]) > 0 and row["goal"].startswith("<= ")
        assert row["met"] in ("yes", "no")

    (environment_row,) = by_part["environment"]
    assert environment_row["met"] == "yes" and report["tensorflow_imported"] is False
    assert report["mode"] == "tiny"
