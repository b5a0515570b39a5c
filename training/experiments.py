"""The papers' experiments as declarative specs, run by `keras-norms-experiment`.

An experiment names what varies (one `keras-norms-train` flag set per
configuration), the flags of each scale, the learning-rate grid, the papers'
claims as data (`keras_norms.training.claims.Claim`: what is compared, in
which direction), which table or figure of which paper it mirrors, and that
paper's own numbers and setting, so that the runner's report gives the
paper's claim beside the verdict our runs give it.
"""

import dataclasses
import os

import numpy as np

from keras_norms import datasets
from keras_norms.training.claims import Claim
from keras_norms.training.statistics import EQUIVALENT, HIGHER, LOWER

QUICK, FULL = "quick", "full"
SCALES = (QUICK, FULL)
FINAL_SEEDS = 8

# The notes the initialization and data normalization experiments mirror, by their title.
NOTES = 'the notes "Initialization and Normalization in DNN and CNN"'


@dataclasses.dataclass(frozen=True)
class Configuration:
    """One trained variant: a label, its `keras-norms-train` flags, and its own learning-rate
    grid where it needs one (`()`: the experiment's)."""

    name: str
    flags: tuple
    learning_rates: tuple = ()


@dataclasses.dataclass(frozen=True)
class PaperResult:
    """A published number for one configuration: who reported it, and where."""

    source: str
    values: dict  # configuration name -> the published value, in the table's unit


@dataclasses.dataclass(frozen=True)
class Experiment:
    """One paper's experiment, as the runner runs and reports it.

    Every configuration gets the flags of the scale: `quick_flags` (a few
    steps, the test suite's smoke run), `digits_flags` (`--scale full` on
    the offline digits, by default `digits_hard`, stated beside the table)
    or `paper_flags` (`--scale full` on any other dataset: the paper's own
    setting, `paper_setting`). `learning_rates` is the grid each
    configuration's rate is chosen from (`()`: the recipe's rate alone);
    `claims` the paper's claims the runs test; `final_seeds` the seeds per
    configuration; `panels` groups configurations into one figure each
    (`()`: all in one); `analyses` are functions `analysis(args,
    experiment, runs) -> markdown` (`runs`: `{configuration: [outcomes.read_run
    dict per final seed]}`) whose sections follow the table
    (measurements that are not a training run's, such as variance at
    initialization).
    """

    name: str
    mirrors: str
    topic: str
    configurations: tuple
    quick_flags: tuple
    digits_flags: tuple
    paper_flags: tuple
    paper_setting: str
    paper_results: tuple = ()
    claims: tuple = ()
    learning_rates: tuple = ()
    final_seeds: int = FINAL_SEEDS
    panels: tuple = ()
    analyses: tuple = ()

    def flags(self, scale, dataset):
        """The flags every configuration gets at `scale` on `dataset`."""
        if scale == QUICK:
            return self.quick_flags
        return self.digits_flags if dataset in datasets.OFFLINE_DATASETS else self.paper_flags

    def train_flags(self, configuration, scale, dataset):
        """`keras-norms-train`'s flags for `configuration` at `scale` on `dataset`, bar the run's
        own (rate, seed, output); a configuration's own flags override the scale's."""
        return self.flags(scale, dataset) + configuration.flags + ("--dataset", dataset)


def _quick(*flags):
    """The quick scale: one epoch, 20 test examples, eager (no tracing), and `flags`."""
    return ("--epochs", "1", "--test-examples", "20", "--run-eagerly") + flags


def _configurations(common, variants):
    """One `Configuration` per `(name, flags)` or `(name, flags, learning_rates)` of `variants`,
    each after the `common` flags."""
    return tuple(
        Configuration(name, tuple(common) + tuple(flags), *rest) for name, flags, *rest in variants
    )


def _training_arguments(configuration, experiment, args):
    """`keras-norms-train`'s arguments for `configuration`, the recipe's defaults filled in."""
    from keras_norms.training import cli

    return cli.parse_args(list(experiment.train_flags(configuration, args.scale, args.dataset)))


def _standardized_training_images(dataset, data_dir, image_size, count):
    """The first `count` training images, standardized per channel as the runs standardize them."""
    import keras

    from keras_norms import datasets
    from keras_norms.training import preprocessing

    splits = datasets.load(dataset, data_dir, image_size, seed=0)
    x = splits.x_train[:count]
    return keras.ops.convert_to_numpy(preprocessing.standardizer(splits.x_train)(x)), splits


