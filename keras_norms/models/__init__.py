"""Model builders for the papers' networks."""

from keras_norms.models import all_cnn_c as _all_cnn_c
from keras_norms.models import convpool_cnn_c as _convpool_cnn_c
from keras_norms.models import nin as _nin
from keras_norms.models import resnet18 as _resnet18
from keras_norms.models.all_cnn_c import all_cnn_c
from keras_norms.models.convpool_cnn_c import convpool_cnn_c
from keras_norms.models.nin import nin
from keras_norms.models.resnet18 import resnet18

BUILDERS = {
    "all_cnn_c": all_cnn_c,
    "convpool_cnn_c": convpool_cnn_c,
    "nin": nin,
    "resnet18": resnet18,
}
NORMS = {
    "all_cnn_c": _all_cnn_c.NORMS,
    "convpool_cnn_c": _convpool_cnn_c.NORMS,
    "nin": _nin.NORMS,
    "resnet18": _resnet18.NORMS,
}

__all__ = ["BUILDERS", "NORMS", "all_cnn_c", "convpool_cnn_c", "nin", "resnet18"]
