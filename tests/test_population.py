"""The on-device search driver: vmapped seeds equal the host loop, budgets, failures, determinism."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nasjax.errors import NasjaxError
from nasjax.estimators.tabular import NB201Table, NB201TabularEstimator
from nasjax.parallel import SearchResults, make_device_search, run_on_device
from nasjax.search import run as host_search
from nasjax.spaces.nb201 import NUM_CELLS, NB201Space
from nasjax.strategies import Strategy, random_search
from benchmark_scripts import load_benchmark

run_loop = load_benchmark("reference_loop").run_loop

SPACE = NB201Space()
POWERS = 5 ** np.arange(5, -1, -1)


# XLA's optimisation passes take most of these tests' time and none of what they check depends on them
# (both drivers run under the same setting); conftest's fixture restores them for other modules.
pytestmark = pytest.mark.usefixtures("fastest_compiles")


def make_table(seed: int = 0, failed=()) -> NB201Table:
  """A synthetic cifar10 table in our index order, built in memory (the CSV reader has its own tests)."""
  rng = np.random.default_rng(seed)
  n = NUM_CELLS
  seeds = np.round(rng.uniform(10.0, 92.0, (n, 3)), 4)
  seeds[rng.random(n) < 0.5, 2] = np.nan
  seeds[list(failed)] = np.nan
  count = np.isfinite(seeds).sum(axis=1)
  with np.errstate(invalid="ignore"):
    mean = np.where(count > 0, np.nansum(seeds, axis=1) / np.maximum(count, 1), np.nan)
  test = mean + rng.normal(0.0, 1.0, n)
  cols = {"c10valid_valid_acc": mean, "cifar10_test_acc": test, "c10valid_n_seeds": count * 1.0,
          "c10valid_params_mb": rng.uniform(0.07, 1.5, n), "c10valid_latency_s": rng.uniform(0.007, 0.03, n),
          "c10valid_train_time_s": rng.uniform(1000.0, 3000.0, n)}
  cols.update({f"c10valid_valid_acc_seed{s}": seeds[:, s] for s in range(3)})
  sup = {"cifar10_test_acc_12ep": np.round(mean * 0.8 + rng.normal(0.0, 3.0, n), 4)}
  strs = tuple(f"cell{i}" for i in range(n))
  return NB201Table(columns=cols, supplement=sup, arch_strs=strs, nats_index=None, path="synthetic")


@pytest.fixture(scope="module")
def table():
  return make_table()


def index_of(arch) -> int:
  return int(np.dot(np.asarray(arch), POWERS))


def hill_climber(space, batch: int) -> Strategy:
  """A tiny fitness-driven strategy: mutate the centre ``batch`` times, move to the best improvement."""

  def init(key):
    return {"center": space.sample(key), "fitness": jnp.float32(-jnp.inf)}

  def ask(state, key):
    archs = jax.vmap(space.mutate, in_axes=(0, None))(jax.random.split(key, batch), state["center"])
    return archs, state

  def tell(state, archs, fitness):
    fitness = jnp.where(jnp.isnan(fitness), -jnp.inf, fitness)
    i = jnp.argmax(fitness)
    move = fitness[i] > state["fitness"]
    return {"center": jnp.where(move, archs[i], state["center"]),
            "fitness": jnp.where(move, fitness[i], state["fitness"])}

  return Strategy(init, ask, tell, name="hill")


def fixed_sequence(archs: np.ndarray, batch: int) -> Strategy:
  """Asks the given architectures in order, ``batch`` per round (cycling)."""
  table = jnp.asarray(archs, jnp.int32)

  def init(key):
    del key
    return {"round": jnp.int32(0)}

  def ask(state, key):
    del key
    rows = (state["round"] * batch + jnp.arange(batch)) % table.shape[0]
    return table[rows], {"round": state["round"] + 1}

  def tell(state, archs, fitness):
    del archs, fitness
    return state

  return Strategy(init, ask, tell, name="fixed")


def multi_fidelity_toy(space, batch: int, levels: int = 2, declare: bool = True) -> Strategy:
  """Random archs; the last of each batch at the top level, the others at level 0 (Hyperband-like)."""

  def init(key):
    del key
    return {"fidelity": jnp.zeros((batch,), jnp.int32)}

  def ask(state, key):
    archs = jax.vmap(space.sample)(jax.random.split(key, batch))
    fidelity = jnp.zeros((batch,), jnp.int32).at[-1].set(levels - 1)
    return archs, {"fidelity": fidelity}

  def tell(state, archs, fitness):
    del archs, fitness
    return state

  return Strategy(init, ask, tell, name="mf-toy", num_fidelities=levels if declare else 1)


def assert_same(a: SearchResults, b: SearchResults):
  for name in SearchResults._fields:
    np.testing.assert_array_equal(np.asarray(getattr(a, name)), np.asarray(getattr(b, name)), err_msg=name)


# ------------------------------------------------------------------------------------------ equivalence
@pytest.mark.parametrize("make", [lambda: random_search(SPACE, batch_size=3), lambda: hill_climber(SPACE, 2)],
                         ids=["random", "hill"])
def test_vmapped_16_seeds_equal_16_loop_runs(table, make):
  strategy = make()
  est = NB201TabularEstimator(table, seed_noise=True)
  keys = jax.random.split(jax.random.key(11), 16)
  search = make_device_search(strategy, est, 10, keys)
  device = jax.device_get(search(keys))
  loop = run_loop(strategy, est, 10, keys)
  assert_same(device, loop)
  assert device.trajectory_fitness.shape == (16, 10)
  np.testing.assert_array_equal(device.num_queries, np.full(16, 10))
  # Sixteen different searches, not one repeated; the same keys give the same searches again.
  assert len({tuple(a) for a in device.best_arch.tolist()}) > 1
  assert_same(device, jax.device_get(search(keys)))
  other = jax.device_get(search(jax.random.split(jax.random.key(12), 16)))
  assert not np.array_equal(device.trajectory_fitness, other.trajectory_fitness)
  if strategy.name == "hill":
    # Every seed stands alone: a batch of one gives the same result as its row of the batch.
    single = run_on_device(strategy, est, 10, keys[5:6])
    for name in SearchResults._fields:
      np.testing.assert_array_equal(getattr(single, name)[0], getattr(device, name)[5], err_msg=name)


def test_trajectory_is_the_running_best_of_the_queries(table):
  """Replays random search's asks by hand and recomputes the incumbent with numpy."""
  batch, budget = 4, 10
  strategy = random_search(SPACE, batch_size=batch)
  est = NB201TabularEstimator(table)
  key = jax.random.key(3)
  res = run_on_device(strategy, est, budget, key[None])
  _, loop_key = jax.random.split(key)
  archs = []
  for r in range(3):
    ask_key, _ = jax.random.split(jax.random.fold_in(loop_key, r))
    archs += list(np.asarray(jax.vmap(SPACE.sample)(jax.random.split(ask_key, batch))))
  archs = np.stack(archs[:budget])
  idx = archs @ POWERS
  fit = table.columns["c10valid_valid_acc"][idx].astype(np.float32)
  test = table.columns["cifar10_test_acc"][idx].astype(np.float32)
  np.testing.assert_array_equal(res.trajectory_fitness[0], np.maximum.accumulate(fit))
  best_so_far = [int(np.argmax(fit[:t + 1])) for t in range(budget)]
  np.testing.assert_array_equal(res.trajectory_test[0], test[best_so_far])
  np.testing.assert_array_equal(res.best_arch[0], archs[best_so_far[-1]])
  np.testing.assert_array_equal(res.trajectory_budget[0], np.arange(1, budget + 1, dtype=np.float32))
  train = table.columns["c10valid_train_time_s"][idx].astype(np.float32)
  np.testing.assert_allclose(res.cost[0], train.sum(), rtol=1e-6)
  # nasjax.search.run, the host driver, follows the same key schedule and finds the same architecture.
  host = host_search(strategy, jax.jit(est), budget, key, show_progress=False)
  assert host["best"]["arch"] == archs[best_so_far[-1]].tolist()


