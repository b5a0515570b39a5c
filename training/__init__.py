"""Training CLI and data pipelines for keras-norms (imports keras_norms, never the reverse)."""
