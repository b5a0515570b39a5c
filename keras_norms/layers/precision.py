"""Float32 variables under mixed precision, as Keras `BatchNormalization` keeps them."""


class Float32Variables:
    """Mixin: the layer's variables are read in float32 (`autocast=False`).

    Keras `BatchNormalization`'s convention, applied to every variable a
    layer creates, including those that a Keras base class (`Conv2D`,
    `DepthwiseConv2D`) creates in its own `build`: under a mixed-precision
    policy the variables (float32, the policy's variable dtype) are not cast
    to the compute dtype when read, so the layer can compute its statistics
    or normalized kernels in float32 and cast the result itself. The layer's
    own `autocast` argument (the casting of its inputs) is left to the user.
    """

    def add_weight(self, *args, autocast=False, **kwargs):
        return super().add_weight(*args, autocast=autocast, **kwargs)
