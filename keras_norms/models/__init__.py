"""Model builders for the papers' networks."""

from keras_norms.models.convpool_cnn_c import NORMS as CONVPOOL_CNN_C_NORMS
from keras_norms.models.convpool_cnn_c import convpool_cnn_c

BUILDERS = {"convpool_cnn_c": convpool_cnn_c}
NORMS = {"convpool_cnn_c": CONVPOOL_CNN_C_NORMS}

__all__ = ["BUILDERS", "NORMS", "convpool_cnn_c"]
