"""SavedModel, TFLite and ONNX export with a parity check against the Keras model."""

import collections
import contextlib
import json
import os
import tempfile
import warnings

import keras
import numpy as np

from keras_norms.export.parity import (
    DEFAULT_TOLERANCE,
    EXPORT_FORMATS,
    ONNX,
    SAVED_MODEL,
    TFLITE,
    ParityError,
    check_formats,
    differences_by_shape_line,
    differences_line,
    max_abs_diff,
    parity_shapes,
    resized_inputs,
    shape_text,
    sizes_dynamic_axes,
)
from keras_norms.folding import as_float32, deployment_form, is_mixed_precision
from keras_norms.graph import is_graph_model
from keras_norms.optional import require

tf = require("tensorflow", "export", "keras-norms-export")


def export_saved_model(model, path, input_shape=None):
    """Write `model` as a SavedModel with a `serving_default` signature.

    `input_shape` (one input's shape without the batch axis, `None` for
    each dynamic axis, e.g. `(None, 80)`) is the signature's shape after its
    dynamic batch axis (`input_signature`); `None`: Keras' own, the model's
    input shape, or a subclassed model's first call's (every axis fixed).
    """
    signature = None if input_shape is None else input_signature(model, input_shape)
    model.export(path, format="tf_saved_model", verbose=False, input_signature=signature)
    return path


def input_signature(model, input_shape):
    """`[keras.InputSpec]` of one input shaped `(None, *input_shape)`, for `model.export`.

    The batch axis and each `None` of `input_shape` are dynamic. The dtype
    is the model's input's (a subclassed model's input dtype); a functional
    model's input keeps its name.
    """
    inputs = getattr(model, "inputs", None) if is_graph_model(model) else None
    if inputs and len(inputs) == 1:
        dtype, name = inputs[0].dtype, inputs[0].name
    else:
        dtype, name = model.input_dtype, None
    shape = (None,) + tuple(input_shape)
    return [keras.InputSpec(shape=shape, dtype=keras.backend.standardize_dtype(dtype), name=name)]


def convert_tflite(saved_model_dir, path):
    """Convert a SavedModel into a float32 TFLite file, builtin ops only."""
    converter = tf.lite.TFLiteConverter.from_saved_model(saved_model_dir)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    with open(path, "wb") as f:
        f.write(converter.convert())
    return path


def run_saved_model(path, inputs):
    """Outputs of a SavedModel's `serving_default` signature on `inputs`.

    Raises:
        ValueError: if `inputs`' shape does not fit the signature's (another
            rank, or a fixed axis of another size: a subclassed model
            exported without `input_shape` has every axis but the batch
            axis fixed, and TensorFlow would fail inside a kernel).
    """
    signature = tf.saved_model.load(path).signatures["serving_default"]
    specs = tf.nest.flatten(signature.structured_input_signature)
    if len(specs) == 1 and not specs[0].shape.is_compatible_with(np.shape(inputs)):
        raise ValueError(
            f"the SavedModel at {path} takes inputs of shape "
            f"{shape_text(specs[0].shape.as_list())}; received {shape_text(np.shape(inputs))}"
        )
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


