"""Every benchmark of keras-norms in one process, on the same inputs, as one report.

    python3 benchmarks/run_all.py            (about 15 minutes on 2 CPU cores)
    python3 benchmarks/run_all.py --sections export --repeat-check

Each section lives in a module of its own beside this script, on the shared
timing code of `measure.py`; this script parses the command line, runs the
sections asked for and prints the report (and writes it as JSON, `--json`).

1. `layers` (`layer_steps.py`): training-step time and peak memory of each
   normalization on one (32, 16, 16, 32) batch, 32 filters 3x3, as ratios
   to a plain `Conv2D` and to `Conv2D` + Keras `BatchNormalization`. Memory
   is measured in a fresh process per layer (Linux peak RSS,
   `/proc/self/clear_refs`).
2. `builders` (`builder_throughput.py`): training throughput (images/s) of
   every builder and norm on the same random batches, as a ratio to the
   builder's `bn` variant.
3. `export` (`export_latency.py`): batch-1 latency of each folded export,
   the TFLite file (`ai_edge_litert`) and the ONNX file (onnxruntime), as a
   ratio to the same builder's `none` export (and the TFLite file's to the
   Keras model), and whether each export's graph has the same op counts as
   the `none` export's (the exact check that a norm folded away), else
   their difference. The runtimes and op counters are the exporter's
   (`keras_norms.export.exporter`).
4. `applications` (`application_throughput.py`): training throughput of
   `keras.applications` ResNet50, MobileNetV2 and EfficientNetB0 with
   their `BatchNormalization` replaced by other norms
   (`keras_norms.replace_normalization`), as a ratio to the BN original.
5. `wn_backends` (`weight_norm_backends.py`, about 4.5 minutes, in processes
   of their own): weight normalization per backend: WN's training step as a
   ratio to the same unwrapped Dense, dilated Conv1D stack, Conv2D and LSTM
   on TensorFlow, JAX and torch, and on torch against native PyTorch weight
   norm.
6. `xla` (`xla_steps.py`, in a process per backend): every builder and norm
   of the builders section with `jit_compile=False` and `True` on TensorFlow
   and JAX: the first step (compile included), the step time, and XLA's
   speedup over a typical digits run.

Training times are medians over alternating rounds, so every variant sees
the same machine load. Export latency is measured in fresh processes
(`--export-processes`, 2) with one thread for every runtime
(`export_latency.export_latency`, `measure.interleaved_rounds`, the
runtimes made anew every round): a ratio is the median over rounds of the ratio of the two
exports' times in the same round, printed with the interquartile range of
those per-round ratios; `--repeat-check` measures the export latency twice
and prints how far the two runs' ratios are apart. Goals (CPU): weight
normalization <= 1.05x Conv2D, mean-only BN faster than BN, every export of a
norm that folds away <= 1.05x the latency of the `none` export.
"""

import argparse
import json
import os
import platform
import tempfile

import application_throughput
import builder_throughput
import export_latency
import keras
import layer_steps
import weight_norm_backends
import xla_steps

from keras_norms.models import paper_builders

SECTIONS = ("layers", "builders", "export", "applications", "wn_backends", "xla")
# The columns of each printed table; the JSON report holds every key of each row.
LAYER_COLUMNS = [
    "layer",
    "ms_per_step",
    "time_vs_conv2d",
    "time_vs_bn",
    "peak_mib",
    "memory_vs_conv2d",
    "memory_vs_bn",
]
BUILDER_COLUMNS = ["builder", "norm", "images_per_s", "throughput_vs_bn"]
XLA_COLUMNS = [
    "backend",
    "builder",
    "norm",
    "first_step_s_plain",
    "first_step_s_xla",
    "ms_per_step_plain",
    "ms_per_step_xla",
    "xla_speedup",
]
EXPORT_COLUMNS = [
    "builder",
    "norm",
    "tflite_ms",
    "tflite_vs_keras",
    "tflite_vs_none_export",
    "tflite_ops_vs_none",
    "onnx_ms",
    "onnx_vs_none_export",
    "onnx_ops_vs_none",
]
REPEAT_CHECK_COLUMNS = ["builder", "norm", "runtime", "run1", "run2", "difference"]
APPLICATION_COLUMNS = [
    "application",
    "norm",
    "replaced",
    "images_per_s",
    "throughput_vs_bn",
    "skipped",
]


def _cell(row, key):
    value = row[key]
    if isinstance(value, float):
        cell = f"{value:.3f}"
        if f"{key}_q1" in row:  # a ratio with its spread
            cell += f" ({row[key + '_q1']:.3f}-{row[key + '_q3']:.3f})"
        elif key == "difference":
            cell = f"{100 * value:+.1f} %"
        return cell
    return str(value)


def _print_table(title, rows, columns):
    print(f"\n{title}")
    print("| " + " | ".join(columns) + " |")
    print("|" + "---|" * len(columns))
    for row in rows:
        print("| " + " | ".join(_cell(row, c) for c in columns) + " |")


