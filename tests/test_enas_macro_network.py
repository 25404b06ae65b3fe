"""The ENAS macro network (architecture as data) and the enas_macro estimators: shapes, one program for
every architecture, only the chosen ops computed and trained, skips, jit and vmap, bad input, the registry
entries and a tiny command-line search. Small shapes: 3 layers (both reductions), 8 channels, 16x16 images."""

from __future__ import annotations

import functools
import json

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from nasjax import cli, search
from nasjax.errors import NasjaxError
from nasjax.estimators import registry as R
from nasjax.nn.enas_macro_network import EnasMacroNetwork, pool_layers
from nasjax.spaces import ENAS_MACRO_OPS, EnasMacroSpace, NB201Space

# Values are under test, not speed: XLA's optimisation passes are off in this module (conftest.py).
pytestmark = pytest.mark.usefixtures("fastest_compiles")

SPACE = EnasMacroSpace(3)
NET = EnasMacroNetwork.for_space(SPACE, channels=8, num_classes=5)
X = jax.random.normal(jax.random.key(0), (2, 16, 16, 3))
Y = jnp.array([1, 3], jnp.int32)


def arch_of(ops, skips=()):
  """An encoding from per-layer op names and (layer, source) skip pairs, through the space's notation."""
  tokens = []
  for k, op in enumerate(ops):
    sources = [str(j) for layer, j in skips if layer == k]
    tokens.append(op + ("<-" + ",".join(sources) if sources else ""))
  return jnp.asarray(SPACE.from_string("|".join(tokens)))


ARCH_A = arch_of(["sep_conv_5x5", "max_pool_3x3", "conv_5x5"], [(2, 0)])
ARCH_B = arch_of(["avg_pool_3x3", "conv_3x3", "sep_conv_3x3"], [(1, 0), (2, 1)])


@pytest.fixture(scope="module")
def variables():
  return jax.jit(lambda k: NET.init(k, X, ARCH_A, train=True))(jax.random.key(1))


@pytest.fixture(scope="module")
def sgd_step():
  """A jitted SGD step of the network, counting its traces."""
  traces = []
  tx = optax.sgd(0.1)

  @jax.jit
  def step(variables, x, y, arch):
    traces.append(1)

    def loss_fn(params):
      logits, updates = NET.apply({**variables, "params": params}, x, arch, train=True, mutable=["batch_stats"])
      return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean(), updates

    (loss, updates), grads = jax.value_and_grad(loss_fn, has_aux=True)(variables["params"])
    new_params = optax.apply_updates(variables["params"], tx.update(grads, tx.init(grads))[0])
    return {"params": new_params, **updates}, loss, grads

  step.traces = traces
  return step


def test_shapes_dtypes_and_variable_collections(variables):
  assert set(variables) == {"params", "batch_stats"}
  logits = jax.jit(lambda v, x, a: NET.apply(v, x, a, train=False))(variables, X, ARCH_A)
  assert logits.shape == (2, 5) and logits.dtype == jnp.float32 and bool(jnp.all(jnp.isfinite(logits)))
  params = variables["params"]
  assert {f"layer_{k}" for k in range(3)} <= set(params)
  assert set(params["layer_0"]) == {f"ops_{op}" for op in ENAS_MACRO_OPS}  # the pools own a 1x1 convolution
  assert pool_layers(3) == (0, 1) and pool_layers(12) == (3, 7) and pool_layers(2) == ()
  # Every earlier output is reduced at each pooling layer: 1 after layer 0, 2 after layer 1.
  assert {k for k in params if k.startswith("reduce_")} == {"reduce_0_from_0", "reduce_1_from_0", "reduce_1_from_1"}
  assert params["classifier"]["kernel"].shape == (8, 5) and "bias" not in params["classifier"]
  doubled = EnasMacroNetwork.for_space(SPACE, channels=8, num_classes=5, double_channels=True)
  shapes = jax.eval_shape(lambda k: doubled.init(k, X, ARCH_A, train=True), jax.random.key(0))
  assert shapes["params"]["classifier"]["kernel"].shape == (32, 5)


def test_one_program_serves_every_architecture_and_trains_only_the_chosen_ops(variables, sgd_step):
  new_a, loss_a, grads_a = sgd_step(variables, X, Y, ARCH_A)
  _, loss_b, _ = sgd_step(variables, X, Y, ARCH_B)
  assert len(sgd_step.traces) == 1  # the architecture is data: no retrace for the second one
  assert float(loss_a) != float(loss_b)
  ops = SPACE.layer_ops(ARCH_A)
  for k in range(SPACE.num_layers):
    for i, op in enumerate(ENAS_MACRO_OPS):
      before = variables["params"][f"layer_{k}"][f"ops_{op}"]
      after = new_a["params"][f"layer_{k}"][f"ops_{op}"]
      grad_leaves = jax.tree.leaves(grads_a[f"layer_{k}"][f"ops_{op}"])
      if i == int(ops[k]):
        assert any(float(jnp.abs(g).max()) > 0 for g in grad_leaves), (k, op)
      else:  # exactly zero gradient, exactly the same parameters
        assert all(not np.any(np.asarray(g)) for g in grad_leaves), (k, op)
        jax.tree.map(np.testing.assert_array_equal, before, after)
  # Shared parts (stem, skip BNs, reductions, classifier) do train.
  assert not np.array_equal(variables["params"]["stem_conv"]["kernel"], new_a["params"]["stem_conv"]["kernel"])


