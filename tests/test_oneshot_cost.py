"""Resource-aware one-shot search: per-op cost tables, the expected-cost penalty, and a search under it."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nasjax.errors import NasjaxError
from nasjax.nn.count import count_macs, count_params
from nasjax.nn.network import Network
from nasjax.nn.ops import XLA_IMPL
from nasjax.oneshot import run_search, search_config
from nasjax.oneshot.cost import derived_cost, edge_cost_tables, expected_cost, op_cost, uniform_cost
from nasjax.oneshot.search import Search
from nasjax.spaces import darts_space
from test_oneshot import TINY_SPACE, tiny_config

# Values are under test, not speed: XLA's optimisation passes are off in this module (conftest.py).
pytestmark = pytest.mark.usefixtures("fastest_compiles")


def test_op_costs_match_hand_counts():
  c = 4
  # DARTS sep_conv: twice (depthwise k x k, pointwise c x c, affine BN): 2 * (9c + c^2 + 2c).
  assert op_cost("sep_conv_3x3", c, 1, 8, 8, "params") == 2 * (9 * c + c * c + 2 * c)
  assert op_cost("dil_conv_5x5", c, 2, 8, 8, "params") == 25 * c + c * c + 2 * c
  # A strided skip is a factorized reduce: two 1x1 convs to c/2 channels each, and a BN.
  assert op_cost("skip_connect", c, 2, 8, 8, "params") == 2 * c * (c // 2) + 2 * c
  for free in ("none", "skip_connect", "max_pool_3x3", "avg_pool_3x3"):
    assert op_cost(free, c, 1, 8, 8, "params") == 0
  # Multiply-adds of one 8x8 image: per block, depthwise 9 per output value and pointwise c per output.
  block = 8 * 8 * c * 9 + 8 * 8 * c * c
  assert op_cost("sep_conv_3x3", c, 1, 8, 8, "flops") == 2 * block
  strided = 4 * 4 * c * 9 + 4 * 4 * c * c
  assert op_cost("sep_conv_3x3", c, 2, 8, 8, "flops") == 2 * strided
  assert op_cost("max_pool_3x3", c, 1, 8, 8, "flops") == 0
  with pytest.raises(NasjaxError, match="unknown cost metric"):
    op_cost("sep_conv_3x3", c, 1, 8, 8, "latency")


@pytest.mark.parametrize("metric", ["params", "flops"])
def test_edge_tables_reproduce_the_discrete_networks_counts(metric):
  """Network cost minus the tables' cost of its cells is the same for every architecture: the tables price
  every edge of every cell exactly as the retrained network has it."""
  space = darts_space()
  channels, layers, shape = 4, 5, (8, 8, 1)
  tables = edge_cost_tables(space.supernet_ops, space.num_nodes, channels, layers, shape, metric)
  x = jnp.zeros((1,) + shape)
  fixed = []
  for seed in range(4):
    arch = np.asarray(space.sample(jax.random.key(seed)))
    net = Network(space.decode(arch), channels, layers, 10, auxiliary=False, impl=XLA_IMPL,
                  scan_cells=False)
    variables = jax.eval_shape(lambda k: net.init({"params": k, "dropout": k}, x), jax.random.key(0))
    total = (count_params(variables["params"]) if metric == "params"
             else count_macs(lambda v, x: net.apply(v, x)[0], variables, x))
    fixed.append(total - derived_cost(arch, space, tables))
  assert len(set(fixed)) == 1 and fixed[0] > 0


def test_expected_cost_is_exact_and_its_gradient_analytic():
  tables = {"normal": np.array([[0.0, 2.0, 5.0], [1.0, 1.0, 4.0]]), "reduce": np.array([[3.0, 0.0, 6.0]])}
  logits = {"normal": jnp.array([[0.1, -0.3, 0.7], [1.0, 0.0, -1.0]]), "reduce": jnp.array([[0.2, 0.5, -0.4]])}

  def cost(lg):
    return expected_cost({k: jax.nn.softmax(v, -1) for k, v in lg.items()}, tables)

  # The expectation over all 3 * 3 * 3 cells, enumerated.
  p = {k: np.asarray(jax.nn.softmax(v, -1)) for k, v in logits.items()}
  brute = sum(p["normal"][0, a] * p["normal"][1, b] * p["reduce"][0, r]
              * (tables["normal"][0, a] + tables["normal"][1, b] + tables["reduce"][0, r])
              for a in range(3) for b in range(3) for r in range(3))
  assert float(cost(logits)) == pytest.approx(brute, rel=1e-6)
  grads = jax.grad(cost)(logits)
  for k in tables:
    want = p[k] * (tables[k] - (p[k] * tables[k]).sum(-1, keepdims=True))
    np.testing.assert_allclose(grads[k], want, rtol=1e-5, atol=1e-7)
  assert uniform_cost(tables) == pytest.approx(7 / 3 + 2 + 3)


def _config(method="darts", **overrides):
  # A fast-moving architecture (no weight decay on it) so two tiny epochs show the penalty's pull.
  return tiny_config(method, **dict(dict(arch_learning_rate=0.05, arch_weight_decay=0.0), **overrides))


def test_penalty_adds_its_exact_gradient_to_the_architecture_objective():
  cfg = _config(cost_weight=0.5)
  search = Search(cfg, TINY_SPACE, (8, 8, 1), 4, (0.4,), (0.2,), 6)
  arch = search.init_state()["arch"]
  scale = uniform_cost(search.cost_tables)
  p = {k: np.asarray(jax.nn.softmax(v, -1)) for k, v in arch.items()}
  got = jax.grad(search.cost_penalty)(arch)
  for k, table in search.cost_tables.items():
    want = 0.5 / scale * p[k] * (table - (p[k] * table).sum(-1, keepdims=True))
    np.testing.assert_allclose(got[k], want, rtol=1e-4, atol=1e-8)
  assert Search(_config(), TINY_SPACE, (8, 8, 1), 4, (0.4,), (0.2,), 6).cost_penalty(arch) == 0.0


@pytest.mark.parametrize("method", ["darts", "snas"])
def test_a_heavy_penalty_drives_the_search_to_free_ops(method, tiny_dataset):
  """With the penalty dominating, every edge moves to its cheapest op (parameter-free skip / none), the
  expected cost falls every epoch, and the logs carry it; without it the convolutions survive."""
  ds = tiny_dataset  # conftest.py
  heavy = run_search(_config(method, cost_weight=50.0), TINY_SPACE, ds, show_progress=False)
  costs = [r["expected_edge_params"] for r in heavy["history"]]
  assert costs[1] < costs[0] and heavy["history"][-1]["derived_edge_params"] < costs[0]
  genotype = heavy["genotype"]
  assert "conv_1x1" not in genotype.split("reduce")[0]  # the normal cell is parameter-free
  free = run_search(_config(method), TINY_SPACE, ds, show_progress=False)
  assert "expected_edge_params" not in free["history"][-1]
  tables = Search(_config(method, cost_weight=50.0), TINY_SPACE, (8, 8, 1), 4, (0.4,), (0.2,), 6).cost_tables
  free_alphas = {k: np.asarray(v) for k, v in free["history"][-1]["alphas"].items()}
  assert float(expected_cost(free_alphas, tables)) > 1.5 * costs[-1]


@pytest.mark.parametrize("overrides, message", [
    (dict(cost_metric="energy", cost_weight=1.0), "unknown cost_metric"),
    (dict(cost_target=-1.0, cost_weight=1.0), "cost_target must be"),
    (dict(cost_target=1.0), "cost_target needs a cost_weight"),
    (dict(cost_metric="latency", cost_weight=1.0, latency_batch=0), "latency_batch must be"),
    (dict(cost_weight=-1.0), "cost_weight must be"),
    (dict(cost_weight=float("nan")), "cost_weight must be"),
])
def test_bad_cost_settings_are_refused(overrides, message):
  with pytest.raises(NasjaxError, match=message):
    Search(_config(**overrides), TINY_SPACE, (8, 8, 1), 4, (0.4,), (0.2,), 6)


def test_spos_refuses_a_cost_weight():
  with pytest.raises(NasjaxError, match="SPOS has none"):
    Search(_config("spos", cost_weight=1.0), TINY_SPACE, (8, 8, 1), 4, (0.4,), (0.2,), 6)
