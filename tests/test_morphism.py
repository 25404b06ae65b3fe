"""Chain networks of the macro spaces, Net2Net morphisms on their variables, the warm-start estimator.

Small spaces and 8x8 images keep every compile to a few seconds on CPU.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nasjax import NasjaxError
from nasjax.data import Dataset
from nasjax.estimators import morphism as M
from nasjax.nn.chain_network import (ChainNetwork, chain_network, init_variables, pad_to, plan_macs,
                                     plan_network)
from nasjax.nn.count import count_macs
from nasjax.spaces import MacroSpace, NB201Space, nas_rl_space

# Values are under test, not speed: XLA's optimisation passes are off in this module (conftest.py).
pytestmark = pytest.mark.usefixtures("fastest_compiles")

SHAPE = (8, 8, 3)
SPACE = MacroSpace(4, kernel_sizes=(1, 3), filters=(4, 8, 12), strides=(1, 2))
# Every transform applies: widen layers 0 and 2, deepen the identity layer 1, skip layer 2 <- 0.
ARCH = SPACE.from_string("conv(h3,w3,f4,s1)|identity|conv(h1,w3,f8,s2)|pool(h3,w3,s1)")


X = jnp.asarray(np.random.default_rng(42).normal(size=(6,) + SHAPE), jnp.float32)


# Whole networks are jitted: op-by-op execution would compile every distinct op shape on its own.
def _init(net, seed):
  """Variables of the right shapes from numpy (no compile): normal kernels scaled by 1/sqrt(fan-in),
  positive BN statistics and scales. Any values serve the function-preservation tests."""
  rng = np.random.default_rng(seed)
  shapes = jax.eval_shape(lambda k: init_variables(net, k), jax.random.key(0))

  def draw(path, s):
    name = jax.tree_util.keystr(path)
    if "kernel" in name:
      return (rng.normal(size=s.shape) / np.sqrt(np.prod(s.shape[:-1]))).astype(np.float32)
    if "var" in name or "scale" in name:
      return rng.uniform(0.5, 1.5, s.shape).astype(np.float32)
    return rng.normal(0, 0.3, s.shape).astype(np.float32)

  return jax.tree_util.tree_map_with_path(draw, shapes)


def _apply(net, variables):
  return jax.jit(net.apply)(variables, X)


def _trained_like(space, arch, seed):
  """A network and variables like trained ones: BN statistics and affine parameters away from their
  initial values, so a wrong copy or division shows up."""
  net = chain_network(space, arch, 5, SHAPE)
  return net, _init(net, seed)


# ---------------------------------------------------------------------------------------------- network
@pytest.mark.parametrize("space", [SPACE, nas_rl_space(4, with_strides=True)], ids=["macro", "nas_rl"])
def test_every_sampled_arch_builds_and_plan_counts_macs(space):
  for i in range(2):
    arch = np.asarray(space.sample(jax.random.key(i)))
    net = chain_network(space, arch, 5, SHAPE)
    variables = _init(net, i)
    logits = _apply(net, variables)
    assert logits.shape == (6, 5) and bool(jnp.all(jnp.isfinite(logits)))
    # The host plan and the traced program agree on the cost (a check of every planned shape).
    assert count_macs(lambda x: net.apply(variables, x), X[:1]) == plan_macs(net.plan, 5)


def test_plan_by_hand():
  plans = plan_network(SPACE, SPACE.from_string("conv(h3,w1,f8,s2)|pool(h3,w3,s2)|identity<-0|dense(f4)"),
                       SHAPE)
  assert [p.out_hw for p in plans] == [(4, 4), (2, 2), (4, 4), (1, 1)]
  # Layer 2 reads layers 0 (8 ch, 4x4) and 1 (8 ch, 2x2, zero padded to 4x4).
  assert plans[2].sources == (0, 1) and plans[2].in_channels == 16 and plans[2].in_hw == (4, 4)
  assert [p.nonnegative for p in plans] == [True, True, True, True]
  assert not plan_network(SPACE, SPACE.from_string("identity|pool(h1,w1,s1)|conv(h1,w1,f4,s1)|identity"),
                          SHAPE)[1].nonnegative


def test_pad_to_centres_zeros():
  x = jnp.ones((1, 1, 2, 1))
  y = pad_to(x, (4, 3))
  np.testing.assert_array_equal(y[0, :, :, 0], [[0, 0, 0], [1, 1, 0], [0, 0, 0], [0, 0, 0]])


def test_skip_from_previous_layer_repeats_the_chain_edge():
  a = SPACE.from_string("conv(h3,w3,f4,s1)|conv(h1,w1,f8,s1)|conv(h3,w3,f4,s1)|identity")
  b = SPACE.from_string("conv(h3,w3,f4,s1)|conv(h1,w1,f8,s1)<-0|conv(h3,w3,f4,s1)<-1|identity")
  net_a = chain_network(SPACE, a, 5, SHAPE)
  variables = _init(net_a, 0)
  np.testing.assert_array_equal(_apply(net_a, variables), _apply(chain_network(SPACE, b, 5, SHAPE), variables))


def test_bad_inputs_are_clear_errors():
  net = chain_network(SPACE, ARCH, 5, SHAPE)
  variables = jax.eval_shape(lambda k: init_variables(net, k), jax.random.key(0))
  with pytest.raises(NasjaxError, match=r"expects images of shape \[batch, 8, 8, 3\]"):
    net.apply(variables, jnp.zeros((2, 8, 8, 1)))
  with pytest.raises(NasjaxError, match="expects images"):
    net.apply(variables, jnp.zeros((8, 8, 3)))
  with pytest.raises(NasjaxError, match="input_shape must be"):
    chain_network(SPACE, ARCH, 5, (8, 8))
  with pytest.raises(NasjaxError, match="MacroSpace"):
    chain_network(NB201Space(), np.zeros(6, np.int32), 5, SHAPE)
  bad = ARCH.copy()
  bad[6] = 1  # identity layer 1 with a kernel index: not the canonical encoding
  with pytest.raises(NasjaxError, match="ignores kernel_h"):
    chain_network(SPACE, bad, 5, SHAPE)
  with pytest.raises(NasjaxError, match="num_classes"):
    jax.eval_shape(ChainNetwork(SPACE, tuple(ARCH), 0, SHAPE).init, jax.random.key(0), X)


# ---------------------------------------------------------------------------------------------- morphisms
# Widening layer 0 of the second one reaches the dense layer through a pool, an identity with a skip and
# the skip into the dense layer; widening the dense layer reaches the classifier.
ARCH2 = SPACE.from_string("conv(h3,w3,f4,s2)|pool(h3,w3,s1)|identity<-0|dense(f4)<-1")


@pytest.mark.parametrize("kind,arch,layer", [("widen", ARCH, None), ("deepen", ARCH, None), ("skip", ARCH, None),
                                             ("widen", ARCH2, 0), ("widen", ARCH2, 3), ("deepen", ARCH2, 2)])
def test_each_transform_preserves_the_function(kind, arch, layer):
  net, variables = _trained_like(SPACE, arch, 0)
  before = _apply(net, variables)
  if layer is None:
    child, child_vars, morph = M.morphism_mutation(SPACE, jax.random.key(1), arch, variables,
                                                   input_shape=SHAPE, kinds=(kind,))
  else:
    morph = [m for m in M.applicable_morphs(SPACE, arch, SHAPE, (kind,)) if m.layer == layer][-1]
    child, child_vars = M.apply_morph(SPACE, jax.random.key(1), arch, variables, morph, input_shape=SHAPE)
  assert morph.kind == kind and bool(SPACE.is_valid(child)) and not np.array_equal(child, arch)
  child_net = chain_network(SPACE, child, 5, SHAPE)
  # The child's variables have exactly the shapes its own initialiser makes.
  shapes = jax.eval_shape(lambda k: init_variables(child_net, k), jax.random.key(0))
  assert jax.tree_util.tree_map(lambda s: s.shape, shapes) == jax.tree_util.tree_map(jnp.shape, child_vars)
  np.testing.assert_allclose(_apply(child_net, child_vars), before, rtol=1e-5, atol=1e-5)
  assert M.find_morph(SPACE, arch, child, SHAPE) == morph


@pytest.mark.slow
def test_transforms_preserve_the_function_on_sampled_archs():
  space = MacroSpace(5, kernel_sizes=(1, 3), filters=(4, 8, 12), strides=(1, 2))
  checked = set()
  for i in range(12):
    arch = np.asarray(space.sample(jax.random.key(100 + i)))
    net, variables = _trained_like(space, arch, i)
    before = _apply(net, variables)
    for m in M.applicable_morphs(space, arch, SHAPE)[::3]:
      child, child_vars = M.apply_morph(space, jax.random.key(i), arch, variables, m, input_shape=SHAPE)
      assert bool(space.is_valid(child))
      after = _apply(chain_network(space, child, 5, SHAPE), child_vars)
      np.testing.assert_allclose(after, before, rtol=1e-5, atol=1e-5, err_msg=f"{m} on {space.to_string(arch)}")
      checked.add(m.kind)
  assert checked == set(M.KINDS)


def test_widen_by_hand():
  space = nas_rl_space(2)
  arch = space.from_string("conv(h1,w1,f24,s1)|conv(h3,w3,f24,s1)")
  net, variables = _trained_like(space, arch, 0)
  child, cv = M.widen(space, jax.random.key(3), arch, variables, input_shape=SHAPE, layer=0, filters=36)
  assert space.describe(child)[0]["filters"] == 36 and space.describe(child)[1]["filters"] == 24
  k_parent = np.asarray(variables["params"]["layer0_conv"]["kernel"])
  k_child = np.asarray(cv["params"]["layer0_conv"]["kernel"])
  np.testing.assert_array_equal(k_child[..., :24], k_parent)
  # Each new unit copies an old one (kernel and BN statistics alike).
  mapping = [int(np.argmin(np.abs(k_parent - k_child[..., j:j + 1]).sum(axis=(0, 1, 2)))) for j in range(36)]
  np.testing.assert_array_equal(k_child, k_parent[..., mapping])
  for leaf in ("mean", "var"):
    np.testing.assert_array_equal(cv["batch_stats"]["layer0_bn"][leaf],
                                  np.asarray(variables["batch_stats"]["layer0_bn"][leaf])[mapping])
  # The consumer's incoming weights over a unit's replicas sum to the parent's weight.
  nxt_parent = np.asarray(variables["params"]["layer1_conv"]["kernel"])
  nxt_child = np.asarray(cv["params"]["layer1_conv"]["kernel"])
  counts = np.bincount(mapping, minlength=24)
  for unit in range(24):
    replicas = [j for j in range(36) if mapping[j] == unit]
    assert len(replicas) == counts[unit]
    np.testing.assert_allclose(nxt_child[:, :, replicas].sum(axis=2), nxt_parent[:, :, unit], rtol=1e-6)
    np.testing.assert_allclose(nxt_child[:, :, replicas[0]], nxt_parent[:, :, unit] / counts[unit], rtol=1e-6)


def test_deepen_and_skip_by_hand():
  net, variables = _trained_like(SPACE, ARCH, 0)
  child, cv = M.deepen(SPACE, jax.random.key(0), ARCH, variables, input_shape=SHAPE, kernel=(3, 1))
  layer = SPACE.describe(child)[1]
  assert layer == {"type": "conv", "kernel": (3, 1), "filters": 4, "stride": 1, "skips": []}
  kernel = np.asarray(cv["params"]["layer1_conv"]["kernel"])
  expected = np.zeros((3, 1, 4, 4))
  expected[1, 0] = np.eye(4)
  np.testing.assert_array_equal(kernel, expected)
  child, cv = M.add_skip(SPACE, jax.random.key(0), ARCH, variables, input_shape=SHAPE, layer=2, source=0)
  assert SPACE.describe(child)[2]["skips"] == [0]
  kernel = np.asarray(cv["params"]["layer2_conv"]["kernel"])  # inputs: layer 0 (new, 4 ch), layer 1 (4 ch)
  np.testing.assert_array_equal(kernel[:, :, :4], 0.0)
  np.testing.assert_array_equal(kernel[:, :, 4:], variables["params"]["layer2_conv"]["kernel"])


def test_transforms_are_deterministic_and_noise_breaks_symmetry_approximately():
  net, variables = _trained_like(SPACE, ARCH, 0)
  a = M.widen(SPACE, jax.random.key(7), ARCH, variables, input_shape=SHAPE, layer=0, filters=12)
  b = M.widen(SPACE, jax.random.key(7), ARCH, variables, input_shape=SHAPE, layer=0, filters=12)
  np.testing.assert_array_equal(a[0], b[0])
  jax.tree_util.tree_map(np.testing.assert_array_equal, a[1], b[1])
  child, noisy = M.widen(SPACE, jax.random.key(7), ARCH, variables, input_shape=SHAPE, layer=0, filters=12,
                         noise_std=0.01)
  out, ref = _apply(chain_network(SPACE, child, 5, SHAPE), noisy), _apply(net, variables)
  diff = float(jnp.max(jnp.abs(out - ref)))
  assert 0 < diff < 0.05 * float(jnp.max(jnp.abs(ref)))


def test_transforms_that_cannot_apply():
  space = nas_rl_space(3)
  full = space.from_string("conv(h3,w3,f64,s1)|conv(h3,w3,f64,s1)|conv(h3,w3,f64,s1)<-0")
  net, variables = _trained_like(space, full, 0)
  with pytest.raises(NasjaxError, match="cannot widen.*largest filters"):
    M.widen(space, jax.random.key(0), full, variables, input_shape=SHAPE)
  with pytest.raises(NasjaxError, match="cannot deepen"):
    M.deepen(space, jax.random.key(0), full, variables, input_shape=SHAPE)
  with pytest.raises(NasjaxError, match="no network morphism"):
    M.morphism_mutation(space, jax.random.key(0), full, variables, input_shape=SHAPE)
  with pytest.raises(NasjaxError, match="does not apply"):
    M.apply_morph(space, jax.random.key(0), full, variables, M.Morph("skip", 2, source=0), input_shape=SHAPE)
  # A NAS-RL network cannot be deepened (no identity layers): the mutation picks among the others.
  arch = space.from_string("conv(h3,w3,f24,s1)|conv(h3,w3,f64,s1)|conv(h3,w3,f64,s1)")
  variables = _trained_like(space, arch, 0)[1]
  kinds = {M.morphism_mutation(space, jax.random.key(i), arch, variables, input_shape=SHAPE)[2].kind
           for i in range(8)}
  assert kinds == {"widen", "skip"}
  with pytest.raises(NasjaxError, match="kinds must be"):
    M.applicable_morphs(space, arch, SHAPE, kinds=("grow",))


# ---------------------------------------------------------------------------------------------- estimator
def _tiny_dataset():
  rng = np.random.default_rng(0)
  y = np.arange(64) % 2
  x = rng.uniform(0, 0.3, (64,) + SHAPE).astype(np.float32)
  x[y == 1, 2:6, 2:6, :] += 0.6  # a bright square makes the classes learnable in a few steps
  return Dataset("tiny", x, y.astype(np.int32), x[:16], y[:16].astype(np.int32), 2, (0.3,) * 3, (0.25,) * 3)


def test_morphism_estimator_warm_starts_children(tmp_path):
  cfg = M.morphism_training_config()
  cfg.update(batch_size=16, eval_batch_size=16, epochs=2, finetune_epochs=1, crop_padding=0)
  est = M.MorphismEstimator(SPACE, _tiny_dataset(), cfg)
  with pytest.raises(NasjaxError, match="has not been trained"):
    est.mutate(jax.random.key(0), ARCH)
  parent = est(ARCH, jax.random.key(1))
  assert not parent["warm_start"] and parent["epochs"] == 2 and np.isfinite(parent["accuracy"])
  child = est.mutate(jax.random.key(2), ARCH)
  assert M.find_morph(SPACE, ARCH, child, SHAPE) is not None
  result = est(child, jax.random.key(3))
  assert result["warm_start"] and result["parent"] == ARCH.tolist() and result["epochs"] == 1
  assert np.isfinite(result["accuracy"]) and len(result["curve"]) == 1
  # The archive now holds both; an unrelated architecture trains from scratch.
  assert len(est.archive) == 2
  other = SPACE.from_string("pool(h1,w1,s1)|conv(h1,w1,f4,s2)|identity|dense(f8)")
  assert M.find_morph(SPACE, ARCH, other, SHAPE) is None and M.find_morph(SPACE, child, other, SHAPE) is None
  # The archive survives a save/load round trip (for resumed searches), and a warm start after loading
  # finds the same parent.
  est.save(str(tmp_path / "archive.msgpack"))
  fresh = M.MorphismEstimator(SPACE, _tiny_dataset(), cfg)
  fresh.load(str(tmp_path / "archive.msgpack"))
  assert list(fresh.archive) == list(est.archive)
  jax.tree_util.tree_map(np.testing.assert_array_equal, fresh.archive[tuple(ARCH.tolist())]["variables"],
                         est.archive[tuple(ARCH.tolist())]["variables"])
  grandchild = fresh.mutate(jax.random.key(4), child)
  assert fresh._warm_start(jax.random.key(5), grandchild)[0] == tuple(child.tolist())
  (tmp_path / "junk").write_bytes(b"\x00not msgpack")
  with pytest.raises(NasjaxError, match="morphism archive"):
    fresh.load(str(tmp_path / "junk"))
