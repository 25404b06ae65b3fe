"""Whole searches on the accelerator: ``scan`` over ask/evaluate/tell rounds, ``vmap`` over seeds, one ``jit``.

With a tabular benchmark (Ying et al., "NAS-Bench-101", ICML 2019; Dong & Yang, "NAS-Bench-201", ICLR 2020)
an evaluation is a gather, so the host round-trips of a Python driver cost far more than the search itself.
A strategy here is pure (``init / ask / tell``, evosax style: Lange, "evosax: JAX-based Evolution
Strategies", GECCO 2023 companion) and the estimator is a pure ``(arch, key) -> metrics`` function, so a
whole search is one ``jax.lax.scan`` over rounds and the repetitions a benchmark needs (the NB201 paper
reports means over hundreds of seeds) are one ``jax.vmap`` over seeds, compiled once.

:func:`run_on_device` is that compiled search (``tests/reference_loop.py`` runs the same algorithm from
the host and must return identical results). It follows :func:`nasjax.search.run`'s key schedule:
``init_key, loop_key = split(key)``; round ``r`` uses ``ask_key, eval_key = split(fold_in(loop_key, r))``
and query ``j`` of the round ``fold_in(eval_key, j)``, so no key is used twice.

Budget and incumbent follow :mod:`nasjax.strategies.budget`, the rules :func:`nasjax.search.run` uses
too. A multi-fidelity strategy is one whose state after ``ask`` has ``"fidelity"`` (int32[P], 0 = lowest
level); the estimator is then called with ``fidelity=``, and a query costs the strategy's planned
``fidelity_costs[level]`` (the estimator's ``"budget"`` metric for a strategy that declares no levels).
After each query the driver records the incumbent, the architecture the search would return if stopped
now. A failed evaluation (NaN or infinite fitness) is counted, told to the strategy as NaN and never
becomes the incumbent. Before any success the incumbent's fitness and test value are NaN and its
architecture is all ``-1``.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Mapping
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from nasjax.errors import NasjaxError
from nasjax.strategies.budget import admitted, is_better, planned_costs
from nasjax.strategies.base import Strategy


class SearchResults(NamedTuple):
  """Per-seed results; every field has a leading seed axis ``S``. ``T`` is the trajectory length.

  For an ordinary strategy ``T == budget`` (entry ``t`` is the state after query ``t + 1``); for a
  multi-fidelity one ``T`` is the bound on queries and entries after ``num_queries`` repeat the final
  values.
  """
  best_arch: Any           # int32[S, D]: the incumbent at the end (-1 if every evaluation failed)
  best_fitness: Any        # float32[S]
  best_test: Any           # float32[S]: the reported test value of the incumbent
  best_fidelity: Any       # int32[S]: the fidelity the incumbent was evaluated at (-1 if none)
  trajectory_fitness: Any  # float32[S, T]: incumbent fitness after each query
  trajectory_test: Any     # float32[S, T]: incumbent test value after each query
  trajectory_budget: Any   # float32[S, T]: budget spent after each query
  num_queries: Any         # int32[S]
  num_failed: Any          # int32[S]
  budget_spent: Any        # float32[S]
  cost: Any                # float32[S]: sum of the estimator's "cost" metric (simulated seconds)
  max_fidelity_asked: Any  # int32[S]: highest fidelity the strategy asked for (-1: not multi-fidelity)


class _Plan(NamedTuple):
  batch: int            # P, archs per ask
  num_decisions: int    # D
  multi_fidelity: bool
  rounds: int           # R, static scan length
  length: int           # T, trajectory length
  costs: Any = None     # float32[L]: the strategy's planned cost per level (None: the estimator's "budget")


# ------------------------------------------------------------------------------------------ planning
def _check_budget(budget: Any) -> int:
  if isinstance(budget, bool) or not isinstance(budget, (int, np.integer)) or budget < 1:
    raise NasjaxError(f"budget must be a positive integer (queries, or full-training equivalents for "
                      f"multi-fidelity strategies); got {budget!r}")
  return int(budget)


def _check_keys(keys: Any) -> jax.Array:
  keys = jnp.asarray(keys) if not isinstance(keys, jax.Array) else keys
  if jnp.issubdtype(keys.dtype, jax.dtypes.prng_key):
    if keys.ndim != 1 or keys.shape[0] < 1:
      raise NasjaxError(f"keys must be a 1-D array of PRNG keys, one per seed (jax.random.split(key, "
                        f"num_seeds)); got shape {keys.shape}")
  elif keys.dtype != jnp.uint32 or keys.ndim != 2 or keys.shape[0] < 1:
    raise NasjaxError(f"keys must be jax.random.split(key, num_seeds): typed keys [S] or raw uint32 keys "
                      f"[S, 2]; got dtype {keys.dtype} and shape {keys.shape}")
  return keys


def _is_multi_fidelity(state: Any) -> bool:
  return isinstance(state, Mapping) and "fidelity" in state


def _takes_fidelity(estimator: Callable) -> bool:
  try:
    params = inspect.signature(estimator).parameters
  except (TypeError, ValueError):
    return True  # cannot tell (e.g. a C callable); let the call decide
  return "fidelity" in params or any(p.kind == p.VAR_KEYWORD for p in params.values())


def _plan(strategy: Strategy, estimator: Callable, budget: int, key: jax.Array,
          max_rounds: int | None) -> _Plan:
  """Static shapes of the search, from abstract evaluation of one ask (nothing is computed)."""
  one_key = key[0]
  archs, state = jax.eval_shape(lambda k: strategy.ask(strategy.init(k), k), one_key)
  if len(archs.shape) != 2:
    raise NasjaxError(f"strategy {strategy.name!r}: ask must return archs of shape [P, D]; got "
                      f"{archs.shape}")
  batch, decisions = archs.shape
  multi = _is_multi_fidelity(state)
  if multi:
    if state["fidelity"].shape != (batch,):
      raise NasjaxError(f"strategy {strategy.name!r}: state['fidelity'] must be int32[{batch}], one level "
                        f"per asked arch; got shape {state['fidelity'].shape}")
    if not _takes_fidelity(estimator):
      raise NasjaxError(f"strategy {strategy.name!r} is multi-fidelity (its state has 'fidelity'), but "
                        "the estimator takes no fidelity= argument")
    wanted = getattr(strategy, "num_fidelities", None)
    levels = getattr(estimator, "num_fidelities", None)
    # A strategy that declares its levels (Strategy.num_fidelities > 1) must match the estimator's.
    if wanted is not None and wanted > 1 and levels is not None and wanted != levels:
      raise NasjaxError(f"strategy {strategy.name!r} has {wanted} fidelity levels but the estimator has "
                        f"{levels}; build the strategy with the estimator's levels (e.g. resources="
                        f"{getattr(estimator, 'fidelity_epochs', '...')})")
  if max_rounds is not None:
    if isinstance(max_rounds, bool) or not isinstance(max_rounds, (int, np.integer)) or max_rounds < 1:
      raise NasjaxError(f"max_rounds must be a positive integer; got {max_rounds!r}")
    rounds = int(max_rounds)
  elif not multi:
    rounds = -(-budget // batch)
  else:
    # Every query costs at least the lowest fidelity's share; one extra query covers float rounding.
    # A fixed probe key: the seeds' keys stay reserved for the search itself.
    probe_key = (jax.random.key(0) if jnp.issubdtype(key.dtype, jax.dtypes.prng_key)
                 else jax.random.PRNGKey(0))
    costs = planned_costs(strategy)
    if costs is not None:
      lowest = float(np.min(costs))
    else:
      metrics = estimator(jnp.zeros((decisions,), jnp.int32), probe_key, fidelity=0)
      if "budget" not in metrics:
        raise NasjaxError("a multi-fidelity search whose strategy declares no fidelity levels needs the "
                          "estimator's 'budget' metric (the query's cost in full-training equivalents); "
                          "this estimator does not return one")
      lowest = float(metrics["budget"])
    if not lowest > 0:
      raise NasjaxError(f"the estimator's lowest-fidelity 'budget' must be > 0; got {lowest}")
    rounds = -(-(math.ceil(budget / lowest) + 1) // batch)
  length = budget if (not multi and max_rounds is None) else rounds * batch
  return _Plan(batch, decisions, multi, rounds, length, planned_costs(strategy) if multi else None)


# ------------------------------------------------------------------------------------------ on device
def _book_init(decisions: int) -> dict:
  return {"best_fitness": jnp.float32(-jnp.inf), "best_fidelity": jnp.int32(-1),
          "best_arch": jnp.full((decisions,), -1, jnp.int32), "best_test": jnp.float32(jnp.nan),
          "spent": jnp.float32(0), "queries": jnp.int32(0), "failed": jnp.int32(0),
          "cost": jnp.float32(0), "max_fidelity": jnp.int32(-1)}


def _book_query(budget: int, multi: bool):
  """One query's bookkeeping, in order within a round (a scan, so float sums match the host loop)."""

  def step(book, q):
    arch, fitness, test, level, asked, cost, seconds = q
    allowed = admitted(book["spent"], budget)
    ok = allowed & jnp.isfinite(fitness)
    better = allowed & is_better(level, fitness, book["best_fidelity"], book["best_fitness"])
    book = {
        "best_fitness": jnp.where(better, fitness, book["best_fitness"]),
        "best_fidelity": jnp.where(better, level, book["best_fidelity"]),
        "best_arch": jnp.where(better, arch, book["best_arch"]),
        "best_test": jnp.where(better, test, book["best_test"]),
        "spent": jnp.where(allowed, book["spent"] + cost, book["spent"]),
        "queries": book["queries"] + allowed.astype(jnp.int32),
        "failed": book["failed"] + (allowed & ~ok).astype(jnp.int32),
        "cost": jnp.where(allowed, book["cost"] + seconds, book["cost"]),
        "max_fidelity": jnp.where(allowed & multi, jnp.maximum(book["max_fidelity"], asked),
                                  book["max_fidelity"]),
    }
    return book, (allowed, book["best_fitness"], book["best_test"], book["spent"])

  return step


