"""`python -m keras_norms.training`: the `keras-norms-train` command."""

import sys

from keras_norms.training.cli import main

sys.exit(main())
