"""SavedModel, TFLite and ONNX export with a parity check against the Keras model."""

import collections
import contextlib
import json
import os
import tempfile
import warnings

import numpy as np

from keras_norms.export.parity import (
    DEFAULT_TOLERANCE,
    EXPORT_FORMATS,
    FORMAT_LABELS,
    ONNX,
    SAVED_MODEL,
    TFLITE,
    ParityError,
    check_formats,
    max_abs_diff,
)
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


def export_onnx(model, path):
    """Write `model` as an ONNX file through Keras' `model.export(path, format="onnx")`.

    On TensorFlow, Keras traces the model's inference call and converts it
    with tf2onnx (its default opset). The batch axis and every `None` axis of
    the model's input stay dynamic. A functional or Sequential model is
    exported from its own `inputs` (Keras' ONNX route would otherwise refuse
    a model that was built but never called, such as a fresh `fold(model)`);
    a subclassed model must have been called once. Tensors that layers hold
    as constants (Keras `Normalization` statistics) stay constants of the
    graph (`_frozen_before_tf2onnx`).
    """
    tf2onnx = require("tf2onnx", "export", "ONNX export")
    inputs = getattr(model, "inputs", None)  # None for a subclassed model: Keras finds it
    signature = None if not inputs else [inputs[0] if len(inputs) == 1 else list(inputs)]
    with warnings.catch_warnings(), _frozen_before_tf2onnx(tf2onnx):
        # Keras' numpy-2 patch of tf2onnx reads `np.object` once: a FutureWarning only.
        warnings.filterwarnings("ignore", message=r".*`np\.object`", category=FutureWarning)
        model.export(path, format="onnx", verbose=False, input_signature=signature)
    return path


@contextlib.contextmanager
def _frozen_before_tf2onnx(tf2onnx):
    """Keras' call of `tf2onnx.convert.from_function` gets its function frozen first.

    tf2onnx 1.17 names the ONNX graph's inputs after every non-resource input
    of the traced function, the tensors it captures included; it then
    freezes the function, which turns those captures into constants, but
    keeps them as inputs: a layer's constant tensor (Keras `Normalization`'s
    mean and variance, which the training CLI puts in every model) becomes
    an ONNX input with its value lost. Frozen first (tf2onnx's own
    `convert_variables_to_constants_v2`, the same call it makes next), the
    function's only inputs are the model's.
    """
    original = tf2onnx.convert.from_function

    def from_function(function, *args, **kwargs):
        return original(_FrozenFunction(function, tf2onnx), *args, **kwargs)

    tf2onnx.convert.from_function = from_function
    try:
        yield
    finally:
        tf2onnx.convert.from_function = original


class _FrozenFunction:
    """A `tf.function` whose concrete functions have variables and captures as constants."""

    def __init__(self, function, tf2onnx):
        self._function = function
        self._freeze = tf2onnx.tf_loader.convert_variables_to_constants_v2

    def get_concrete_function(self, *args, **kwargs):
        concrete = self._function.get_concrete_function(*args, **kwargs)
        frozen = self._freeze(concrete, lower_control_flow=False, aggressive_inlining=True)
        # tf2onnx names the ONNX inputs from it (the Keras inputs' names, as unfrozen).
        frozen.graph.structured_input_signature = concrete.structured_input_signature
        return frozen


def onnx_runner(path, x, threads=1):
    """A function that runs the ONNX file at `path` once on `x` with onnxruntime on CPU.

    Opens one `onnxruntime.InferenceSession` (the CPU provider) fed `x` (a
    numpy array of the file's input dtype, float32 for our exports, and a
    shape that its input accepts: batch and `None` axes are dynamic). With
    `threads` (an int), the session runs `threads` intra-op threads, one
    inter-op thread, sequentially (as timed by the benchmarks); with `None`,
    onnxruntime's defaults. Each call of the returned function runs the
    model once and returns its outputs, a list of numpy arrays.

    Raises:
        MissingDependencyError: if onnxruntime is not installed.
        ValueError: if the file has more than one input.
        onnxruntime's `InvalidArgument`: from the returned function, if
            `x`'s dtype, rank or a fixed dimension is not its input's.
    """
    onnxruntime = require("onnxruntime", "export", "running ONNX files")
    options = onnxruntime.SessionOptions()
    if threads is not None:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
    session = onnxruntime.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    (input_detail,) = session.get_inputs()
    feed = {input_detail.name: x}
    return lambda: session.run(None, feed)