def _evaluate(estimator: Callable, multi: bool, fitness_key: str, test_key: str, costs=None):
  """Evaluates one asked batch: vmap of the estimator, normalised to the driver's fields."""

  def evaluate(archs, keys, fidelity):
    if multi:
      metrics = jax.vmap(lambda a, k, f: estimator(a, k, fidelity=f))(archs, keys, fidelity)
    else:
      metrics = jax.vmap(estimator)(archs, keys)
    return _fields(metrics, archs.shape[0], multi, fidelity, fitness_key, test_key, costs)

  return evaluate


def _fields(metrics: Mapping, n: int, multi: bool, fidelity: Any, fitness_key: str, test_key: str,
            costs=None):
  if fitness_key not in metrics:
    raise NasjaxError(f"the estimator returned no {fitness_key!r} metric (the fitness); it returned "
                      f"{', '.join(sorted(metrics))}")
  fitness = jnp.asarray(metrics[fitness_key], jnp.float32).reshape(n)
  # Infinite fitness is a failed evaluation as well (as in nasjax.search.run).
  fitness = jnp.where(jnp.isfinite(fitness), fitness, jnp.nan)
  nan = jnp.full((n,), jnp.nan, jnp.float32)
  test = jnp.asarray(metrics[test_key], jnp.float32).reshape(n) if test_key in metrics else nan
  level = (jnp.asarray(metrics["fidelity"], jnp.int32).reshape(n) if "fidelity" in metrics
           else jnp.zeros((n,), jnp.int32))
  asked = jnp.asarray(fidelity, jnp.int32).reshape(n) if multi else jnp.full((n,), -1, jnp.int32)
  if not multi:
    cost = jnp.ones((n,), jnp.float32)
  elif costs is not None:
    cost = jnp.asarray(costs, jnp.float32)[jnp.clip(asked, 0, len(costs) - 1)]
  else:
    cost = jnp.asarray(metrics["budget"], jnp.float32).reshape(n)
  seconds = (jnp.asarray(metrics["cost"], jnp.float32).reshape(n) if "cost" in metrics
             else jnp.zeros((n,), jnp.float32))
  return fitness, test, level, asked, cost, seconds


