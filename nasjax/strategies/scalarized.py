"""Any single-objective strategy over several objectives, by a weighted sum (linear scalarisation).

The weighted sum of maximised objectives is the classic scalarisation of multi-objective optimisation
(Miettinen, "Nonlinear Multiobjective Optimization", 1999, ch. 3.1); MnasNet's latency-aware reward is
one such trade-off (Tan et al., CVPR 2019). A maximiser of a positive-weight sum is Pareto optimal, but
only the convex part of the front can be reached this way, which is why NSGA-II exists beside it.
"""

from __future__ import annotations

import math
from typing import Sequence

import jax.numpy as jnp

from nasjax.errors import NasjaxError
from nasjax.strategies.base import Strategy


def scalarized(strategy: Strategy, weights: Sequence[float]) -> Strategy:
  """``strategy`` told ``fitness float[P, M] @ weights`` instead of float[P].

  ``weights`` multiply the maximised objectives (a driver has already negated the minimised ones), so
  ``(1, 100)`` over ``accuracy:max, latency_s:min`` maximises ``accuracy - 100 * latency_s``. A row with
  a NaN (a failed or infeasible evaluation) stays NaN. The state is the wrapped strategy's own.

  >>> from nasjax.spaces import NB201Space
  >>> from nasjax.strategies import random_search
  >>> s = scalarized(random_search(NB201Space()), (1.0, 100.0))
  """
  if getattr(strategy, "num_objectives", 1) != 1:
    raise NasjaxError(f"scalarized wraps a single-objective strategy; {strategy.name} already takes "
                      f"{strategy.num_objectives} objectives")
  weights = tuple(weights) if not isinstance(weights, (int, float)) else (weights,)
  if not weights or not all(isinstance(w, (int, float)) and not isinstance(w, bool) and math.isfinite(w)
                            for w in weights):
    raise NasjaxError(f"scalarized needs one finite weight per objective; got {weights!r}")
  w = jnp.asarray(weights, jnp.float32)
  m = len(weights)

  def tell(state, archs, fitness):
    fitness = jnp.asarray(fitness, jnp.float32)
    if fitness.ndim != 2 or fitness.shape[1] != m:
      raise NasjaxError(f"{strategy.name} scalarized over {m} objectives is told fitness [P, {m}]; got "
                        f"{fitness.shape}")
    return strategy.tell(state, archs, fitness @ w)

  return strategy._replace(tell=tell, num_objectives=m)
