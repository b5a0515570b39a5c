"""`keras_norms.export`: folded SavedModel and TFLite export with parity checks.

Installed from the repository's `export/` folder. It imports the layers,
`keras_norms.folding` and `keras_norms.datasets`, never `keras_norms.training`.
"""