def _round_keys(loop_key: jax.Array, r: Any, batch: int) -> tuple[jax.Array, jax.Array]:
  ask_key, eval_key = jax.random.split(jax.random.fold_in(loop_key, r))
  eval_keys = jax.vmap(lambda j: jax.random.fold_in(eval_key, j))(jnp.arange(batch, dtype=jnp.uint32))
  return ask_key, eval_keys


def _finish(book: dict, traj: tuple, length: int) -> SearchResults:
  found = jnp.isfinite(book["best_fitness"])
  _, fit, test, spent = traj
  fit = jnp.where(jnp.isfinite(fit), fit, jnp.nan)
  return SearchResults(
      best_arch=book["best_arch"], best_fitness=jnp.where(found, book["best_fitness"], jnp.nan),
      best_test=book["best_test"], best_fidelity=book["best_fidelity"],
      trajectory_fitness=fit[..., :length], trajectory_test=test[..., :length],
      trajectory_budget=spent[..., :length], num_queries=book["queries"], num_failed=book["failed"],
      budget_spent=book["spent"], cost=book["cost"], max_fidelity_asked=book["max_fidelity"])


def make_device_search(strategy: Strategy, estimator: Callable, budget: int, keys: Any, *,
                       fitness_key: str = "accuracy", test_key: str = "test_accuracy",
                       max_rounds: int | None = None) -> Callable[[jax.Array], SearchResults]:
  """The jitted search ``keys[S] -> SearchResults`` (uncompiled; ``.lower(keys).compile()`` to time it).

  ``keys`` fixes the plan's shapes (one key per seed). Prefer :func:`run_on_device`, which also checks
  the results; this factory is for timing the compilation separately.
  """
  budget = _check_budget(budget)
  keys = _check_keys(keys)
  plan = _plan(strategy, estimator, budget, keys, max_rounds)
  evaluate = _evaluate(estimator, plan.multi_fidelity, fitness_key, test_key, plan.costs)
  query = _book_query(budget, plan.multi_fidelity)

  def init_seed(key):
    init_key, loop_key = jax.random.split(key)
    return strategy.init(init_key), _book_init(plan.num_decisions), loop_key

  def round_seed(carry, r):
    state, book, loop_key = carry
    ask_key, eval_keys = _round_keys(loop_key, r, plan.batch)
    archs, state = strategy.ask(state, ask_key)
    archs = jnp.asarray(archs, jnp.int32)
    fidelity = state["fidelity"] if plan.multi_fidelity else None
    fitness, test, level, asked, cost, seconds = evaluate(archs, eval_keys, fidelity)
    book, traj = jax.lax.scan(query, book, (archs, fitness, test, level, asked, cost, seconds))
    allowed = traj[0]
    # Queries past the budget were never made: the strategy learns nothing from them.
    state = strategy.tell(state, archs, jnp.where(allowed, fitness, jnp.nan))
    return (state, book, loop_key), traj

  def round_all(carry, r):
    def skip(c):
      # Every seed has spent its budget (multi-fidelity plans over-provision rounds): nothing happens.
      book = c[1]
      rep = lambda v: jnp.broadcast_to(v[:, None], (v.shape[0], plan.batch))  # noqa: E731
      return c, (jnp.zeros((book["spent"].shape[0], plan.batch), bool), rep(book["best_fitness"]),
                 rep(book["best_test"]), rep(book["spent"]))

    done = jnp.all(carry[1]["spent"] >= budget)
    return jax.lax.cond(done, skip, lambda c: jax.vmap(round_seed, in_axes=(0, None))(c, r), carry)

  @jax.jit
  def search(keys):
    carry = jax.vmap(init_seed)(keys)
    carry, traj = jax.lax.scan(round_all, carry, jnp.arange(plan.rounds, dtype=jnp.int32))
    # [R, S, P] -> [S, R * P]: the trajectory in query order.
    traj = tuple(jnp.moveaxis(t, 1, 0).reshape(t.shape[1], -1) for t in traj)
    return _finish(carry[1], traj, plan.length)

  return search


