"""The NAS-Bench-201 network, cost metrics and constraints, and the weight-sharing estimator."""

from __future__ import annotations

import csv
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from nasjax.errors import NasjaxError
from nasjax.estimators.cost import constrained, cost_estimator, measure_latency_ms
from nasjax.estimators.weight_sharing import (recalibrate_batch_stats, shared_weight_metrics,
                                              weight_sharing_estimator)
from nasjax.nn.count import count_macs, count_params
from nasjax.nn.nb201_network import NB201Network, discrete_variables
from nasjax.nn.network import Network
from nasjax.nn.supernet import Supernet
from nasjax.spaces import CellSpace, NB201Space, get_space
from nasjax.spaces.genotypes import get_genotype

# c10valid_params_mb of the benchmark table (NATS-Bench topology, 200 epochs).
BENCHMARK_PARAMS = {
    "|none~0|+|none~0|none~1|+|none~0|none~1|none~2|": 0.073306,
    "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|": 1.288506,
    "|avg_pool_3x3~0|+|nor_conv_1x1~0|skip_connect~1|+|nor_conv_1x1~0|skip_connect~1|skip_connect~2|": 0.129306,
    "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|": 0.802426,
}


# Values, not speed, are under test: XLA's optimisation passes dominate CPU compile times here.
pytestmark = pytest.mark.usefixtures("fastest_compiles")


# ------------------------------------------------------------------------------------- NB201 network
def test_nb201_param_counts_match_the_benchmark():
  space, net = NB201Space(), NB201Network()
  for arch_str, mb in BENCHMARK_PARAMS.items():
    assert f"{int(net.count_params_for(space.from_string(arch_str))) / 1e6:.6f}" == f"{mb:.6f}", arch_str


def test_nb201_param_counts_match_a_sample_of_the_table(nb201_table):
  with open(nb201_table) as f:
    rows = [r for r in csv.DictReader(f) if r["c10valid_params_seed_disagree"] == "False"]
  sample = [rows[i] for i in np.random.RandomState(0).choice(len(rows), 300, replace=False)]
  space = NB201Space()
  archs = np.stack([space.from_string(r["arch_str"]) for r in sample])
  counts = np.asarray(jax.jit(jax.vmap(NB201Network().count_params_for))(archs))
  got = [f"{c / 1e6:.6f}" for c in counts]
  assert got == [f"{float(r['c10valid_params_mb']):.6f}" for r in sample]


@pytest.fixture(scope="module")
def tiny_nb201():
  net = NB201Network(channels=2, cells_per_stage=1, num_classes=5)
  x = jax.random.normal(jax.random.key(0), (3, 8, 8, 3))
  variables = jax.jit(lambda k: net.init(k, x, jnp.zeros(6, jnp.int32)))(jax.random.key(1))
  return net, x, variables


