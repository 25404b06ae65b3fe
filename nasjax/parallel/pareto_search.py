"""Whole multi-objective searches on the device: every evaluation's objective vector, vmapped over seeds.

The multi-objective counterpart of :func:`nasjax.parallel.population.run_on_device`: a pure strategy
(NSGA-II, or any single-objective strategy scalarised by :class:`nasjax.objectives.Objectives`) and a
pure, jittable estimator make one ``lax.scan`` over ask / evaluate / tell rounds, ``vmap``-ped over seeds
and compiled once. Its key schedule is :func:`nasjax.search.run`'s (``init_key, loop_key = split(key)``;
round ``r``: ``ask_key, eval_key = split(fold_in(loop_key, r))``; query ``j``: ``fold_in(eval_key, j)``), so
seed ``s`` asks exactly the architectures the host driver asks with ``keys[s]``.

A multi-objective search's result is the set of everything it evaluated, from which the Pareto front is
taken, so the whole history is returned rather than an incumbent. Queries past the budget in the last
round are not made: the strategy is told NaN for them and they are marked ``made = False``.
"""

from __future__ import annotations

from typing import Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from nasjax.errors import NasjaxError
from nasjax.objectives import Objectives, metric_names
from nasjax.parallel.population import _check_budget, _check_keys, _round_keys
from nasjax.strategies.base import Strategy


class ParetoHistory(NamedTuple):
  """Every query of every seed, in query order; leading axes ``[S, T]`` with ``T = rounds * P``."""
  archs: jax.Array       # int32[S, T, D]
  values: jax.Array      # float32[S, T, M]: raw objective values (the objectives' own directions)
  feasible: jax.Array    # bool[S, T]: every constraint holds and the evaluation did not fail
  made: jax.Array        # bool[S, T]: within the budget (False for the unused tail of the last round)
  extra: dict            # name -> float32[S, T]: further metrics asked for (e.g. a test accuracy)


def make_pareto_search(strategy: Strategy, estimator: Callable, objectives: Objectives, budget: int, *,
                       extra_metrics: Sequence[str] = ()) -> Callable[[jax.Array], ParetoHistory]:
  """The jitted search ``keys[S] -> ParetoHistory`` (``.lower(keys).compile()`` times the compilation)."""
  budget = _check_budget(budget)
  if not isinstance(objectives, Objectives):
    raise NasjaxError("objectives must come from nasjax.objectives.make_objectives(...)")
  if getattr(strategy, "num_fidelities", 1) > 1:
    raise NasjaxError(f"objectives are not supported with the multi-fidelity strategy {strategy.name}")
  strategy = objectives.for_strategy(strategy)
  archs_shape = jax.eval_shape(lambda k: strategy.ask(strategy.init(k), k)[0], jax.random.key(0)).shape
  batch, dims = archs_shape
  produced = metric_names(estimator, dims)
  if produced is None:
    raise NasjaxError("an on-device search needs a pure, jittable estimator (one that says jittable = True)")
  objectives.check_metrics(produced, f"estimator {getattr(estimator, 'name', type(estimator).__name__)}")
  missing = [k for k in extra_metrics if k not in produced]
  if missing:
    raise NasjaxError(f"extra metrics {', '.join(missing)} are not produced by the estimator (it produces "
                      f"{', '.join(sorted(produced))})")
  rounds = -(-budget // batch)
  single = strategy.num_objectives == 1

  def round_seed(carry, r):
    state, loop_key = carry
    ask_key, eval_keys = _round_keys(loop_key, r, batch)
    archs, state = strategy.ask(state, ask_key)
    archs = jnp.asarray(archs, jnp.int32)
    metrics = jax.vmap(estimator)(archs, eval_keys)
    fitness, feasible = objectives.fitness_jnp(metrics, batch)
    made = r * batch + jnp.arange(batch) < budget
    told = jnp.where(made[:, None], fitness, jnp.nan)
    state = strategy.tell(state, archs, told[:, 0] if single else told)
    values = jnp.stack([jnp.asarray(metrics[n], jnp.float32).reshape(batch) for n in objectives.names], axis=1)
    ok = feasible & jnp.all(jnp.isfinite(fitness), axis=1)
    extra = {k: jnp.asarray(metrics[k], jnp.float32).reshape(batch) for k in extra_metrics}
    return (state, loop_key), (archs, values, ok, made, extra)

  def one_seed(key):
    init_key, loop_key = jax.random.split(key)
    _, out = jax.lax.scan(round_seed, (strategy.init(init_key), loop_key), jnp.arange(rounds, dtype=jnp.int32))
    archs, values, ok, made, extra = out
    flat = lambda x: x.reshape((rounds * batch,) + x.shape[2:])  # [R, P, ...] -> [T, ...]
    return ParetoHistory(flat(archs), flat(values), flat(ok), flat(made), {k: flat(v) for k, v in extra.items()})

  return jax.jit(jax.vmap(one_seed))


def run_pareto_on_device(strategy: Strategy, estimator: Callable, objectives: Objectives, budget: int, keys,
                         *, extra_metrics: Sequence[str] = ()) -> ParetoHistory:
  """Runs one multi-objective search per key in one compiled program; returns every query (host arrays).

  Args:
    strategy: NSGA-II, or a single-objective strategy (scalarised by ``objectives.weights`` for M > 1).
    estimator: a pure, jittable ``(arch, key) -> metrics``.
    objectives: :func:`nasjax.objectives.make_objectives`; constraints make rows infeasible (told NaN).
    budget: queries per seed.
    keys: ``jax.random.split(key, num_seeds)``.
    extra_metrics: further metrics to return per query (e.g. ``"test_accuracy"`` for reporting).
  """
  keys = _check_keys(keys)
  search = make_pareto_search(strategy, estimator, objectives, budget, extra_metrics=extra_metrics)
  return jax.device_get(search(keys))


def front_mask(values: np.ndarray, usable: np.ndarray, signs: np.ndarray) -> np.ndarray:
  """bool[..., T]: the queries on the Pareto front of the usable ones (raw ``values`` [..., T, M], the
  objectives' ``signs``), per leading index; a jittable ``pareto_mask`` under ``vmap``."""
  from nasjax.strategies.pareto import pareto_mask
  maximised = jnp.where(jnp.asarray(usable)[..., None], jnp.asarray(values) * jnp.asarray(signs, jnp.float32),
                        jnp.nan)
  fn = pareto_mask
  for _ in range(maximised.ndim - 2):
    fn = jax.vmap(fn)
  return np.asarray(fn(maximised))