def run_onnx(path, inputs):
    """Outputs of an ONNX file's single output on `inputs`, run with onnxruntime on CPU.

    `inputs` as for `onnx_runner`, which opens the session (onnxruntime's
    default threads); returns a numpy array.
    """
    (outputs,) = onnx_runner(path, inputs, threads=None)()
    return outputs


def onnx_op_counts(path):
    """How many nodes of each op type an ONNX file's graph has.

    Counts the main graph, the subgraphs of control-flow nodes (`If`,
    `Loop`, `Scan` bodies) and the model's local functions, e.g.
    `{"Conv": 9, "Sqrt": 0, ...}` (a `collections.Counter`), as
    `saved_model_op_counts` does for a SavedModel.
    """
    onnx = require("onnx", "export", "reading ONNX files")
    model = onnx.load(path, load_external_data=False)
    counts = collections.Counter()

    def count(nodes):
        for node in nodes:
            counts[node.op_type] += 1
            for attribute in node.attribute:  # the bodies of If, Loop and Scan
                graphs = list(attribute.graphs)
                if attribute.HasField("g"):
                    graphs.append(attribute.g)
                for graph in graphs:
                    count(graph.node)

    count(model.graph.node)
    for function in model.functions:
        count(function.node)
    return counts


def _tflite_interpreter(path, x, threads):
    """An `ai_edge_litert` interpreter of the TFLite file at `path`, its input set to `x`."""
    litert = require("ai_edge_litert.interpreter", "export", "running TFLite files")
    interpreter = litert.Interpreter(model_path=path, num_threads=threads)
    (input_detail,) = interpreter.get_input_details()
    # A `None` batch dimension is stored as 1.
    interpreter.resize_tensor_input(input_detail["index"], list(x.shape))
    interpreter.allocate_tensors()
    interpreter.set_tensor(input_detail["index"], x)
    return interpreter


def tflite_runner(path, x, threads=1):
    """A function that runs the TFLite file at `path` once on `x` with `ai_edge_litert`.

    Opens one interpreter with `threads` threads (`None`: the runtime's
    default), resizes its input to `x.shape` (batch and `None` axes are
    dynamic) and sets it to `x` (a numpy array of the file's input dtype,
    float32 for our exports). Each call of the returned function runs the
    model once and returns `None` (nothing is copied out: it is the call the
    benchmarks time).

    Raises:
        MissingDependencyError: if `ai_edge_litert` is not installed.
        ValueError: if the file has more than one input, or `x`'s dtype is
            not its input's.
        RuntimeError: if the model's operators cannot be prepared for
            `x`'s shape (e.g. another rank than its input's).
    """
    return _tflite_interpreter(path, x, threads).invoke


def run_tflite(path, inputs):
    """Outputs of a TFLite file's single output on `inputs`, run with `ai_edge_litert`.

    `inputs` as for `tflite_runner`: the batch dimension is resized to
    `len(inputs)` first; the runtime's default threads. Returns a numpy
    array.
    """
    interpreter = _tflite_interpreter(path, inputs, threads=None)
    interpreter.invoke()
    (output_detail,) = interpreter.get_output_details()
    return interpreter.get_tensor(output_detail["index"])


def tflite_op_counts(path):
    """How many operators of each type the TFLite file at `path` has.

    E.g. `{"CONV_2D": 9, "LEAKY_RELU": 9, ...}` (a `collections.Counter` of
    the builtin operator names), as `onnx_op_counts` does for an ONNX file. Read
    from an interpreter before it allocates tensors, so before any delegate
    (XNNPACK) replaces operators by its own.

    Raises:
        MissingDependencyError: if `ai_edge_litert` is not installed.
    """
    litert = require("ai_edge_litert.interpreter", "export", "running TFLite files")
    # The one private read of the interpreter, here only: no public API lists a TFLite
    # model's operators before delegates replace them (once tensors are allocated, XNNPACK
    # has put its own in their place).
    details = litert.Interpreter(model_path=path)._get_ops_details()
    return collections.Counter(op["op_name"] for op in details)


