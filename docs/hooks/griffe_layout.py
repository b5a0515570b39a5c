"""Griffe extension for the API reference: the package as it is installed and imported.

Griffe reads the source without importing it, so it misses what keras_norms sets up at
run time. This adds:

- `keras_norms.training` and `keras_norms.export`: the repository's `training/` and
  `export/` folders, which setup.cfg's `package_dir` installs under `keras_norms`;
- `keras_norms.<name>` for each name that `keras_norms/__init__.py` imports on first
  use (`_EXPORTS`, PEP 562), and `keras_norms.models.<builder>` for each registered
  builder, as aliases of the functions that define them;
- `keras_norms.models.__all__` without its `*BUILDERS` item, which only Python expands.

It also reads a Keras docstring habit as griffe's Google parser expects it: the `>>>`
lines after `Examples:` written unindented, as in Keras' own docstrings, become the
section's indented block.

Importing keras_norms and its registries loads no Keras.
"""

import re

import griffe

import keras_norms
from keras_norms.models.registry import BUILDERS

FOLDERS = {"training": "training", "export": "export"}
HEADER = re.compile(r"^[A-Z][A-Za-z ]*:$")


def _examples_indented(lines):
    out, inside = [], False
    for line in lines:
        if HEADER.match(line):
            inside = line == "Examples:"
        elif inside:
            if not line.strip() and out[-1] == "Examples:":
                continue  # the section's block starts on the header's next line
            if line.strip() and not line.startswith(" "):
                line = "    " + line
        out.append(line)
    return out


def _fix_docstrings(obj):
    if obj.docstring is not None:
        lines = obj.docstring.value.splitlines()
        obj.docstring.value = "\n".join(_examples_indented(lines))
    for member in obj.members.values():
        if not member.is_alias:
            _fix_docstrings(member)


class InstalledLayout(griffe.Extension):
    def on_module_members(self, *, mod, **kwargs):
        if mod.path == "keras_norms.models" and mod.exports:
            mod.exports = [name for name in mod.exports if isinstance(name, str)]

    def on_package(self, *, pkg, loader, **kwargs):
        if pkg.name != "keras_norms":
            return
        for name, folder in FOLDERS.items():
            pkg.set_member(name, loader.load(folder, try_relative_path=False))
        for name, module in keras_norms._EXPORTS.items():
            pkg.set_member(name, griffe.Alias(name, f"{module}.{name}"))
        models = pkg.members["models"]
        for name, builder in BUILDERS.items():
            module, _, function = builder.build.path.partition(":")
            models.set_member(name, griffe.Alias(name, f"{module}.{function}"))
        _fix_docstrings(pkg)
