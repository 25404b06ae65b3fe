"""The short-training estimator's fidelity levels (Hyperband moves along epochs)."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from nasjax import data as nasdata
from nasjax.errors import NasjaxError
from nasjax.estimators.train import ShortTrainingEstimator, short_training_config
from nasjax.spaces import darts_space

# Values are under test, not speed: XLA's optimisation passes are off in this module (conftest.py).
pytestmark = pytest.mark.usefixtures("fastest_compiles")


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


def test_auto_model_compiles_per_candidate_only_for_few_short_trainings():
  from nasjax.estimators.train import choose_model
  assert choose_model(1, 50) == "network"
  assert choose_model(50, 50) == "supernet"
  assert choose_model(None, 50) == "supernet"
  # Long trainings: the supernet's slower step outweighs any compile saved.
  assert choose_model(1000, 100_000) == "network"
  assert _estimator(num_candidates=1).model == "network"
  assert _estimator(num_candidates=100).model == "supernet"
  with pytest.raises(NasjaxError, match="num_candidates"):
    _estimator(num_candidates=0)
  with pytest.raises(NasjaxError, match="accepted: auto, network, supernet"):
    _estimator(model="graph")


def test_supernet_model_trains_every_candidate_with_one_compiled_program():
  estimator = _estimator(model="supernet", fidelity_epochs=(1, 2))
  space = darts_space()
  archs = [space.sample(jax.random.key(i)) for i in range(3)]
  results = [estimator(a, jax.random.key(7), fidelity=0) for a in archs]
  tx, train_step, eval_step = estimator._programs[1]
  assert train_step._cache_size() == 1 and eval_step._cache_size() == 1
  # Same key, other architectures: the architecture is data of that one program and changes the result.
  losses = [r["loss"] for r in results]
  assert len(set(losses)) == 3 and all(np.isfinite(losses))
  # A second fidelity level is a second program, compiled once for all its candidates.
  estimator(archs[0], jax.random.key(7), fidelity=1)
  assert estimator._programs[2][1]._cache_size() == 1 and train_step._cache_size() == 1
  # The same candidate and key again give the same result (nothing carried over between candidates).
  assert estimator(archs[1], jax.random.key(7), fidelity=0)["loss"] == losses[1]


def test_training_estimator_is_not_vmapped():
  from nasjax import search, strategies
  estimator = _estimator(model="network")
  assert estimator.jittable is False and estimator.num_fidelities == 1
  assert isinstance(search.resolve_executor("auto", estimator), search.SerialExecutor)
  with pytest.raises(NasjaxError, match="needs a jittable estimator"):
    search.run(strategies.get_strategy("random", darts_space()), estimator, 1, jax.random.key(0),
               executor="vmap", show_progress=False)