# ------------------------------------------------------------------------------------------ failures
def test_failed_rows_are_counted_and_never_win():
  table = make_table(seed=1)
  fit = table.columns["c10valid_valid_acc"]
  top = np.argsort(-fit)[:5]                # the five best cells of the table ...
  failed_table = make_table(seed=1, failed=top)  # ... fail to train in this one
  ok = np.argsort(-fit)[10:13]
  asked = np.stack([SPACE.index_to_arch(i) for i in [top[0], top[1], ok[0], top[2], ok[1], ok[2]]])
  strategy = fixed_sequence(asked, batch=2)
  keys = jax.random.split(jax.random.key(2), 3)
  for seed_noise in (False, True):
    est = NB201TabularEstimator(failed_table, seed_noise=seed_noise)
    res = run_on_device(strategy, est, 6, keys)
    if seed_noise:
      assert_same(res, run_loop(strategy, est, 6, keys))
    np.testing.assert_array_equal(res.num_failed, [3, 3, 3])
    assert all(index_of(a) not in set(top.tolist()) for a in res.best_arch)
    assert np.all(np.isnan(res.trajectory_fitness[:, :2]))   # nothing succeeded yet
    assert np.all(np.isnan(res.trajectory_test[:, :2]))
    assert np.all(np.isfinite(res.trajectory_fitness[:, 2:]))
    if not seed_noise:
      np.testing.assert_array_equal(res.best_arch[0], SPACE.index_to_arch(ok[0]))
  # Every evaluation failed: no incumbent at all.
  only_failed = fixed_sequence(asked[:2], batch=2)
  res = run_on_device(only_failed, NB201TabularEstimator(failed_table), 4, keys)
  assert np.all(np.isnan(res.best_fitness)) and np.all(np.isnan(res.best_test))
  np.testing.assert_array_equal(res.best_arch, np.full((3, 6), -1))
  np.testing.assert_array_equal(res.best_fidelity, [-1, -1, -1])
  np.testing.assert_array_equal(res.num_failed, [4, 4, 4])


