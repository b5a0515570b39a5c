"""Training one run: build the model, initialize, fit, evaluate, export, write its metrics.

`train(config)` runs what `keras-norms-train` parses (`keras_norms.training.cli`)
and what the experiment runner builds, a resolved `TrainConfig`, into its run
directory: `flags.json`, `history.csv`, a resumable backup, `model.keras`,
`metrics.json` and, when asked, `steps.csv` and the export.
"""

import dataclasses
import json
import os
import shutil
import time
import warnings

import keras
import numpy as np

from keras_norms import data_dependent_init, datasets, precise_statistics
from keras_norms.command_line import progress
from keras_norms.models import BUILDERS
from keras_norms.policies import dtype_policy
from keras_norms.training import data, preprocessing, recipes
from keras_norms.training.analysis import normprop_jacobian
from keras_norms.training.callbacks import BatchLog, EpochTime, HiddenInputStatistics
from keras_norms.training.config import FLAGS_FILE
from keras_norms.training.distribution import (
    StrategyError,
    batch_multiple,
    is_chief,
    make_strategy,
    needs_synchronized_statistics,
    worker_directory,
)


class CheckpointError(RuntimeError):
    """The run directory's backup exists but cannot be restored."""


class BuilderArgumentError(ValueError):
    """The builder refused an argument the flags passed it (e.g. --kernel-initializer)."""


class ResumableBackup(keras.callbacks.BackupAndRestore):
    """Keras `BackupAndRestore` whose backup survives a kill at any moment,
    that reports an unreadable backup clearly and keeps `history.csv` to the
    epochs it resumes after.

    Keras writes its weights file and its epoch file in place, so a run
    killed while it writes them leaves a backup that cannot be read, or one
    epoch's weights beside another epoch's count. Here each epoch's backup is
    written whole into `<backup_dir>.tmp` and then renamed into place; a
    rename that a kill interrupted is finished when the callback is built,
    before anything reads the backup. A run killed after logging an epoch
    but before backing it up redoes that epoch; its stale row is dropped so
    every epoch appears once.
    """

    # The files of `backup_dir` that Keras' BackupAndRestore restores from.
    WEIGHTS, METADATA = "latest.weights.h5", "training_metadata.json"

    def __init__(self, backup_dir, history_path):
        super().__init__(backup_dir)
        self.history_path = history_path
        self.staging_dir, self.previous_dir = backup_dir + ".tmp", backup_dir + ".old"
        if not os.path.isdir(backup_dir) and os.path.isdir(self.previous_dir):
            # Killed between the two renames of `on_epoch_end`: the staged backup is whole.
            os.replace(self.staging_dir, backup_dir)
        for leftover in (self.staging_dir, self.previous_dir):
            shutil.rmtree(leftover, ignore_errors=True)

    def on_train_begin(self, logs=None):
        try:
            super().on_train_begin(logs)
        except (OSError, ValueError, KeyError) as error:
            reason = str(error).splitlines()[0] if str(error) else type(error).__name__
            raise CheckpointError(
                f"cannot resume from the checkpoint in {self.backup_dir!r} "
                f"({reason}); delete that directory to start over"
            ) from None
        _drop_history_from(self.history_path, self._restored_epochs())

    def _restored_epochs(self):
        """How many epochs the restored backup holds (0 without one): its metadata's count."""
        path = os.path.join(self.backup_dir, self.METADATA)
        if not os.path.isfile(path):
            return 0
        with open(path) as f:
            return int(json.load(f)["epoch"])

    def on_epoch_end(self, epoch, logs=None):
        shutil.rmtree(self.staging_dir, ignore_errors=True)
        os.makedirs(self.staging_dir)
        self.model.save_weights(os.path.join(self.staging_dir, self.WEIGHTS))
        with open(os.path.join(self.staging_dir, self.METADATA), "w") as f:
            json.dump({"epoch": epoch + 1, "batch": 0}, f)
        if os.path.isdir(self.backup_dir):
            os.replace(self.backup_dir, self.previous_dir)
        os.replace(self.staging_dir, self.backup_dir)
        shutil.rmtree(self.previous_dir, ignore_errors=True)