def export_onnx(model, path, input_shape=None):
    """Write `model` as an ONNX file through Keras' `model.export(path, format="onnx")`.

    On TensorFlow, Keras traces the model's inference call and converts it
    with tf2onnx (its default opset). The batch axis and every `None` axis of
    `input_shape` (one input's shape without the batch axis, e.g.
    `(None, 80)`: `input_signature`) stay dynamic. Without it, a functional
    or Sequential model is exported from its own `inputs`, their `None` axes
    dynamic (Keras' ONNX route would otherwise refuse a model that was built
    but never called, such as a fresh `fold(model)`); a subclassed model
    must have been called once, and is exported at that call's shape, every
    axis but the batch axis fixed. Tensors that layers hold as constants
    (Keras `Normalization` statistics) stay constants of the graph
    (`_frozen_before_tf2onnx`).
    """
    tf2onnx = require("tf2onnx", "export", "ONNX export")
    inputs = getattr(model, "inputs", None)  # None for a subclassed model: Keras finds it
    if input_shape is not None:
        signature = input_signature(model, input_shape)
    else:
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
    """An `ai_edge_litert` interpreter of the TFLite file at `path`, its input set to `x`.

    The input is resized to `x.shape` (the file stores each dynamic axis,
    `-1` in its `shape_signature`, as 1) before tensors are allocated.
    """
    litert = require("ai_edge_litert.interpreter", "export", "running TFLite files")
    interpreter = litert.Interpreter(model_path=path, num_threads=threads)
    (input_detail,) = interpreter.get_input_details()
    # The batch axis is resized whatever the file says (a fixed batch size of 1 too).
    signature = [None] + [
        None if size < 0 else int(size) for size in input_detail["shape_signature"][1:]
    ]
    if not sizes_dynamic_axes(x.shape, signature):
        # XNNPack would fail to reshape (a RuntimeError naming none of the shapes).
        raise ValueError(
            f"the TFLite file at {path} takes inputs of shape {shape_text(signature)}; "
            f"received {shape_text(x.shape)}"
        )
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
        ValueError: if the file has more than one input, `x`'s dtype is
            not its input's, or `x`'s shape does not fit its input's (another
            rank, or a fixed axis of another size).
        RuntimeError: if the model's operators cannot be prepared for
            `x`'s shape.
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
    model,
    output_dir,
    inputs,
    tolerance=DEFAULT_TOLERANCE,
    formats=EXPORT_FORMATS,
    input_shape=None,
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
    `onnx_max_abs_diff`), plus `formats`.

    Every file is exported with one input of shape `(None, *input_shape)`:
    the batch axis and each `None` axis of `input_shape` (one input's shape
    without the batch axis, e.g. `(None, 80)` for a vocoder taking any
    number of mel frames) are dynamic. Without `input_shape`, a functional
    or Sequential model keeps its own input's `None` axes; a subclassed
    model is exported at the shape of its first call, every axis but the
    batch axis fixed (Keras traces it at its build shape), and the report's
    `fixed_axes_note` says so in one line, with the `input_shape` to pass.

    Where the exported shape has a dynamic axis, every format is checked
    at the inputs' size and, for each dynamic axis, at a second size
    (`size + size // 2 + 1`, the inputs repeated along that axis:
    `keras_norms.export.parity.parity_shapes`, `resized_inputs`). The
    report's `input_shape` is the inputs' size; `export_input_shape` the
    exported shape (`None` for a dynamic axis), `input_shapes` the sizes
    checked and `{format}_max_abs_diff_by_shape` each size's difference (in
    that order); `{format}_max_abs_diff` is the largest of them.

    `"tflite"` without `"saved_model"` converts from a SavedModel written to
    a temporary directory and deleted after; only the TFLite file is kept
    and checked.

    A model trained under mixed precision is rebuilt in float32 first
    (`as_float32`): the files compute in float32, parity is measured
    against the float32 Keras model, and the report adds how far the
    mixed-precision model's own logits are from it on `inputs`
    (`mixed_precision_max_abs_diff`, not checked).

    Raises:
        ValueError: if `formats` names a format not in
            `("saved_model", "tflite", "onnx")`, or none; if `input_shape`
            does not fit the inputs' shape (another rank, or a fixed axis
            of another size).
        MissingDependencyError: before anything is written, if a requested
            format's converter or runtime is not installed.
        ParityError: if any difference exceeds `tolerance`; the message
            lists every format's difference, and each size's.
    """
    formats = check_formats(formats, "export_and_check")
    inputs = np.asarray(inputs, "float32")
    input_shape = _checked_input_shape(input_shape, inputs.shape[1:])
    _require_runtimes(formats)
    os.makedirs(output_dir, exist_ok=True)
    model(inputs[:1])  # a reloaded subclassed model must have been called to be exported
    export_shape, note = input_shape, None
    if input_shape is None:
        export_shape, note = _default_export_shape(model)
    paths = {}
    with tempfile.TemporaryDirectory() as scratch:
        with deployment_form(model) as deployable:
            if SAVED_MODEL in formats or TFLITE in formats:
                saved_model_dir = export_saved_model(
                    deployable,
                    os.path.join(output_dir if SAVED_MODEL in formats else scratch, "saved_model"),
                    input_shape,
                )
                if SAVED_MODEL in formats:
                    paths[SAVED_MODEL] = saved_model_dir
            if ONNX in formats:
                paths[ONNX] = export_onnx(
                    deployable, os.path.join(output_dir, "model.onnx"), input_shape
                )
        if TFLITE in formats:
            paths[TFLITE] = convert_tflite(
                saved_model_dir, os.path.join(output_dir, "model.tflite")
            )
    mixed = model.predict(inputs, verbose=0) if is_mixed_precision(model) else None
    if mixed is not None:
        model = as_float32(model)
    run = {SAVED_MODEL: run_saved_model, TFLITE: run_tflite, ONNX: run_onnx}
    shapes = parity_shapes(inputs.shape[1:], export_shape or ())
    by_shape = {name: [] for name in formats}
    for shape in shapes:
        x = resized_inputs(inputs, shape)
        expected = model.predict(x, verbose=0)
        if shape == shapes[0] and mixed is not None:
            mixed_difference = max_abs_diff(mixed, expected)
        for name in formats:
            by_shape[name].append(max_abs_diff(run[name](paths[name], x), expected))
    report = {name: paths[name] for name in formats}
    report.update(
        formats=list(formats),
        num_inputs=len(inputs),
        input_shape=list(inputs.shape[1:]),
        export_input_shape=None if export_shape is None else list(export_shape),
        input_shapes=[list(shape) for shape in shapes],
        tolerance=tolerance,
    )
    if note is not None:
        report["fixed_axes_note"] = note
    for name in formats:
        report[f"{name}_max_abs_diff"] = max(by_shape[name])
        report[f"{name}_max_abs_diff_by_shape"] = by_shape[name]
    if mixed is not None:
        report["mixed_precision_max_abs_diff"] = mixed_difference
    with open(os.path.join(output_dir, "parity.json"), "w") as f:
        json.dump(report, f, indent=2)
    worst = max(report[f"{name}_max_abs_diff"] for name in formats)
    if worst > tolerance:
        each = differences_line(report, ".3e")
        sizes = f"; by input shape: {differences_by_shape_line(report, '.3e')}"
        raise ParityError(
            f"exported model differs from the Keras model: max |logit difference| "
            f"{worst:.3e} > tolerance {tolerance:.1e} ({each})" + (sizes if len(shapes) > 1 else "")
        )
    return report


def _checked_input_shape(input_shape, shape):
    """`input_shape` as a tuple of ints and `None`s, checked to fit `shape` (the inputs')."""
    if input_shape is None:
        return None
    try:
        candidate = tuple(input_shape)
    except TypeError:  # not a sequence
        candidate = None
    if (
        candidate is None
        or isinstance(input_shape, str)
        or not all(_is_axis_size(size) for size in candidate)
        or not sizes_dynamic_axes(tuple(shape), candidate)
    ):
        example = (None,) * (len(shape) - 1) + tuple(shape[-1:])
        raise ValueError(
            "export_and_check expected `input_shape` to be the shape of one input without "
            f"the batch axis, None for each dynamic axis, that fits the inputs' shape "
            f"{shape_text(shape)} (e.g. {shape_text(example)}). "
            f"Received: input_shape={input_shape!r}"
        )
    return tuple(None if size is None else int(size) for size in candidate)


def _is_axis_size(size):
    """Whether `size` is `None` or a positive integer (not a bool)."""
    if size is None:
        return True
    return isinstance(size, (int, np.integer)) and not isinstance(size, bool) and size > 0


def _default_export_shape(model):
    """The shape (no batch axis) Keras exports `model` with, and the fixed-axes note or `None`.

    A graph model's input's shape; a subclassed model's first call's shape
    (its build config), with a note when an axis before the last (a time
    or spatial axis) is fixed there. `(None, None)` where neither is known
    (several inputs).
    """
    if is_graph_model(model):
        inputs = model.inputs
        return (tuple(inputs[0].shape[1:]), None) if len(inputs) == 1 else (None, None)
    shape = (model.get_build_config() or {}).get("input_shape")
    if not isinstance(shape, (tuple, list)) or not all(_is_axis_size(s) for s in shape[1:]):
        return None, None  # several inputs, or a structure
    shape = tuple(shape[1:])
    if len(shape) < 2 or all(size is None for size in shape[:-1]):
        return shape, None
    suggested = (None,) * (len(shape) - 1) + shape[-1:]
    cli = ",".join("None" if size is None else str(size) for size in suggested)
    fixed = "every axis" if None not in shape else "its axes"
    return shape, (
        f"the subclassed model was exported with {fixed} fixed at its first call's shape "
        f"{shape_text(shape)}; pass input_shape={shape_text(suggested)} "
        f"(keras-norms-export --input-shape {cli}) to keep axes dynamic"
    )


def _require_runtimes(formats):
    """Raises MissingDependencyError for a requested format's missing converter or runtime."""
    if TFLITE in formats:
        require("ai_edge_litert.interpreter", "export", "running TFLite files")
    if ONNX in formats:
        for module in ("tf2onnx", "onnx", "onnxruntime"):
            require(module, "export", "ONNX export")
