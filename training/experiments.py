"""The papers' experiments as declarative specs, run by `keras-norms-experiment`.

An experiment names what varies (one `keras-norms-train` flag set per
configuration), the flags of each scale, what is measured, which table or
figure of which paper it mirrors, and that paper's own numbers and setting,
so that the runner's table puts them beside ours.
"""

import dataclasses

QUICK, FULL = "quick", "full"
SCALES = (QUICK, FULL)
DIGITS = "digits"


@dataclasses.dataclass(frozen=True)
class Configuration:
    """One trained variant: a label and its `keras-norms-train` flags."""

    name: str
    flags: tuple


@dataclasses.dataclass(frozen=True)
class PaperResult:
    """A published number for one configuration: who reported it, and where."""

    source: str
    values: dict  # configuration name -> the published value, in the table's unit


@dataclasses.dataclass(frozen=True)
class Experiment:
    """One claim of one paper, as the runner runs and reports it.

    Every configuration gets the flags of the scale: `quick_flags` (a few
    steps, the test suite's smoke run), `digits_flags` (`--scale full` on
    the offline digits, where the setting is chosen so that differences
    show, and stated beside the table) or `paper_flags` (`--scale full` on
    any other dataset: the paper's own setting, `paper_setting`).
    `smoothing` is the Savitzky-Golay window for the curves (0: none), as
    the paper smooths.
    """

    name: str
    mirrors: str
    claim: str
    configurations: tuple
    quick_flags: tuple
    digits_flags: tuple
    paper_flags: tuple
    paper_setting: str
    paper_results: tuple = ()
    smoothing: int = 0

    def flags(self, scale, dataset):
        """The flags every configuration gets at `scale` on `dataset`."""
        if scale == QUICK:
            return self.quick_flags
        return self.digits_flags if dataset == DIGITS else self.paper_flags


WN = Experiment(
    name="wn",
    mirrors=(
        "Salimans & Kingma (arXiv:1602.07868), section 5.1, figure 2 and its CIFAR-10 "
        "error table; the replication's figures 10-12 and error table"
    ),
    claim=(
        "On ConvPool-CNN-C, weight normalization trains faster than the plain "
        "parameterization and, with mean-only batch normalization, reaches the lowest test error"
    ),
    configurations=tuple(
        Configuration(name, ("--model", "convpool_cnn_c", "--norm", norm))
        for name, norm in (
            ("normal", "none"),
            ("bn", "bn"),
            ("wn", "wn"),
            ("mobn", "mobn"),
            ("wn_mobn", "wn_mobn"),
        )
    ),
    quick_flags=("--epochs", "1", "--train-examples", "200", "--init-batch-size", "100"),
    # The digits saturate near 99 %: a 300-example training subset lets the
    # configurations differ.
    digits_flags=("--epochs", "20", "--train-examples", "300", "--init-batch-size", "300"),
    paper_flags=("--epochs", "200"),
    paper_setting="CIFAR-10 (50,000 training images), 200 epochs, Adam 0.003, batch 100",
    paper_results=(
        PaperResult(
            "Salimans & Kingma, test error %",
            {"normal": 8.43, "bn": 8.05, "wn": 8.46, "mobn": 8.52, "wn_mobn": 7.31},
        ),
        PaperResult(
            "replication (CIFAR-10, 100 epochs), test error %",
            {"normal": 19.04, "bn": 19.17, "wn": 17.88, "mobn": 19.21, "wn_mobn": 18.33},
        ),
    ),
    smoothing=5,
)

BN_TEST_PHASE = Experiment(
    name="bn_test_phase",
    mirrors=(
        "the initialization and batch normalization notes, section 1.3.4, eq. 1.64 (population "
        "statistics) against eq. 1.65 (running averages)"
    ),
    claim=(
        "After short training, exponential running averages lag behind the weights (the more, "
        "the higher the momentum); statistics recomputed over the training set do not"
    ),
    configurations=tuple(
        Configuration(name, ("--model", "convpool_cnn_c", "--norm", "bn") + flags)
        for name, flags in (
            ("running_0.9", ("--bn-momentum", "0.9")),
            ("running_0.99", ("--bn-momentum", "0.99")),
            ("recomputed", ("--bn-momentum", "0.99", "--recompute-statistics")),
        )
    ),
    quick_flags=("--epochs", "1", "--train-examples", "200", "--init-batch-size", "100"),
    # Two epochs of the whole digits: 30 steps, too few for momentum 0.99 to forget its start.
    digits_flags=("--epochs", "2"),
    paper_flags=("--epochs", "2"),
    paper_setting="no numbers: the notes derive eq. 1.64 and 1.65 only",
)

EXPERIMENTS = {experiment.name: experiment for experiment in (WN, BN_TEST_PHASE)}
