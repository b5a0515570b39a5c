"""A training run's configuration as data.

`TrainConfig` is what `keras-norms-train` parses its command line into,
what `keras_norms.training.trainer.train` takes, what a run directory's
`flags.json` stores (`run_flags`, `from_run_flags`) and what the experiment
runner builds for each run. Its fields are grouped as the command line's
help groups them (`FIELD_GROUPS`); each field is one flag, `--name-with-dashes`,
and the fields' defaults are the flags' defaults.
"""

import dataclasses
import json
import os
from typing import Optional

from keras_norms.datasets import DATASETS, DIGITS, OFFLINE_DATASETS
from keras_norms.models.registry import BUILDERS, get_builder
from keras_norms.training.distribution import STRATEGIES
from keras_norms.training.preprocessing import AUGMENTATIONS, STANDARDIZATIONS
from keras_norms.training.recipes import OPTIMIZERS, SCHEDULES, STEP_SCHEDULES

DEFAULT_OUTPUT = os.path.join("runs", "{model}_{norm}_{dataset}")
OUTPUT_PLACEHOLDERS = ("model", "norm", "dataset")
FLAGS_FILE = "flags.json"
# Flags passed to the builder when given, for the builders whose `build` takes them.
BUILDER_FLAGS = ("kernel_initializer", "width_multiplier", "depth", "activation")
MIXED_PRECISION_POLICIES = ("mixed_float16", "mixed_bfloat16")
# The values of each field with a fixed vocabulary (its flag's choices); None is the default's.
CHOICES = {
    "model": tuple(sorted(BUILDERS)),
    "dataset": DATASETS,
    "augment": AUGMENTATIONS,
    "input_standardization": STANDARDIZATIONS,
    "data_normalization": tuple(
        sorted({name for builder in BUILDERS.values() for name in builder.data_normalizations})
    ),
    "optimizer": tuple(sorted(OPTIMIZERS)),
    "schedule": tuple(sorted(SCHEDULES)),
    "strategy": STRATEGIES,
    "mixed_precision": MIXED_PRECISION_POLICIES,
    "verbose": (0, 1, 2),
}


class ConfigError(ValueError):
    """A configuration the model or its recipe cannot take; the message names the flag."""


class RunDirectoryError(RuntimeError):
    """The run directory holds a run trained with other flags."""


