"""Tests of nasjax.strategies: each strategy as a pure init/ask/tell, run as one compiled program.

The problem is a synthetic NAS-Bench-201-shaped benchmark: the fitness of all 15,625 cells is an additive
per-edge score plus pairwise edge interactions (fixed random coefficients), rescaled to [0, 1], so the
optimum is known by enumeration. ``run_search`` is the vmappable loop (a ``lax.scan`` over ask / evaluate
/ tell rounds); the tests jit ``vmap(run_search)`` over seeds.

Compilation dominates on CPU, so every compiled search is cached per module and compiled with XLA's
cheap backend settings (the results are the same, only the machine code is slower). Keys are threefry:
"rbg" keys compile faster but their random bits change under vmap, so a vmapped search would not
reproduce single runs.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nasjax.errors import NasjaxError
from nasjax.spaces import NB201Space, get_space
from nasjax.strategies import (STRATEGY_NAMES, Strategy, asked_fidelity, bayesopt, geometric_resources,
                               get_strategy, grid_search, hyperband, hyperband_brackets, local_search,
                               random_search, regularized_evolution, reinforce, successive_halving)

NB201 = NB201Space()
SEEDS = 32
# The CPU backend's older fused-loop emitters compile faster than its MLIR fusion emitters (conftest.py:
# xla_optimisations_off).
FAST_COMPILE = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True,
                "xla_cpu_use_fusion_emitters": False}


# ---------------------------------------------------------------------------------------- the problem
def _make_table(seed: int = 0) -> np.ndarray:
  rng = np.random.default_rng(seed)
  unary = rng.normal(size=(6, 5))
  pair = rng.normal(size=(6, 6, 5, 5)) * 0.5
  index = np.arange(5 ** 6)
  ops = (index[:, None] // 5 ** np.arange(5, -1, -1)) % 5  # first edge most significant, as arch_to_index
  f = unary[np.arange(6), ops].sum(1)
  for i in range(6):
    for j in range(i + 1, 6):
      f = f + pair[i, j, ops[:, i], ops[:, j]]
  return ((f - f.min()) / (f.max() - f.min())).astype(np.float32)


TABLE = _make_table()
# Fidelity noise: level k observes the true value plus a fixed per-(cell, level) perturbation.
LEVEL_NOISE = np.random.default_rng(1).normal(size=(4, 5 ** 6)).astype(np.float32)
NOISE_SCALE = np.asarray([0.2, 0.1, 0.05, 0.0], np.float32)
# Failing cells: a random 20% plus the best 1% (so a NaN winner would be visible).
FAILS = (np.random.default_rng(2).random(5 ** 6) < 0.2) | (TABLE >= np.quantile(TABLE, 0.99))


def true_fitness(archs):
  return jnp.asarray(TABLE)[jax.vmap(NB201.arch_to_index)(archs)]


def objective(archs, fidelity):
  """Full-fidelity value plus the level's noise (none at the top of a 4-level axis)."""
  idx = jax.vmap(NB201.arch_to_index)(archs)
  noise = jnp.asarray(NOISE_SCALE)[3 - (jnp.max(fidelity) - fidelity)] * jnp.asarray(LEVEL_NOISE)[fidelity, idx]
  return jnp.asarray(TABLE)[idx] + noise


def failing_objective(archs, fidelity):
  idx = jax.vmap(NB201.arch_to_index)(archs)
  return jnp.where(jnp.asarray(FAILS)[idx], jnp.nan, objective(archs, fidelity))


# ---------------------------------------------------------------------------------------- the loop
def run_search(strategy: Strategy, evaluate, key, rounds: int, record: tuple[str, ...] = ()):
  """``rounds`` ask / evaluate / tell rounds as one scan; ``evaluate(archs, fidelity) -> fitness``.

  Returns (final state, asked archs [R, P, D], their fitness [R, P], their fidelity [R, P]), plus a dict
  of the state entries named in ``record`` as they were after each ask when ``record`` is given.
  """
  init_key, loop_key = jax.random.split(key)
  state = strategy.init(init_key)

  def one_round(state, key):
    archs, state = strategy.ask(state, key)
    recorded = {k: state[k] for k in record}
    fidelity = asked_fidelity(strategy, state, archs.shape[0])
    fitness = evaluate(archs, fidelity)
    return strategy.tell(state, archs, fitness), (archs, fitness, fidelity, recorded)

  state, (archs, fitness, fidelity, recorded) = jax.lax.scan(one_round, state, jax.random.split(loop_key, rounds))
  return (state, archs, fitness, fidelity) + ((recorded,) if record else ())


