"""Random search (Li & Talwalkar 2019 argue it is a strong NAS baseline): sample uniformly, keep the best."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from nasjax.strategies.base import Strategy


def random_search(space, batch_size: int = 1) -> Strategy:
  """Uniform samples from ``space``, ``batch_size`` per ask; the state tracks the best so far."""

  def init(key):
    del key
    return {"best_arch": jnp.zeros((space.num_decisions,), jnp.int32),
            "best_fitness": jnp.asarray(-jnp.inf, jnp.float32), "count": jnp.zeros((), jnp.int32)}

  def ask(state, key):
    archs = jax.vmap(space.sample)(jax.random.split(key, batch_size))
    return archs, state

  def tell(state, archs, fitness):
    # Failed evaluations (NaN) cannot become the best.
    fitness = jnp.where(jnp.isnan(fitness), -jnp.inf, fitness)
    i = jnp.argmax(fitness)
    better = fitness[i] > state["best_fitness"]
    return {"best_arch": jnp.where(better, archs[i], state["best_arch"]),
            "best_fitness": jnp.where(better, fitness[i], state["best_fitness"]),
            "count": state["count"] + archs.shape[0]}

  return Strategy(init, ask, tell, name="random")
