"""`keras-norms-train`: the command line, parsed into a `TrainConfig`, and its exit status.

The parser and `--help` load neither Keras nor TensorFlow: `run` imports the
trainer (`keras_norms.training.trainer`) when there is a run to train.
"""

import argparse
import dataclasses
import string
import sys

from keras_norms import datasets
from keras_norms.command_line import non_negative_int, positive_int, progress
from keras_norms.models.registry import BUILDERS
from keras_norms.optional import MissingDependencyError
from keras_norms.training.config import (
    CHOICES,
    DEFAULT_OUTPUT,
    FIELD_GROUPS,
    OUTPUT_PLACEHOLDERS,
    ConfigError,
    RunDirectoryError,
    TrainConfig,
)
from keras_norms.training.distribution import StrategyError

# Each flag's default: its TrainConfig field's.
DEFAULTS = {field.name: field.default for field in dataclasses.fields(TrainConfig)}

# Data-dependent init divides each output by its standard deviation over the
# init batch: the logits (one value per example) need two examples.
MIN_INIT_BATCH_SIZE = 2


def _init_batch_size(text):
    value = int(text)
    if value < MIN_INIT_BATCH_SIZE:
        raise argparse.ArgumentTypeError(
            f"expected at least {MIN_INIT_BATCH_SIZE} examples (data-dependent init takes "
            f"a standard deviation over them), got {text}"
        )
    return value


def _output_template(text):
    """`text`, a path whose only `{placeholders}` are those of OUTPUT_PLACEHOLDERS."""
    allowed = ", ".join(f"{{{name}}}" for name in OUTPUT_PLACEHOLDERS)
    try:
        fields = [field for _, field, _, _ in string.Formatter().parse(text) if field is not None]
    except ValueError as error:  # a lone brace
        raise argparse.ArgumentTypeError(
            f"{error} in {text!r}; the placeholders are {allowed}"
        ) from None
    unknown = [field for field in fields if field not in OUTPUT_PLACEHOLDERS]
    if unknown:
        raise argparse.ArgumentTypeError(
            f"unknown placeholder {{{unknown[0]}}} in {text!r}; the placeholders are {allowed}"
        )
    return text


def _momentum(text):
    value = float(text)
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"expected a momentum in [0, 1), got {text}")
    return value


def _positive_float(text):
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text}")
    return value


def _non_negative_float(text):
    value = float(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text}")
    return value


def _builders_help():
    """One line per builder: its norms (default first) and its recipe, from the registry."""
    lines = []
    for name, builder in sorted(BUILDERS.items()):
        recipe = builder.recipe
        norms = [builder.default_norm] + [n for n in builder.norms if n != builder.default_norm]
        lines.append(
            f"  {name}: --norm {'|'.join(norms)}; batch {recipe.batch_size}, "
            f"{recipe.optimizer} at {recipe.learning_rate:g} ({recipe.schedule}"
            f"{f', weight decay {recipe.weight_decay:g}' if recipe.weight_decay else ''}), "
            f"digits at {recipe.digits_image_size}x{recipe.digits_image_size}"
        )
    return "models (norms, the first the default; the paper's recipe):\n" + "\n".join(lines)