def compile_search(strategy, evaluate, rounds, keys, vmapped=True, record=()):
  fn = functools.partial(run_search, strategy, evaluate, rounds=rounds, record=record)
  fn = jax.vmap(fn) if vmapped else fn
  # The GP's linear algebra makes Bayesian optimisation run-time bound: it keeps XLA's optimisations.
  options = None if strategy.name == "bayesopt" else FAST_COMPILE
  return jax.jit(fn).lower(keys).compile(compiler_options=options)


def seed_keys(n, seed=0):
  return jax.random.split(jax.random.key(seed), n)


# Settings used for the comparison with random search (budget = ROUNDS evaluations).
ROUNDS = 48
CONFIGS = {
    "regularized_evolution": dict(population_size=10, tournament_size=4),
    "local_search": dict(num_init=4, first_improvement=True),
    "bayesopt": dict(capacity=ROUNDS, num_init=8, num_random=40, num_mutations=40, lengthscales=(0.1, 0.3, 1.0),
                     noise_levels=(1e-3, 1e-1)),
    "reinforce": dict(learning_rate=0.1),
    "random": {},
}
SEEDS_FOR = {"bayesopt": 16}  # the slowest to run; its lead over random search is large
_RUNS: dict = {}


def searched(name, evaluate=objective, rounds=ROUNDS, seeds=None, record=()):
  """Cached host results of the jitted, vmapped search of ``name`` over ``seeds`` seeds."""
  seeds = seeds or SEEDS_FOR.get(name, SEEDS)
  key = (name, evaluate.__name__, rounds, seeds, record)
  if key not in _RUNS:
    strategy = get_strategy(name, NB201, **CONFIGS.get(name, {}))
    keys = seed_keys(seeds)
    _RUNS[key] = jax.device_get(compile_search(strategy, evaluate, rounds, keys, record=record)(keys))
  return _RUNS[key]


# ---------------------------------------------------------------------------------------- comparisons
@pytest.mark.parametrize("name", ["regularized_evolution", "local_search", "bayesopt", "reinforce"])
def test_beats_random_search_on_known_optimum(name):
  state, archs, fitness, _ = searched(name)
  base_state, *_ = searched("random")
  assert np.all(np.isfinite(state["best_fitness"]))
  # The reported best is what was observed for the reported arch, and it is the best asked.
  np.testing.assert_allclose(state["best_fitness"], np.asarray(true_fitness(state["best_arch"])), rtol=1e-6)
  np.testing.assert_allclose(state["best_fitness"], fitness.reshape(len(fitness), -1).max(1), rtol=1e-6)
  mean, base = state["best_fitness"].mean(), base_state["best_fitness"].mean()
  assert mean > base + 0.02, (name, mean, base)
  assert state["best_fitness"].max() <= TABLE.max() + 1e-6


@pytest.mark.parametrize("name", ["successive_halving", "hyperband"])
def test_multi_fidelity_beats_random_search_at_equal_cost(name):
  strategy = get_strategy(name, NB201, resources=(1, 3, 9, 27), eta=3)
  assert strategy.num_fidelities == 4
  np.testing.assert_allclose(strategy.fidelity_costs, [1 / 27, 1 / 9, 1 / 3, 1])
  rounds = 120 if name == "successive_halving" else 69  # three SH brackets / one Hyperband cycle
  keys = seed_keys(SEEDS)
  state, _, _, fidelity = jax.device_get(compile_search(strategy, objective, rounds, keys)(keys))
  cost = np.asarray(strategy.fidelity_costs)[fidelity].sum(axis=(1, 2))
  np.testing.assert_allclose(state["spent"], cost, rtol=1e-5)
  expected_cost = 12.0 if name == "successive_halving" else 4 + (12 / 9 + 4 / 3 + 1) + (6 / 3 + 2) + 4
  np.testing.assert_allclose(cost, expected_cost, rtol=1e-5)
  assert np.all(state["best_fidelity"] == 3)
  # Random search gets as many full trainings as the multi-fidelity search paid for.
  base_state, *_ = searched("random", rounds=int(expected_cost))
  mine = np.asarray(true_fitness(state["best_arch"]))
  assert mine.mean() > base_state["best_fitness"].mean() + 0.02, (mine.mean(), base_state["best_fitness"].mean())


