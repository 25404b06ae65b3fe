"""Hardware-aware one-shot search: the measured per-op latency table and the latency term of the search."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from test_oneshot import TINY_SPACE, tiny_config

from nasjax.errors import NasjaxError
from nasjax.oneshot import run_search
from nasjax.oneshot.cost import budget_penalty, derived_cost, expected_cost
from nasjax.oneshot.latency import LatencyTable
from nasjax.oneshot.search import Search

# Values are under test, not speed: XLA's optimisation passes are off in this module (conftest.py), which
# slows the measured ops alike; the orderings below hold by a wide margin either way.
pytestmark = pytest.mark.usefixtures("fastest_compiles")


def test_table_orders_a_controlled_pair_and_reloads_its_measurements(tmp_path):
  path = str(tmp_path / "latency.json")
  table = LatencyTable(path, runs=15)
  # Two depthwise-separable 5x5 blocks with BatchNorm against the identity, at the same shape.
  sep = table.op_ms("sep_conv_5x5", 16, 1, 16, 16)
  skip = table.op_ms("skip_connect", 16, 1, 16, 16)
  assert sep > 3 * skip > 0
  assert table.op_ms("none", 16, 1, 16, 16) == 0.0  # a derived network never computes the zero op
  table.save()
  again = LatencyTable(path, runs=15)
  assert again.op_ms("sep_conv_5x5", 16, 1, 16, 16) == sep and again.measured == 0
  # Another batch size is another table of the same file.
  other = LatencyTable(path, runs=15, batch=2)
  other.op_ms("skip_connect", 16, 1, 16, 16)
  assert other.measured == 1
  other.save()
  assert len(json.loads((tmp_path / "latency.json").read_text())["tables"]) == 2


@pytest.mark.parametrize("content, message", [
    ("not json", "not readable JSON"),
    ('{"format": "nasjax-latency-table", "tables": {"k": {"op": -1.0}}}', "not a nasjax latency table"),
    ('{"tables": {}}', "not a nasjax latency table"),
])
def test_a_foreign_table_file_is_refused(tmp_path, content, message):
  path = tmp_path / "latency.json"
  path.write_text(content)
  with pytest.raises(NasjaxError, match=message):
    LatencyTable(str(path))


def test_bad_measurement_settings_are_refused():
  with pytest.raises(NasjaxError, match="latency_batch must be"):
    LatencyTable(batch=0)


def test_budget_penalty_is_the_hinge_of_the_expected_cost():
  tables = {"normal": np.array([[0.0, 1.0, 4.0]]), "reduce": np.array([[0.0, 2.0, 2.0]])}
  logits = {"normal": jnp.array([[0.3, 0.1, -0.2]]), "reduce": jnp.array([[0.0, 0.5, 0.1]])}

  def penalty(lg, target):
    return budget_penalty({k: jax.nn.softmax(v, -1) for k, v in lg.items()}, tables, target)

  cost = float(penalty(logits, 0.0))
  assert cost == pytest.approx(float(expected_cost({k: jax.nn.softmax(v, -1) for k, v in logits.items()}, tables)))
  # Inside the budget: no penalty and no pull; above it: the excess, with the expectation's gradient.
  assert float(penalty(logits, cost + 0.5)) == 0.0
  assert all(not np.any(g) for g in jax.tree.leaves(jax.grad(penalty)(logits, cost + 0.5)))
  assert float(penalty(logits, cost - 0.5)) == pytest.approx(0.5, rel=1e-5)
  for a, b in zip(jax.tree.leaves(jax.grad(penalty)(logits, cost - 0.5)), jax.tree.leaves(jax.grad(penalty)(logits, 0.0))):
    np.testing.assert_allclose(a, b, rtol=1e-6)


def _config(method, **overrides):
  # A fast-moving architecture (no weight decay on it) so two tiny epochs show the term's pull.
  return tiny_config(method, **dict(dict(arch_learning_rate=0.05, arch_weight_decay=0.0), **overrides))


@pytest.mark.parametrize("method", ["darts", pytest.param("gdas", marks=pytest.mark.slow),
                                    pytest.param("pcdarts", marks=pytest.mark.slow)])
def test_latency_term_lowers_the_expected_latency_of_the_found_cell(method, tiny_dataset, tmp_path):
  """Same seed, same data, with and without the latency term: the term lowers the cell distribution's
  expected latency on this device and the latency of the derived cell, both priced by the same table."""
  latency = dict(cost_metric="latency", cost_weight=5.0, latency_table=str(tmp_path / "latency.json"),
                 latency_batch=32, latency_runs=15)
  aware = run_search(_config(method, **latency), TINY_SPACE, tiny_dataset, show_progress=False)
  plain = run_search(_config(method), TINY_SPACE, tiny_dataset, show_progress=False)
  tables = Search(_config(method, **latency), TINY_SPACE, (8, 8, 1), 4, (0.4,), (0.2,), 6).cost_tables
  last = aware["history"][-1]
  plain_alphas = {k: np.asarray(v) for k, v in plain["history"][-1]["alphas"].items()}
  assert last["expected_edge_latency"] < float(expected_cost(plain_alphas, tables))
  assert last["derived_edge_latency"] < derived_cost(plain["arch"], TINY_SPACE, tables)