def _field(group, default):
    return dataclasses.field(default=default, metadata={"group": group})


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """One training run. `None` fields take the model's default or recipe (`resolved`).

    The flags' help (`keras-norms-train --help`) describes each field; the
    units are examples (`*_examples`, `batch_size`), epochs (`epochs`,
    `decay_every`), steps (`log_every_steps`), pixels (`image_size`) and
    seconds (`connect_timeout`).
    """

    # What is trained.
    model: str = _field("model", "convpool_cnn_c")
    norm: Optional[str] = _field("model", None)
    kernel_initializer: Optional[str] = _field("model", None)
    width_multiplier: Optional[float] = _field("model", None)
    depth: Optional[int] = _field("model", None)
    activation: Optional[str] = _field("model", None)
    bn_momentum: Optional[float] = _field("model", None)
    data_init: bool = _field("model", True)
    init_batch_size: int = _field("model", 500)
    # On what.
    dataset: str = _field("data", DIGITS)
    data_dir: Optional[str] = _field("data", None)
    download: bool = _field("data", True)
    image_size: Optional[int] = _field("data", None)
    split_seed: int = _field("data", 0)
    validation_examples: int = _field("data", 0)
    train_examples: Optional[int] = _field("data", None)
    test_examples: Optional[int] = _field("data", None)
    augment: str = _field("data", "none")
    input_standardization: str = _field("data", "channel")
    data_normalization: str = _field("data", "global")
    # How.
    epochs: int = _field("optimization", 30)
    batch_size: Optional[int] = _field("optimization", None)
    learning_rate: Optional[float] = _field("optimization", None)
    optimizer: Optional[str] = _field("optimization", None)
    schedule: Optional[str] = _field("optimization", None)
    decay_every: Optional[int] = _field("optimization", None)
    weight_decay: Optional[float] = _field("optimization", None)
    seed: int = _field("optimization", 0)
    mixed_precision: Optional[str] = _field("optimization", None)
    # None: Keras' own choice ("auto": XLA on JAX, off on TensorFlow's CPU and on PyTorch).
    jit_compile: Optional[bool] = _field("optimization", None)
    run_eagerly: bool = _field("optimization", False)
    # Where.
    strategy: str = _field("distribution", "default")
    devices: Optional[int] = _field("distribution", None)
    connect_timeout: float = _field("distribution", 120.0)
    # What comes out.
    output: str = _field("output", DEFAULT_OUTPUT)
    export: bool = _field("output", False)
    recompute_statistics: bool = _field("output", False)
    track_hidden_inputs: bool = _field("output", False)
    log_every_steps: int = _field("output", 0)
    verbose: int = _field("output", 1)

    def resolved(self):
        """This configuration with the model's defaults and recipe filled in, checked.

        Raises:
            ConfigError: for a value outside its field's `CHOICES`, or a norm,
                image size or flag the model (or the schedule) cannot take;
                the message names the flag.
        """
        for name, choices in CHOICES.items():
            value = getattr(self, name)
            if value is not None and value not in choices:
                raise ConfigError(
                    f"argument --{name.replace('_', '-')}: invalid choice: {value!r} "
                    f"(choose from {', '.join(map(str, choices))})"
                )
        builder = get_builder(self.model)
        recipe = builder.recipe
        image_size = self.image_size
        if image_size is None and self.dataset in OFFLINE_DATASETS:
            image_size = recipe.digits_image_size
        config = dataclasses.replace(
            self,
            norm=self.norm or builder.default_norm,
            batch_size=self.batch_size or recipe.batch_size,
            learning_rate=self.learning_rate or recipe.learning_rate,
            optimizer=self.optimizer or recipe.optimizer,
            schedule=self.schedule or recipe.schedule,
            weight_decay=recipe.weight_decay if self.weight_decay is None else self.weight_decay,
            image_size=image_size,
        )
        config._check(builder)
        return config

    def _check(self, builder):
        if self.norm not in builder.norms:
            raise ConfigError(
                f"argument --norm: invalid choice: {self.norm!r} for --model "
                f"{self.model} (choose from {', '.join(builder.norms)})"
            )
        minimum = builder.min_input_size
        if self.image_size is not None and self.image_size < minimum:
            raise ConfigError(
                f"argument --image-size: --model {self.model} needs images of at least "
                f"{minimum}x{minimum}. Received: --image-size {self.image_size}"
            )
        if self.run_eagerly and self.jit_compile:
            raise ConfigError("argument --run-eagerly: not allowed with --jit-compile")
        if self.devices is not None and self.strategy != "data_parallel":
            raise ConfigError("argument --devices: only with --strategy data_parallel")
        if self.strategy == "data_parallel" and (self.run_eagerly or self.jit_compile is False):
            flag = "--run-eagerly" if self.run_eagerly else "--no-jit-compile"
            raise ConfigError(
                f"argument {flag}: not allowed with --strategy data_parallel, which "
                "distributes the compiled step only"
            )
        if self.decay_every is not None and self.schedule not in STEP_SCHEDULES:
            raise ConfigError(
                f"argument --decay-every: the {self.schedule!r} schedule has no steps; "
                f"use it with --schedule {' or '.join(STEP_SCHEDULES)}"
            )
        for name in self.builder_arguments():
            flag = f"--{name.replace('_', '-')}"
            if not builder.takes(name):
                raise ConfigError(f"argument {flag}: --model {self.model} takes no {flag}")
        if builder.data_normalizations and self.input_standardization != "channel":
            raise ConfigError(
                f"argument --input-standardization: --model {self.model} normalizes its "
                "input itself; use --data-normalization"
            )

    def builder_arguments(self):
        """The `BUILDER_FLAGS` that are set, as the builder's keyword arguments."""
        given = {name: getattr(self, name) for name in BUILDER_FLAGS}
        return {name: value for name, value in given.items() if value is not None}

    def to_argv(self):
        """The `keras-norms-train` flags that parse back into this configuration.

        Fields at their defaults are left out; a boolean differing from its
        default is `--name` when True, `--no-name` when False.
        """
        argv = []
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if value == field.default:
                continue
            flag = field.name.replace("_", "-")
            if isinstance(value, bool):
                argv.append(f"--{flag}" if value else f"--no-{flag}")
            else:
                argv += [f"--{flag}", repr(value) if isinstance(value, float) else str(value)]
        return argv

    def run_dir(self):
        """The run directory: `output` with its `{model}`, `{norm}`, `{dataset}` filled in."""
        return self.output.format(model=self.model, norm=self.norm, dataset=self.dataset)

    def run_flags(self):
        """The fields that change what a run trains (`RUN_FLAGS`), as `flags.json` stores them."""
        return {name: getattr(self, name) for name in RUN_FLAGS}

    @classmethod
    def from_run_flags(cls, flags):
        """The configuration a run's `flags.json` (a dict) records; other fields at their defaults.

        Raises:
            ValueError: for a key that is not one of `RUN_FLAGS`.
        """
        unknown = sorted(set(flags) - set(RUN_FLAGS))
        if unknown:
            raise ValueError(
                f"TrainConfig.from_run_flags expects keys among RUN_FLAGS. Received: {unknown}"
            )
        return cls(**flags)

    def check_run_dir(self, run_dir):
        """Refuse `run_dir` if its `flags.json` records a run made with other `RUN_FLAGS`.

        Raises:
            RunDirectoryError: naming each flag that differs, or an unreadable file.
        """
        path = os.path.join(run_dir, FLAGS_FILE)
        if not os.path.isfile(path):
            return
        try:
            with open(path) as f:
                recorded = json.load(f)
        except ValueError as error:
            raise RunDirectoryError(f"cannot read {path!r} ({error}); delete {run_dir!r}") from None
        changed = [
            f"--{name.replace('_', '-')} was {recorded.get(name)}, now {value}"
            for name, value in self.run_flags().items()
            if recorded.get(name) != value
        ]
        if changed:
            raise RunDirectoryError(
                f"{run_dir!r} holds a run trained with other flags ({'; '.join(changed)}); "
                "pick another --output, or delete that directory to start over"
            )


# The fields that change what a run trains: the run directory records them in FLAGS_FILE, and
# a run started there with others is refused, not resumed. In flags.json's order.
RUN_FLAGS = (
    "model",
    "norm",
    "dataset",
    "split_seed",
    "image_size",
    "validation_examples",
    "train_examples",
    "test_examples",
    "epochs",
    "batch_size",
    "init_batch_size",
    "data_init",
    "learning_rate",
    "optimizer",
    "schedule",
    "decay_every",
    "weight_decay",
    "augment",
    "kernel_initializer",
    "width_multiplier",
    "depth",
    "activation",
    "input_standardization",
    "data_normalization",
    "bn_momentum",
    "recompute_statistics",
    "track_hidden_inputs",
    "log_every_steps",
    "seed",
    "strategy",
    "mixed_precision",
    "jit_compile",
)
# Each field's group in the command line's help: model, data, optimization, distribution, output.
FIELD_GROUPS = {field.name: field.metadata["group"] for field in dataclasses.fields(TrainConfig)}