def test_only_the_chosen_op_is_in_the_program_path():
  """One switch per layer, over the 6 ops; outside the switches only the stem, the reductions' and the
  classifier's products: the unchosen ops' convolutions are in branches that do not run."""
  jaxpr = jax.make_jaxpr(lambda v, a: NET.apply(v, X, a, train=False))(
      jax.eval_shape(lambda k: NET.init(k, X, ARCH_A, train=True), jax.random.key(0)), ARCH_A).jaxpr
  conds = [e for e in jaxpr.eqns if e.primitive.name == "cond"]
  assert len(conds) == SPACE.num_layers and all(len(e.params["branches"]) == 6 for e in conds)
  top_level_convs = [e for e in jaxpr.eqns if e.primitive.name == "conv_general_dilated"]
  assert len(top_level_convs) == 1  # the stem; the reductions are 1x1 products (dot_general)


def test_skip_bits_change_the_output(variables):
  apply = jax.jit(lambda v, a: NET.apply(v, X, a, train=False))
  no_skips = arch_of(["sep_conv_5x5", "max_pool_3x3", "conv_5x5"])
  one_more = arch_of(["sep_conv_5x5", "max_pool_3x3", "conv_5x5"], [(2, 0), (2, 1)])
  outs = [np.asarray(apply(variables, a)) for a in (no_skips, ARCH_A, one_more)]
  assert not np.allclose(outs[0], outs[1]) and not np.allclose(outs[1], outs[2])


def test_jit_equals_no_jit_and_vmap_equals_a_loop(variables):
  def apply(v, a):
    return NET.apply(v, X, a, train=False)
  eager = apply(variables, ARCH_B)
  np.testing.assert_allclose(jax.jit(apply)(variables, ARCH_B), eager, rtol=1e-5, atol=1e-5)
  archs = jnp.stack([ARCH_A, ARCH_B])
  batched = jax.jit(jax.vmap(apply, in_axes=(None, 0)))(variables, archs)
  np.testing.assert_allclose(batched[1], eager, rtol=1e-4, atol=1e-5)


def test_bad_architectures_and_sizes_are_one_line_errors(variables):
  for bad in (jnp.zeros(SPACE.num_decisions + 1, jnp.int32), jnp.zeros((2, SPACE.num_decisions), jnp.int32),
              jnp.zeros(SPACE.num_decisions, jnp.float32)):
    with pytest.raises(NasjaxError, match="integer array of shape") as e:
      NET.apply(variables, X, bad)
    assert "\n" not in str(e.value)
  with pytest.raises(NasjaxError, match="layer 1 op is 6"):
    NET.apply(variables, X, ARCH_A.at[1].set(6))
  with pytest.raises(NasjaxError, match="even channel count"):
    EnasMacroNetwork.for_space(SPACE, channels=5).init(jax.random.key(0), X, ARCH_A)
  with pytest.raises(NasjaxError, match="enas_macro space"):
    EnasMacroNetwork.for_space(NB201Space())


def test_parameter_count_of_the_chosen_ops():
  """count_params_for against the initialised parameters' shapes, for a 1-channel (Fashion-MNIST) and a
  3-channel (CIFAR-10) input: the stem's convolution follows the input's channels."""
  def size(tree):
    return sum(int(np.prod(p.shape)) for p in jax.tree.leaves(tree))

  per_channels = {}
  for in_channels in (1, 3):
    x = jnp.zeros((2, 16, 16, in_channels))
    params = jax.eval_shape(lambda k, x=x: NET.init(k, x, ARCH_A), jax.random.key(1))["params"]
    count = functools.partial(NET.count_params_for, in_channels=in_channels)
    counts = jax.vmap(count)(jnp.stack([ARCH_A, ARCH_B]))
    for arch, got in zip((ARCH_A, ARCH_B), counts):
      ops = SPACE.layer_ops(arch)
      unchosen = sum(size(params[f"layer_{k}"][f"ops_{op}"]) for k in range(3)
                     for i, op in enumerate(ENAS_MACRO_OPS) if i != int(ops[k]))
      assert int(got) == size(params) - unchosen
      assert int(count(arch)) == int(got)  # unbatched as well
    assert int(counts[0]) != int(counts[1])
    per_channels[in_channels] = int(counts[0])
  # The two extra input channels add a 3x3 slice of the stem per output channel, and nothing else.
  assert per_channels[3] - per_channels[1] == 3 * 3 * 2 * NET.channels
  with pytest.raises(NasjaxError, match="input's channels"):
    NET.count_params_for(ARCH_A, in_channels=0)


