"""`keras_norms.policies.dtype_policy`: set, then restore, the global dtype policy."""

import keras
import pytest

from keras_norms.policies import dtype_policy


def test_sets_the_policy_in_the_block_and_restores_it_after_an_error():
    before = keras.config.dtype_policy().name
    with pytest.raises(RuntimeError):
        with dtype_policy("mixed_bfloat16"):
            assert keras.config.dtype_policy().name == "mixed_bfloat16"
            assert keras.layers.Dense(2).compute_dtype == "bfloat16"
            raise RuntimeError
    assert keras.config.dtype_policy().name == before


def test_none_leaves_the_policy_unchanged():
    before = keras.config.dtype_policy().name
    with dtype_policy(None):
        assert keras.config.dtype_policy().name == before
