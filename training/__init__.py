"""`keras_norms.training`: the `keras-norms-train` CLI, its data pipeline and strategies.

Installed from the repository's `training/` folder. It imports the layers,
builders and `keras_norms.export` (for `--export`); nothing imports it back.
"""
