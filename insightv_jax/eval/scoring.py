"""Deprecated name of `insightv_jax.eval.prediction_files` (re-scoring official MMMU / MathVista prediction
files); kept one release so that `from insightv_jax.eval import scoring` still works. Live scoring of our own
runs is `insightv_jax.eval.official`; the rules themselves are `insightv_jax.scoring`."""

import warnings

from insightv_jax.eval.prediction_files import *  # noqa: F403
from insightv_jax.eval.prediction_files import __all__  # noqa: F401

warnings.warn("insightv_jax.eval.scoring is renamed insightv_jax.eval.prediction_files (it re-scores official "
              "prediction files); the old name goes in the next release", DeprecationWarning, stacklevel=2)
