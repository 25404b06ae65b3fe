"""NSGA-II: elitist multi-objective evolution by non-dominated rank and crowding distance.

Deb, Pratap, Agarwal & Meyarivan, "A Fast and Elitist Multiobjective Genetic Algorithm: NSGA-II",
IEEE Transactions on Evolutionary Computation 6(2), 2002. A population of mu architectures; each ask
breeds lambda children, each from parents chosen by binary tournaments under the crowded-comparison
order (lower front first, then larger crowding distance), by the space's crossover (with probability
``crossover_prob``) and mutation; each tell merges parents and children and keeps the mu best in that
order ((mu + lambda) survival), so a non-dominated architecture is only ever displaced by better ones.

Fitness is ``float[P, M]``, every objective maximised (the driver flips minimised ones such as latency,
see :mod:`nasjax.objectives`). A row with a non-finite value is a failed (or infeasible) evaluation: it
is ranked behind every valid row, so it survives only while the population has room and is never a
parent while a valid member exists. Until mu members are valid the asked rows that would complete the
population are uniform samples (the paper's random initial population).

The state's ``best_*`` entries follow the strategy contract with the first objective as the score; the
search's real result is the Pareto front of everything evaluated, which the driver computes.
"""

from __future__ import annotations

import jax.numpy as jnp

from nasjax.errors import NasjaxError
from nasjax.strategies.base import (Strategy, check_float, check_int, check_space, distinct_members, initial_best,
                                    offspring, update_best)
from nasjax.strategies.pareto import rank_and_crowding_order, valid_rows


def nsga2(space, population_size: int = 50, offspring_size: int | None = None, num_objectives: int = 2,
          crossover_prob: float = 0.9) -> Strategy:
  """NSGA-II over ``space`` for ``num_objectives`` maximised objectives.

  Args:
    space: a search space (its ``sample``, ``mutate`` and ``crossover`` are the operators).
    population_size: mu, the members kept after each tell.
    offspring_size: lambda, the children per ask (the rows P of one ask); default mu, as in the paper.
    num_objectives: M, the columns of the fitness told (static: it fixes the state's shapes).
    crossover_prob: probability that a child is the crossover of two tournament winners; every child
      is then mutated (the space's mutation changes one decision, the paper's 1/n per variable in
      expectation).

  >>> from nasjax.spaces import NB201Space
  >>> s = nsga2(NB201Space(), population_size=20)
  """
  name = "nsga2"
  check_space(name, space)
  mu = check_int(name, "population_size", population_size, 2)
  lam = mu if offspring_size is None else check_int(name, "offspring_size", offspring_size)
  m = check_int(name, "num_objectives", num_objectives)
  cx_prob = check_float(name, "crossover_prob", crossover_prob, 0.0, 1.0)
  dims = space.num_decisions

  def init(key):
    del key
    return {**initial_best(dims),
            "population": jnp.zeros((mu, dims), jnp.int32),
            "fitness": jnp.full((mu, m), jnp.nan, jnp.float32),  # NaN rows: empty slots
            "rank": jnp.full((mu,), mu + lam, jnp.int32),  # front index in the last merge; failed: mu + lam
            "crowding": jnp.zeros((mu,), jnp.float32)}

  def tournament(key, state):
    # Binary tournament of two distinct members, valid ones first, under the crowded-comparison order.
    a, b = distinct_members(key, valid_rows(state["fitness"]), 2)
    rank, crowd = state["rank"], state["crowding"]
    b_wins = (rank[b] < rank[a]) | ((rank[b] == rank[a]) & (crowd[b] > crowd[a]))
    return state["population"][jnp.where(b_wins, b, a)]

  def ask(state, key):
    # Row j is a uniform sample while the population, counting the rows before j, is not yet full.
    num_valid = jnp.sum(valid_rows(state["fitness"]))
    random_row = num_valid + jnp.arange(lam) < mu
    return offspring(space, key, lam, lambda k: tournament(k, state), cx_prob, random_row), state

  def tell(state, archs, fitness):
    archs = jnp.asarray(archs, jnp.int32)
    fitness = jnp.asarray(fitness, jnp.float32)
    if fitness.ndim == 1 and m == 1:
      fitness = fitness[:, None]
    if fitness.shape != (archs.shape[0], m):
      raise NasjaxError(f"nsga2 with num_objectives={m} is told fitness of shape [P, {m}] (one column per "
                        f"objective); got {fitness.shape} for {archs.shape[0]} architectures")
    fitness = jnp.where(valid_rows(fitness)[:, None], fitness, jnp.nan)
    merged_archs = jnp.concatenate([state["population"], archs])
    merged_fit = jnp.concatenate([state["fitness"], fitness])
    order, ranks, crowd = rank_and_crowding_order(merged_fit)
    keep = order[:mu]
    out = update_best(state, archs, fitness[:, 0])
    return {**out, "population": merged_archs[keep], "fitness": merged_fit[keep], "rank": ranks[keep],
            "crowding": crowd[keep]}

  return Strategy(init, ask, tell, name=name, num_objectives=m)