# The variance at initialization needs no training: the notes' networks at a width and map
# size where the zero borders of "same" padding matter little (the runs: width 16 at 16x16,
# where the last third's 4x4 maps lose about 30 % of the variance a layer), averaged over
# weight draws (one draw strays 15-40 % by layer 6; see analysis.variance_propagation).
VARIANCE_SETTING = {
    QUICK: {"draws": 2, "width": 8, "image_size": 8, "images": 4},
    FULL: {"draws": 10, "width": 64, "image_size": 32, "images": 32},
}


def variance_at_initialization(args, experiment, runs):
    """Each configuration's network at initialization, forward and backward: per weight layer,
    the pre-activation variance (`analysis.variance_propagation`, notes eq. 1.26, 1.36) and
    the variance of the gradient with respect to it (`analysis.gradient_propagation`, eq.
    1.27, 1.29), each measured and predicted, means over VARIANCE_SETTING's weight draws, on
    standardized training images."""
    import keras  # here: --list and --help load no Keras

    from keras_norms.models import BUILDERS
    from keras_norms.training import analysis

    setting = VARIANCE_SETTING[args.scale]
    forward, backward, sections = {}, {}, []
    x = splits = None
    for configuration in experiment.configurations:
        train_args = _training_arguments(configuration, experiment, args)
        if x is None:
            x, splits = _standardized_training_images(
                train_args.dataset, args.data_dir, setting["image_size"], setting["images"]
            )
        draws_forward, draws_backward = [], []
        for draw in range(setting["draws"]):
            keras.utils.set_random_seed(draw)
            model = BUILDERS[train_args.model].build(
                input_shape=splits.image_shape,
                num_classes=splits.num_classes,
                norm=train_args.norm,
                width=setting["width"],
                **train_args.builder_arguments(),
            )
            draws_forward.append(analysis.variance_propagation(model, x))
            draws_backward.append(analysis.gradient_propagation(model, x, seed=draw))
        forward[configuration.name] = analysis.mean_rows(draws_forward)
        backward[configuration.name] = analysis.mean_rows(draws_backward)
        sections += [
            f"#### {configuration.name}",
            "",
            analysis.variance_propagation_table(forward[configuration.name]),
            analysis.gradient_propagation_table(backward[configuration.name]),
        ]
    figure = "variance_at_initialization.png"
    path = os.path.join(args.output, experiment.name, figure)
    analysis.plot_variance_propagation(forward, path, gradients=backward)
    size = setting["image_size"]
    return "\n".join(
        [
            f"### Variance at initialization (notes eq. 1.26, 1.36 forward; 1.27, 1.29 "
            f"backward): width {setting['width']}, {size}x{size} inputs, means over "
            f"{setting['draws']} weight draws on {setting['images']} standardized training "
            "images, no training",
            "",
            f"![variance at initialization]({figure})",
            "",
            *sections,
        ]
    )


def standard_deviation_estimators(args, experiment, runs):
    """The two per-channel standard deviations (notes eq. 1.16, 1.17) of the training images."""
    from keras_norms import datasets
    from keras_norms.training import analysis

    train_args = _training_arguments(experiment.configurations[0], experiment, args)
    splits = datasets.load(args.dataset, args.data_dir, train_args.image_size, seed=0)
    return "### Per-channel standard deviation estimators\n\n" + analysis.standard_deviation_table(
        splits.x_train, args.dataset
    )


# Figure 2 of NormProp compares NormProp (batch data normalization), BN and none. Global data
# normalization joins them: batch data normalization tests with running averages of the
# data's statistics, which still move in a short run, and so move every hidden input with them.
COVARIATE_SHIFT_CONFIGURATIONS = ("normprop_global_b50", "normprop_batch_b50", "bn_b50", "none_b50")


def _mean_hidden_input_curves(configuration_runs):
    """{layer k: mean over seeds of `outcomes.hidden_input_curve`} of one configuration."""
    from keras_norms.training import outcomes

    curves = [outcomes.hidden_input_curve(run) for run in configuration_runs]
    return {k: np.mean([curve[k] for curve in curves], axis=0) for k in curves[0]}