# ---------------------------------------------------------------------------------------- grid search
def test_grid_enumerates_full_nb201_in_index_order():
  strategy = grid_search(NB201, batch_size=5)
  state = strategy.init(None)
  ask = jax.jit(strategy.ask)
  seen = []
  for _ in range(4):
    archs, state = ask(state, None)
    seen.extend(np.asarray(jax.vmap(NB201.arch_to_index)(archs)).tolist())
  assert seen == list(range(20))


def test_grid_sub_grid_each_point_exactly_once():
  values = [[0, 1], None, [2], [0, 3, 4], None, [1]]
  strategy = grid_search(NB201, values=values)
  keys = seed_keys(1)
  state, archs, *_ = jax.device_get(compile_search(strategy, objective, 150, keys)(keys))
  archs = archs[0, :, 0]
  expected = [(a, b, 2, c, d, 1) for a in (0, 1) for b in range(5) for c in (0, 3, 4) for d in range(5)]
  assert [tuple(r) for r in archs.tolist()] == expected  # mixed-radix order, first decision most significant
  assert int(state["passes"][0]) == 1 and int(state["count"][0]) == 150
  assert float(state["best_fitness"][0]) == pytest.approx(float(np.asarray(true_fitness(archs)).max()))


@pytest.mark.parametrize("space_name", ["darts", "macro"])
def test_grid_skips_invalid_encodings(space_name):
  space = get_space(space_name)
  base = np.asarray(space.sample(jax.random.key(3)))
  values = [[int(v)] for v in base]
  if space_name == "darts":
    values[0], values[1], values[2] = [0, 1], [0, 1, 2], [0, 1]  # node 0: input_a, op_a, input_b
    expected_valid = 2 * 3  # input_a != input_b
  else:
    values[0], values[1] = [0, 1, 2, 3], [0, 1]  # layer 0: type, kernel_h
    expected_valid = 2 + 2 + 1 + 1  # conv and pool use kernel_h; dense and identity need it to be 0
  strategy = grid_search(space, values=values, batch_size=2)
  state = strategy.init(None)
  asked = []
  for _ in range(expected_valid // 2):
    archs, state = strategy.ask(state, None)
    asked.extend(tuple(r) for r in np.asarray(archs).tolist())
  assert len(set(asked)) == expected_valid
  assert all(bool(space.is_valid(jnp.asarray(a))) for a in asked)
  assert int(state["passes"]) == 1
  archs, state = strategy.ask(state, None)  # the second pass starts over
  assert tuple(np.asarray(archs)[0].tolist()) == asked[0]


def test_grid_rejects_too_big_and_bad_values():
  with pytest.raises(NasjaxError, match="int32"):
    grid_search(get_space("darts"))
  with pytest.raises(NasjaxError, match="0..4"):
    grid_search(NB201, values=[[5]] + [None] * 5)
  with pytest.raises(NasjaxError, match="one entry per decision"):
    grid_search(NB201, values=[None] * 3)


# ---------------------------------------------------------------------------------------- failures
@pytest.mark.parametrize("name", ["random", "regularized_evolution", "local_search", "bayesopt", "reinforce",
                                  "successive_halving", "hyperband"])
def test_nan_fitness_never_best_or_parent(name):
  multi = name in ("successive_halving", "hyperband")
  state, archs, fitness, _, *recorded = searched(name, evaluate=failing_objective, rounds=40, seeds=8,
                                                 record=("rung",) if multi else ())
  fails = np.asarray(FAILS)
  idx = np.asarray(jax.vmap(jax.vmap(NB201.arch_to_index))(archs.reshape(8, -1, 6)))
  assert np.isnan(fitness).any()  # the problem does fail
  assert np.all(np.isfinite(state["best_fitness"]))
  assert not fails[np.asarray(jax.vmap(NB201.arch_to_index)(state["best_arch"]))].any()
  if name == "regularized_evolution":
    members = np.asarray(jax.vmap(jax.vmap(NB201.arch_to_index))(state["population"]))
    alive = np.arange(members.shape[1])[None] < state["filled"][:, None]
    assert not (fails[members] & alive).any()
    assert np.all(np.isfinite(state["fitness"][alive]))
  if name == "local_search":
    current = np.asarray(jax.vmap(NB201.arch_to_index)(state["current"]))
    assert not fails[current][state["has_current"]].any()
  if name == "bayesopt":
    for row in idx:  # a failed architecture is never asked again
      failed = row[fails[row]]
      assert len(failed) == len(set(failed.tolist()))
  if multi:
    promoted = recorded[0]["rung"].reshape(8, -1) > 0  # rows replaying an architecture promoted from below
    assert promoted.any()
    assert not fails[idx[promoted]].any()


def test_evolution_children_are_mutants_of_successful_members():
  state, archs, fitness, _ = searched("regularized_evolution", evaluate=failing_objective, rounds=40, seeds=8)
  archs, fitness = archs[:, :, 0], fitness[:, :, 0]
  fails = np.asarray(FAILS)
  for s in range(8):
    population = []  # replay the insertion rule on the host
    for t in range(40):
      if len(population) >= 10:
        parents = [a for a, _ in population]
        assert any(np.sum(archs[s, t] != p) == 1 for p in parents)
        assert not any(fails[int(NB201.arch_to_index(p))] for p in parents)
      if not np.isnan(fitness[s, t]):
        if len(population) >= 10:
          population.pop(0)  # aging: the oldest leaves
        population.append((archs[s, t], fitness[s, t]))


# ---------------------------------------------------------------------------------------- determinism
SLOW_BO = pytest.param("bayesopt", marks=pytest.mark.slow)  # a second GP program to compile


@pytest.mark.parametrize("name", ["regularized_evolution", "local_search", SLOW_BO, "reinforce", "random"])
def test_vmapped_equals_single_runs_and_same_seed_same_result(name):
  _, archs, fitness, _ = searched(name)
  strategy = get_strategy(name, NB201, **CONFIGS.get(name, {}))
  keys = seed_keys(len(archs))
  single = compile_search(strategy, objective, ROUNDS, keys[0], vmapped=False)
  for s in range(8):
    _, a, f, _ = jax.device_get(single(keys[s]))
    np.testing.assert_array_equal(a, archs[s])
    np.testing.assert_array_equal(f, fitness[s])
  again = jax.device_get(single(keys[0]))
  np.testing.assert_array_equal(again[1], archs[0])
  assert not np.array_equal(archs[0], archs[1])  # different seeds search differently


ALL_NB201 = {
    "grid": {}, "random": dict(batch_size=2), "regularized_evolution": dict(population_size=4, tournament_size=2,
                                                                            crossover_prob=0.5, batch_size=2),
    "local_search": dict(batch_size=3), "bayesopt": dict(capacity=8, num_init=2, num_random=8, num_mutations=8,
                                                         batch_size=2),
    "successive_halving": dict(resources=(1, 3), eta=2, num_configs=4),
    "hyperband": dict(resources=(1, 3), eta=2), "reinforce": dict(batch_size=2, entropy_weight=0.01),
    "controller": dict(batch_size=2, lstm_size=16),
    # One objective here (the contract's float[P] fitness); two objectives: tests/test_pareto.py.
    "nsga2": dict(population_size=4, offspring_size=2, num_objectives=1),
}


# The controller's eager LSTM rollouts run decision by decision (~40 s); its Adam step on an LSTM also
# reassociates sums under jit, and Adam turns that into differences up to ~1e-5 (its steps are 3.5e-3): 1e-4.
SLOW_CONTROLLER = pytest.param("controller", marks=pytest.mark.slow)


@pytest.mark.parametrize("name", [{"bayesopt": SLOW_BO, "controller": SLOW_CONTROLLER}.get(n, n)
                                  for n in STRATEGY_NAMES])
@pytest.mark.usefixtures("fastest_compiles_for_test")
def test_jit_and_eager_agree(name):
  strategy = get_strategy(name, NB201, **ALL_NB201[name])
  keys = jax.random.split(jax.random.key(7), 3)
  ask, tell = jax.jit(strategy.ask), jax.jit(strategy.tell)
  with jax.disable_jit():  # scans and while loops run as Python loops
    eager_state = strategy.init(keys[0])
  jit_state = jax.jit(strategy.init)(keys[0])
  for k in keys[1:]:
    with jax.disable_jit():
      a_eager, eager_state = strategy.ask(eager_state, k)
    a_jit, jit_state = ask(jit_state, k)
    np.testing.assert_array_equal(a_eager, a_jit)
    fid = asked_fidelity(strategy, eager_state, a_eager.shape[0])
    f = objective(a_eager, fid)
    with jax.disable_jit():
      eager_state = strategy.tell(eager_state, a_eager, f)
    jit_state = tell(jit_state, a_jit, f)
  tol = dict(rtol=1e-4, atol=1e-4) if name == "controller" else dict(rtol=1e-5, atol=1e-6)
  jax.tree.map(lambda x, y: np.testing.assert_allclose(np.asarray(x), np.asarray(y), **tol), eager_state, jit_state)


@pytest.mark.parametrize("space_name", ["darts", "macro"])  # nb201: every other test
def test_every_strategy_runs_on_space(space_name):
  space = get_space(space_name)
  options = dict(ALL_NB201)
  base = np.asarray(space.sample(jax.random.key(0)))
  options["grid"] = dict(values=[[int(v)] for v in base[:-3]] + [None] * 3)  # a small sub-grid

  def run_all(key):
    out = {}
    for name in STRATEGY_NAMES:
      strategy = get_strategy(name, space, **options[name])
      state, archs, fitness, _ = run_search(strategy, lambda a, f: jnp.sum(a, axis=-1).astype(jnp.float32)
                                            * 0.01, key, rounds=3)
      out[name] = (archs, jax.vmap(jax.vmap(space.is_valid))(archs), state["best_fitness"], state["count"])
    return out

  keys = seed_keys(2)
  out = jax.device_get(jax.jit(jax.vmap(run_all)).lower(keys).compile(compiler_options=FAST_COMPILE)(keys))
  for name, (archs, valid, best, count) in out.items():
    assert archs.shape[-1] == space.num_decisions, name
    assert valid.all(), name
    assert np.all(np.isfinite(best)), name
    assert np.all(count == 3 * archs.shape[2]), name


# ---------------------------------------------------------------------------------------- multi-fidelity
def test_successive_halving_promotes_exactly_top_fraction():
  strategy = successive_halving(NB201, resources=(1, 3, 9), eta=3, num_configs=10)  # rungs 10, 3, 1
  keys = seed_keys(4, seed=5)
  state, archs, fitness, fidelity = jax.device_get(compile_search(strategy, objective, 28, keys)(keys))
  for s in range(4):
    a, f, lev = archs[s, :, 0], fitness[s, :, 0], fidelity[s, :, 0]
    assert lev.tolist() == [0] * 10 + [1] * 3 + [2] + [0] * 10 + [1] * 3 + [2]
    for start in (0, 14):
      rung0, rung1, rung2 = slice(start, start + 10), slice(start + 10, start + 13), slice(start + 13, start + 14)
      top3 = np.argsort(-f[rung0], kind="stable")[:3]
      np.testing.assert_array_equal(a[rung1], a[rung0][top3])
      np.testing.assert_array_equal(a[rung2], a[rung1][[np.argmax(f[rung1])]])
    assert int(state["brackets_done"][s]) == 2
    np.testing.assert_allclose(state["spent"][s], 2 * (10 / 9 + 3 / 3 + 1), rtol=1e-6)


def test_hyperband_schedule_matches_li_et_al():
  assert [[n for n, _ in b] for b in hyperband_brackets(5, 3)] == [[81, 27, 9, 3, 1], [34, 11, 3, 1], [15, 5, 1],
                                                                   [8, 2], [5]]
  assert [[lev for _, lev in b] for b in hyperband_brackets(3, 3)] == [[0, 1, 2], [1, 2], [2]]
  assert geometric_resources(1, 81, 3) == (1, 3, 9, 27, 81)
  np.testing.assert_allclose(geometric_resources(12, 200, 3), (200 / 9, 200 / 3, 200))
  strategy = hyperband(NB201, resources=(1, 3, 9), eta=3)  # brackets 9@0 3@1 1@2 | 5@1 1@2 | 3@2
  keys = seed_keys(2)
  state, _, _, fidelity = jax.device_get(compile_search(strategy, objective, 22, keys)(keys))
  assert fidelity[0, :, 0].tolist() == [0] * 9 + [1] * 3 + [2] + [1] * 5 + [2] + [2] * 3
  assert state["brackets_done"].tolist() == [3, 3]


def test_failed_rung_members_are_not_promoted():
  strategy = successive_halving(NB201, resources=(1, 3), eta=2, num_configs=4)
  state = strategy.init(jax.random.key(0))
  asked = []
  for i, f in enumerate([jnp.nan, 0.5, jnp.nan, jnp.nan]):
    arch, state = strategy.ask(state, jax.random.key(i + 1))
    asked.append(arch)
    state = strategy.tell(state, arch, jnp.asarray([f]))
  assert int(state["rung_size"]) == 1 and int(state["rung"]) == 1  # 2 planned, 1 success
  arch, state = strategy.ask(state, jax.random.key(9))
  np.testing.assert_array_equal(arch, asked[1])
  assert state["fidelity"].tolist() == [1]


# ---------------------------------------------------------------------------------------- unit behaviour
def test_reinforce_policy_moves_towards_rewarded_ops():
  strategy = reinforce(NB201, learning_rate=0.1, batch_size=4)
  reward = lambda archs, fid: jnp.mean(archs == 3, axis=-1).astype(jnp.float32)  # op 3 on every edge is best
  keys = seed_keys(4)
  state, *_ = jax.device_get(compile_search(strategy, reward, 40, keys)(keys))
  probs = jax.nn.softmax(state["logits"], axis=-1)
  assert probs[..., 3].mean() > 0.6  # from 0.2 at the start
  # A policy gradient can lock onto a wrong op on an edge now and then, but not on most edges.
  assert np.mean(np.argmax(state["logits"], -1) == 3) >= 0.9


def test_local_search_climbs_whole_neighbourhoods_then_restarts():
  # fitness = op of edge 0: the best neighbour sets edge 0 to 4; there the climb is at a local optimum.
  strategy = local_search(NB201, num_init=1)  # steepest ascent, the paper's Algorithm 1
  keys = seed_keys(3, seed=11)
  fit = lambda archs, fid: archs[:, 0].astype(jnp.float32)
  state, archs, fitness, _ = jax.device_get(compile_search(strategy, fit, 75, keys)(keys))
  del fitness
  neighbours = lambda a: {tuple(r) for r in np.asarray(NB201.neighbors(jnp.asarray(a))).tolist()}
  k = NB201.num_neighbors  # 24 distinct neighbours in NB-201
  for s in range(3):
    a = archs[s, :, 0]
    t, current = 1, a[0]  # row 0 is the random start (num_init = 1)
    while t + k <= len(a):
      assert {tuple(r) for r in a[t:t + k].tolist()} == neighbours(current)
      block = a[t:t + k]
      best = block[np.argmax(block[:, 0])]
      t += k
      if best[0] > current[0]:
        current = best  # move to the first best neighbour
      else:
        assert current[0] == 4  # a local optimum, then a restart from a random architecture
        current, t = a[t], t + 1
    assert float(state["best_fitness"][s]) == 4.0


def test_bad_options_raise():
  with pytest.raises(NasjaxError, match="tournament_size"):
    regularized_evolution(NB201, population_size=5, tournament_size=6)
  with pytest.raises(NasjaxError, match="unknown strategy 'annealing'; accepted: grid, random"):
    get_strategy("annealing", NB201)
  with pytest.raises(NasjaxError, match="does not take popsize; accepted: population_size"):
    get_strategy("evolution", NB201, popsize=3)
  with pytest.raises(NasjaxError, match="acquisition"):
    bayesopt(NB201, acquisition="pi")
  with pytest.raises(NasjaxError, match="increasing"):
    successive_halving(NB201, resources=(9, 3))
  with pytest.raises(NasjaxError, match="eta"):
    hyperband(NB201, eta=1)
  with pytest.raises(NasjaxError, match="neighborhood"):
    local_search(NB201, neighborhood="ring")
  with pytest.raises(NasjaxError, match="batch_size"):
    random_search(NB201, batch_size=0)
  with pytest.raises(NasjaxError, match="search space"):
    regularized_evolution("nb201")
  assert get_strategy("RE", NB201).name == "regularized_evolution"
