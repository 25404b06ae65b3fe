"""Random search (Li & Talwalkar, "Random Search and Reproducibility for Neural Architecture Search",
UAI 2019, argue it is a strong NAS baseline): sample uniformly, keep the best."""

from __future__ import annotations

import jax.numpy as jnp

from nasjax.strategies.base import Strategy, check_int, check_space, initial_best, sample_batch, update_best


def random_search(space, batch_size: int = 1) -> Strategy:
  """Uniform samples from ``space``, ``batch_size`` per ask; the state tracks the best so far."""
  check_space("random", space)
  batch_size = check_int("random", "batch_size", batch_size)

  def init(key):
    del key
    return initial_best(space.num_decisions)

  def ask(state, key):
    return sample_batch(space, key, batch_size), state

  def tell(state, archs, fitness):
    return update_best(state, jnp.asarray(archs, jnp.int32), fitness)

  return Strategy(init, ask, tell, name="random")