def test_switch_network_equals_standalone_network_and_vmaps(tiny_nb201):
  net, x, variables = tiny_nb201
  archs = np.array([[3, 2, 4, 1, 3, 0], [1, 1, 1, 1, 1, 1], [0, 3, 0, 2, 4, 3]], np.int32)
  forward = jax.jit(lambda a: net.apply(variables, x, a))
  batched = jax.jit(jax.vmap(lambda a: net.apply(variables, x, a)))(archs)
  for arch, got in zip(archs, batched):
    fixed = NB201Network(channels=2, cells_per_stage=1, num_classes=5, genotype=tuple(arch))
    own = discrete_variables(variables, arch)
    want = fixed.apply(own, x)
    np.testing.assert_allclose(forward(arch), want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    # The cut-out variables are exactly the stand-alone network's, and are what the table counts.
    init_shapes = jax.eval_shape(lambda k: fixed.init(k, x), jax.random.key(0))
    assert jax.tree.structure(init_shapes) == jax.tree.structure(own)
    assert count_params(own["params"]) == int(net.count_params_for(arch))


def test_nb201_param_count_follows_the_input_channels():
  """The stem convolution reads the input's channels: a 1-channel (Fashion-MNIST) network has 9 * 2 * C
  fewer weights than the benchmark's 3-channel one, and the count says so."""
  arch = np.array([3, 2, 4, 1, 3, 0], np.int32)
  fixed = NB201Network(channels=2, cells_per_stage=1, num_classes=5, genotype=tuple(int(v) for v in arch))
  switch = NB201Network(channels=2, cells_per_stage=1, num_classes=5)
  for channels in (1, 3):
    shapes = jax.eval_shape(lambda k: fixed.init(k, jnp.zeros((1, 8, 8, channels))), jax.random.key(0))
    assert int(switch.count_params_for(arch, in_channels=channels)) == count_params(shapes["params"])
  assert (int(switch.count_params_for(arch)) - int(switch.count_params_for(arch, in_channels=1))) == 9 * 2 * 2
  with pytest.raises(NasjaxError, match="positive integer"):
    switch.count_params_for(arch, in_channels=0)


def test_nb201_bad_architectures_are_clear_errors(tiny_nb201):
  net, x, variables = tiny_nb201
  with pytest.raises(NasjaxError, match="shape"):
    net.apply(variables, x, jnp.zeros(5, jnp.int32))
  with pytest.raises(NasjaxError, match="accepted values are 0..4"):
    net.apply(variables, x, np.array([0, 1, 2, 3, 4, 5], np.int32))
  with pytest.raises(NasjaxError, match="arch"):
    net.apply(variables, x)


# ------------------------------------------------------------------------------------- cost
def test_nb201_flops_match_hand_counts():
  est = cost_estimator(NB201Space(), metrics=("params", "flops"))
  key = jax.random.key(0)
  # All-none cell: stem 32*32*16*27, each reduction 2 convolutions + a 1x1 shortcut, classifier 64*10.
  stem = 32 * 32 * 16 * 27
  reductions = (16 * 16 * 32 * (16 * 9 + 32 * 9 + 16)) + (8 * 8 * 64 * (32 * 9 + 64 * 9 + 32))
  base = stem + reductions + 64 * 10
  assert base == 7_783_040  # the minimum FLOPs of the NAS-Bench-201 paper (7.78M)
  assert est(np.zeros(6, np.int32), key) == {"params": 73306, "flops": base}
  # All nor_conv_3x3: 6 edges x 5 cells per stage, each H*W*C*9C.
  convs = sum(6 * 5 * hw * hw * c * 9 * c for hw, c in ((32, 16), (16, 32), (8, 64)))
  assert est(np.full(6, 3, np.int32), key)["flops"] == base + convs


def test_cost_of_genotype_networks_matches_direct_counts():
  space = CellSpace("tiny", ("skip_connect", "sep_conv_3x3", "avg_pool_3x3"), 2, True)
  arch = np.asarray(space.sample(jax.random.key(4)))
  est = cost_estimator(space, input_shape=(8, 8, 3), channels=4, layers=3, num_classes=5,
                       metrics=("params", "flops"))
  # Counted as grouped convolutions: a depthwise conv of k x k costs k * k per output value, whichever
  # form (dense block-diagonal, shifted slices) the backend runs.
  network = Network(space.decode(arch), 4, 3, 5, dw_impl="grouped", conv_impl="xla", scan_cells=False)
  x = jnp.zeros((1, 8, 8, 3))
  shapes = jax.eval_shape(lambda k: network.init({"params": k, "dropout": k}, x), jax.random.key(0))
  want = {"params": count_params(shapes["params"]),
          "flops": count_macs(lambda v, x: network.apply(v, x), shapes, x)}
  assert est(arch, jax.random.key(0)) == want and want["flops"] > 0


def test_darts_v2_macs_do_not_depend_on_the_depthwise_form():
  """At 36 channels the CPU network writes depthwise convs as shifted slices; the count must not drop them
  (it gave 490M). 528M multiply-adds for CIFAR-10, as `nasjax info` reports (its macs)."""
  space = get_space("darts")
  arch = space.from_string(get_genotype("DARTS_V2").to_string())
  est = cost_estimator(space, channels=36, layers=20, metrics=("params", "flops"))
  assert est(arch, None) == {"params": 3_349_342, "flops": 528_359_040}


def test_latency_is_a_median_after_warmup():
  calls = []

  def fn():
    calls.append(None)
    time.sleep(0.3 if len(calls) == 1 else 0.01)  # the first call stands for compilation
    return jnp.zeros(())

  ms = measure_latency_ms(fn, runs=5, warmup=1)
  assert len(calls) == 6 and 10 <= ms < 200
  with pytest.raises(NasjaxError, match="runs"):
    measure_latency_ms(fn, runs=0)


def test_latency_of_nb201_network():
  est = cost_estimator(NB201Space(), input_shape=(8, 8, 3), channels=2, layers=1, batch_size=2, runs=3,
                       num_classes=5)
  out = est(np.array([3, 2, 4, 1, 3, 0], np.int32), jax.random.key(0))
  assert set(out) == {"params", "flops", "latency_ms"} and 0 < out["latency_ms"] < 1e4


def test_constrained_fails_or_penalises_violations():
  calls = []

  def accuracy_estimator(arch, key):
    calls.append(int(arch[0]))
    return {"accuracy": 0.9}

  def fake_cost(arch, key):
    return {"params": 1000 * int(arch[0]), "flops": 10}

  hard = constrained(accuracy_estimator, max_params=2000, cost=fake_cost)
  key = jax.random.key(0)
  ok = hard(np.array([2]), key)
  assert ok["accuracy"] == 0.9 and ok["feasible"] and ok["params"] == 2000
  bad = hard(np.array([3]), key)
  assert np.isnan(bad["accuracy"]) and not bad["feasible"] and bad["violation"] == 1.5
  assert calls == [2]  # a violating architecture is never trained

  soft = constrained(accuracy_estimator, max_params=2000, cost=fake_cost, mode="penalty", alpha=0.0, beta=-1.0)
  assert soft(np.array([1]), key)["accuracy"] == 0.9  # within the limit: (0.5) ** 0
  np.testing.assert_allclose(soft(np.array([4]), key)["accuracy"], 0.9 * 2.0 ** -1.0)
  mnas = constrained(accuracy_estimator, max_params=2000, max_flops=20, cost=fake_cost, mode="penalty")
  np.testing.assert_allclose(mnas(np.array([4]), key)["accuracy"], 0.9 * 2.0 ** -0.07 * 0.5 ** -0.07)

  with pytest.raises(NasjaxError, match="at least one"):
    constrained(accuracy_estimator)
  with pytest.raises(NasjaxError, match="accepted: fail, penalty"):
    constrained(accuracy_estimator, max_flops=1, mode="drop")
  with pytest.raises(NasjaxError, match="lack"):
    constrained(accuracy_estimator, max_latency_ms=1.0)(np.array([1]), key)


# ------------------------------------------------------------------------------------- weight sharing
TINY_SPACE = CellSpace("tiny", ("max_pool_3x3", "skip_connect", "sep_conv_3x3"), 2, True)


@pytest.fixture(scope="module")
def tiny_supernet():
  net = Supernet.for_space(TINY_SPACE, channels=4, layers=3, num_classes=5)
  keys = jax.random.split(jax.random.key(10), 4)
  train_x = jax.random.normal(keys[0], (3, 4, 8, 8, 3))
  valid_x = jax.random.normal(keys[1], (2, 4, 8, 8, 3))
  valid_y = jax.random.randint(keys[2], (2, 4), 0, 5)
  arch_example = TINY_SPACE.edge_ops(TINY_SPACE.sample(keys[3]))
  variables = jax.jit(lambda k: net.init(k, train_x[0], arch_example, train=True))(jax.random.key(11))
  # Stand-in for trained running statistics: far from anything the recalibration could produce.
  variables = {**variables, "batch_stats": jax.tree.map(lambda s: s + 7.0, variables["batch_stats"])}
  return net, variables, train_x, (valid_x, valid_y)


def test_recalibrated_stats_are_the_mean_of_per_batch_stats(tiny_supernet):
  net, variables, train_x, _ = tiny_supernet
  arch = TINY_SPACE.edge_ops(TINY_SPACE.sample(jax.random.key(5)))
  recal = jax.jit(lambda v, a, x: recalibrate_batch_stats(net, v, a, x))
  new = recal(variables, arch, train_x)
  # By hand for the stem: its BN sees the stem convolution's output.
  kernel = variables["params"]["stem_conv"]["kernel"]
  conv_out = [lax.conv_general_dilated(x, kernel, (1, 1), ((1, 1), (1, 1)),
                                       dimension_numbers=("NHWC", "HWIO", "NHWC")) for x in train_x]
  want_mean = np.mean([np.mean(np.asarray(o), axis=(0, 1, 2)) for o in conv_out], axis=0)
  want_var = np.mean([np.var(np.asarray(o), axis=(0, 1, 2)) for o in conv_out], axis=0)
  np.testing.assert_allclose(new["batch_stats"]["stem_bn"]["mean"], want_mean, rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(new["batch_stats"]["stem_bn"]["var"], want_var, rtol=1e-4, atol=1e-5)
  # Every BN layer: the average of the statistics of each batch on its own.
  singles = [recal(variables, arch, train_x[i:i + 1])["batch_stats"] for i in range(len(train_x))]
  average = jax.tree.map(lambda *s: sum(s) / len(s), *singles)
  for got, want in zip(jax.tree.leaves(new["batch_stats"]), jax.tree.leaves(average)):
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
  # The cells' statistics changed too (the old ones were all >= 7).
  cell_stats = jax.tree.leaves(new["batch_stats"]["cell_1"])
  assert any(np.abs(np.asarray(s) - 7.0).max() > 1.0 for s in cell_stats)
  assert jax.tree.all(jax.tree.map(np.array_equal, new["params"], variables["params"]))


@pytest.mark.slow  # eager (disable_jit) run + jit + vmap compiles: about 150 s on a loaded 2-core CPU
def test_weight_sharing_estimator_jit_vmap_determinism(tiny_supernet):
  net, variables, train_x, valid = tiny_supernet
  est = weight_sharing_estimator(TINY_SPACE, net, variables, train_x, valid)
  archs = jax.vmap(TINY_SPACE.sample)(jax.random.split(jax.random.key(6), 2))
  key = jax.random.key(0)
  first = est(archs[0], key)
  again = est(archs[0], jax.random.key(1))
  assert float(first["accuracy"]) == float(again["accuracy"]) and float(first["loss"]) == float(again["loss"])
  assert 0.0 <= float(first["accuracy"]) <= 1.0 and np.isfinite(float(first["loss"]))
  with jax.disable_jit():
    eager = shared_weight_metrics(net, variables, TINY_SPACE.edge_ops(archs[0]), train_x, *valid)
  np.testing.assert_allclose(eager["loss"], first["loss"], rtol=1e-5)
  np.testing.assert_allclose(eager["accuracy"], first["accuracy"])
  # By hand: accuracy of the recalibrated model in evaluation mode.
  recal = recalibrate_batch_stats(net, variables, TINY_SPACE.edge_ops(archs[0]), train_x)
  logits = [net.apply(recal, x, TINY_SPACE.edge_ops(archs[0]), train=False) for x in valid[0]]
  want = np.mean(np.argmax(np.stack(logits), -1) == np.asarray(valid[1]))
  np.testing.assert_allclose(first["accuracy"], want)
  batched = jax.vmap(est, in_axes=(0, None))(archs, key)
  np.testing.assert_allclose(batched["loss"][0], first["loss"], rtol=1e-5)
  np.testing.assert_allclose(batched["loss"][1], est(archs[1], key)["loss"], rtol=1e-5)


def test_weight_sharing_rejects_bad_inputs(tiny_supernet):
  net, variables, train_x, valid = tiny_supernet
  with pytest.raises(NasjaxError, match="labels"):
    weight_sharing_estimator(TINY_SPACE, net, variables, train_x, (valid[0], valid[1][:, :2]))
  with pytest.raises(NasjaxError, match="batch_stats"):
    weight_sharing_estimator(TINY_SPACE, net, {"params": variables["params"]}, train_x, valid)
  with pytest.raises(NasjaxError, match="edge_ops"):
    weight_sharing_estimator(object(), net, variables, train_x, valid)