def build_parser():
    """The command line of `keras-norms-train`: one flag per `TrainConfig` field, in its group.

    A flag not given is absent from the parsed namespace (`argparse.SUPPRESS`),
    so that `TrainConfig`'s defaults are the flags' defaults.
    """
    parser = argparse.ArgumentParser(
        prog="keras-norms-train",
        description="Train a keras-norms model with model.fit, with the "
        "optimizer and schedule of its paper.",
        epilog=_builders_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        argument_default=argparse.SUPPRESS,
    )
    groups = {
        group: parser.add_argument_group(f"{group} flags")
        for group in dict.fromkeys(FIELD_GROUPS.values())
    }

    def add_argument(*flags, **kwargs):
        dest = kwargs.get("dest") or flags[0][2:].replace("-", "_")
        if dest in CHOICES:
            kwargs["choices"] = CHOICES[dest]
        default = DEFAULTS[dest]
        text = kwargs.get("help", "")
        if default is not None and not isinstance(default, bool) and "default" not in text:
            kwargs["help"] = f"{text} (default: {default})".strip()
        return groups[FIELD_GROUPS[dest]].add_argument(*flags, **kwargs)

    add_argument("--model")
    add_argument("--norm", help="normalization (default: the model's); see the list below")
    add_argument("--dataset")
    add_argument("--data-dir", help="tensorflow-datasets data dir")
    add_argument(
        "--no-download",
        dest="download",
        action="store_false",
        help="use only data already in --data-dir (no network access)",
    )
    add_argument(
        "--image-size",
        type=positive_int,
        help="resize images to this square size (digits default: the model's, see below)",
    )
    add_argument(
        "--split-seed",
        type=int,
        help="the seed of the digits' train/test split, fixed while --seed varies the "
        "initialization and batch order (default: 0)",
    )
    add_argument(
        "--validation-examples",
        type=non_negative_int,
        help="hold out the last N examples of the training split as the validation split, "
        "evaluated after every epoch (val_loss, val_accuracy) and at the end; the test split "
        "is read once, after training (default: 0, no validation split)",
    )
    add_argument(
        "--train-examples",
        type=positive_int,
        help="train on the first N examples of the training split (after the validation "
        "split is held out) only (default: all)",
    )
    add_argument(
        "--test-examples",
        type=positive_int,
        help="test on the first N examples of the test split only (default: all)",
    )
    add_argument("--epochs", type=positive_int)
    add_argument(
        "--batch-size",
        type=positive_int,
        help="global batch size (default: the model's recipe, see below)",
    )
    add_argument(
        "--init-batch-size",
        type=_init_batch_size,
        help="examples for data-dependent initialization (paper: 500)",
    )
    add_argument(
        "--no-data-init",
        dest="data_init",
        action="store_false",
        help="skip weight normalization's data-dependent initialization (Salimans & Kingma, "
        "section 3): g starts at ||v||, the wrapped layer's own scale",
    )
    add_argument(
        "--learning-rate",
        type=_positive_float,
        help="initial learning rate (default: the model's recipe, see below)",
    )
    add_argument(
        "--optimizer",
        help="'sgd', 'momentum' (SGD, momentum 0.9), 'rmsprop' or 'adam' (default: the recipe's)",
    )
    add_argument(
        "--schedule",
        help="learning-rate schedule (default: the recipe's): 'constant', "
        "'constant_then_linear' (to zero over the second half), 'halving' (x0.5 every "
        "1/8 of the run, NormProp), 'tenfold' (x0.1 every 3/5 of the run, Normalized "
        "Convolution)",
    )
    add_argument(
        "--decay-every",
        type=positive_int,
        help="epochs between the steps of 'halving' or 'tenfold' (default: the fraction "
        "of the run above; NormProp's sections 5.1-5.4 halve every 10 epochs)",
    )
    add_argument(
        "--weight-decay",
        type=_non_negative_float,
        help="L2 weight decay as a term of the loss, weight_decay/2 * sum ||W||^2 over the "
        "kernels (default: the recipe's)",
    )
    add_argument(
        "--augment",
        help="training-time augmentation: 'flip' (horizontal, NormProp's CIFAR runs) or "
        "'flip_shift' (and random shifts up to 10%% of the side, Normalized Convolution's "
        "CIFAR-10 runs); not for digits, which flipping changes",
    )
    add_argument(
        "--kernel-initializer",
        help="every kernel's initializer, a Keras name such as glorot_normal (Xavier) or "
        "he_normal (Kaiming) (default: the builder's)",
    )
    add_argument(
        "--width-multiplier",
        type=_positive_float,
        help="every hidden layer's filters times this (e.g. 0.25: a quarter of the paper's "
        "widths), for convpool_cnn_c, all_cnn_c, nin and resnet18 (default: 1, the paper's)",
    )
    add_argument("--depth", type=positive_int, help="weight layers, for plain_cnn")
    add_argument("--activation", help="activation, for resnet18 ('relu' or 'selu')")
    add_argument(
        "--input-standardization",
        help="for models that do not normalize their input: per 'channel' (eq. 1.13-1.16 of "
        "the notes 'Initialization and Normalization in DNN and CNN') or per 'component' "
        "(every pixel and channel, eq. 1.6)",
    )
    add_argument(
        "--data-normalization",
        help="for models that normalize their input (nin): 'global' statistics "
        "of the training images, or 'batch' statistics (section 4.1)",
    )
    add_argument(
        "--bn-momentum",
        type=_momentum,
        help="the running averages' momentum of every batch normalization in the model "
        "(Keras BN, mean-only BN, DWCK, learned statistics); default: each layer's own",
    )
    add_argument(
        "--recompute-statistics",
        action="store_true",
        help="after training, set every running mean and variance to its population value "
        "over the training split (keras_norms.recompute_batch_statistics) before the test; "
        "metrics.json keeps the test accuracy with the running averages too",
    )
    add_argument(
        "--track-hidden-inputs",
        action="store_true",
        help="log, per epoch, the mean and standard deviation of one unit's input in every "
        "hidden layer over the validation split, or the test split without one (internal "
        "covariate shift, NormProp's figure 2) to history.csv, and before training to "
        "metrics.json; batch statistics recomputed on the training split for each measurement",
    )
    add_argument(
        "--log-every-steps",
        type=non_negative_int,
        help="every K steps, write that step's own training loss and accuracy to steps.csv "
        "(default: 0, none)",
    )
    add_argument("--seed", type=int)
    add_argument(
        "--output",
        type=_output_template,
        help=f"run directory, may hold {{model}}, {{norm}} and {{dataset}} (default: "
        f"{DEFAULT_OUTPUT}); a run started again in it resumes, with the same flags only",
    )
    add_argument(
        "--export",
        action="store_true",
        help="export a SavedModel, a TFLite file and an ONNX file and check their parity",
    )
    add_argument(
        "--strategy",
        help="one device; on TensorFlow, tf.distribute's 'mirrored' (every local GPU) or "
        "'multi_worker' (the cluster in TF_CONFIG); on JAX, 'data_parallel' "
        "(keras.distribution.DataParallel over the devices JAX sees, in the compiled step). "
        "--batch-size is the global batch, split across devices, and batch statistics are "
        "the whole batch's",
    )
    add_argument(
        "--devices",
        type=positive_int,
        help="with --strategy data_parallel: the first N devices (default: all)",
    )
    add_argument(
        "--connect-timeout",
        type=_positive_float,
        help="seconds to wait for every multi_worker worker to join before giving up",
    )
    add_argument(
        "--mixed-precision",
        nargs="?",
        const="mixed_float16",
        help="train under this Keras dtype policy (default when given: mixed_float16, "
        "with dynamic loss scaling); variables and statistics stay float32",
    )
    add_argument(
        "--jit-compile",
        action=argparse.BooleanOptionalAction,
        help="compile the training step with XLA, or not (--no-jit-compile); default: Keras' "
        "own choice, which compiles on JAX and not on TensorFlow's CPU or on PyTorch",
    )
    add_argument(
        "--run-eagerly",
        action="store_true",
        help="run every step eagerly, uncompiled (Keras' run_eagerly): slower per step, "
        "but no tracing, so faster for a few steps (the experiments' quick scale)",
    )
    add_argument("--verbose", type=int)
    return parser


