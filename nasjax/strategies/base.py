"""The strategy contract: three pure functions over an explicit pytree state (evosax / optax style).

A :class:`Strategy` is ``init(key) -> state``, ``ask(state, key) -> (archs int32[P, D], state)`` and
``tell(state, archs, fitness float[P]) -> state``. Fitness is maximised (an accuracy); a failed evaluation
arrives as NaN (any non-finite value counts as failed) and can never become the best, a parent, an
incumbent or a promoted configuration.

Every strategy of :mod:`nasjax.strategies` keeps to these rules, so a whole search is one compiled
program (``jax.vmap`` over seeds of a ``lax.scan`` over ask / evaluate / tell rounds):

* the state is a dict of fixed-shape arrays; history buffers have a static capacity fixed at
  construction, with a count or mask; ``P`` (the rows of one ask) is static too;
* ``init``, ``ask`` and ``tell`` work under ``jax.jit`` and ``jax.vmap``; the same key gives the same
  sequence of asked architectures;
* ``tell`` receives the rows of the last ``ask`` in order (a driver may tell only its first rows when
  the budget ends mid-batch);
* every state has ``best_arch`` (int32[D]), ``best_fitness`` (float32; -inf until a finite fitness was
  told, and ``best_arch`` is meaningless until then) and ``count`` (int32: evaluations told, failed
  ones included).

Fidelity axis (multi-fidelity strategies such as successive halving and Hyperband): the strategy
decides the level of every architecture it asks, an int in ``[0, num_fidelities)`` with
``num_fidelities - 1`` meaning full training. After ``ask`` the state holds ``state["fidelity"]``,
int32[P], the levels of the rows just asked; :func:`asked_fidelity` reads it (full fidelity for
strategies without the key). ``Strategy.fidelity_costs[k]`` is the cost of one evaluation at level ``k``
as a fraction of a full training (1.0 at the top level), which is how a driver counts its budget;
``state["spent"]`` accumulates that cost over everything told.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp

from nasjax.errors import NasjaxError


class Strategy(NamedTuple):
  """``init(key) -> state``; ``ask(state, key) -> (archs[P, D], state)``; ``tell(state, archs, fitness)``.

  Fitness is maximised (an accuracy); failed evaluations arrive as NaN and never win.
  ``num_fidelities`` and ``fidelity_costs`` describe the fidelity axis (see the module docstring);
  strategies without one evaluate everything at full fidelity, ``(1.0,)``. A multi-objective strategy
  (NSGA-II) has ``num_objectives`` M > 1 and is told ``fitness`` float[P, M], every column maximised.
  """
  init: Callable[[Any], Any]
  ask: Callable[[Any, Any], tuple[Any, Any]]
  tell: Callable[[Any, Any, Any], Any]
  name: str = "strategy"
  num_fidelities: int = 1
  fidelity_costs: tuple[float, ...] = (1.0,)
  num_objectives: int = 1


def asked_fidelity(strategy: Strategy, state: Any, num_rows: int) -> jax.Array:
  """int32[num_rows]: the fidelity level of each row of the last ask (the top level when the strategy
  has no fidelity axis)."""
  if isinstance(state, dict) and "fidelity" in state:
    return jnp.asarray(state["fidelity"], jnp.int32)[:num_rows]
  return jnp.full((num_rows,), strategy.num_fidelities - 1, jnp.int32)


def clean_fitness(fitness: Any) -> jax.Array:
  """float32 fitness with every failed (non-finite) value mapped to -inf, so it loses every comparison."""
  fitness = jnp.asarray(fitness, jnp.float32)
  return jnp.where(jnp.isfinite(fitness), fitness, -jnp.inf)


def initial_best(num_decisions: int, with_fidelity: bool = False) -> dict:
  """The ``best_*`` and ``count`` entries of a fresh state."""
  out = {"best_arch": jnp.zeros((num_decisions,), jnp.int32),
         "best_fitness": jnp.asarray(-jnp.inf, jnp.float32), "count": jnp.zeros((), jnp.int32)}
  if with_fidelity:
    out["best_fidelity"] = jnp.asarray(-1, jnp.int32)
  return out


def update_best(state: dict, archs: jax.Array, fitness: jax.Array, fidelity: jax.Array | None = None) -> dict:
  """New ``best_*`` and ``count`` entries after telling ``archs`` with ``fitness`` (raw, NaN = failed).

  With ``fidelity`` the order is lexicographic in (level, fitness): a result at a higher level is the
  more trustworthy one, so the incumbent is the best architecture at the highest level reached.
  The first of equal rows wins, and a tie never replaces the incumbent.
  """
  fit = clean_fitness(fitness)
  archs = jnp.asarray(archs, jnp.int32)
  out = dict(state)
  out["count"] = state["count"] + archs.shape[0]
  if fidelity is None:
    i = jnp.argmax(fit)
    better = fit[i] > state["best_fitness"]
  else:
    level = jnp.where(jnp.isfinite(fit), jnp.asarray(fidelity, jnp.int32), -1)
    top = jnp.max(level)
    i = jnp.argmax(jnp.where(level == top, fit, -jnp.inf))
    better = jnp.isfinite(fit[i]) & ((top > state["best_fidelity"])
                                     | ((top == state["best_fidelity"]) & (fit[i] > state["best_fitness"])))
    out["best_fidelity"] = jnp.where(better, top, state["best_fidelity"])
  out["best_arch"] = jnp.where(better, archs[i], state["best_arch"])
  out["best_fitness"] = jnp.where(better, fit[i], state["best_fitness"])
  return out


def sample_batch(space, key: jax.Array, num: int) -> jax.Array:
  """int32[num, D]: independent uniform samples of ``space``."""
  return jax.vmap(space.sample)(jax.random.split(key, num)).astype(jnp.int32)


# ------------------------------------------------------------------------- evolutionary operators
def distinct_members(key: jax.Array, occupied: jax.Array, num: int) -> jax.Array:
  """int32[num]: ``num`` distinct slots of a population, drawn uniformly among the ``occupied`` ones (bool[N]).

  Random scores with the empty slots pushed below every occupied one, then the top ``num``: a draw
  without replacement in fixed shapes, which reaches empty slots only when fewer than ``num`` are
  occupied (the caller then masks them out).
  """
  scores = jnp.where(occupied, jax.random.uniform(key, occupied.shape), -1.0)
  return jax.lax.top_k(scores, num)[1]


def offspring(space, key: jax.Array, num: int, select: Callable[[jax.Array], jax.Array], crossover_prob: float,
              sampled: jax.Array) -> jax.Array:
  """int32[num, D]: the rows of an evolutionary ask, uniform samples where ``sampled`` (bool[num]), else children.

  A child is the mutation of the parent ``select(key)`` returns (a tournament winner, int[D]) or, with
  probability ``crossover_prob``, of the space's crossover of two such parents. Samples and children
  are both computed for every row, as fixed shapes under ``jax.jit`` and ``jax.vmap`` require; the rows
  of a strategy still filling its initial population are its samples. Shared by regularized evolution
  and NSGA-II, which differ only in how ``select`` ranks a tournament.
  """
  k_sample, k_breed = jax.random.split(key)
  fresh = sample_batch(space, k_sample, num)

  def breed(k):
    k1, k2, k_cx, k_use, k_mut = jax.random.split(k, 5)
    parent = select(k1)
    if crossover_prob > 0.0:  # static: without crossover no second tournament is traced
      child = space.crossover(k_cx, parent, select(k2))
      parent = jnp.where(jax.random.bernoulli(k_use, crossover_prob), child, parent)
    return space.mutate(k_mut, parent).astype(jnp.int32)

  children = jax.vmap(breed)(jax.random.split(k_breed, num))
  return jnp.where(sampled[:, None], fresh, children)


# ------------------------------------------------------------------------------------ option checks
def check_int(strategy: str, option: str, value: Any, minimum: int = 1) -> int:
  """A Python int >= ``minimum`` (static: it fixes array shapes), else NasjaxError."""
  if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
    raise NasjaxError(f"{strategy}: {option} must be an integer >= {minimum}; got {value!r}")
  return int(value)


def check_float(strategy: str, option: str, value: Any, low: float, high: float, *,
                low_open: bool = False, high_open: bool = False) -> float:
  """A finite real in the given interval, else NasjaxError."""
  ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
  if ok:
    ok = (value > low if low_open else value >= low) and (value < high if high_open else value <= high)
  if not ok:
    interval = f"{'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
    raise NasjaxError(f"{strategy}: {option} must be a number in {interval}; got {value!r}")
  return float(value)


def check_choice(strategy: str, option: str, value: Any, accepted: Sequence[str]) -> str:
  """One of ``accepted`` (strings), else NasjaxError listing them."""
  if not isinstance(value, str) or value not in accepted:
    raise NasjaxError(f"{strategy}: {option} must be one of {', '.join(map(repr, accepted))}; got {value!r}")
  return value


def check_space(strategy: str, space: Any) -> Any:
  """The space must offer the operators strategies use (a :class:`nasjax.spaces.Space`)."""
  needed = ("num_choices", "sample", "mutate", "crossover", "neighbors", "is_valid")
  missing = [n for n in needed if not hasattr(space, n)]
  if missing:
    raise NasjaxError(f"{strategy}: expected a search space (nasjax.spaces.get_space(name)); "
                      f"{type(space).__name__} lacks {', '.join(missing)}")
  return space
