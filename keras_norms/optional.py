"""Optional dependencies: imported on first use, with a one-line error naming the extra.

`pip install keras-norms` installs keras and numpy only. The training CLI,
tensorflow-datasets, tf.distribute and the export path need more; each names
the extra that brings it (see setup.cfg).
"""

import importlib


class MissingDependencyError(ImportError):
    """An optional dependency is not installed; the message says which extra to install."""


def require(module, extra, feature, package=None):
    """Import and return `module`, or raise `MissingDependencyError`.

    Args:
        module: the module to import, e.g. `"tensorflow"`.
        extra: the keras-norms extra that installs it, e.g. `"export"`.
        feature: what needs it, for the message, e.g. `"keras-norms-export"`.
        package: the distribution's name where it differs from the
            module's, e.g. `"scikit-learn"` for `sklearn`.

    Raises:
        MissingDependencyError: if `module` cannot be imported; the message
            is one line: what is missing, for what, and the pip command.
    """
    try:
        return importlib.import_module(module)
    except ImportError:
        raise MissingDependencyError(
            f"{feature} needs {package or module.split('.')[0]}, which is not installed; "
            f"install it with: pip install 'keras-norms[{extra}]'"
        ) from None