def _drop_history_from(path, epoch):
    """Remove the rows of epochs >= `epoch` from the CSV log at `path`, if any."""
    if not os.path.isfile(path):
        return
    with open(path) as f:
        lines = f.readlines()
    kept = lines[:1] + [line for line in lines[1:] if int(line.split(",", 1)[0]) < epoch]
    if kept != lines:
        with open(path, "w") as f:
            f.writelines(kept)


def build_callbacks(config, run_dir, extra=()):
    """Epoch time, `extra` measurements, CSV log, resumable backup, checkpoint, schedule.

    The log comes after the measurements (it records what they add to the
    logs) and before the backup, so an epoch is logged before it is backed
    up: a run killed in between redoes the epoch rather than losing its row.
    """
    history_path = os.path.join(run_dir, "history.csv")
    backup = ResumableBackup(os.path.join(run_dir, "backup"), history_path)
    resuming = os.path.isdir(backup.backup_dir)
    schedule = recipes.SCHEDULES[config.schedule](
        config.learning_rate, config.epochs, config.decay_every
    )
    return [
        EpochTime(),
        *extra,
        keras.callbacks.CSVLogger(history_path, append=resuming),
        backup,
        keras.callbacks.ModelCheckpoint(os.path.join(run_dir, "model.keras")),
        keras.callbacks.LearningRateScheduler(schedule),
    ]


def build_model(config, splits, synchronized=False):
    """The compiled model, the builder's network in it, and the network's input preprocessing.

    Models that normalize their input themselves (nin) get `global` element-
    wise statistics of the training split or `batch` normalization, and are
    the model; others get the training split's standardization per channel
    or per component (`--input-standardization`) in front of the network.
    The recipe's optimizer and L2 weight decay (or the flags') compile it.
    `synchronized` all-reduces batch statistics over replicas.

    Returns:
        `(model, network, preprocess)`: `preprocess(x)` is what `network` sees of `x`.
    """
    builder = BUILDERS[config.model]
    kwargs = config.builder_arguments()
    if builder.data_normalizations:
        kwargs["data_normalization"] = (
            preprocessing.standardizer(splits.x_train, elementwise=True)
            if config.data_normalization == "global"
            else "batch"
        )
    try:
        net = builder.build(
            input_shape=splits.image_shape,
            num_classes=splits.num_classes,
            norm=config.norm,
            synchronized=synchronized,
            **kwargs,
        )
    except ValueError as error:  # the builder's own argument checks
        raise BuilderArgumentError(str(error)) from None
    if config.bn_momentum is not None:
        for layer in precise_statistics.batch_normalizations(net):
            layer.momentum = config.bn_momentum
    if builder.data_normalizations:
        model, preprocess = net, lambda x: x
    else:
        inputs = keras.Input(shape=splits.image_shape, name="pixels")
        preprocess = preprocessing.standardizer(
            splits.x_train, elementwise=config.input_standardization == "component"
        )
        model = keras.Model(inputs, net(preprocess(inputs)), name=net.name)
    recipes.add_weight_decay(model, config.weight_decay)
    model.compile(
        optimizer=recipes.make_optimizer(config.optimizer, config.learning_rate),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        # Weighted: the evaluation batches of --strategy data_parallel weight their padding 0.
        weighted_metrics=["accuracy"],
        jit_compile="auto" if config.jit_compile is None else config.jit_compile,
        run_eagerly=config.run_eagerly,
    )
    return model, net, preprocess


def _prepare_run_dir(path):
    try:
        os.makedirs(path, exist_ok=True)
        probe = os.path.join(path, ".write-test")
        with open(probe, "w"):
            pass
        os.remove(probe)
    except OSError as error:
        raise OSError(f"cannot write to output directory {path!r}: {error.strerror}") from None