# ---------------------------------------------------------------------------------------------- estimators
def test_registry_entries(tiny_dataset):
  for spec in ("train", "weight_sharing", "proxy:synflow"):
    assert R.check_combination(spec, SPACE).kind == spec.partition(":")[0]
  assert R.estimators_for(SPACE) == ("train", "weight_sharing", "proxy")
  with pytest.raises(NasjaxError, match="accepts the spaces macro, nas_rl; for enas_macro use: train, weight_sharing"):
    R.check_combination("morphism", SPACE)
  cfg = R.estimator_config("train", SPACE)
  assert "layers" not in cfg and "channels" in cfg
  assert set(R.estimator_config("proxy:synflow", SPACE)) == {"batch_size", "channels", "seed"}
  paper = R.estimator_config("weight_sharing", SPACE, preset="paper")
  assert (paper.channels, paper.epochs, paper.batch_size) == (36, 310, 128)


# The estimators' own tests: 2 layers (no reduction) keep their compiles short.
SMALL = EnasMacroSpace(2)
SMALL_ARCHS = np.stack([SMALL.from_string("conv_3x3|max_pool_3x3<-0"), SMALL.from_string("sep_conv_5x5|conv_5x5")])


def _tiny_training(cfg, **extra):
  cfg.update(dict(dict(epochs=1, batch_size=16, eval_batch_size=32, crop_padding=1, channels=4), **extra))
  return cfg


def _evaluate(estimator, archs, executor="auto", fitness_key="accuracy"):
  keys = [jax.random.key(i) for i in range(len(archs))]
  return list(search.resolve_executor(executor, estimator).evaluate(estimator, np.asarray(archs), keys, fitness_key))


def test_training_estimator_compiles_one_program_for_all_candidates(tiny_dataset):
  cfg = _tiny_training(R.estimator_config("train", SMALL))
  est = R.build_estimator("train", SMALL, tiny_dataset, cfg, num_candidates=2)
  outcomes = _evaluate(est, SMALL_ARCHS)
  assert all(not o.failed and 0.0 <= o.metrics["accuracy"] <= 1.0 for o in outcomes)
  assert len(est._programs) == 1
  assert outcomes[0].metrics["params"] != outcomes[1].metrics["params"]


def test_weight_sharing_trains_shared_weights_once_then_scores_candidates(tiny_dataset, tmp_path):
  cfg = R.estimator_config("weight_sharing", SMALL, preset="demo")
  cfg.update(epochs=1, batch_size=8, channels=4, train_subset=0, crop_padding=1, rank_batches=1)
  est = R.build_estimator("weight_sharing", SMALL, tiny_dataset, cfg, workdir=str(tmp_path))
  assert est.jittable and (tmp_path / "supernet" / "checkpoints").is_dir()
  archs = SMALL_ARCHS
  scores = [o.metrics["accuracy"] for o in _evaluate(est, archs)]  # auto -> vmap
  assert all(0.0 <= s <= 1.0 for s in scores)
  # A rebuild (a resumed search) restores the trained weights instead of training again: the same scores
  # (the vmapped estimator equals the serial one in test_estimator_registry's weight-sharing test).
  log = (tmp_path / "supernet" / "metrics.jsonl").read_text()
  again = R.build_estimator("weight_sharing", SMALL, tiny_dataset, cfg, workdir=str(tmp_path))
  np.testing.assert_allclose([o.metrics["accuracy"] for o in _evaluate(again, archs)], scores, atol=1e-6)
  # Other ranking settings reuse the weights too; other training settings are refused.
  cfg.rank_batches = 2
  R.build_estimator("weight_sharing", SMALL, tiny_dataset, cfg, workdir=str(tmp_path))
  assert (tmp_path / "supernet" / "metrics.jsonl").read_text() == log  # nothing trained again
  cfg.learning_rate = 0.01
  with pytest.raises(NasjaxError):
    R.build_estimator("weight_sharing", SMALL, tiny_dataset, cfg, workdir=str(tmp_path))


def test_proxy_scores_each_candidate(tiny_dataset):
  cfg = R.estimator_config("proxy:synflow", SMALL)
  cfg.update(batch_size=4, channels=4)
  est = R.build_estimator("proxy:synflow", SMALL, tiny_dataset, cfg)
  scores = [float(est(a, jax.random.key(0))["score"]) for a in SMALL_ARCHS]
  assert all(np.isfinite(scores)) and scores[0] != scores[1]


@pytest.mark.slow
def test_tiny_command_line_search(tmp_path, write_tiny_npz, capsys):
  data = write_tiny_npz(tmp_path / "tiny.npz", 64, 16)
  out = tmp_path / "search"
  rc = cli.main(["search", "--quiet", "--space", "enas_macro", "--estimator", "proxy:synflow", "--data", data,
                 "--channels", "2", "--batch-size", "4", "--num-archs", "2", "--executor", "serial",
                 "--out", str(out)])
  err = capsys.readouterr().err
  assert rc == 0, err
  result = json.loads((out / "result.json").read_text())
  assert result["space"] == "enas_macro" and result["num_evaluated"] == 2
  assert EnasMacroSpace().from_string(result["genotype"]).tolist() == result["arch"]
