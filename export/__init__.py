"""SavedModel and TFLite export of keras-norms models, with folding and parity checks."""
