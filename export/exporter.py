"""SavedModel and TFLite export with a parity check against the Keras model."""

import collections
import json
import os

import numpy as np

from keras_norms.export.parity import DEFAULT_TOLERANCE, ParityError, max_abs_diff
from keras_norms.folding import as_float32, deployment_form, is_mixed_precision
from keras_norms.optional import require

tf = require("tensorflow", "export", "keras-norms-export")


def export_saved_model(model, path):
    """Write `model` as a SavedModel with a `serving_default` signature."""
    model.export(path, format="tf_saved_model", verbose=False)
    return path


def convert_tflite(saved_model_dir, path):
    """Convert a SavedModel into a float32 TFLite file, builtin ops only."""
    converter = tf.lite.TFLiteConverter.from_saved_model(saved_model_dir)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    with open(path, "wb") as f:
        f.write(converter.convert())
    return path


def run_saved_model(path, inputs):
    """Outputs of a SavedModel's `serving_default` signature on `inputs`."""
    signature = tf.saved_model.load(path).signatures["serving_default"]
    (outputs,) = signature(tf.constant(inputs)).values()
    return outputs.numpy()


def saved_model_op_counts(path):
    """How many nodes of each op type the `serving_default` graph of a SavedModel has.

    Counts the signature's graph and the functions of its library, e.g.
    `{"Conv2D": 9, "Rsqrt": 0, ...}` (a `collections.Counter`): a folded
    model computes no `Rsqrt` or `Square` for its weight normalization.
    """
    signature = tf.saved_model.load(path).signatures["serving_default"]
    graph = signature.graph.as_graph_def()
    nodes = list(graph.node) + [node for f in graph.library.function for node in f.node_def]
    return collections.Counter(node.op for node in nodes)


def run_tflite(path, inputs):
    """Outputs of a TFLite file on `inputs`, run with `ai_edge_litert`.

    The batch dimension is resized to `len(inputs)` first (a `None` batch
    dimension is stored as 1).
    """
    litert = require("ai_edge_litert.interpreter", "export", "running TFLite files")
    interpreter = litert.Interpreter(model_path=path)
    (input_detail,) = interpreter.get_input_details()
    interpreter.resize_tensor_input(input_detail["index"], list(inputs.shape))
    interpreter.allocate_tensors()
    interpreter.set_tensor(input_detail["index"], inputs)
    interpreter.invoke()
    (output_detail,) = interpreter.get_output_details()
    return interpreter.get_tensor(output_detail["index"])


def export_and_check(model, output_dir, inputs, tolerance=DEFAULT_TOLERANCE):
    """Fold, export and check a Keras model; returns the parity report.

    Writes `output_dir/saved_model/` (from the folded model:
    `keras_norms.folding.deployment_form`, which folds a subclassed model's
    weight normalization in place), then
    `output_dir/model.tflite` converted from it, runs the Keras model, the
    reloaded SavedModel and the TFLite file on the same `inputs` (float32,
    the model's input shape with a batch axis) and reports the maximum
    absolute difference of their outputs (logits) from the Keras model's,
    also written to `output_dir/parity.json`. `None` axes of the model's
    input (a variable length or image size) stay dynamic in both files;
    the report's `input_shape` is the size they were checked at.

    A model trained under mixed precision is rebuilt in float32 first
    (`as_float32`): the files compute in float32, parity is measured
    against the float32 Keras model, and the report adds how far the
    mixed-precision model's own logits are from it
    (`mixed_precision_max_abs_diff`, not checked).

    Raises:
        ParityError: if either difference exceeds `tolerance`.
    """
    inputs = np.asarray(inputs, "float32")
    os.makedirs(output_dir, exist_ok=True)
    model(inputs[:1])  # a reloaded subclassed model must have been called to be exported
    with deployment_form(model) as deployable:
        saved_model_dir = export_saved_model(deployable, os.path.join(output_dir, "saved_model"))
    tflite_path = convert_tflite(saved_model_dir, os.path.join(output_dir, "model.tflite"))
    mixed = model.predict(inputs, verbose=0) if is_mixed_precision(model) else None
    if mixed is not None:
        model = as_float32(model)
    expected = model.predict(inputs, verbose=0)
    report = {
        "saved_model": saved_model_dir,
        "tflite": tflite_path,
        "num_inputs": len(inputs),
        "input_shape": list(inputs.shape[1:]),
        "tolerance": tolerance,
        "saved_model_max_abs_diff": max_abs_diff(
            run_saved_model(saved_model_dir, inputs), expected
        ),
        "tflite_max_abs_diff": max_abs_diff(run_tflite(tflite_path, inputs), expected),
    }
    if mixed is not None:
        report["mixed_precision_max_abs_diff"] = max_abs_diff(mixed, expected)
    with open(os.path.join(output_dir, "parity.json"), "w") as f:
        json.dump(report, f, indent=2)
    worst = max(report["saved_model_max_abs_diff"], report["tflite_max_abs_diff"])
    if worst > tolerance:
        raise ParityError(
            f"exported model differs from the Keras model: max |logit difference| "
            f"{worst:.3e} > tolerance {tolerance:.1e} (SavedModel "
            f"{report['saved_model_max_abs_diff']:.3e}, TFLite "
            f"{report['tflite_max_abs_diff']:.3e})"
        )
    return report
