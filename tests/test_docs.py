"""The README's usage example, the documentation site's examples and the docstring examples
run as written, and the site documents every public name."""

import doctest
import pathlib
import re

import pytest

import keras_norms
from keras_norms import callbacks, interop
from keras_norms.layers import (
    dwck,
    learned_statistics,
    mean_only_bn,
    normalized_conv,
    normprop,
    weight_norm,
)

ROOT = pathlib.Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCS = ROOT / "docs"
PAGES = sorted(DOCS.rglob("*.md"))


def test_readme_usage_example_runs():
    text = README.read_text()
    (example,) = re.findall(r"## Usage\n\n```python\n(.*?)```", text, re.S)
    namespace = {}
    exec(compile(example, str(README), "exec"), namespace)
    model = namespace["model"]
    assert model.output_shape == (None, 10)
    assert model.layers[1].initialized.numpy()


class MarkdownDocTestParser(doctest.DocTestParser):
    """Doctests in Markdown: a code fence line ends an example's expected output, as a blank
    line does (each fence line is read as a blank line; line numbers stay)."""

    def parse(self, string, name="<string>"):
        return super().parse(re.sub(r"(?m)^[ \t]*```.*$", "", string), name)


@pytest.mark.parametrize("page", PAGES, ids=[str(p.relative_to(DOCS)) for p in PAGES])
def test_docs_page_examples(page):
    """Every `>>>` example of the page, in order, sharing one namespace (a page without
    examples passes)."""
    failures, _ = doctest.testfile(
        str(page),
        module_relative=False,
        name=page.relative_to(DOCS).as_posix(),
        parser=MarkdownDocTestParser(),
        optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE,
        encoding="utf-8",
    )
    assert failures == 0


def test_docs_pages_are_in_the_nav():
    nav = (ROOT / "mkdocs.yml").read_text()
    for page in PAGES:
        assert re.search(rf"\s{re.escape(page.relative_to(DOCS).as_posix())}\n", nav), page


def test_api_reference_documents_every_public_name():
    documented = set()
    for page in (DOCS / "reference").glob("*.md"):
        documented |= set(re.findall(r"(?m)^::: (\S+)$", page.read_text()))
    public = [f"keras_norms.{name}" for name in keras_norms.__all__]
    public += [f"keras_norms.layers.{name}" for name in keras_norms.layers.__all__]
    public += [f"keras_norms.models.{name}" for name in keras_norms.models.BUILDERS]
    for name in public:
        assert any(d == name or d.startswith(name + ".") for d in documented), name


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