# ------------------------------------------------------------------------------------------ budgets
def test_budget_not_a_multiple_of_the_batch(table):
  est = NB201TabularEstimator(table)
  keys = jax.random.split(jax.random.PRNGKey(4), 2)  # raw uint32 keys work as well as typed ones
  res = run_on_device(random_search(SPACE, batch_size=4), est, 7, keys)
  assert res.trajectory_fitness.shape == (2, 7)
  np.testing.assert_array_equal(res.num_queries, [7, 7])
  np.testing.assert_array_equal(res.budget_spent, [7.0, 7.0])


def test_multi_fidelity_budget_counts_full_training_equivalents(table):
  est = NB201TabularEstimator(table)          # 12 epochs (0.06) and 200 epochs (1.0)
  strategy = multi_fidelity_toy(SPACE, batch=4)
  keys = jax.random.split(jax.random.key(6), 5)
  budget = 3
  res = run_on_device(strategy, est, budget, keys)
  assert_same(res, run_loop(strategy, est, budget, keys))
  # Rounds cost 3 * 0.06 + 1 = 1.18: two full rounds (2.36), then queries while budget remains.
  costs = np.tile(np.float32([0.06, 0.06, 0.06, 1.0]), 10)
  spent, count = np.float32(0), 0
  while spent < budget:
    spent = np.float32(spent + costs[count])
    count += 1
  np.testing.assert_array_equal(res.num_queries, np.full(5, count))
  np.testing.assert_array_equal(res.budget_spent, np.full(5, spent))
  assert budget <= spent < budget + 1
  assert np.all(np.diff(res.trajectory_budget, axis=1) >= 0)
  # The incumbent comes from the highest fidelity evaluated: its fitness is the 200-epoch value.
  np.testing.assert_array_equal(res.best_fidelity, np.ones(5))
  best_idx = res.best_arch @ POWERS
  np.testing.assert_array_equal(res.best_fitness,
                                table.columns["c10valid_valid_acc"][best_idx].astype(np.float32))
  np.testing.assert_array_equal(res.max_fidelity_asked, np.ones(5))
  # Before the first full training (query 4) the incumbent is a 12-epoch result: after query 1 it is
  # the first asked arch's 12-epoch accuracy.
  def first_asked(key):
    _, loop_key = jax.random.split(key)
    ask_key, _ = jax.random.split(jax.random.fold_in(loop_key, 0))
    return SPACE.sample(jax.random.split(ask_key, 4)[0])

  low = table.supplement["cifar10_test_acc_12ep"]
  want = [np.float32(low[index_of(first_asked(k))]) for k in keys]
  np.testing.assert_array_equal(res.trajectory_fitness[:, 0], want)


