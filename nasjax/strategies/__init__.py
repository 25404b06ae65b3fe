"""Discrete search strategies as ``init / ask / tell`` over explicit state (evosax style).

Every strategy is pure and jittable with static shapes, so independent searches vmap over seeds; see
:mod:`nasjax.strategies.base` for the contract (NaN fitness = failed evaluation, the fidelity axis).

========================  ===================================================================
name                      strategy (paper)
========================  ===================================================================
grid                      exhaustive enumeration of a (sub-)grid
random                    random search (Li & Talwalkar, UAI 2019)
regularized_evolution     aging evolution (Real et al., AAAI 2019)
local_search              hill climbing with restarts (White et al., 2020)
bayesopt                  GP with a Hamming kernel + EI / UCB (NASBOT 2018, BANANAS 2021 setting)
successive_halving        multi-fidelity (Jamieson & Talwalkar, AISTATS 2016)
hyperband                 multi-fidelity (Li et al., JMLR 2018)
reinforce                 policy gradient (Williams 1992; NAS-Bench-201 baseline)
controller                LSTM controller, REINFORCE (NAS-RL, Zoph & Le 2017; ENAS, Pham et al. 2018)
nsga2                     multi-objective evolution (Deb et al., IEEE TEVC 2002); fitness float[P, M]
========================  ===================================================================

``get_strategy(name, space, **options)`` builds one by name.
"""

from __future__ import annotations

import inspect
from typing import Any, Callable

from nasjax.errors import NasjaxError
from nasjax.strategies.base import Strategy, asked_fidelity, clean_fitness
from nasjax.strategies.bayesopt import bayesopt
from nasjax.strategies.controller import controller
from nasjax.strategies.evolution import regularized_evolution
from nasjax.strategies.grid import grid_search
from nasjax.strategies.hyperband import geometric_resources, hyperband, hyperband_brackets, successive_halving
from nasjax.strategies.local_search import local_search
from nasjax.strategies.nsga2 import nsga2
from nasjax.strategies.random_search import random_search
from nasjax.strategies.reinforce import reinforce

_REGISTRY: dict[str, Callable[..., Strategy]] = {
    "grid": grid_search,
    "random": random_search,
    "regularized_evolution": regularized_evolution,
    "local_search": local_search,
    "bayesopt": bayesopt,
    "successive_halving": successive_halving,
    "hyperband": hyperband,
    "reinforce": reinforce,
    "controller": controller,
    "nsga2": nsga2,
}
_ALIASES = {"grid_search": "grid", "random_search": "random", "rs": "random", "evolution": "regularized_evolution",
            "re": "regularized_evolution", "rea": "regularized_evolution", "ls": "local_search",
            "bo": "bayesopt", "bayesian_optimization": "bayesopt", "sh": "successive_halving",
            "hb": "hyperband", "lstm": "controller", "enas_controller": "controller", "nasrl_controller": "controller",
            "nsga_ii": "nsga2"}

STRATEGY_NAMES = tuple(_REGISTRY)
STRATEGY_ALIASES = dict(_ALIASES)


def get_strategy(name: str, space: Any, **kwargs: Any) -> Strategy:
  """Builds the strategy registered as ``name`` (case-insensitive, '-' or '_') over ``space``; kwargs are
  its options, e.g. ``get_strategy("regularized_evolution", space, population_size=20)``.

  Raises:
    NasjaxError: for an unknown name or option (the message lists the accepted ones).
  """
  if not isinstance(name, str):
    raise NasjaxError(f"a strategy name (string) is required; accepted: {', '.join(STRATEGY_NAMES)}")
  key = name.strip().lower().replace("-", "_")
  key = _ALIASES.get(key, key)
  if key not in _REGISTRY:
    raise NasjaxError(f"unknown strategy {name!r}; accepted: {', '.join(STRATEGY_NAMES)}")
  factory = _REGISTRY[key]
  accepted = [p for p in inspect.signature(factory).parameters if p != "space"]
  unknown = sorted(set(kwargs) - set(accepted))
  if unknown:
    raise NasjaxError(f"strategy {key!r} does not take {', '.join(unknown)}; accepted: {', '.join(accepted)}")
  return factory(space, **kwargs)


__all__ = [
    "Strategy", "asked_fidelity", "clean_fitness", "get_strategy", "STRATEGY_NAMES", "grid_search",
    "random_search", "regularized_evolution", "local_search", "bayesopt", "successive_halving", "hyperband",
    "geometric_resources", "hyperband_brackets", "reinforce", "controller", "nsga2",
]
