"""The README's usage example and the docstring examples run as written."""

import doctest
import pathlib
import re

import pytest

from keras_norms import callbacks, interop
from keras_norms.layers import (
    dwck,
    learned_statistics,
    mean_only_bn,
    normalized_conv,
    normprop,
    weight_norm,
)

README = pathlib.Path(__file__).resolve().parent.parent / "README.md"


def test_readme_usage_example_runs():
    text = README.read_text()
    (example,) = re.findall(r"## Usage\n\n```python\n(.*?)```", text, re.S)
    namespace = {}
    exec(compile(example, str(README), "exec"), namespace)
    model = namespace["model"]
    assert model.output_shape == (None, 10)
    assert model.layers[1].initialized.numpy()


def test_readme_surgery_example_runs(recwarn):
    text = README.read_text()
    (example,) = re.findall(r"### Normalization surgery\n\n```python\n(.*?)```", text, re.S)
    namespace = {}
    exec(compile(example, str(README), "exec"), namespace)
    summary = "gn: 52 replaced (0 exact), 0 kept; parameters 2270794 -> 2236682"
    assert str(namespace["report"]).splitlines()[0] == summary
    assert summary in example


@pytest.mark.parametrize(
    "module",
    [
        weight_norm,
        mean_only_bn,
        normprop,
        dwck,
        learned_statistics,
        normalized_conv,
        interop,
        callbacks,
    ],
)
def test_docstring_examples(module):
    failures, tried = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert tried > 0 and failures == 0
