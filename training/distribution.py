"""`--strategy`: one device, tf.distribute's `MirroredStrategy` or
`MultiWorkerMirroredStrategy` (TensorFlow), or `keras.distribution.DataParallel` (JAX).

Each engine needs its backend: tf.distribute TensorFlow, Keras' own
distribution JAX (the only backend where Keras implements it); on PyTorch
the only strategy is one device (`SingleDevice`). Asking for an engine
the backend lacks is a `StrategyError`.
"""

import contextlib
import json
import os
import subprocess
import sys

STRATEGIES = ("default", "mirrored", "multi_worker", "data_parallel")
# Where each engine runs; "default" runs everywhere.
ENGINE_BACKENDS = {"mirrored": "tensorflow", "multi_worker": "tensorflow", "data_parallel": "jax"}


class StrategyError(RuntimeError):
    """The requested distribution strategy cannot start."""


class SingleDevice:
    """One device without tf.distribute: the default strategy off TensorFlow."""

    num_replicas_in_sync = 1

    def scope(self):
        return contextlib.nullcontext()


class DataParallel:
    """`keras.distribution.DataParallel` over `devices`, in the strategy's interface.

    The model's variables are replicated and each global batch is split
    along its first axis across the devices, inside `scope()` only: build,
    fit and evaluate run in it. Keras distributes the compiled
    (`jit_compile`) step only, so the global batch must divide evenly
    (`batch_multiple`). Batch statistics need no synchronized variant: in the
    compiled step a mean over the sharded batch axis is the whole batch's
    (XLA inserts the all-reduce).
    """

    def __init__(self, devices):
        import keras

        self.distribution = keras.distribution.DataParallel(devices=devices)
        self.num_replicas_in_sync = len(devices)

    def scope(self):
        return self.distribution.scope()


def read_tf_config(environ=None):
    """The parsed `TF_CONFIG` of a multi-worker run, checked.

    Expects `{"cluster": {"worker": ["host:port", ...], ...},
    "task": {"type": "worker", "index": i}}` (the standard layout that
    `tf.distribute.cluster_resolver.TFConfigClusterResolver` reads).

    Raises:
        StrategyError: if `TF_CONFIG` is unset, not JSON, or inconsistent.
    """
    environ = os.environ if environ is None else environ
    text = environ.get("TF_CONFIG")
    if not text:
        raise StrategyError("--strategy multi_worker needs the TF_CONFIG environment variable")
    try:
        config = json.loads(text)
        cluster, task = config["cluster"], config["task"]
        members = cluster[task["type"]]
        index = task["index"]
    except (ValueError, KeyError, TypeError) as error:
        raise StrategyError(
            f"TF_CONFIG must be JSON with 'cluster' and 'task' (type, index) ({error!r}). "
            f"Received: {text[:200]}"
        ) from None
    if not isinstance(members, list) or not isinstance(index, int) or not 0 <= index < len(members):
        raise StrategyError(
            f"TF_CONFIG task index {index!r} is not one of the {task['type']!r} "
            f"addresses of its cluster. Received: {text[:200]}"
        )
    return config


_WATCHDOG = """
import os, signal, sys, time
parent, seconds, message = int(sys.argv[1]), float(sys.argv[2]), sys.argv[3]
time.sleep(seconds)
if os.getppid() == parent:
    sys.stderr.write(message + "\\n")
    sys.stderr.flush()
    os.kill(parent, signal.SIGKILL)
"""


@contextlib.contextmanager
def exit_after(seconds, message):
    """End the process with `message` unless the block finishes within `seconds`.

    TensorFlow waits without end for the workers of a cluster to connect,
    holding the interpreter and ignoring SIGTERM, so neither a Python
    thread nor a signal handler can stop it: a watchdog process prints the
    message and sends SIGKILL (exit status 137 in a shell).
    """
    watchdog = subprocess.Popen(
        [
            sys.executable,
            "-c",
            _WATCHDOG,
            str(os.getpid()),
            str(seconds),
            f"keras-norms-train: error: {message}",
        ]
    )
    try:
        yield
    finally:
        watchdog.kill()
        watchdog.wait()


