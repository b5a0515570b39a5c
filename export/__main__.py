"""`python -m keras_norms.export`: the `keras-norms-export` command."""

import sys

from keras_norms.export.cli import main

sys.exit(main())