def train(config):
    """Run one training job; returns the metrics dictionary.

    Raises:
        RunDirectoryError: if the run directory holds a run with other RUN_FLAGS.
    """
    # Before other TensorFlow work.
    strategy = make_strategy(config.strategy, config.connect_timeout, config.devices)
    multiple = batch_multiple(strategy)
    if config.batch_size % multiple:
        raise StrategyError(
            f"--batch-size {config.batch_size} does not split evenly across the {multiple} "
            f"devices of --strategy {config.strategy}; use a multiple of {multiple}"
        )
    run_dir = worker_directory(config.run_dir(), strategy)
    _prepare_run_dir(run_dir)
    config.check_run_dir(run_dir)
    keras.utils.set_random_seed(config.seed)
    _progress(config, f"loading {config.dataset}")
    splits = datasets.load(
        config.dataset,
        config.data_dir,
        config.image_size,
        seed=config.split_seed,
        download=config.download,
    )
    splits = datasets.hold_out_validation(splits, config.validation_examples)
    # The splits are shuffled: the first N are a sample.
    splits = dataclasses.replace(
        splits,
        x_train=splits.x_train[: config.train_examples],
        y_train=splits.y_train[: config.train_examples],
        x_test=splits.x_test[: config.test_examples],
        y_test=splits.y_test[: config.test_examples],
    )
    with open(os.path.join(run_dir, FLAGS_FILE), "w") as f:  # the data is here: a run starts
        json.dump(config.run_flags(), f, indent=2)
    with dtype_policy(config.mixed_precision):
        return _fit_and_report(config, strategy, run_dir, splits)


def _statistics_batch_size(config, splits):
    """The batch size population statistics are recomputed with: the training batch size,
    at least 2 (a variance), at most the training split."""
    return min(max(config.batch_size, 2), len(splits.x_train))


def _measurements(config, net, preprocess, splits, run_dir, examples):
    """The callbacks that add measurements to the logs, as the flags ask: the hidden inputs'
    statistics (over the validation split, or the test split without one) and the per-step
    training log (steps.csv) of an epoch of `examples` training examples."""
    measurements = []
    if config.track_hidden_inputs:
        x = _held_out_inputs(preprocess, splits)
        population = keras.ops.convert_to_numpy(preprocess(splits.x_train))
        # One unit per layer for every --seed (the split's seed draws it): curves of one unit.
        # Batch statistics measured as at inference, recomputed rather than lagging.
        measurements.append(
            HiddenInputStatistics(
                x,
                network=net,
                seed=config.split_seed,
                population_x=population,
                population_batch_size=_statistics_batch_size(config, splits),
            )
        )
    if config.log_every_steps:
        path = os.path.join(run_dir, "steps.csv")
        measurements.append(BatchLog(path, config.log_every_steps, examples, config.batch_size))
    return measurements


def _normprop_jacobian(net, preprocess, splits):
    """The RMS singular value of each NormProp ReLU layer's Jacobian on the validation split
    (the test split without one), `{}` for a network without them
    (`keras_norms.training.analysis.normprop_jacobian`)."""
    return normprop_jacobian(net, _held_out_inputs(preprocess, splits))


def _held_out_inputs(preprocess, splits):
    """The network's inputs for the validation split (the test split without one), numpy."""
    images = splits.x_test if splits.x_validation is None else splits.x_validation
    return keras.ops.convert_to_numpy(preprocess(images))


def _final_evaluation(config, model, splits, pipelines):
    """Each split's final loss and accuracy (`{split}_loss`, `{split}_accuracy` for the splits
    of `pipelines`, a dict `{split: dataset}`).

    With `--recompute-statistics`, a model with batch statistics is first
    evaluated with its running averages (`{split}_accuracy_running_averages`,
    `{split}_loss_running_averages`), then its statistics are set to their
    population values over the training split (notes eq. 1.64) and the plain
    keys give the recomputed model's figures. Returns the dict of figures.
    """
    figures = {}
    if config.recompute_statistics and precise_statistics.batch_normalizations(model):
        for split, pipeline in pipelines.items():
            loss, accuracy = model.evaluate(pipeline, verbose=0)
            figures[f"{split}_loss_running_averages"] = float(loss)
            figures[f"{split}_accuracy_running_averages"] = float(accuracy)
        size = _statistics_batch_size(config, splits)
        precise_statistics.recompute_batch_statistics(model, splits.x_train, size)
    for split, pipeline in pipelines.items():
        loss, accuracy = model.evaluate(pipeline, verbose=0)
        figures[f"{split}_loss"], figures[f"{split}_accuracy"] = float(loss), float(accuracy)
    return figures


def _progress(config, message):
    progress("keras-norms-train", message, config.verbose)