def _fail(message, status=1):
    print(f"keras-norms-train: error: {message}", file=sys.stderr)
    return status


def parse_args(argv=None):
    """The command line as a `TrainConfig`, the model's defaults and recipe filled in.

    Raises:
        SystemExit: argparse's exit (status 2) for flags it or the model cannot take.
    """
    parser = build_parser()
    config = TrainConfig(**vars(parser.parse_args(argv)))
    try:
        return config.resolved()
    except ConfigError as error:
        parser.error(str(error))


def main(argv=None):
    """`keras-norms-train ARGV`; returns the exit status."""
    return run(parse_args(argv))


def run(config):
    """Train the run `config` (a resolved `TrainConfig`, see `parse_args`) as the command does.

    Returns:
        The exit status: 0, 2 for data that cannot be had, 1 for any other
        refusal (each printed as one line on stderr).
    """
    progress("keras-norms-train", "loading Keras and its backend", config.verbose)
    from keras_norms.training import trainer

    try:
        trainer.train(config)
    except (datasets.DataUnavailableError, datasets.SplitError) as error:
        return _fail(error, status=2)
    except (
        OSError,
        trainer.BuilderArgumentError,
        trainer.CheckpointError,
        RunDirectoryError,
        StrategyError,
        MissingDependencyError,
    ) as error:
        return _fail(error)
    return 0


if __name__ == "__main__":
    sys.exit(main())
