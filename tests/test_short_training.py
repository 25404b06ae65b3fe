"""The short-training estimator's fidelity levels (Hyperband moves along epochs)."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from nasjax import data as nasdata
from nasjax.errors import NasjaxError
from nasjax.estimators.train import ShortTrainingEstimator, short_training_config
from nasjax.spaces import darts_space


def _estimator(**kwargs):
  rng = np.random.default_rng(0)
  x = rng.random((80, 8, 8, 1)).astype(np.float32)
  y = (np.arange(80) % 4).astype(np.int64)
  ds = nasdata.Dataset("tiny", x, y, x[:16], y[:16], 4, (0.5,), (0.3,))
  cfg = short_training_config()
  cfg.update(batch_size=16, channels=4, layers=1, eval_batch_size=16)
  return ShortTrainingEstimator(darts_space(), ds, cfg, **kwargs)


def test_fidelity_levels_are_validated():
  arch = darts_space().sample(jax.random.key(0))
  with pytest.raises(NasjaxError, match="fidelity_epochs"):
    _estimator(fidelity_epochs=(0, 2))
  with pytest.raises(NasjaxError, match="no fidelity levels"):
    _estimator()(arch, jax.random.key(1), fidelity=0)
  with pytest.raises(NasjaxError, match="outside"):
    _estimator(fidelity_epochs=(1, 2))(arch, jax.random.key(1), fidelity=2)


@pytest.mark.slow
def test_fidelity_level_sets_the_epochs_trained():
  estimator = _estimator(fidelity_epochs=(1, 2))
  arch = darts_space().sample(jax.random.key(0))
  low = estimator(arch, jax.random.key(1), fidelity=0)
  high = estimator(arch, jax.random.key(1), fidelity=1)
  assert (low["epochs"], high["epochs"]) == (1, 2)
  assert np.isfinite(low["accuracy"]) and np.isfinite(high["accuracy"])