def _pipelines(config, splits, multiple):
    """The training batches and `{"validation": batches}` (empty without a validation
    split), each batch a `multiple` of examples."""
    train = data.make_pipeline(
        splits.x_train,
        splits.y_train,
        config.batch_size,
        True,
        config.seed,
        config.augment,
        multiple,
    )
    if splits.x_validation is None:
        return train, {}
    validation = data.make_pipeline(
        splits.x_validation, splits.y_validation, config.batch_size, False, multiple=multiple
    )
    return train, {"validation": validation}


def _fit_and_report(config, strategy, run_dir, splits):
    """Build, initialize, fit and evaluate under `strategy`; export, write metrics."""
    multiple = batch_multiple(strategy)
    with strategy.scope():  # keras.distribution distributes fit and evaluate in its scope only
        model, net, preprocess = build_model(
            config, splits, synchronized=needs_synchronized_statistics(strategy)
        )
        if config.data_init:
            init_rng = np.random.default_rng(config.seed)
            init_index = init_rng.permutation(len(splits.x_train))[: config.init_batch_size]
            _progress(config, f"data-dependent init on {len(init_index)} training images")
            data_dependent_init(model, splits.x_train[init_index])
        train_ds, pipelines = _pipelines(config, splits, multiple)
        examples = data.trained_examples(len(splits.x_train), config.batch_size, multiple)
        measurements = _measurements(config, net, preprocess, splits, run_dir, examples)
        jacobian_before = _normprop_jacobian(net, preprocess, splits)
        _progress(
            config,
            f"training {config.model} ({config.norm}) on {examples} images, "
            f"{strategy.num_replicas_in_sync} device(s)",
        )
        start = time.perf_counter()
        with warnings.catch_warnings():
            if not config.data_init:  # --no-data-init: training from g = ||v|| is what was asked
                warnings.filterwarnings("ignore", message=".*before its data-dependent init")
            model.fit(
                train_ds,
                epochs=config.epochs,
                validation_data=pipelines.get("validation"),
                callbacks=build_callbacks(config, run_dir, measurements),
                shuffle=False,  # the pipeline shuffles
                verbose=config.verbose,
            )
        wall_time = time.perf_counter() - start
        # The test split is read here, once, after training.
        pipelines["test"] = data.make_pipeline(
            splits.x_test, splits.y_test, config.batch_size, False, multiple=multiple
        )
        figures = _final_evaluation(config, model, splits, pipelines)
        if "test_accuracy_running_averages" in figures:  # model.keras gets the recomputed ones
            model.save(os.path.join(run_dir, "model.keras"))
    test_loss, test_accuracy = figures["test_loss"], figures["test_accuracy"]
    metrics = {
        "model": config.model,
        "norm": config.norm,
        "dataset": config.dataset,
        "num_classes": splits.num_classes,
        "epochs": config.epochs,
        "batch_size": config.batch_size,
        "strategy": config.strategy,
        "replicas": strategy.num_replicas_in_sync,
        "mixed_precision": config.mixed_precision,
        "jit_compile": bool(model.jit_compile),  # as Keras resolved it
        "train_wall_time_s": round(wall_time, 2),
        **figures,
    }
    for measurement in measurements:
        if isinstance(measurement, HiddenInputStatistics):  # the point before training
            metrics["hidden_inputs_before_training"] = measurement.initial
    if jacobian_before:
        metrics["normprop_jacobian_before_training"] = jacobian_before
        metrics["normprop_jacobian"] = _normprop_jacobian(net, preprocess, splits)
    export = config.export and is_chief(strategy)
    if export:
        from keras_norms.export.exporter import export_and_check
        from keras_norms.export.parity import differences_line

        _progress(config, f"exporting and checking parity in {os.path.join(run_dir, 'export')}")
        report = export_and_check(model, os.path.join(run_dir, "export"), splits.x_test)
        metrics["export"] = report
    with open(os.path.join(run_dir, "metrics.json"), "w") as f:
        json.dump(metrics, f, indent=2)
    print(
        f"test accuracy: {test_accuracy:.4f}  test loss: {test_loss:.4f}  "
        f"training time: {wall_time:.1f} s  run directory: {run_dir}"
    )
    if export:
        print(f"export parity (max |logit difference|): {differences_line(report)}")
    return metrics