def _multi_worker_strategy(tf, connect_timeout):
    """`MultiWorkerMirroredStrategy` whose `reduce` takes what Keras 3 gives it.

    Keras 3's `fit` reduces a whole `(x, y)` batch in one call, and scalar
    metrics along `axis=0`; the collective strategy rejects both
    (keras-team/keras#20585). Each tensor is reduced on its own, scalars
    across replicas only.
    """

    class Strategy(tf.distribute.MultiWorkerMirroredStrategy):
        def reduce(self, reduce_op, value, axis=None):
            reduce_one = super().reduce

            def reduce_tensor(v):
                local = self.experimental_local_results(v)[0]
                return reduce_one(reduce_op, v, axis if local.shape.rank else None)

            return tf.nest.map_structure(reduce_tensor, value)

    options = tf.distribute.experimental.CommunicationOptions(timeout_seconds=connect_timeout)
    return Strategy(communication_options=options)


def _data_parallel(devices):
    import keras

    available = keras.distribution.list_devices()
    if devices is not None and devices > len(available):
        raise StrategyError(
            f"--devices {devices} asks for more devices than JAX sees ({len(available)}: "
            f"{', '.join(available)})"
        )
    return DataParallel(available[:devices])


def make_strategy(name, connect_timeout=120.0, devices=None):
    """The strategy for `--strategy name`.

    `"default"`: one device (TensorFlow's default strategy on TensorFlow).
    `"mirrored"`: every local GPU, or the CPU. `"multi_worker"`: the
    cluster of `TF_CONFIG`; the call returns once every worker has joined
    (one all-reduce), or ends the process with a clear message after
    `connect_timeout` seconds. Create a tf.distribute strategy before any
    other TensorFlow work in the process. `"data_parallel"`: `DataParallel`
    over the first `devices` devices JAX sees (all when `None`).

    Raises:
        StrategyError: for an unknown name, an engine the backend lacks, a
            malformed `TF_CONFIG`, or more `devices` than there are.
    """
    if name not in STRATEGIES:
        raise StrategyError(f"unknown strategy {name!r}; choose from {', '.join(STRATEGIES)}")
    import keras  # here, not at the top: the training command's --help loads no Keras

    backend = keras.backend.backend()
    if name != "default" and ENGINE_BACKENDS[name] != backend:
        engine = "keras.distribution" if name == "data_parallel" else "tf.distribute"
        raise StrategyError(
            f"--strategy {name} uses {engine} and needs the {ENGINE_BACKENDS[name]} backend "
            f"(KERAS_BACKEND={ENGINE_BACKENDS[name]}); the backend is {backend!r}"
        )
    if name == "data_parallel":
        return _data_parallel(devices)
    if backend != "tensorflow":
        return SingleDevice()
    import tensorflow as tf

    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    config = read_tf_config()
    workers = config["cluster"][config["task"]["type"]]
    message = (
        f"the multi-worker cluster did not come up within {connect_timeout:g} s "
        f"(workers {', '.join(workers)}); check TF_CONFIG and that every worker is started"
    )
    with exit_after(connect_timeout, message):
        strategy = _multi_worker_strategy(tf, connect_timeout)
        strategy.reduce("SUM", strategy.run(lambda: tf.constant(1.0)), axis=None)
    return strategy


def is_chief(strategy):
    """Whether this process writes the run's shared outputs (model, export)."""
    if isinstance(strategy, (SingleDevice, DataParallel)):  # one process
        return True
    return strategy.extended.should_checkpoint


def needs_synchronized_statistics(strategy):
    """Whether batch-statistics layers must all-reduce their statistics themselves:
    under tf.distribute with several replicas, each replica computes on its
    share; under `DataParallel` the compiled step already sees the whole batch."""
    return strategy.num_replicas_in_sync > 1 and not isinstance(strategy, DataParallel)


def batch_multiple(strategy):
    """What every batch's size must be a multiple of: `DataParallel`'s device count
    (Keras splits each batch evenly), 1 for the other strategies."""
    return strategy.num_replicas_in_sync if isinstance(strategy, DataParallel) else 1


def worker_directory(run_dir, strategy):
    """`run_dir` for the chief; `run_dir/worker<i>` for the other workers."""
    if is_chief(strategy):
        return run_dir
    return os.path.join(run_dir, f"worker{strategy.cluster_resolver.task_id}")
