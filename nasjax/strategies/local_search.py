"""Local search: hill climbing over the neighbourhood of the incumbent, with random restarts.

White, Nolen, Ravanbakhsh & Hutter, "Local Search is State of the Art for Neural Architecture Search
Benchmarks", 2020 (AutoML workshop at ICML 2020; arXiv:2005.02960): start from the best of ``num_init``
random architectures; evaluate the neighbours of the current architecture in random order; move to a
better one; at a local optimum (no neighbour improves) restart from the best of ``num_init`` fresh random
architectures. ``first_improvement=False`` is the paper's Algorithm 1 (evaluate the whole neighbourhood,
move to its best member if it beats the current one); ``first_improvement=True`` moves as soon as one
neighbour is better (the paper's query-until-better variant, cheaper per step).

Neighbours come from ``space.neighbors`` (every single-decision change, ``neighborhood="all"``) or from
``num_mutations`` draws of ``space.mutate`` (``neighborhood="mutation"``, for spaces whose full
neighbourhood is large). Rows equal to the current architecture or repeating an earlier row are dropped,
so each neighbourhood is a queue of distinct architectures in random order; its static capacity is the
number of rows the generator gives.

With ``batch_size`` B > 1 one ask takes the next B neighbours; when the queue runs out mid-batch the
remaining rows are random architectures: they start the restart pool if no neighbour improves, and are
otherwise compared with the current architecture like any other candidate. Failed evaluations (NaN)
never become the current architecture.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from nasjax.errors import NasjaxError
from nasjax.strategies.base import (Strategy, check_choice, check_int, check_space, clean_fitness, initial_best,
                                    sample_batch, update_best)

_RANDOM, _NEIGHBOR = 0, 1


def local_search(space, num_init: int = 1, neighborhood: str = "all", num_mutations: int = 32,
                 first_improvement: bool = False, batch_size: int = 1) -> Strategy:
  """Local search over ``space``.

  Args:
    space: a search space.
    num_init: random architectures drawn at the start and at every restart; the best is the start point.
    neighborhood: ``"all"`` (``space.neighbors``) or ``"mutation"`` (``num_mutations`` random mutations).
    num_mutations: neighbourhood size with ``neighborhood="mutation"``.
    first_improvement: move at the first better neighbour rather than after the whole neighbourhood.
    batch_size: architectures per ask.

  >>> from nasjax.spaces import NB201Space
  >>> s = local_search(NB201Space(), num_init=5)
  """
  name = "local_search"
  check_space(name, space)
  num_init = check_int(name, "num_init", num_init)
  check_choice(name, "neighborhood", neighborhood, ("all", "mutation"))
  num_mutations = check_int(name, "num_mutations", num_mutations)
  if not isinstance(first_improvement, bool):
    raise NasjaxError(f"{name}: first_improvement must be True or False; got {first_improvement!r}")
  batch_size = check_int(name, "batch_size", batch_size)
  dims = space.num_decisions
  capacity = space.num_neighbors if neighborhood == "all" else num_mutations
  if capacity < 1:
    raise NasjaxError(f"{name}: {space.name} has no neighbours (every decision has one choice)")

  def init(key):
    del key
    zeros = jnp.zeros((dims,), jnp.int32)
    minus_inf = jnp.asarray(-jnp.inf, jnp.float32)
    return {**initial_best(dims),
            "current": zeros, "current_fitness": minus_inf, "has_current": jnp.asarray(False),
            "queue": jnp.zeros((capacity, dims), jnp.int32), "queue_len": jnp.zeros((), jnp.int32),
            "next": jnp.zeros((), jnp.int32), "needs_queue": jnp.asarray(False),
            "step_best": zeros, "step_best_fitness": minus_inf,  # best neighbour so far (steepest ascent)
            "pool_best": zeros, "pool_best_fitness": minus_inf, "pool_told": jnp.zeros((), jnp.int32),
            "roles": jnp.zeros((batch_size,), jnp.int32)}

  def build_queue(key, current):
    k_gen, k_perm = jax.random.split(key)
    if neighborhood == "all":
      rows = space.neighbors(current)
    else:
      rows = jax.vmap(space.mutate, in_axes=(0, None))(jax.random.split(k_gen, capacity), current)
    rows = rows[jax.random.permutation(k_perm, capacity)].astype(jnp.int32)
    same = jnp.all(rows[:, None, :] == rows[None, :, :], axis=-1)
    repeat = jnp.any(jnp.tril(same, k=-1), axis=1)  # equal to an earlier row
    keep = ~repeat & ~jnp.all(rows == current, axis=-1)
    order = jnp.argsort(~keep, stable=True)  # kept rows first, in their random order
    return rows[order], jnp.sum(keep, dtype=jnp.int32)

  def ask(state, key):
    k_queue, k_random = jax.random.split(key)
    rebuild = state["needs_queue"] & state["has_current"]
    queue, queue_len = build_queue(k_queue, state["current"])
    queue = jnp.where(rebuild, queue, state["queue"])
    queue_len = jnp.where(rebuild, queue_len, state["queue_len"])
    start = jnp.where(rebuild, 0, state["next"])
    pos = start + jnp.arange(batch_size)
    is_neighbor = state["has_current"] & (pos < queue_len)
    randoms = sample_batch(space, k_random, batch_size)
    archs = jnp.where(is_neighbor[:, None], queue[jnp.minimum(pos, capacity - 1)], randoms)
    return archs, {**state, "queue": queue, "queue_len": queue_len,
                   "next": start + jnp.sum(is_neighbor, dtype=jnp.int32),
                   "needs_queue": state["needs_queue"] & ~rebuild,
                   "step_best_fitness": jnp.where(rebuild, -jnp.inf, state["step_best_fitness"]),
                   "roles": jnp.where(is_neighbor, _NEIGHBOR, _RANDOM).astype(jnp.int32)}

  def tell(state, archs, fitness):
    archs = jnp.asarray(archs, jnp.int32)
    fit = clean_fitness(fitness)
    roles = state["roles"][:archs.shape[0]]

    def move_if_better(carry, arch, f, use):
      current, current_fit, moved = carry
      better = use & (f > current_fit)
      return (jnp.where(better, arch, current), jnp.where(better, f, current_fit), moved | better)

    # Neighbours first: they decide whether the neighbourhood ends in a move or a local optimum.
    def neighbor_row(carry, row):
      arch, f, role = row
      current, current_fit, moved, step_best, step_fit = carry
      use = role == _NEIGHBOR
      if first_improvement:
        current, current_fit, moved = move_if_better((current, current_fit, moved), arch, f, use)
      better = use & (f > step_fit)
      step_best = jnp.where(better, arch, step_best)
      step_fit = jnp.where(better, f, step_fit)
      return (current, current_fit, moved, step_best, step_fit), None

    carry = (state["current"], state["current_fitness"], jnp.asarray(False), state["step_best"],
             state["step_best_fitness"])
    (current, current_fit, moved, step_best, step_fit), _ = jax.lax.scan(neighbor_row, carry,
                                                                         (archs, fit, roles))
    exhausted = state["has_current"] & (state["next"] >= state["queue_len"])
    if not first_improvement:
      current, current_fit, moved = move_if_better((current, current_fit, moved), step_best, step_fit,
                                                   exhausted)
    local_optimum = exhausted & ~moved
    has_current = state["has_current"] & ~local_optimum
    pool_best = state["pool_best"]
    pool_fit = jnp.where(local_optimum, -jnp.inf, state["pool_best_fitness"])
    pool_told = jnp.where(local_optimum, 0, state["pool_told"])

    # Random rows: the (re)start pool while there is no current architecture, else plain candidates.
    def random_row(carry, row):
      arch, f, role = row
      current, current_fit, moved, pool_best, pool_fit, pool_told = carry
      use = role == _RANDOM
      current, current_fit, moved = move_if_better((current, current_fit, moved), arch, f, use & has_current)
      to_pool = use & ~has_current
      better = to_pool & (f > pool_fit)
      pool_best = jnp.where(better, arch, pool_best)
      pool_fit = jnp.where(better, f, pool_fit)
      pool_told = pool_told + to_pool.astype(jnp.int32)
      return (current, current_fit, moved, pool_best, pool_fit, pool_told), None

    carry = (current, current_fit, moved, pool_best, pool_fit, pool_told)
    (current, current_fit, moved, pool_best, pool_fit, pool_told), _ = jax.lax.scan(random_row, carry,
                                                                                   (archs, fit, roles))
    # A pool whose members all failed keeps sampling: a failure never becomes the start point.
    start = ~has_current & (pool_told >= num_init) & (pool_fit > -jnp.inf)
    current = jnp.where(start, pool_best, current)
    current_fit = jnp.where(start, pool_fit, current_fit)
    out = update_best(state, archs, fitness)
    return {**out, "current": current, "current_fitness": current_fit, "has_current": has_current | start,
            "needs_queue": state["needs_queue"] | moved | start,
            "step_best": step_best, "step_best_fitness": step_fit,
            "pool_best": pool_best, "pool_best_fitness": pool_fit, "pool_told": pool_told}

  return Strategy(init, ask, tell, name=name)
