"""Regularized (aging) evolution.

Real, Aggarwal, Huang & Le, "Regularized Evolution for Image Classifier Architecture Search", AAAI 2019
(Algorithm 1): fill a population of P random architectures; then repeatedly draw S members at random,
take the fittest of that tournament as parent, evaluate its mutated child, add the child and remove the
OLDEST member (aging). ``aging=False`` is the paper's non-regularized control, which removes the WORST
member instead (the child itself when it is the worst). ``crossover_prob`` optionally breeds the child
from the winners of two tournaments by the space's crossover before mutating it.

Failed evaluations (NaN fitness) never enter the population: an initial slot whose sample failed is
filled by the next sample, and a failed child is dropped, so a failure can never become a parent. A
tournament draws S distinct members (the paper draws with replacement; distinct members make the
selection pressure exactly S and S = P plain elitism). With ``batch_size`` B > 1, one ask breeds B
children from the same population and tell inserts them in order.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from nasjax.errors import NasjaxError
from nasjax.strategies.base import (Strategy, check_float, check_int, check_space, clean_fitness, distinct_members,
                                    initial_best, offspring, update_best)


def regularized_evolution(space, population_size: int = 50, tournament_size: int = 10,
                          crossover_prob: float = 0.0, aging: bool = True, batch_size: int = 1) -> Strategy:
  """Regularized evolution over ``space``.

  Args:
    space: a search space (its ``sample``, ``mutate`` and ``crossover`` are the operators).
    population_size: P, the number of living members.
    tournament_size: S <= P, members drawn per tournament.
    crossover_prob: probability that a child is the crossover of two tournament winners (then mutated).
    aging: remove the oldest member (regularized evolution) rather than the worst.
    batch_size: children per ask.

  >>> from nasjax.spaces import NB201Space
  >>> s = regularized_evolution(NB201Space(), population_size=10, tournament_size=3)
  """
  name = "regularized_evolution"
  check_space(name, space)
  pop_size = check_int(name, "population_size", population_size, 2)
  tour_size = check_int(name, "tournament_size", tournament_size, 1)
  if tour_size > pop_size:
    raise NasjaxError(f"{name}: tournament_size ({tour_size}) must not exceed population_size ({pop_size})")
  cx_prob = check_float(name, "crossover_prob", crossover_prob, 0.0, 1.0)
  if not isinstance(aging, bool):
    raise NasjaxError(f"{name}: aging must be True or False; got {aging!r}")
  batch_size = check_int(name, "batch_size", batch_size)
  dims = space.num_decisions

  def init(key):
    del key
    return {**initial_best(dims),
            "population": jnp.zeros((pop_size, dims), jnp.int32),
            "fitness": jnp.full((pop_size,), -jnp.inf, jnp.float32),
            "born": jnp.zeros((pop_size,), jnp.int32),  # evaluation index at which a member joined
            "filled": jnp.zeros((), jnp.int32)}  # members alive; they occupy slots [0, filled)

  def tournament(key, state):
    # S distinct living members (fewer while the population fills; the empty slots drawn then never win).
    members = distinct_members(key, jnp.arange(pop_size) < state["filled"], tour_size)
    fit = jnp.where(members < state["filled"], state["fitness"][members], -jnp.inf)
    return state["population"][members[jnp.argmax(fit)]]

  def ask(state, key):
    # Row j completes the initial population while it is not yet full (counting the rows before it).
    row = jnp.arange(batch_size)
    random_row = (state["filled"] + row < pop_size) | (state["filled"] == 0)
    return offspring(space, key, batch_size, lambda k: tournament(k, state), cx_prob, random_row), state

  def tell(state, archs, fitness):
    archs = jnp.asarray(archs, jnp.int32)
    fit = clean_fitness(fitness)
    count0 = state["count"]

    def insert(carry, row):
      population, pop_fit, born, filled = carry
      arch, f, j = row
      ok = f > -jnp.inf
      full = filled >= pop_size
      if aging:
        victim = jnp.argmin(born)
        replace = ok
      else:
        victim = jnp.argmin(pop_fit)
        replace = ok & (f > pop_fit[victim])
      slot = jnp.where(full, victim, jnp.minimum(filled, pop_size - 1))
      write = jnp.where(full, replace, ok)
      population = population.at[slot].set(jnp.where(write, arch, population[slot]))
      pop_fit = pop_fit.at[slot].set(jnp.where(write, f, pop_fit[slot]))
      born = born.at[slot].set(jnp.where(write, count0 + j, born[slot]))
      filled = filled + (ok & ~full).astype(jnp.int32)
      return (population, pop_fit, born, filled), None

    rows = (archs, fit, jnp.arange(archs.shape[0], dtype=jnp.int32))
    carry = (state["population"], state["fitness"], state["born"], state["filled"])
    (population, pop_fit, born, filled), _ = jax.lax.scan(insert, carry, rows)
    out = update_best(state, archs, fitness)
    return {**out, "population": population, "fitness": pop_fit, "born": born, "filled": filled}

  return Strategy(init, ask, tell, name=name)