def export_and_check(
    model, output_dir, inputs, tolerance=DEFAULT_TOLERANCE, formats=EXPORT_FORMATS
):
    """Fold, export and check a Keras model; returns the parity report.

    Exports the folded model (`keras_norms.folding.deployment_form`, which
    folds a subclassed model's weight normalization in place) in each of
    `formats` (default: all three): `output_dir/saved_model/`,
    `output_dir/model.tflite` (converted from that SavedModel) and
    `output_dir/model.onnx` (Keras' ONNX export, tf2onnx). Runs the Keras
    model and each file (the reloaded SavedModel, TFLite through
    `ai_edge_litert`, ONNX through onnxruntime) on the same `inputs`
    (float32, the model's input shape with a batch axis) and reports the
    maximum absolute difference of their outputs (logits) from the Keras
    model's, also written to `output_dir/parity.json`: per format, its
    path (`saved_model`, `tflite`, `onnx`) and difference
    (`saved_model_max_abs_diff`, `tflite_max_abs_diff`,
    `onnx_max_abs_diff`), plus `formats`. The batch axis and `None` axes of
    the model's input (a variable length or image size) stay dynamic in
    every file; the report's `input_shape` is the size they were checked at.

    `"tflite"` without `"saved_model"` converts from a SavedModel written to
    a temporary directory and deleted after; only the TFLite file is kept
    and checked.

    A model trained under mixed precision is rebuilt in float32 first
    (`as_float32`): the files compute in float32, parity is measured
    against the float32 Keras model, and the report adds how far the
    mixed-precision model's own logits are from it
    (`mixed_precision_max_abs_diff`, not checked).

    Raises:
        ValueError: if `formats` names a format not in
            `("saved_model", "tflite", "onnx")`, or none.
        MissingDependencyError: before anything is written, if a requested
            format's converter or runtime is not installed.
        ParityError: if any difference exceeds `tolerance`; the message
            lists every format's difference.
    """
    formats = check_formats(formats, "export_and_check")
    _require_runtimes(formats)
    inputs = np.asarray(inputs, "float32")
    os.makedirs(output_dir, exist_ok=True)
    model(inputs[:1])  # a reloaded subclassed model must have been called to be exported
    paths = {}
    with tempfile.TemporaryDirectory() as scratch:
        with deployment_form(model) as deployable:
            if SAVED_MODEL in formats or TFLITE in formats:
                saved_model_dir = export_saved_model(
                    deployable,
                    os.path.join(output_dir if SAVED_MODEL in formats else scratch, "saved_model"),
                )
                if SAVED_MODEL in formats:
                    paths[SAVED_MODEL] = saved_model_dir
            if ONNX in formats:
                paths[ONNX] = export_onnx(deployable, os.path.join(output_dir, "model.onnx"))
        if TFLITE in formats:
            paths[TFLITE] = convert_tflite(
                saved_model_dir, os.path.join(output_dir, "model.tflite")
            )
    mixed = model.predict(inputs, verbose=0) if is_mixed_precision(model) else None
    if mixed is not None:
        model = as_float32(model)
    expected = model.predict(inputs, verbose=0)
    run = {SAVED_MODEL: run_saved_model, TFLITE: run_tflite, ONNX: run_onnx}
    report = {name: paths[name] for name in formats}
    report.update(
        formats=list(formats),
        num_inputs=len(inputs),
        input_shape=list(inputs.shape[1:]),
        tolerance=tolerance,
    )
    for name in formats:
        report[f"{name}_max_abs_diff"] = max_abs_diff(run[name](paths[name], inputs), expected)
    if mixed is not None:
        report["mixed_precision_max_abs_diff"] = max_abs_diff(mixed, expected)
    with open(os.path.join(output_dir, "parity.json"), "w") as f:
        json.dump(report, f, indent=2)
    differences = {name: report[f"{name}_max_abs_diff"] for name in formats}
    worst = max(differences.values())
    if worst > tolerance:
        each = ", ".join(f"{FORMAT_LABELS[name]} {diff:.3e}" for name, diff in differences.items())
        raise ParityError(
            f"exported model differs from the Keras model: max |logit difference| "
            f"{worst:.3e} > tolerance {tolerance:.1e} ({each})"
        )
    return report


def _require_runtimes(formats):
    """Raises MissingDependencyError for a requested format's missing converter or runtime."""
    if TFLITE in formats:
        require("ai_edge_litert.interpreter", "export", "running TFLite files")
    if ONNX in formats:
        for module in ("tf2onnx", "onnx", "onnxruntime"):
            require(module, "export", "ONNX export")