def test_bad_arguments(table):
  est = NB201TabularEstimator(table)
  keys = jax.random.split(jax.random.key(0), 2)
  strategy = random_search(SPACE, batch_size=2)
  for budget in (0, -3, 2.5, True):
    with pytest.raises(NasjaxError, match="budget must be a positive integer"):
      run_on_device(strategy, est, budget, keys)
  with pytest.raises(NasjaxError, match="keys must be"):
    run_on_device(strategy, est, 4, jax.random.key(0))
  with pytest.raises(NasjaxError, match="takes no fidelity= argument"):
    run_on_device(multi_fidelity_toy(SPACE, 2), lambda arch, key: est(arch, key), 2, keys)
  with pytest.raises(NasjaxError, match="max_rounds is too small"):
    run_loop(strategy, est, 8, keys, max_rounds=2)
  with pytest.raises(NasjaxError, match="has 3 fidelity levels but the estimator has 2"):
    run_loop(multi_fidelity_toy(SPACE, 2, levels=3), est, 1, keys[:1])
  # A strategy that does not declare its levels is caught after the run.
  with pytest.raises(NasjaxError, match="asked for fidelity 2, but the estimator has levels 0..1"):
    run_loop(multi_fidelity_toy(SPACE, 2, levels=3, declare=False), est, 1, keys[:1])
  with pytest.raises(NasjaxError, match="no 'acc' metric"):
    run_loop(strategy, est, 2, keys, fitness_key="acc")


def registry_names():
  try:
    from nasjax.strategies import STRATEGY_NAMES
  except ImportError:
    return []
  return list(STRATEGY_NAMES)


@pytest.mark.slow
@pytest.mark.parametrize("name", registry_names())
def test_registry_strategies_vmapped_equal_loop(table, name):
  """Every registered strategy gives the same searches on the device as in the host loop."""
  from nasjax.strategies import get_strategy
  est = NB201TabularEstimator(table, seed_noise=True)
  kwargs = {"resources": est.fidelity_epochs} if name in ("hyperband", "successive_halving") else {}
  if name == "nsga2":
    kwargs = {"num_objectives": 1}  # the drivers here tell one fitness; two objectives: tests/test_pareto.py
  strategy = get_strategy(name, SPACE, **kwargs)
  keys = jax.random.split(jax.random.key(21), 4)
  device = run_on_device(strategy, est, 12, keys)
  assert_same(device, run_loop(strategy, est, 12, keys))
  assert np.all(device.budget_spent >= 12) and np.all(np.isfinite(device.best_test))


@pytest.mark.parametrize("budget", [3, 7])
def test_host_and_device_drivers_share_one_budget_and_incumbent_rule(table, budget):
  """search.run and run_on_device count a Hyperband budget the same way (the strategy's planned cost per
  level, queries in order while budget remains) and return the same incumbent."""
  from nasjax.strategies import get_strategy
  est = NB201TabularEstimator(table)
  strategy = get_strategy("hyperband", SPACE, resources=est.fidelity_epochs)
  key = jax.random.key(8)
  device = jax.device_get(run_on_device(strategy, est, budget, key[None]))
  host = host_search(strategy, est, budget, key, show_progress=False, executor="vmap")
  assert len(host["history"]) == int(device.num_queries[0])
  assert host["best"]["arch"] == device.best_arch[0].tolist()
  assert host["best"]["fidelity"] == int(device.best_fidelity[0])
  costs = np.float32(strategy.fidelity_costs)[[r["fidelity"] for r in host["history"]]]
  spent = np.float32(0)
  for c in costs:
    spent = np.float32(spent + c)
  assert spent == device.budget_spent[0] and budget <= spent
