"""Argument types and progress lines shared by keras-norms' command-line tools (train, export,
experiment)."""

import argparse


def positive_int(text):
    """`text` as an int >= 1, for `argparse`'s `type=`.

    Raises:
        argparse.ArgumentTypeError: for an integer below 1 (argparse turns
            it, and the ValueError of a non-integer, into a usage error).
    """
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text}")
    return value


def non_negative_int(text):
    """`text` as an int >= 0, for `argparse`'s `type=`.

    Raises:
        argparse.ArgumentTypeError: for a negative integer.
    """
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text}")
    return value


def progress(command, message, verbose=1):
    """Print `command: message` at once (flushed) unless `verbose` is 0: the lines that say
    what a command is doing before its first result (loading, initializing, exporting)."""
    if verbose:
        print(f"{command}: {message}", flush=True)
