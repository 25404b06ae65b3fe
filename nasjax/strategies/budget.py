"""How a search spends its budget and which evaluation it returns: one rule for every driver.

:func:`nasjax.search.run` (host, any executor) and :func:`nasjax.parallel.run_on_device` (one compiled
program) both count and choose with these functions, so the same strategy, estimator, budget and key give
the same queries and the same incumbent whichever runs them.

Budget. For an ordinary strategy the budget counts queries. For a multi-fidelity strategy (successive
halving, Hyperband: Li et al., JMLR 2018) it counts full-training equivalents, and a query at level ``k``
costs what the strategy planned for that level, ``Strategy.fidelity_costs[k]`` (1.0 at the top level), which
is known before the query runs, so a batch executor knows which queries to run. A strategy whose state
has fidelity levels but declares none, or no cost per level, is charged the estimator's own ``"budget"``
metric instead (on the device only: the host driver needs the costs before it runs a query). Queries are made in order while budget remains, so the last one may overshoot
by less than one full training; queries of the last round beyond the budget are not evaluated and the
strategy is told NaN for them.

Incumbent. The best finite fitness among the highest fidelity evaluated so far (HpBandSter's rule;
Falkner et al., "BOHB", ICML 2018), the earliest among ties. A failed evaluation (NaN or infinite fitness)
never becomes the incumbent.
"""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp
import numpy as np


def planned_costs(strategy: Any) -> np.ndarray | None:
  """float32[L]: the cost of one query per fidelity level, or None for a strategy that declares no levels
  or no cost per level (then the estimator's ``"budget"`` metric is charged)."""
  levels = getattr(strategy, "num_fidelities", 1)
  costs = tuple(getattr(strategy, "fidelity_costs", ()))
  if levels <= 1 or len(costs) != levels:
    return None
  return np.asarray(costs, np.float32)


def admitted(spent: Any, budget: float) -> Any:
  """Whether a query may still run after ``spent`` of ``budget`` was used (works on host and traced values)."""
  return spent < budget


def admitted_prefix(costs: np.ndarray, spent: float, budget: float) -> int:
  """How many of a round's queries, with these costs in asked order, run before the budget is spent."""
  n = 0
  total = np.float32(spent)
  for cost in np.asarray(costs, np.float32):
    if not admitted(total, budget):
      break
    total = np.float32(total + cost)
    n += 1
  return n


def is_better(level: Any, fitness: Any, best_level: Any, best_fitness: Any) -> Any:
  """Whether an evaluation replaces the incumbent: finite, and a higher fidelity, or the same fidelity and
  a strictly higher fitness (so the earliest of equals stays)."""
  ok = jnp.isfinite(fitness)
  return ok & ((level > best_level) | ((level == best_level) & (fitness > best_fitness)))


def incumbent(records: list[dict], fitness_key: str) -> dict | None:
  """The incumbent of a host search's records (``failed``, ``metrics``, optional ``fidelity``)."""
  best, best_level, best_fitness = None, -1, -np.inf
  for record in records:
    if record["failed"]:
      continue
    level = int(record.get("fidelity", 0))
    fitness = float(record["metrics"][fitness_key])
    if bool(is_better(level, fitness, best_level, best_fitness)):
      best, best_level, best_fitness = record, level, fitness
  return best
