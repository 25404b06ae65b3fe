"""Every registry entry, one by one: it runs under ``jit`` and a second call with new values does not
compile again (the shapes and the program are fixed; only data changes).

Registries: the ops (:data:`nasjax.nn.ops.OPS`), the strategies (:data:`nasjax.strategies.STRATEGY_NAMES`)
over every space, and the one-shot methods (:data:`nasjax.oneshot.METHODS`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nasjax import spaces, strategies
from nasjax.nn.ops import OPS, OpConfig, make_op
from nasjax.oneshot import METHODS, search_config
from nasjax.oneshot.search import Search
from nasjax.spaces.cells import CellSpace

# Whether a second call compiles again does not depend on XLA's optimisation passes or on how its CPU
# backend emits fused loops, which take most of these tests' time (conftest.py: fastest_compiles).
pytestmark = pytest.mark.usefixtures("fastest_compiles")


@pytest.mark.parametrize("name", sorted(OPS))
def test_every_op_compiles_once(name):
  op = make_op(name, OpConfig(channels=2, stride=1))
  x = jax.random.normal(jax.random.key(0), (1, 4, 4, 2))
  variables = op.init(jax.random.key(1), x, False)

  def loss(variables, x):
    return jnp.sum(op.apply(variables, x, False) ** 2)

  step = jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))
  first = step(variables, x)
  second = step(variables, x * 2.0 + 1.0)
  assert step._cache_size() == 1
  assert all(np.all(np.isfinite(leaf)) for leaf in jax.tree.leaves((first, second)))


def _strategy_options(name):
  # Small settings: the contract, not the strategy's quality, is checked here.
  return {"regularized_evolution": {"population_size": 4, "tournament_size": 2},
          "bayesopt": {"num_initial": 2, "max_evaluations": 8},
          "local_search": {}, "reinforce": {}, "random": {}, "grid": {},
          "successive_halving": {}, "hyperband": {}}.get(name, {})


@pytest.mark.parametrize("name", strategies.STRATEGY_NAMES)
def test_every_strategy_asks_and_tells_under_jit_without_recompiling(name):
  # Every strategy on every space runs in tests/test_strategies.py; here the NB201 space keeps it cheap.
  space = spaces.get_space("nb201")
  import inspect
  accepted = inspect.signature(strategies._REGISTRY[name]).parameters
  options = {k: v for k, v in _strategy_options(name).items() if k in accepted}
  strategy = strategies.get_strategy(name, space, **options)
  init, ask, tell = jax.jit(strategy.init), jax.jit(strategy.ask), jax.jit(strategy.tell)
  state = init(jax.random.key(0))
  for r in range(2):
    archs, state = ask(state, jax.random.key(r + 1))
    for arch in np.asarray(archs):
      space.check(arch)
    # A multi-objective strategy (nsga2) is told one column per objective.
    columns = (strategy.num_objectives,) if strategy.num_objectives > 1 else ()
    fitness = jax.random.uniform(jax.random.key(10 + r), (archs.shape[0],) + columns)
    state = tell(state, archs, fitness)
  assert ask._cache_size() == 1 and tell._cache_size() == 1


@pytest.mark.parametrize("method", METHODS)
def test_every_oneshot_method_steps_under_jit_without_recompiling(method):
  space = CellSpace("tiny", ("skip_connect", "conv_1x1"), 2, True)
  cfg = search_config(method)
  cfg.update(epochs=1, batch_size=4, channels=4, layers=2, eval_batch_size=8, crop_padding=1)
  if method == "pcdarts":
    cfg.partial_channels = 2
  search = Search(cfg, space, (8, 8, 1), 3, (0.5,), (0.25,), steps_per_epoch=2)
  state = search.init_state()
  rng = np.random.default_rng(0)
  for _ in range(2):
    xt, xv = (jnp.asarray(rng.random((4, 8, 8, 1)), jnp.float32) for _ in range(2))
    yt, yv = (jnp.asarray(rng.integers(0, 3, 4), jnp.int32) for _ in range(2))
    state, metrics = search.step(state, xt, yt, xv, yv)
    assert np.isfinite(float(metrics["train_loss"] if "train_loss" in metrics else metrics["loss"]))
  assert search.step._cache_size() == 1
