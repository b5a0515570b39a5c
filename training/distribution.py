"""`--strategy`: one device, `MirroredStrategy` or `MultiWorkerMirroredStrategy`.

tf.distribute needs the TensorFlow backend; on JAX and PyTorch the only
strategy is one device (`SingleDevice`), and asking for another is a
`StrategyError`.
"""

import contextlib
import json
import os
import subprocess
import sys

STRATEGIES = ("default", "mirrored", "multi_worker")


class StrategyError(RuntimeError):
    """The requested distribution strategy cannot start."""


class SingleDevice:
    """One device without tf.distribute: the default strategy off TensorFlow."""

    num_replicas_in_sync = 1

    def scope(self):
        return contextlib.nullcontext()


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


def make_strategy(name, connect_timeout=120.0):
    """The `tf.distribute` strategy for `--strategy name`.

    `"default"`: TensorFlow's default (one device). `"mirrored"`: every
    local GPU, or the CPU. `"multi_worker"`: the cluster of `TF_CONFIG`;
    the call returns once every worker has joined (one all-reduce), or
    ends the process with a clear message after `connect_timeout` seconds.
    Create it before any other TensorFlow work in the process.

    Raises:
        StrategyError: for an unknown name or a malformed `TF_CONFIG`.
    """
    if name not in STRATEGIES:
        raise StrategyError(f"unknown strategy {name!r}; choose from {', '.join(STRATEGIES)}")
    import keras  # here, not at the top: the training command's --help loads no Keras

    if keras.backend.backend() != "tensorflow":
        if name == "default":
            return SingleDevice()
        raise StrategyError(
            f"--strategy {name} uses tf.distribute and needs the TensorFlow backend "
            f"(KERAS_BACKEND=tensorflow); the backend is {keras.backend.backend()!r}"
        )
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
    return isinstance(strategy, SingleDevice) or strategy.extended.should_checkpoint


def worker_directory(run_dir, strategy):
    """`run_dir` for the chief; `run_dir/worker<i>` for the other workers."""
    if is_chief(strategy):
        return run_dir
    return os.path.join(run_dir, f"worker{strategy.cluster_resolver.task_id}")