def check_results(results: SearchResults, estimator: Callable, budget: int) -> SearchResults:
  """Host-side checks of a finished search (budget spent, fidelities in range); returns ``results``."""
  spent = np.asarray(results.budget_spent)
  if np.any(spent < budget):
    raise NasjaxError(f"the search ended with budget left ({float(spent.min())} of {budget} spent): "
                      "max_rounds is too small for this strategy; raise it or leave it unset")
  levels = getattr(estimator, "num_fidelities", None)
  asked = int(np.max(np.asarray(results.max_fidelity_asked)))
  if levels is not None and asked >= levels:
    raise NasjaxError(f"the strategy asked for fidelity {asked}, but the estimator has levels "
                      f"0..{levels - 1}; configure the strategy with {levels} fidelity level(s)")
  return results


def run_on_device(strategy: Strategy, estimator: Callable, budget: int, keys: Any, *,
                  fitness_key: str = "accuracy", test_key: str = "test_accuracy",
                  max_rounds: int | None = None) -> SearchResults:
  """Runs one search per key, all seeds at once, in one compiled program; see the module docstring.

  Args:
    strategy: a pure, jittable :class:`Strategy` with static shapes.
    estimator: a pure ``(arch, key) -> metrics`` (``fidelity=`` too for multi-fidelity strategies).
    budget: queries, or full-training equivalents for a multi-fidelity strategy.
    keys: ``jax.random.split(key, num_seeds)``; seed ``s`` gives the same result as ``keys[s]`` alone.
    fitness_key: the maximised metric; test_key: the reported one (NaN if the estimator lacks it).
    max_rounds: the static number of ask/tell rounds; by default ``ceil(budget / P)``, or for a
      multi-fidelity strategy enough rounds for every query at the lowest fidelity.

  Returns:
    :class:`SearchResults` with a leading seed axis.
  """
  search = make_device_search(strategy, estimator, budget, keys, fitness_key=fitness_key,
                              test_key=test_key, max_rounds=max_rounds)
  results = search(_check_keys(keys))
  return check_results(jax.device_get(results), estimator, _check_budget(budget))
