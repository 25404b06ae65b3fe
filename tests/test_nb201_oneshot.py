"""The NB201 supernet's relaxed and hard modes, and one-shot search on the NB201 space."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nasjax.errors import NasjaxError
from nasjax.nn.init import init_variables
from nasjax.nn.nb201_network import NB201Network
from nasjax.spaces import NB201_OPS, NB201Space

ARCH = np.array([3, 0, 1, 2, 4, 3], np.int32)  # every op, 'none' included


@pytest.fixture(scope="module")
def tiny():
  net = NB201Network(channels=4, cells_per_stage=1, num_classes=3, affine=False)
  x = jax.random.normal(jax.random.key(0), (2, 8, 8, 1))
  variables = init_variables(net, jax.random.key(1), x, jnp.full((6, 5), 0.2), train=False)
  return net, x, variables


def test_modes_share_variables(tiny):
  net, x, variables = tiny
  for arch, hard in ((ARCH, False), (jnp.full((6, 5), 0.2), True)):
    other = jax.eval_shape(lambda k: net.init(k, x, arch, hard=hard), jax.random.key(0))
    assert jax.tree.structure(other) == jax.tree.structure(variables)


def test_one_hot_relaxed_and_hard_equal_discrete(tiny):
  net, x, variables = tiny
  one_hot = jax.nn.one_hot(ARCH, len(NB201_OPS))

  @jax.jit  # one program for all five calls: eager flax would dispatch (and compile) op by op
  def outputs(variables, x):
    return (net.apply(variables, x, ARCH), net.apply(variables, x, one_hot),
            net.apply(variables, x, one_hot, hard=True),
            net.apply(variables, x, ARCH, train=True, mutable=["batch_stats"]),
            net.apply(variables, x, one_hot, train=True, hard=True, mutable=["batch_stats"]))

  discrete, relaxed, hard, (d, d_stats), (h, h_stats) = outputs(variables, x)
  np.testing.assert_allclose(relaxed, discrete, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(hard, discrete, rtol=1e-6, atol=1e-7)
  # Training mode too (batch statistics of the chosen ops only in the hard and discrete modes).
  np.testing.assert_allclose(h, d, rtol=1e-6, atol=1e-7)
  for a, b in zip(jax.tree.leaves(d_stats), jax.tree.leaves(h_stats)):
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


def test_hard_gradient_reaches_weights_and_mixing_weights(tiny):
  net, x, variables = tiny
  one_hot = jax.nn.one_hot(ARCH, len(NB201_OPS))

  def loss(params, w, hard):
    return jnp.sum(net.apply({**variables, "params": params}, x, w, hard=hard) ** 2)

  @jax.jit
  def grads(params, w):
    return jax.grad(loss, (0, 1))(params, w, True), jax.grad(loss, 1)(params, w, False)

  (g_params, g_hard), g_relaxed = grads(variables["params"], one_hot)
  rows = np.arange(6)
  # Only the chosen op runs, so only its weight gets a gradient: the relaxed mode's for that op.
  np.testing.assert_allclose(g_hard[rows, ARCH], g_relaxed[rows, ARCH], rtol=1e-4, atol=1e-6)
  others = np.ones((6, 5), bool)
  others[rows, ARCH] = False
  assert np.all(np.asarray(g_hard)[others] == 0)
  nonzero = [e for e in range(6) if NB201_OPS[ARCH[e]] != "none"]
  assert np.all(np.abs(np.asarray(g_hard)[nonzero, ARCH[nonzero]]) > 0)
  # The chosen convolutions' kernels learn; a convolution no edge chose gets nothing.
  leaves = jax.tree_util.tree_leaves_with_path(g_params["cell_0_0"]["edge_0_to_1"])
  chosen = [np.any(np.asarray(v) != 0) for p, v in leaves if "nor_conv_3x3" in jax.tree_util.keystr(p)]
  unchosen = [np.any(np.asarray(v) != 0) for p, v in leaves if "nor_conv_1x1" in jax.tree_util.keystr(p)]
  assert chosen and all(chosen) and unchosen and not any(unchosen)


def test_relaxed_is_the_weighted_sum(tiny):
  net, x, variables = tiny
  w = jax.nn.softmax(jax.random.normal(jax.random.key(3), (6, 5)), axis=-1)
  apply = jax.jit(lambda w: net.apply(variables, x, w))
  out = apply(w)
  assert out.shape == (2, 3) and np.all(np.isfinite(out))
  # Every edge's row weighs its ops: doubling the last edge's row changes the output.
  assert not np.allclose(apply(w.at[5].multiply(2.0)), out)


def test_bad_architectures_refused(tiny):
  net, x, variables = tiny
  with pytest.raises(NasjaxError, match=r"float mixing weights of shape \(6, 5\)"):
    net.apply(variables, x, jnp.zeros((6, 4)))
  with pytest.raises(NasjaxError, match="hard=True"):
    net.apply(variables, x, ARCH, hard=True)
  NB201Space().check(ARCH)