def internal_covariate_shift(args, experiment, runs):
    """NormProp's figure 2: each hidden layer's unit input mean over the validation split, in
    units of its standard deviation over the run (`outcomes.hidden_input_curve`), before
    training and after each epoch.

    The table gives, per configuration, the mean over layers of |final
    standardized input mean| (mean over seeds) and the shift, the outcome
    `hidden_input_shift` (the spread over measurements), mean over seeds; the
    figure, COVARIATE_SHIFT_CONFIGURATIONS' curves: each seed thin, their mean
    thick, epoch 0 before training.
    """
    from keras_norms.training import outcomes
    from keras_norms.training.figures import pyplot

    plt = pyplot()
    means = {name: _mean_hidden_input_curves(seeds) for name, seeds in runs.items()}
    layers = sorted(next(iter(means.values())))
    columns = 4
    fig, axes = plt.subplots(-(-len(layers) // columns), columns, figsize=(12, 6), squeeze=False)
    lines = [
        "| network | mean \\|final standardized input mean\\| | shift (mean over seeds) |",
        "|---|---|---|",
    ]
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for name, by_layer in means.items():
        final = np.mean([abs(by_layer[k][-1]) for k in layers])
        shift = np.mean([outcomes.outcome(run, "hidden_input_shift") for run in runs[name]])
        lines.append(f"| {name} | {final:.3f} | {shift:.3f} |")
    for color, name in zip(colors, (n for n in COVARIATE_SHIFT_CONFIGURATIONS if n in runs)):
        for ax, k in zip(axes.flat, layers):
            for run in runs[name]:
                curve = outcomes.hidden_input_curve(run)[k]
                ax.plot(range(len(curve)), curve, color=color, linewidth=0.5, alpha=0.4)
            ax.plot(range(len(means[name][k])), means[name][k], color=color, label=name)
            ax.set_title(f"hidden layer {k + 1}", fontsize="small")
            ax.xaxis.get_major_locator().set_params(integer=True)
    for ax in list(axes.flat)[len(layers) :]:
        ax.set_axis_off()
    axes.flat[0].legend(fontsize="x-small")
    fig.supxlabel("epoch (0: before training)")
    fig.supylabel("one unit's input mean / its RMS std over the run (validation split)")
    fig.tight_layout()
    figure = "internal_covariate_shift.png"
    fig.savefig(os.path.join(args.output, experiment.name, figure), dpi=100)
    plt.close(fig)
    return "\n".join(
        [
            "### Internal covariate shift (figure 2; BN with statistics recomputed on the "
            "training split at each measurement)",
            "",
            *lines,
            "",
            f"![internal covariate shift]({figure})",
            "",
        ]
    )


def normprop_jacobian(args, experiment, runs):
    """NormProp's Jacobian factor in the trained networks (section 3.4, 4.3.1): per NormProp
    ReLU layer, the RMS singular value of its Jacobian on the validation split
    (`analysis.normprop_jacobian`), before training (mean over every NormProp run) and after
    (mean over each configuration's seeds); the design value is 1 (1.21 without the factor)."""
    measured = {
        name: seeds for name, seeds in runs.items() if "normprop_jacobian" in seeds[0]["metrics"]
    }
    if not measured:
        return ""
    layers = list(next(iter(measured.values()))[0]["metrics"]["normprop_jacobian"])

    def mean(key, name, layer):
        return np.mean([run["metrics"][key][layer] for run in measured[name]])

    lines = [
        "| layer | before training | " + " | ".join(measured) + " |",
        "|---|---|" + "---|" * len(measured),
    ]
    for layer in layers:
        before = np.mean([mean("normprop_jacobian_before_training", n, layer) for n in measured])
        after = " | ".join(f"{mean('normprop_jacobian', name, layer):.3f}" for name in measured)
        lines.append(f"| {layer} | {before:.3f} | {after} |")
    return "\n".join(
        [
            "### Jacobian of the NormProp layers (section 3.4: RMS singular value, 1 by design "
            "with the Jacobian factor, 1.21 without; validation split, mean over seeds)",
            "",
            *lines,
            "",
        ]
    )


# The learning-rate grids: three log-spaced rates around each recipe's.
ADAM_RATES = (0.001, 0.003, 0.01)
SGD_RATES = (0.003, 0.01, 0.03)
# The digits_hard settings: a quarter of the papers' widths; about 1,000 steps a run.
NARROW = ("--width-multiplier", "0.25")

WN = Experiment(
    name="wn",
    mirrors=(
        "Salimans & Kingma (arXiv:1602.07868), section 3 (data-dependent initialization), "
        "section 5.1, figure 2 and its CIFAR-10 error table; the replication's figures 10-12"
    ),
    topic=(
        "ConvPool-CNN-C plain, with weight normalization (with and without its data-dependent "
        "initialization), mean-only BN, both, and BN"
    ),
    configurations=_configurations(
        ("--model", "convpool_cnn_c"),
        tuple((name, ("--norm", name)) for name in ("none", "bn", "wn", "mobn", "wn_mobn"))
        + (("wn_no_init", ("--norm", "wn", "--no-data-init")),),
    ),
    quick_flags=_quick("--train-examples", "20", "--init-batch-size", "20"),
    # 23 steps of batch 50 an epoch: 920 steps; the recipe's Adam, constant then linear to 0.
    digits_flags=NARROW + ("--epochs", "40", "--batch-size", "50"),
    paper_flags=("--epochs", "200"),
    paper_setting="CIFAR-10 (50,000 training images), 200 epochs, Adam 0.003, batch 100",
    paper_results=(
        PaperResult(
            "Salimans & Kingma, test error %",
            {"none": 8.43, "bn": 8.05, "wn": 8.46, "mobn": 8.52, "wn_mobn": 7.31},
        ),
        PaperResult(
            "replication (CIFAR-10, 100 epochs), test error %",
            {"none": 19.04, "bn": 19.17, "wn": 17.88, "mobn": 19.21, "wn_mobn": 18.33},
        ),
    ),
    claims=(
        Claim(
            "weight normalization trains faster than the plain parameterization",
            "mean_training_loss",
            (("wn", "none"),),
            LOWER,
            source="section 5.1, figure 2",
        ),
        Claim(
            "weight normalization with mean-only batch normalization reaches the lowest test "
            "error of the five",
            "test_error",
            tuple(("wn_mobn", other) for other in ("none", "bn", "wn", "mobn")),
            LOWER,
            source="section 5.1, CIFAR-10 table",
        ),
        Claim(
            "data-dependent initialization speeds up the training of a weight-normalized network",
            "mean_training_loss",
            (("wn", "wn_no_init"),),
            LOWER,
            source="section 3",
        ),
    ),
    learning_rates=ADAM_RATES,
)

NORMPROP = Experiment(
    name="normprop",
    mirrors=(
        "Arpit et al. (arXiv:1603.01431), section 5: figure 1 (global vs batch data "
        "normalization), figure 2 (internal covariate shift), figure 4 (batch size, down to 1), "
        "table 1 and the time per epoch of section 5.5"
    ),
    topic="Network in Network with NormProp (global or batch data normalization), BN or none",
    configurations=_configurations(
        ("--model", "nin", "--track-hidden-inputs"),
        (
            ("normprop_global_b50", ("--norm", "normprop", "--batch-size", "50")),
            (
                "normprop_batch_b50",
                ("--norm", "normprop", "--data-normalization", "batch", "--batch-size", "50"),
            ),
            ("bn_b50", ("--norm", "bn", "--batch-size", "50")),
            # Without normalization, a plain ReLU network needs Kaiming's initialization to
            # train in 368 steps (Glorot's: chance at 0.003, 21 % accuracy at 0.03 in a
            # calibration run), and a grid of its own.
            (
                "none_b50",
                ("--norm", "none", "--batch-size", "50", "--kernel-initializer", "he_normal"),
                (0.01, 0.03, 0.1),
            ),
            # Figure 4's rates are not given: the grid scaled with the batch size.
            (
                "normprop_global_b10",
                ("--norm", "normprop", "--batch-size", "10"),
                (0.002, 0.006, 0.02),
            ),
            # 1,137 steps an epoch: 2 epochs.
            (
                "normprop_global_b1",
                ("--norm", "normprop", "--batch-size", "1", "--epochs", "2"),
                (0.001, 0.003, 0.01),
            ),
        ),
    ),
    quick_flags=_quick("--train-examples", "10", "--init-batch-size", "10"),
    # Sections 5.1-5.4 halve every 10 epochs of 30-50; here every 4 of 16 (368 steps at b50).
    digits_flags=NARROW + ("--epochs", "16", "--init-batch-size", "100", "--decay-every", "4"),
    paper_flags=("--epochs", "50", "--decay-every", "10"),
    paper_setting=(
        "CIFAR-10, NIN, SGD momentum 0.9 at 0.05 (batch 50), halved every 10 epochs, L2 weight "
        "decay 5e-4, the test set as validation; table 1: 200 epochs halved every 25, no "
        "augmentation; time per epoch on a GTX Titan X"
    ),
    paper_results=(
        PaperResult(
            "Arpit et al., test error % (table 1; section 5.1's best 9.65 for batch, b50)",
            {"normprop_batch_b50": 9.11, "bn_b50": 9.41},
        ),
        PaperResult("Arpit et al., s / epoch", {"normprop_batch_b50": 84, "bn_b50": 96}),
    ),
    claims=(
        Claim(
            "NormProp trains alike with global and with batch data normalization (within 2 "
            "points of test error)",
            "test_error",
            (("normprop_global_b50", "normprop_batch_b50"),),
            EQUIVALENT,
            margin=2.0,
            source="section 5.1, figure 1",
        ),
        Claim(
            "NormProp keeps the hidden layers' input distributions steadier than BN",
            "hidden_input_shift",
            (("normprop_batch_b50", "bn_b50"),),
            LOWER,
            source="section 5.2, figure 2",
        ),
        Claim(
            "NormProp trains at batch size 1 (within 2 points of its test error at batch 50)",
            "test_error",
            (("normprop_global_b1", "normprop_global_b50"),),
            EQUIVALENT,
            margin=2.0,
            source="section 5.4, figure 4",
        ),
        Claim(
            "NormProp reaches a lower test error than BN",
            "test_error",
            (("normprop_batch_b50", "bn_b50"),),
            LOWER,
            source="table 1",
        ),
        Claim(
            "NormProp reaches a lower test error than BN, both tested with the running "
            "averages they keep (as the paper and most deployments test them)",
            "test_error_running_averages",
            (("normprop_batch_b50", "bn_b50"),),
            LOWER,
            source="table 1",
        ),
        Claim(
            "NormProp takes less time per epoch than BN",
            "epoch_time_s",
            (("normprop_batch_b50", "bn_b50"),),
            LOWER,
            source="section 5.5",
        ),
    ),
    learning_rates=(0.01, 0.03, 0.1),
    # Figure 1 (global against batch data normalization), figure 3 (validation against BN;
    # BN's validation curve in fit uses its running averages) and figure 4 (batch sizes).
    panels=(
        ("normprop_global_b50", "normprop_batch_b50"),
        ("normprop_batch_b50", "bn_b50", "none_b50"),
        ("normprop_global_b50", "normprop_global_b10", "normprop_global_b1"),
    ),
    analyses=(internal_covariate_shift, normprop_jacobian),
)

BN_TEST_PHASE = Experiment(
    name="bn_test_phase",
    mirrors=(
        f"{NOTES}, section 1.3.4, eq. 1.64 (population "
        "statistics) against eq. 1.65 (running averages)"
    ),
    topic="BN's inference statistics after short training: running averages or recomputed",
    configurations=_configurations(
        ("--model", "convpool_cnn_c", "--norm", "bn"),
        (
            ("bn_momentum_0.9", ("--bn-momentum", "0.9")),
            ("bn_momentum_0.99", ("--bn-momentum", "0.99")),
        ),
    ),
    quick_flags=_quick("--train-examples", "20", "--init-batch-size", "20"),
    # Short training, the claim's premise: 3 epochs of 23 steps.
    digits_flags=NARROW + ("--epochs", "3", "--batch-size", "50"),
    paper_flags=("--epochs", "2"),
    paper_setting="no numbers: the notes derive eq. 1.64 and 1.65 only",
    claims=(
        Claim(
            "after short training, population statistics recomputed over the training set "
            "give a lower test error than running averages of momentum 0.99",
            "test_error",
            (("bn_momentum_0.99", "bn_momentum_0.99"),),
            LOWER,
            source="section 1.3.4",
            second_outcome="test_error_running_averages",
        ),
        Claim(
            "the higher the momentum, the more the running averages lag (a higher test error "
            "with them at 0.99 than at 0.9)",
            "test_error_running_averages",
            (("bn_momentum_0.99", "bn_momentum_0.9"),),
            HIGHER,
            source="section 1.3.4, eq. 1.65",
        ),
    ),
    learning_rates=ADAM_RATES,
)

DWCK = Experiment(
    name="dwck",
    mirrors=(
        "Esposito & Ganaba (arXiv:2102.09685, DWCK), section 4 (ALL-CNN-C at 32x32 with the "
        "table's stacks, batch sizes 256-16, learning rates 0.1-0.001, appendix C) and section "
        "5.1 (learned statistics)"
    ),
    topic=(
        "ALL-CNN-C with DWCK or BN at batch sizes 16-128, DWCK with eq. 8's weighted variance, "
        "learned statistics, none"
    ),
    configurations=_configurations(
        ("--model", "all_cnn_c"),
        tuple(
            (f"{norm}_b{batch}", ("--norm", norm, "--batch-size", batch))
            for batch in ("16", "32", "64", "128")
            for norm in ("bn", "dwck")
        )
        + tuple(
            (f"{norm}_b64", ("--norm", norm, "--batch-size", "64")) for norm in ("learned", "none")
        )
        # Eq. 8's weighted variance at the batch sizes where DWCK's statistics are claimed to
        # help. (DWCK with fixed uniform weights is BN, eq. 7-8 with p = 1 / (N_h N_w): the
        # learned-against-uniform comparison of appendix A is DWCK against BN.)
        + tuple(
            (f"dwck_weighted_b{batch}", ("--norm", "dwck_weighted", "--batch-size", batch))
            for batch in ("16", "32")
        ),
    ),
    quick_flags=_quick("--train-examples", "16", "--image-size", "8"),
    # 32x32: the table's DWCK stacks; 15 epochs (1,065 steps at batch 16, 135 at 128).
    digits_flags=NARROW + ("--epochs", "15", "--image-size", "32"),
    paper_flags=("--epochs", "50"),
    paper_setting=(
        "CIFAR-10, ALL-CNN-C, SGD; the paper gives curves, not numbers, and no epoch count "
        "(its appendix C plots about 50)"
    ),
    claims=(
        Claim(
            "DWCK matches BN at large batches (within 1.5 points of test error)",
            "test_error",
            (("dwck_b128", "bn_b128"), ("dwck_b64", "bn_b64")),
            EQUIVALENT,
            margin=1.5,
            source="section 4",
        ),
        Claim(
            "DWCK reaches a lower test error than BN at batch 16 and 32",
            "test_error",
            (("dwck_b16", "bn_b16"), ("dwck_b32", "bn_b32")),
            LOWER,
            source="section 4",
        ),
        Claim(
            "learned statistics reach a lower test error than the plain network",
            "test_error",
            (("learned_b64", "none_b64"),),
            LOWER,
            source="section 5.1",
        ),
        # The paper's section 4: "we used a simple standard deviation since a weighted one
        # was computationally unstable" (eq. 8 against eq. 7's simple variance).
        Claim(
            "the weighted standard deviation (eq. 8) is unstable: DWCK with it reaches a "
            "higher test error than with the simple one",
            "test_error",
            (("dwck_weighted_b16", "dwck_b16"), ("dwck_weighted_b32", "dwck_b32")),
            HIGHER,
            source="section 4",
        ),
    ),
    learning_rates=SGD_RATES,
    panels=tuple((f"bn_b{b}", f"dwck_b{b}") for b in (16, 32, 64, 128))
    + (("learned_b64", "none_b64"),)
    + tuple((f"dwck_b{b}", f"dwck_weighted_b{b}") for b in (16, 32)),
)

NC = Experiment(
    name="nc",
    mirrors=(
        "Kim et al. (arXiv:2005.05274), section 3.1, table 1 and figure 2 (ResNet-18 at batch "
        "size 2 against GN and BN) and section 2.3 (SELU)"
    ),
    topic="ResNet-18 at batch size 2 with Normalized Convolution, GN, BN, and NC with SELU",
    configurations=_configurations(
        ("--model", "resnet18"),
        (
            ("bn", ("--norm", "bn")),
            ("gn", ("--norm", "gn")),
            ("nc", ("--norm", "nc")),
            # SELU's own initialization (Klambauer et al.), and a grid of its own.
            (
                "nc_selu",
                ("--norm", "nc", "--activation", "selu", "--kernel-initializer", "lecun_normal"),
                (0.001, 0.003, 0.01),
            ),
        ),
    ),
    quick_flags=_quick("--train-examples", "8", "--image-size", "8"),
    # 568 steps of batch 2 an epoch; the recipe's x0.1 after 3 of the 5 epochs is replaced by
    # 3 epochs at a constant rate (1,704 steps).
    digits_flags=NARROW + ("--epochs", "3", "--schedule", "constant"),
    paper_flags=("--epochs", "50", "--augment", "flip_shift"),
    paper_setting=(
        "CIFAR-10, ResNet-18, SGD 0.01 without momentum or weight decay, x0.1 after every 30 "
        "of 50 epochs, batch 2, horizontal flips and shifts up to 10 %"
    ),
    paper_results=(
        PaperResult("Normalized Convolution, table 1, top-1 error %", {"gn": 10.14, "nc": 8.52}),
    ),
    claims=(
        Claim(
            "at batch size 2, Normalized Convolution reaches a lower test error than GN",
            "test_error",
            (("nc", "gn"),),
            LOWER,
            source="table 1",
        ),
        Claim(
            "at batch size 2, Normalized Convolution trains faster than GN and BN",
            "mean_training_loss",
            (("nc", "gn"), ("nc", "bn")),
            LOWER,
            source="figure 2",
        ),
        Claim(
            "SELU does not improve Normalized Convolution (a test error above ReLU's)",
            "test_error",
            (("nc_selu", "nc"),),
            HIGHER,
            source="section 2.3",
        ),
    ),
    learning_rates=SGD_RATES,
)


INIT = Experiment(
    name="init",
    mirrors=(
        f"{NOTES}, section 1.2 (eq. 1.26, 1.36, "
        "1.45-1.46, figures 1.1-1.2, after He et al., arXiv:1502.01852, figures 2-3)"
    ),
    topic="Xavier's and Kaiming's initializations of plain ReLU networks of 22 and 30 layers",
    configurations=_configurations(
        ("--model", "plain_cnn", "--norm", "none"),
        (
            (f"{name}_{depth}", ("--depth", depth, "--kernel-initializer", initializer))
            for depth in ("22", "30")
            for name, initializer in (("xavier", "glorot_normal"), ("kaiming", "he_normal"))
        ),
    ),
    quick_flags=_quick("--train-examples", "16"),
    # 18 steps of batch 64 an epoch: 1,080 steps.
    digits_flags=("--epochs", "60"),
    paper_flags=("--epochs", "100"),
    paper_setting=(
        "ImageNet for the figures (He et al.); on CIFAR-10 the notes report 33.82 and 33.90 % "
        "error for the 22-layer model with the two initializations"
    ),
    claims=(
        Claim(
            "at 22 layers Kaiming's initialization starts to learn earlier than Xavier's "
            "(steps to a training loss of 1.5)",
            "steps_to_training_loss_1.5",
            (("kaiming_22", "xavier_22"),),
            LOWER,
            source="section 1.2, figure 1.1",
        ),
        Claim(
            "at 30 layers Xavier's initialization stalls where Kaiming's trains",
            "final_training_loss",
            (("kaiming_30", "xavier_30"),),
            LOWER,
            source="section 1.2, figure 1.2",
        ),
    ),
    learning_rates=SGD_RATES,
    analyses=(variance_at_initialization,),
)

DATA_NORMALIZATION = Experiment(
    name="data_normalization",
    mirrors=(
        f"{NOTES}, section 1.1 (eq. 1.6 per component, "
        "eq. 1.13-1.16 per channel; eq. 1.16 against eq. 1.17 on CIFAR-10, eq. 1.19-1.20)"
    ),
    topic="Input standardization per channel or per component, and two standard deviations",
    configurations=_configurations(
        ("--model", "convpool_cnn_c", "--norm", "none"),
        ((f"per_{name}", ("--input-standardization", name)) for name in ("channel", "component")),
    ),
    quick_flags=_quick("--train-examples", "20", "--init-batch-size", "20"),
    # The wn experiment's digits setting, without normalization in the network.
    digits_flags=WN.digits_flags,
    paper_flags=("--epochs", "200"),
    paper_setting="no training numbers: the notes give CIFAR-10's statistics (below) only",
    claims=(
        Claim(
            "standardizing the input per channel or per component trains alike (within 1 point "
            "of test error)",
            "test_error",
            (("per_channel", "per_component"),),
            EQUIVALENT,
            margin=1.0,
            source="section 1.1",
        ),
    ),
    learning_rates=ADAM_RATES,
    analyses=(standard_deviation_estimators,),
)

EXPERIMENTS = {
    experiment.name: experiment
    for experiment in (WN, NORMPROP, DWCK, NC, INIT, DATA_NORMALIZATION, BN_TEST_PHASE)
}
