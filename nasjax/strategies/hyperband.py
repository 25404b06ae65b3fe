"""Successive halving and Hyperband over a fidelity axis.

* Successive halving -- Jamieson & Talwalkar, "Non-stochastic Best Arm Identification and
  Hyperparameter Optimization", AISTATS 2016: evaluate n random architectures at the lowest fidelity,
  promote the top ``1/eta`` of them to the next level, and so on up to full fidelity.
* Hyperband -- Li, Jamieson, DeSalvo, Rostamizadeh & Talwalkar, "Hyperband: A Novel Bandit-Based
  Approach to Hyperparameter Optimization", JMLR 2018: cycles through brackets ``s = s_max, ..., 0``;
  bracket ``s`` runs successive halving from ``n = ceil((s_max + 1) / (s + 1) * eta**s)`` architectures
  starting at level ``s_max - s``, with ``floor(n * eta**-i)`` of them at its i-th rung.

Fidelity axis: ``resources`` lists the resource of each level in increasing order (e.g. epochs,
``(12, 200)`` for NAS-Bench-201's two schedules, or ``geometric_resources(1, 27, 3) == (1, 3, 9, 27)``
as in the papers); level ``k`` is an int in ``[0, len(resources))``, the last level is full training.
After every ``ask`` the state holds ``state["fidelity"]`` (int32[1]), the level at which the driver must
evaluate the asked architecture (:func:`nasjax.strategies.base.asked_fidelity` reads it). One evaluation
at level ``k`` costs ``resources[k] / resources[-1]`` full trainings (``Strategy.fidelity_costs``); a
promoted architecture is re-evaluated at the higher level, and its whole cost is counted again (a
driver that resumes training from a checkpoint spends less than that). ``state["spent"]`` is the sum of
the costs told so far, the budget the papers plot on their x axis.

Shapes stay static by asking one architecture at a time (P = 1) from a rung of static capacity: rung 0
samples fresh architectures, a later rung replays the promoted ones. Promotion takes exactly
``floor(n_i / eta)`` (at least one) of the ``n_i`` members of a rung, the best first, ties broken by
evaluation order; failed evaluations (NaN) are never promoted, so a rung with fewer successes shrinks,
and a bracket with none ends early. After the last bracket the cycle starts again with fresh samples.
The incumbent (``best_*``) is the best architecture at the highest level evaluated so far
(``state["best_fidelity"]``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from nasjax.errors import NasjaxError
from nasjax.strategies.base import (Strategy, check_float, check_int, check_space, clean_fitness, initial_best,
                                    update_best)

_MAX_RUNG = 2 ** 20  # rung capacity is a static array size; beyond this it would not fit a device


def geometric_resources(min_resource: float, max_resource: float, eta: int = 3) -> tuple[float, ...]:
  """The levels of Li et al.: ``max_resource * eta**-k`` for ``k = s_max, ..., 0`` with
  ``s_max = floor(log_eta(max_resource / min_resource))``, lowest first."""
  max_resource = check_float("geometric_resources", "max_resource", max_resource, 0.0, float("inf"),
                             low_open=True, high_open=True)
  min_resource = check_float("geometric_resources", "min_resource", min_resource, 0.0, max_resource,
                             low_open=True)
  eta = check_int("geometric_resources", "eta", eta, 2)
  s_max = 0
  while min_resource * eta ** (s_max + 1) <= max_resource * (1 + 1e-9):
    s_max += 1
  return tuple(max_resource / eta ** (s_max - k) for k in range(s_max + 1))


def _check_resources(name: str, resources: Any) -> tuple[float, ...]:
  if (not isinstance(resources, Sequence) or isinstance(resources, str) or len(resources) < 1
      or not all(isinstance(r, (int, float)) and not isinstance(r, bool) and 0 < r < float("inf")
                 for r in resources)
      or any(b <= a for a, b in zip(resources, resources[1:]))):
    raise NasjaxError(f"{name}: resources must be a list of increasing positive numbers, one per fidelity "
                      f"level (e.g. epochs (12, 200), or geometric_resources(1, 27, 3)); got {resources!r}")
  return tuple(float(r) for r in resources)


def _multi_fidelity(space, name: str, brackets: list[list[tuple[int, int]]],
                    resources: tuple[float, ...]) -> Strategy:
  """The shared engine: ``brackets`` lists, per bracket, its rungs as (planned size, level)."""
  dims = space.num_decisions
  num_brackets = len(brackets)
  max_rungs = max(len(b) for b in brackets)
  sizes = np.zeros((num_brackets, max_rungs + 1), np.int32)  # a trailing 0 marks the bracket's end
  levels = np.zeros((num_brackets, max_rungs), np.int32)
  for b, rungs in enumerate(brackets):
    for r, (size, level) in enumerate(rungs):
      sizes[b, r], levels[b, r] = size, level
  capacity = int(sizes.max())
  costs = np.asarray([r / resources[-1] for r in resources], np.float32)

  def init(key):
    del key
    return {**initial_best(dims, with_fidelity=True),
            "bracket": jnp.zeros((), jnp.int32), "rung": jnp.zeros((), jnp.int32),
            "rung_size": jnp.asarray(sizes[0, 0]), "told": jnp.zeros((), jnp.int32),
            "members": jnp.zeros((capacity, dims), jnp.int32),
            "member_fitness": jnp.full((capacity,), -jnp.inf, jnp.float32),
            "fidelity": jnp.full((1,), levels[0, 0], jnp.int32),
            "spent": jnp.zeros((), jnp.float32), "brackets_done": jnp.zeros((), jnp.int32)}

  def ask(state, key):
    b, r = state["bracket"], state["rung"]
    fresh = space.sample(key).astype(jnp.int32)
    arch = jnp.where(r == 0, fresh, state["members"][jnp.minimum(state["told"], capacity - 1)])
    level = jnp.asarray(levels)[b, r]
    return arch[None], {**state, "fidelity": jnp.full((1,), level, jnp.int32)}

  def promote(s):
    b, r, size = s["bracket"], s["rung"], s["rung_size"]
    fit = jnp.where(jnp.arange(capacity) < size, s["member_fitness"], -jnp.inf)
    order = jnp.argsort(-fit, stable=True)
    finite = jnp.sum(fit > -jnp.inf, dtype=jnp.int32)
    next_size = jnp.minimum(jnp.asarray(sizes)[b, r + 1], finite)
    end = next_size == 0
    next_b = jnp.where(end, (b + 1) % num_brackets, b)
    return {**s, "members": s["members"][order], "member_fitness": jnp.full((capacity,), -jnp.inf, jnp.float32),
            "bracket": next_b, "rung": jnp.where(end, 0, r + 1),
            "rung_size": jnp.where(end, jnp.asarray(sizes)[next_b, 0], next_size),
            "told": jnp.zeros((), jnp.int32), "brackets_done": s["brackets_done"] + end.astype(jnp.int32)}

  def tell(state, archs, fitness):
    archs = jnp.asarray(archs, jnp.int32)
    fit = clean_fitness(fitness)
    fidelity = jnp.broadcast_to(state["fidelity"][0], (archs.shape[0],))
    out = update_best(state, archs, fitness, fidelity)

    def one(s, row):
      arch, f, level = row
      slot = jnp.minimum(s["told"], capacity - 1)
      s = {**s, "members": s["members"].at[slot].set(arch),
           "member_fitness": s["member_fitness"].at[slot].set(f),
           "told": s["told"] + 1, "spent": s["spent"] + jnp.asarray(costs)[level]}
      done = s["told"] >= s["rung_size"]
      promoted = promote(s)
      return jax.tree.map(lambda p, q: jnp.where(done, p, q), promoted, s), None

    keys = ("bracket", "rung", "rung_size", "told", "members", "member_fitness", "spent", "brackets_done")
    carry = {k: state[k] for k in keys}
    carry, _ = jax.lax.scan(one, carry, (archs, fit, fidelity))
    return {**out, **carry}

  return Strategy(init, ask, tell, name=name, num_fidelities=len(resources),
                  fidelity_costs=tuple(float(c) for c in costs))


def _check_eta(name: str, eta: Any) -> int:
  return check_int(name, "eta", eta, 2)


def successive_halving(space, resources: Sequence[float] = (1, 3, 9, 27), eta: int = 3,
                       num_configs: int | None = None, min_level: int = 0) -> Strategy:
  """Successive halving, repeated with fresh architectures after each bracket.

  Args:
    space: a search space.
    resources: resource of each fidelity level, increasing (the last is full training).
    eta: keep the top ``1/eta`` of every rung.
    num_configs: architectures in the first rung; default ``eta**(levels above min_level)``, so that
      one architecture reaches full fidelity.
    min_level: the level of the first rung.

  >>> from nasjax.spaces import NB201Space
  >>> s = successive_halving(NB201Space(), resources=(12, 200), eta=3, num_configs=9)
  """
  name = "successive_halving"
  check_space(name, space)
  resources = _check_resources(name, resources)
  eta = _check_eta(name, eta)
  top = len(resources) - 1
  min_level = check_int(name, "min_level", min_level, 0)
  if min_level > top:
    raise NasjaxError(f"{name}: min_level must be in 0..{top} (one per resource level); got {min_level}")
  if num_configs is None:
    num_configs = eta ** (top - min_level)
  num_configs = check_int(name, "num_configs", num_configs)
  if num_configs > _MAX_RUNG:
    raise NasjaxError(f"{name}: num_configs must be at most {_MAX_RUNG}; got {num_configs}")
  rungs, n = [], num_configs
  for level in range(min_level, top + 1):
    rungs.append((n, level))
    n = max(1, n // eta)
  return _multi_fidelity(space, name, [rungs], resources)


def hyperband(space, resources: Sequence[float] = (1, 3, 9, 27), eta: int = 3) -> Strategy:
  """Hyperband: brackets ``s = s_max, ..., 0`` of successive halving, ``s_max = len(resources) - 1``.

  Li et al. assume ``resources[k + 1] = eta * resources[k]`` (see :func:`geometric_resources`); other
  resource lists keep the bracket sizes of that rule and count costs from the given resources.

  >>> from nasjax.spaces import NB201Space
  >>> s = hyperband(NB201Space(), resources=geometric_resources(1, 27, 3))
  """
  name = "hyperband"
  check_space(name, space)
  resources = _check_resources(name, resources)
  eta = _check_eta(name, eta)
  return _multi_fidelity(space, name, hyperband_brackets(len(resources), eta), resources)


def hyperband_brackets(num_levels: int, eta: int = 3) -> list[list[tuple[int, int]]]:
  """Li et al.'s schedule: per bracket ``s = s_max, ..., 0`` (``s_max = num_levels - 1``), its rungs as
  ``(number of architectures, fidelity level)``; e.g. ``num_levels=5, eta=3`` gives the n_i of their
  Table 1: 81, 27, 9, 3, 1 | 34, 11, 3, 1 | 15, 5, 1 | 8, 2 | 5."""
  num_levels = check_int("hyperband", "number of resource levels", num_levels)
  eta = _check_eta("hyperband", eta)
  s_max = num_levels - 1
  if eta ** s_max > _MAX_RUNG:
    raise NasjaxError(f"hyperband: {num_levels} levels with eta={eta} need a rung of more than {_MAX_RUNG} "
                      "architectures; use fewer levels or a smaller eta")
  brackets = []
  for s in range(s_max, -1, -1):
    n = -(-(s_max + 1) * eta ** s // (s + 1))  # ceil((s_max + 1) / (s + 1) * eta**s), exactly
    brackets.append([(max(1, n // eta ** i), s_max - s + i) for i in range(s + 1)])
  return brackets
