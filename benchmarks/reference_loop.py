"""The host-driven reference of :func:`nasjax.parallel.run_on_device`: the baseline of its speed-up
(``nb201_simulate.py``) and the reference its tests compare with (``tests/test_population.py``).

Per seed, per round: a jitted ask, one jitted estimator call per query and a jitted tell, with the
bookkeeping written out on the host in plain Python, independently of the device scan, so that the two
agreeing bit for bit means the compiled search does what this loop says.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from nasjax.parallel.population import (SearchResults, _check_budget, _check_keys, _evaluate, _plan,
                                        _round_keys, check_results)
from nasjax.strategies.base import Strategy


def run_loop(strategy: Strategy, estimator: Callable, budget: int, keys: Any, *,
             fitness_key: str = "accuracy", test_key: str = "test_accuracy",
             max_rounds: int | None = None) -> SearchResults:
  """The same search driven from Python: per seed, per round, a jitted ask, one jitted estimator call
  per query and a jitted tell, with the bookkeeping on the host. Returns what :func:`run_on_device`
  returns (numpy arrays); it exists as the reference and as the baseline of the speed-up."""
  budget = _check_budget(budget)
  keys = _check_keys(keys)
  plan = _plan(strategy, estimator, budget, keys, max_rounds)
  init = jax.jit(strategy.init)
  ask = jax.jit(strategy.ask)
  tell = jax.jit(strategy.tell)
  split = jax.jit(jax.random.split)
  round_keys = jax.jit(_round_keys, static_argnums=2)
  evaluate = _evaluate(estimator, plan.multi_fidelity, fitness_key, test_key, plan.costs)
  # One jitted call and one transfer per query: the cheapest a host-driven evaluation gets.
  evaluate_one = jax.jit(lambda a, k, f: evaluate(a[None], k[None], None if f is None else f[None]))
  f32 = np.float32

  per_seed = []
  for s in range(keys.shape[0]):
    init_key, loop_key = split(keys[s])
    state = init(init_key)
    best_fitness, best_fidelity, best_test = f32(-np.inf), -1, f32(np.nan)
    best_arch = np.full((plan.num_decisions,), -1, np.int32)
    spent, queries, failed, cost, max_fidelity = f32(0), 0, 0, f32(0), -1
    traj_fit, traj_test, traj_spent = [], [], []
    r = 0
    while spent < budget and r < plan.rounds:
      ask_key, eval_keys = round_keys(loop_key, r, plan.batch)
      archs, state = ask(state, ask_key)
      archs_np = np.asarray(archs, np.int32)
      fidelity = np.asarray(state["fidelity"], np.int32) if plan.multi_fidelity else None
      told = np.full((plan.batch,), np.nan, f32)
      for j in range(plan.batch):
        if not spent < budget:
          break
        fields = jax.device_get(evaluate_one(archs_np[j], eval_keys[j],
                                             None if fidelity is None else fidelity[j]))
        fitness, test, level, asked, q_cost, seconds = (v[0] for v in fields)
        queries += 1
        spent = f32(spent + q_cost)
        cost = f32(cost + seconds)
        if plan.multi_fidelity:
          max_fidelity = max(max_fidelity, int(asked))
        if np.isfinite(fitness):
          told[j] = fitness
          if level > best_fidelity or (level == best_fidelity and fitness > best_fitness):
            best_fitness, best_fidelity, best_test = f32(fitness), int(level), f32(test)
            best_arch = archs_np[j].copy()
        else:
          failed += 1
        traj_fit.append(best_fitness)
        traj_test.append(best_test)
        traj_spent.append(spent)
      state = tell(state, archs, jnp.asarray(told))
      r += 1
    # Entries past the last query repeat the final values, as on the device.
    pad = plan.length - len(traj_fit)
    traj_fit += [best_fitness] * pad
    traj_test += [best_test] * pad
    traj_spent += [spent] * pad
    fit = np.asarray(traj_fit[:plan.length], f32)
    per_seed.append(SearchResults(
        best_arch=best_arch, best_fitness=f32(best_fitness if np.isfinite(best_fitness) else np.nan),
        best_test=f32(best_test), best_fidelity=np.int32(best_fidelity),
        trajectory_fitness=np.where(np.isfinite(fit), fit, np.nan).astype(f32),
        trajectory_test=np.asarray(traj_test[:plan.length], f32),
        trajectory_budget=np.asarray(traj_spent[:plan.length], f32), num_queries=np.int32(queries),
        num_failed=np.int32(failed), budget_spent=f32(spent), cost=f32(cost),
        max_fidelity_asked=np.int32(max_fidelity)))
  results = SearchResults(*(np.stack(field) for field in zip(*per_seed)))
  return check_results(results, estimator, budget)