def _print_export(report, seconds, args):
    """Prints the export section's part of the report (`export_latency.export_section`)."""
    rounds = args.export_rounds * args.export_processes
    _print_table(
        f"Export: batch-1 latency, {args.export_threads} thread(s); ratios: median over "
        f"{rounds} rounds of the per-round ratio (interquartile range); ops: vs the `none` "
        f"export",
        report["exports"],
        EXPORT_COLUMNS,
    )
    goal = export_latency.EXPORT_GOAL
    print(f"Goal: every export that folds away within {goal}x the `none` export's latency")
    for line in export_latency.export_goal_lines(report["exports"]):
        print("  " + line)
    timing = " and ".join(f"{t:.0f} s" for t in seconds[1:])
    print(
        f"Timing: exports {seconds[0]:.0f} s, latency {timing} ({args.export_processes} "
        f"process(es) of {args.export_rounds} rounds per run)"
    )
    if "export_repeat_check" in report:
        check = report["export_repeat_check"]
        _print_table(
            "Export repeat check: the ratios to the `none` export of two runs (processes), "
            "interquartile range in brackets",
            check,
            REPEAT_CHECK_COLUMNS,
        )
        line = export_latency.repeat_check_line(check)
        if line is not None:
            print(line)


def _parse(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--sections",
        default=",".join(SECTIONS),
        help=f"comma-separated, of {', '.join(SECTIONS)} (default: all)",
    )
    parser.add_argument("--rounds", type=int, default=5, help="training sections' rounds")
    parser.add_argument("--steps", type=int, default=5, help="timed steps per round and variant")
    parser.add_argument(
        "--builders",
        default=None,
        help="comma-separated (default: the papers' networks, not the keras.applications ones)",
    )
    parser.add_argument(
        "--export-rounds", type=int, default=21, help="export latency: rounds per process"
    )
    parser.add_argument(
        "--export-block-ms",
        type=float,
        default=30.0,
        help="export latency: milliseconds of calls per runner and round (calibrated)",
    )
    parser.add_argument(
        "--export-threads", type=int, default=1, help="export latency: threads of every runtime"
    )
    parser.add_argument(
        "--export-processes",
        type=int,
        default=2,
        help="export latency: fresh processes whose rounds are pooled",
    )
    parser.add_argument(
        "--repeat-check",
        action="store_true",
        help="measure export latency twice and print how far the two runs' ratios are apart",
    )
    parser.add_argument("--json", default=None, help="also write the report here")
    parser.add_argument(
        "--wn-backends",
        default="tensorflow,jax,torch",
        help="backends of the weight-normalization benchmark (comma-separated, empty: none)",
    )
    parser.add_argument("--wn-quick", action="store_true", help="its tiny shapes (tests)")
    parser.add_argument(
        "--xla-backends",
        default=",".join(xla_steps.BACKENDS),
        help="backends of the xla section (comma-separated)",
    )
    args = parser.parse_args(argv)
    args.sections = [s for s in args.sections.split(",") if s]
    unknown = sorted(set(args.sections) - set(SECTIONS))
    if unknown:
        parser.error(f"unknown sections {unknown}; expected some of {list(SECTIONS)}")
    if "wn_backends" in args.sections and args.wn_backends:
        # Checked before the other sections' minutes of measuring.
        problem = weight_norm_backends.backends_problem(args.wn_backends)
        if problem:
            parser.error(f"argument --wn-backends: {problem}")
    return args


def main(argv=None):
    args = _parse(argv)
    keras.utils.set_random_seed(0)
    builders = args.builders.split(",") if args.builders else paper_builders()
    machine = f"{platform.machine()}, {os.cpu_count()} CPU cores, {keras.backend.backend()} backend"
    print(f"keras-norms benchmark report ({machine}; sections: {', '.join(args.sections)})")
    report = {"machine": machine, "sections": args.sections}
    if "layers" in args.sections:
        report["layers"] = layer_steps.layer_table(args.rounds, args.steps)
        _print_table(
            f"Layers: training step on {layer_steps.LAYER_SHAPE}, "
            f"{layer_steps.FILTERS} filters 3x3",
            report["layers"],
            LAYER_COLUMNS,
        )
    if "builders" in args.sections:
        report["builders"] = builder_throughput.builder_table(builders, args.rounds, args.steps)
        _print_table(
            f"Builders: training throughput, batch {builder_throughput.BUILDER_BATCH}",
            report["builders"],
            BUILDER_COLUMNS,
        )
    if "export" in args.sections:
        with tempfile.TemporaryDirectory() as workdir:
            part, seconds = export_latency.export_section(builders, args, workdir)
        _print_export(part, seconds, args)
        report.update(part)
    if "applications" in args.sections:
        report["applications"] = application_throughput.applications_table(args.rounds, args.steps)
        _print_table(
            f"Applications: training throughput, batch "
            f"{application_throughput.APPLICATION_BATCH}, "
            f"{application_throughput.APPLICATION_INPUT}, BN replaced; ratio to BN: median over "
            f"rounds (interquartile range)",
            report["applications"],
            APPLICATION_COLUMNS,
        )
    if "wn_backends" in args.sections and args.wn_backends:
        print("\nWeight normalization per backend")
        wn_argv = ["--backends", args.wn_backends] + (["--quick"] if args.wn_quick else [])
        report["weight_norm_backends"] = weight_norm_backends.main(wn_argv)
    if "xla" in args.sections:
        backends = args.xla_backends.split(",")
        report["xla"] = xla_steps.xla_table(builders, args.rounds, args.steps, backends)
        _print_table(
            f"XLA: each builder and norm with jit_compile=False and True, batch "
            f"{builder_throughput.BUILDER_BATCH}; xla_speedup: a {xla_steps.TYPICAL_STEPS}-step "
            f"run's time (first step + the others at the median), plain over XLA",
            report["xla"],
            XLA_COLUMNS,
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)
    return report


if __name__ == "__main__":
    main()
